"""The logic: saving the settings, and (with dispatch) enqueueing, claiming, sending, recording.

Admin views, tasks, signal receivers and management commands call in here.
"""

from __future__ import annotations

import logging

from django.db import transaction
from django.utils import timezone

from notifications.models import SettingsChange, SmtpSettings
from notifications.signals import smtp_settings_changed

logger = logging.getLogger(__name__)

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
)


def save_settings(
    settings: SmtpSettings,
    *,
    new_password: str | None = None,
    by=None,
    source: str = "admin",
) -> SettingsChange:
    """Save the settings as a new version and record who changed what.

    ``new_password``: None keeps the stored password, "" removes it, anything else replaces it.
    Saving clears a dispatch pause: the administrator has acted on the problem.
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
        settings.paused_at = None
        settings.save()
        change = SettingsChange.objects.create(
            changed_by=by, version=settings.version, changes=changes, source=source
        )
        transaction.on_commit(
            lambda: send_robust(
                smtp_settings_changed, sender=SmtpSettings, settings=settings, changes=changes
            )
        )
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
    return changes


def send_robust(signal, *, sender, **kwargs) -> None:
    """Send an observer signal; a receiver that raises is logged, never propagated."""
    for receiver, result in signal.send_robust(sender=sender, **kwargs):
        if isinstance(result, Exception):
            logger.error(
                "Receiver %r of a notifications signal raised %r", receiver, result, exc_info=result
            )
