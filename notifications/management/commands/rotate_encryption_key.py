"""Re-encrypt the stored SMTP secrets (the primary's and the fallback's) under the first key of
NOTIFICATIONS_ENCRYPTION_KEYS."""

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
            # The primary's record and the fallback's, if one is set.
            records = list(SmtpSettings.objects.select_for_update().order_by("pk"))
            stored = [(r, [c for c in SECRET_COLUMNS if getattr(r, c)]) for r in records]
            stored = [(record, columns) for record, columns in stored if columns]
            # Cached access tokens are only a cache: dropped rather than re-encrypted.
            tokens.forget_all()
            if not stored:
                self.stdout.write("No SMTP secret is stored: nothing to re-encrypt.")
                return
            try:
                for record, columns in stored:
                    for column in columns:
                        setattr(record, column, crypto.rotate(getattr(record, column)))
            except EncryptionKeyError as error:
                raise CommandError(str(error)) from None
            for record, columns in stored:
                record.save(update_fields=columns)
        self.stdout.write(
            self.style.SUCCESS(
                "Re-encrypted the SMTP secrets under the first key. Keys after the first can "
                "now be removed from NOTIFICATIONS_ENCRYPTION_KEYS."
            )
        )
