"""Re-encrypt the stored SMTP password under the first key of NOTIFICATIONS_ENCRYPTION_KEYS."""

from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError
from django.db import transaction

from notifications import crypto
from notifications.exceptions import EncryptionKeyError
from notifications.models import SmtpSettings


class Command(BaseCommand):
    help = (
        "Re-encrypt the stored SMTP password under the first key in "
        "NOTIFICATIONS_ENCRYPTION_KEYS. Afterwards the older keys can be removed."
    )

    def handle(self, *args, **options) -> None:
        with transaction.atomic():
            settings = (
                SmtpSettings.objects.select_for_update()
                .filter(pk=SmtpSettings.SINGLETON_PK)
                .first()
            )
            if settings is None or not settings.password_encrypted:
                self.stdout.write("No SMTP password is stored: nothing to re-encrypt.")
                return
            try:
                settings.password_encrypted = crypto.rotate(settings.password_encrypted)
            except EncryptionKeyError as error:
                raise CommandError(str(error)) from None
            settings.save(update_fields=["password_encrypted"])
        self.stdout.write(
            self.style.SUCCESS(
                "Re-encrypted the SMTP password under the first key. Keys after the first can "
                "now be removed from NOTIFICATIONS_ENCRYPTION_KEYS."
            )
        )
