"""Send test email: the stepwise diagnosis for an administrator or the command line, recorded."""

from __future__ import annotations

import math
from datetime import timedelta
from typing import TYPE_CHECKING

from django.contrib.auth import get_user_model
from django.db import transaction
from django.utils import timezone
from django.utils.translation import gettext as _
from django.utils.translation import ngettext
from django.views.decorators.debug import sensitive_variables

from notifications import conf
from notifications.exceptions import NotificationsError
from notifications.models import TestRun
from notifications.smtp import DiagnosticReport, check_connection, diagnose

if TYPE_CHECKING:
    from django.contrib.auth.models import AbstractBaseUser

    from notifications.models import SmtpSettings

#: The window TEST_EMAILS_PER_MINUTE counts an administrator's runs in.
RATE_WINDOW = timedelta(minutes=1)


class RateLimited(NotificationsError):
    """The administrator ran TEST_EMAILS_PER_MINUTE tests within the last minute.

    ``retry_after`` is how many seconds until the next run is allowed.
    """

    def __init__(self, message: str, *, retry_after: int) -> None:
        super().__init__(message)
        self.retry_after = retry_after


@sensitive_variables("password", "config")
def run_test(
    *,
    settings: SmtpSettings,
    to: str,
    by: AbstractBaseUser | None = None,
    password: str | None = None,
    unsaved: bool = False,
    connect_only: bool = False,
) -> DiagnosticReport:
    """Send a test email with ``settings`` (saved or not) to ``to``; record the run; the report.

    ``password``: None uses the stored one (decrypted here, never shown), anything else is used
    as given. ``by`` is the administrator, whose runs are rate-limited (RateLimited); None, the
    command line, is not. ``unsaved`` says the values differ from the stored version, so the run
    records no settings version. The run is bounded by TEST_DEADLINE_SECONDS overall.
    ``connect_only`` signs in and quits without a message ("Test connection"; ``to`` unused).
    """
    config = settings.to_smtp_config(password=password)
    run = _start(
        by=by,
        to=to,
        settings_version=None if unsaved else settings.version,
        server=settings.server,
    )
    deadline = conf.get("TEST_DEADLINE_SECONDS")
    if connect_only:
        report = check_connection(config, deadline=deadline)
    else:
        report = diagnose(config, to=to, deadline=deadline)
    run.ok = report.ok
    run.failed_step = report.failed_step or ""
    run.summary = outcome(report)
    run.report = report.as_dict()
    run.save(update_fields=["ok", "failed_step", "summary", "report"])
    return report


def outcome(report: DiagnosticReport) -> str:
    """The one-line verdict: "Delivered to the server." or "Failed at <step>: <hint>"."""
    if report.ok and report.connect_only:
        return _("Connected and signed in; no message was sent.")
    if report.ok:
        return _("Delivered to the server.")
    failed = report.failed_step
    if failed is None:
        return _("The test did not finish.")
    return _("Failed at %(step)s: %(hint)s") % {
        "step": report.step(failed).label,
        "hint": report.hint or report.error,
    }


def _start(
    *, by: AbstractBaseUser | None, to: str, settings_version: int | None, server: str
) -> TestRun:
    """Check the rate limit and record the run as started, atomically.

    Recording before the (up to 30 s) diagnosis means runs still in flight count too, so an
    administrator cannot get past the limit by clicking in several tabs at once.
    """
    with transaction.atomic():
        if by is not None:
            # Serialise one administrator's runs: two requests must not both pass the count.
            get_user_model().objects.select_for_update().filter(pk=by.pk).exists()
            _check_rate(by)
        return TestRun.objects.create(
            created_by=by,
            recipient=to,
            ok=False,
            summary=_("Started; the test did not finish."),
            settings_version=settings_version,
            server=server,
        )


def seconds_until_allowed(user: AbstractBaseUser) -> int:
    """0 if ``user`` may run a test now; otherwise how many seconds until they may."""
    # Below 1 nobody could ever test; treat a misconfiguration as the strictest usable limit.
    limit = max(1, conf.get("TEST_EMAILS_PER_MINUTE"))
    now = timezone.now()
    recent = list(
        TestRun.objects.filter(created_by=user, created_at__gt=now - RATE_WINDOW)
        .order_by("created_at")
        .values_list("created_at", flat=True)
    )
    if len(recent) < limit:
        return 0
    # The next run is allowed once enough of the recent ones have left the window.
    frees_at = recent[len(recent) - limit] + RATE_WINDOW
    return max(1, math.ceil((frees_at - now).total_seconds()))


def _check_rate(user: AbstractBaseUser) -> None:
    seconds = seconds_until_allowed(user)
    if not seconds:
        return
    limit = max(1, conf.get("TEST_EMAILS_PER_MINUTE"))
    raise RateLimited(
        ngettext(
            "Too many test emails: at most %(limit)d a minute. Try again in %(seconds)d second.",
            "Too many test emails: at most %(limit)d a minute. Try again in %(seconds)d seconds.",
            seconds,
        )
        % {"limit": limit, "seconds": seconds},
        retry_after=seconds,
    )
