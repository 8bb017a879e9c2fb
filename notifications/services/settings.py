"""Saving a server's SMTP settings as a new audited version, removing the fallback, and pausing a
server on a setup problem."""

from __future__ import annotations

import logging

from django.db import transaction
from django.db.models import Max
from django.utils import timezone
from django.views.decorators.debug import sensitive_variables

from notifications.diagnosis import adopt_unsaved_test
from notifications.models import ConnectBackoff, Server, SettingsChange, SmtpSettings
from notifications.services.hooks import send_robust
from notifications.services.leases import clear_backoff
from notifications.services.upkeep import kick_workers
from notifications.signals import smtp_settings_changed

logger = logging.getLogger("notifications.services")

#: Fields whose old and new values the audit trail records verbatim.
AUDITED_FIELDS = (
    "provider",
    "host",
    "port",
    "security",
    "username",
    "from_address",
    "skip_verify",
    "allow_plaintext_login",
    "timeout",
    "batch",
    "auth_method",
    "auth_mechanism",
    "tenant_id",
    "client_id",
    "client_secret_expires",
    "token_url",
    "scope",
    "rate_per_minute",
    "rate_per_hour",
    "rate_per_day",
    "messages_per_connection",
)
#: Encrypted secrets besides the password: audited only as "changed" / "removed".
AUDITED_SECRETS = {
    "client_secret_encrypted": "client_secret",
    "service_account_encrypted": "service_account",
}


@sensitive_variables("new_password")
def save_settings(
    settings: SmtpSettings,
    *,
    new_password: str | None = None,
    by=None,
    source: str = "admin",
) -> SettingsChange:
    """Save a server's settings (the primary's, or the fallback's: ``settings.pk``) as a new
    version and record who changed what.

    ``new_password``: None keeps the stored password, "" removes it, anything else replaces it.
    Saving clears that server's pause and connection back-off: the administrator has acted.
    """

    settings.full_clean()
    with transaction.atomic():
        previous = SmtpSettings.objects.select_for_update().filter(pk=settings.pk).first()
        changes = _changes(previous, settings)
        if new_password is not None:
            if new_password or settings.has_password:
                changes["password"] = "changed" if new_password else "removed"
            settings.set_password(new_password, by=by)
        # A fallback set again after its removal goes on from its last version.
        settings.version = (previous.version if previous else _last_version(settings.server)) + 1
        settings.updated_at = timezone.now()
        settings.updated_by = by
        settings.paused_reason = ""
        settings.paused_detail = None
        settings.paused_at = None
        settings.save()
        adopt_unsaved_test(settings)
        clear_backoff(settings.pk)
        change = SettingsChange.objects.create(
            changed_by=by,
            version=settings.version,
            changes=changes,
            source=source,
            server=settings.server,
        )
        transaction.on_commit(
            lambda: send_robust(
                smtp_settings_changed, sender=SmtpSettings, settings=settings, changes=changes
            )
        )
        # A raised Batch or a lifted pause should be used at once, not at the next sweep.
        transaction.on_commit(kick_workers, robust=True)
    logger.info(
        "SMTP settings (%s) saved as version %s by %s: %s",
        settings.server,
        settings.version,
        by or source,
        ", ".join(changes) or "no field changed",
    )
    return change


def _last_version(server: str) -> int:
    return SettingsChange.objects.filter(server=server).aggregate(last=Max("version"))["last"] or 0


def _changes(previous: SmtpSettings | None, current: SmtpSettings) -> dict:
    changes: dict = {}
    for name in AUDITED_FIELDS:
        if current.is_fallback and name in SmtpSettings.PRIMARY_ONLY_FIELDS:
            continue  # not used for the fallback: no line in its audit trail
        old = getattr(previous, name) if previous else None
        new = getattr(current, name)
        if old != new:
            changes[name] = [old, new]
    if (previous.ca_pem if previous else "") != current.ca_pem:
        changes["ca_pem"] = "changed"
    for column, name in AUDITED_SECRETS.items():
        old, new = getattr(previous, column) if previous else "", getattr(current, column)
        if old != new:
            changes[name] = "changed" if new else "removed"
    return changes


def remove_fallback(*, by=None, source: str = "admin") -> SettingsChange | None:
    """Remove the fallback server (None when there was none); audited like a save."""
    with transaction.atomic():
        fallback = (
            SmtpSettings.objects.select_for_update().filter(pk=SmtpSettings.FALLBACK_PK).first()
        )
        if fallback is None:
            return None
        fallback.delete()
        ConnectBackoff.objects.filter(pk=SmtpSettings.FALLBACK_PK).delete()
        change = SettingsChange.objects.create(
            changed_by=by,
            version=fallback.version,
            changes={"fallback": "removed"},
            source=source,
            server=Server.FALLBACK,
        )
    logger.info("The fallback SMTP server was removed by %s", by or source)
    return change


def pause(version: int, reason: str, *, server: int = SmtpSettings.PRIMARY_PK) -> None:
    """Stop sending through ``server`` with settings ``version`` until they are saved again.

    A paused primary with a usable fallback sends through the fallback; a paused fallback only
    stops being a fallback. ``reason`` is English; the phrases it was made of
    (``attempts.describe``'s ``detail``) are kept beside it for the settings page, which shows
    them in its reader's language.
    """
    if SmtpSettings.objects.filter(pk=server, version=version).update(
        paused_reason=reason,
        paused_detail=getattr(reason, "detail", None),
        paused_at=timezone.now(),
    ):
        logger.error(
            "Sending through the %s SMTP server is paused until its settings are saved again: %s",
            "fallback" if server == SmtpSettings.FALLBACK_PK else "primary",
            reason,
        )
