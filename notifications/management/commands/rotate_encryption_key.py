"""Re-encrypt the stored SMTP secrets under the first key of NOTIFICATIONS_ENCRYPTION_KEYS."""

from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError
from django.db import transaction

from notifications import crypto, tokens
from notifications.exceptions import EncryptionKeyError
from notifications.models import SmtpSettings

#: Every encrypted column of the settings record.
SECRET_COLUMNS = ("password_encrypted", "client_secret_encrypted", "service_account_encrypted")


class Command(BaseCommand):
    help = (
        "Re-encrypt the stored SMTP password, client secret and service-account key under the "
        "first key in NOTIFICATIONS_ENCRYPTION_KEYS. Afterwards the older keys can be removed."
    )

    def handle(self, *args, **options) -> None:
        with transaction.atomic():
            settings = (
                SmtpSettings.objects.select_for_update()
                .filter(pk=SmtpSettings.SINGLETON_PK)
                .first()
            )
            stored = [c for c in SECRET_COLUMNS if settings is not None and getattr(settings, c)]
            # Cached access tokens are only a cache: dropped rather than re-encrypted.
            tokens.forget_all()
            if not stored:
                self.stdout.write("No SMTP secret is stored: nothing to re-encrypt.")
                return
            try:
                for column in stored:
                    setattr(settings, column, crypto.rotate(getattr(settings, column)))
            except EncryptionKeyError as error:
                raise CommandError(str(error)) from None
            settings.save(update_fields=stored)
        self.stdout.write(
            self.style.SUCCESS(
                "Re-encrypted the SMTP secrets under the first key. Keys after the first can "
                "now be removed from NOTIFICATIONS_ENCRYPTION_KEYS."
            )
        )
