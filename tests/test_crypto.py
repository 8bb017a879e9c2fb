"""Encryption at rest: round trip, rotation across keys, and clear errors for wrong keys."""

from __future__ import annotations

import pytest
from cryptography.fernet import Fernet
from django.core.management import call_command
from django.db import connection

from notifications import crypto
from notifications.checks import check_encryption_keys
from notifications.exceptions import EncryptionKeyError
from notifications.models import SmtpSettings

OLD, NEW = Fernet.generate_key().decode(), Fernet.generate_key().decode()


def test_encrypt_round_trips_and_hides_the_plaintext(settings):
    settings.NOTIFICATIONS_ENCRYPTION_KEYS = [NEW]
    token = crypto.encrypt("s3cret-Pässword")
    assert "s3cret" not in token
    assert crypto.decrypt(token) == "s3cret-Pässword"


def test_wrong_key_raises_a_clear_error_never_the_ciphertext(settings):
    settings.NOTIFICATIONS_ENCRYPTION_KEYS = [OLD]
    token = crypto.encrypt("hunter2")
    settings.NOTIFICATIONS_ENCRYPTION_KEYS = [NEW]
    with pytest.raises(EncryptionKeyError) as raised:
        crypto.decrypt(token)
    assert "NOTIFICATIONS_ENCRYPTION_KEYS" in str(raised.value)
    assert token not in str(raised.value)


@pytest.mark.django_db
def test_rotation_reencrypts_under_the_first_key_so_the_old_one_can_go(settings):
    settings.NOTIFICATIONS_ENCRYPTION_KEYS = [OLD]
    record = SmtpSettings.load()
    record.set_password("rotate-me")
    record.save()
    settings.NOTIFICATIONS_ENCRYPTION_KEYS = [NEW, OLD]
    call_command("rotate_encryption_key")
    settings.NOTIFICATIONS_ENCRYPTION_KEYS = [NEW]
    assert SmtpSettings.load().get_password() == "rotate-me"


@pytest.mark.django_db
def test_rotation_without_the_old_key_fails_and_keeps_the_stored_token(settings):
    settings.NOTIFICATIONS_ENCRYPTION_KEYS = [OLD]
    record = SmtpSettings.load()
    record.set_password("keep-me")
    record.save()
    before = record.password_encrypted
    settings.NOTIFICATIONS_ENCRYPTION_KEYS = [NEW]
    with pytest.raises(Exception, match="cannot be decrypted"):
        call_command("rotate_encryption_key")
    assert SmtpSettings.load().password_encrypted == before


@pytest.mark.django_db
def test_raw_database_row_holds_no_plaintext_password():
    record = SmtpSettings.load()
    record.set_password("plain-text-canary")
    record.save()
    with connection.cursor() as cursor:
        cursor.execute("SELECT * FROM notifications_smtpsettings")
        rows = cursor.fetchall()
    assert rows
    assert "plain-text-canary" not in repr(rows)


def test_missing_keys_are_a_system_check_error_with_a_hint(settings):
    settings.NOTIFICATIONS_ENCRYPTION_KEYS = []
    errors = check_encryption_keys(None)
    assert [e.id for e in errors] == ["notifications.E001"]
    assert "Fernet.generate_key" in errors[0].hint


def test_malformed_key_is_a_system_check_error_naming_its_position(settings):
    settings.NOTIFICATIONS_ENCRYPTION_KEYS = [NEW, "not-a-key"]
    errors = check_encryption_keys(None)
    assert [e.id for e in errors] == ["notifications.E002"]
    assert "Key 2" in errors[0].msg
    assert "not-a-key" not in errors[0].msg


def test_comma_separated_string_of_keys_is_accepted(settings):
    settings.NOTIFICATIONS_ENCRYPTION_KEYS = f"{NEW}, {OLD}"
    assert check_encryption_keys(None) == []
