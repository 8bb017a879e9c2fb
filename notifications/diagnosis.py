"""Send test email: the stepwise diagnosis for an administrator or the command line, recorded."""

from __future__ import annotations

import dataclasses
import math
from datetime import timedelta
from typing import TYPE_CHECKING

from django.contrib.auth import get_user_model
from django.db import transaction
from django.utils import timezone
from django.utils.crypto import salted_hmac
from django.utils.translation import ngettext
from django.views.decorators.debug import sensitive_variables

from notifications import conf
from notifications.exceptions import NotificationsError
from notifications.models import SmtpSettings, TestKind, TestRun
from notifications.phrases import english, to_json
from notifications.phrases import phrase as _
from notifications.smtp import DiagnosticReport, SmtpConfig, check_connection, diagnose
from notifications.targets import Target

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
    command line, is not. ``unsaved`` says the values differ from the stored version: the run
    and its report say so (``target``), and the panel does not take it for the saved settings'
    state. The run is bounded by TEST_DEADLINE_SECONDS overall.
    ``connect_only`` signs in and quits without a message ("Test connection"; ``to`` unused).
    """
    config = settings.to_smtp_config(password=password)
    target = Target.of(config, saved=not unsaved)
    kind = TestKind.CONNECTION if connect_only else TestKind.EMAIL
    run = _start(
        by=by, to=to, target=target, kind=kind, server=settings.server, digest=values_digest(config)
    )
    deadline = conf.get("TEST_DEADLINE_SECONDS")
    if connect_only:
        report = check_connection(config, deadline=deadline)
    else:
        report = diagnose(config, to=to, deadline=deadline)
    report.target = target.as_dict()
    run.ok = report.ok
    run.failed_step = report.failed_step or ""
    # Stored in English with the phrases beside it: each reader sees it in their language.
    summary = outcome(report)
    run.summary = english(summary)
    run.report = {**report.as_stored(), "summary": to_json(summary)}
    run.save(update_fields=["ok", "failed_step", "summary", "report"])
    return report


@sensitive_variables("config")
def values_digest(config: SmtpConfig) -> str:
    """A keyed digest of every value a test of ``config`` uses (its version aside): equal for
    the same values, and no way back to a secret among them."""
    material = repr(dataclasses.astuple(dataclasses.replace(config, version=0)))
    return salted_hmac("notifications.tested-values", material, algorithm="sha256").hexdigest()


def adopt_unsaved_test(settings: SmtpSettings) -> None:
    """Just after ``settings`` were saved: when the server's latest test was of unsaved values
    and those are exactly the values now saved (the result's "Save these settings", say), it
    becomes the saved settings' test, so the panel tells their state from it instead of calling
    it a test of unsaved values."""
    latest = TestRun.objects.filter(server=settings.server).first()
    if latest is None or latest.saved or not latest.values_digest:
        return
    try:
        digest = values_digest(settings.to_smtp_config())
    except (NotificationsError, ValueError):  # a secret that cannot be decrypted, say: the
        return  # save goes on, and the test stays one of unsaved values
    if latest.values_digest == digest:
        TestRun.objects.filter(pk=latest.pk).update(saved=True, settings_version=settings.version)


def outcome(report: DiagnosticReport) -> str:
    """The one-line verdict: "Delivered to the server." or "Failed at <step>: <hint>" (a phrase:
    text in the active language that can be stored and shown in another)."""
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
    *,
    by: AbstractBaseUser | None,
    to: str,
    target: Target,
    kind: str,
    server: str,
    digest: str,
) -> TestRun:
    """Check the rate limit and record the run as started, atomically.

    Recording before the (up to 30 s) diagnosis means runs still in flight count too, so an
    administrator cannot get past the limit by clicking in several tabs at once.
    """
    started = _("Started; the test did not finish.")
    with transaction.atomic():
        if by is not None:
            # Serialise one administrator's runs: two requests must not both pass the count.
            get_user_model().objects.select_for_update().filter(pk=by.pk).exists()
            _check_rate(by)
        return TestRun.objects.create(
            created_by=by,
            recipient=to,
            ok=False,
            summary=english(started),
            report={"summary": to_json(started)},
            kind=kind,
            **target.as_dict(),
            server=server,
            values_digest=digest,
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
