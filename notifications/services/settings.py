"""Saving the SMTP settings as a new audited version, and pausing dispatch on a setup problem."""

from __future__ import annotations

import logging

from django.db import transaction
from django.utils import timezone
from django.views.decorators.debug import sensitive_variables

from notifications.models import SettingsChange, SmtpSettings
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
    """Save the settings as a new version and record who changed what.

    ``new_password``: None keeps the stored password, "" removes it, anything else replaces it.
    Saving clears a dispatch pause and a connection back-off: the administrator has acted.
    """

    settings.full_clean()
    with transaction.atomic():
        previous = SmtpSettings.objects.select_for_update().filter(pk=settings.SINGLETON_PK).first()
        changes = _changes(previous, settings)
        if new_password is not None:
            if new_password or settings.has_password:
                changes["password"] = "changed" if new_password else "removed"
            settings.set_password(new_password, by=by)
        settings.version = (previous.version if previous else 0) + 1
        settings.updated_at = timezone.now()
        settings.updated_by = by
        settings.paused_reason = ""
        settings.paused_detail = None
        settings.paused_at = None
        settings.save()
        clear_backoff()
        change = SettingsChange.objects.create(
            changed_by=by, version=settings.version, changes=changes, source=source
        )
        transaction.on_commit(
            lambda: send_robust(
                smtp_settings_changed, sender=SmtpSettings, settings=settings, changes=changes
            )
        )
        # A raised Batch or a lifted pause should be used at once, not at the next sweep.
        transaction.on_commit(kick_workers, robust=True)
    logger.info(
        "SMTP settings saved as version %s by %s: %s",
        settings.version,
        by or source,
        ", ".join(changes) or "no field changed",
    )
    return change


def _changes(previous: SmtpSettings | None, current: SmtpSettings) -> dict:
    changes: dict = {}
    for name in AUDITED_FIELDS:
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


def pause(version: int, reason: str) -> None:
    """Stop sending with settings ``version`` until they are saved again.

    ``reason`` is English; the phrases it was made of (``dispatch.describe``'s ``detail``) are
    kept beside it for the settings page, which shows them in its reader's language.
    """
    if SmtpSettings.objects.filter(pk=SmtpSettings.SINGLETON_PK, version=version).update(
        paused_reason=reason,
        paused_detail=getattr(reason, "detail", None),
        paused_at=timezone.now(),
    ):
        logger.error("Sending is paused until the SMTP settings are saved again: %s", reason)
