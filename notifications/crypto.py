"""Encryption of the SMTP password at rest: MultiFernet over NOTIFICATIONS_ENCRYPTION_KEYS.

The first key encrypts; every key decrypts, so a new key can be put first and the stored password
re-encrypted (``rotate_encryption_key``) before the old key is dropped.
"""

from __future__ import annotations

import functools

from cryptography.fernet import Fernet, InvalidToken, MultiFernet

from notifications import conf
from notifications.exceptions import EncryptionKeyError

FIX = (
    "Set NOTIFICATIONS_ENCRYPTION_KEYS to a comma-separated list of Fernet keys (make one with "
    'python -c "from cryptography.fernet import Fernet; print(Fernet.generate_key().decode())"); '
    "the first key encrypts, all of them decrypt."
)


def key_problems(keys: list[str]) -> list[str]:
    """Say what is wrong with each key (by position, never by value); empty when all are usable."""
    if not keys:
        return ["NOTIFICATIONS_ENCRYPTION_KEYS is empty."]
    problems = []
    for position, key in enumerate(keys, start=1):
        try:
            Fernet(key)
        except (ValueError, TypeError):
            problems.append(
                f"Key {position} of NOTIFICATIONS_ENCRYPTION_KEYS is not a Fernet key "
                "(32 url-safe base64-encoded bytes)."
            )
    return problems


@functools.lru_cache(maxsize=4)
def _multi_fernet(keys: tuple[str, ...]) -> MultiFernet:
    if problems := key_problems(list(keys)):
        raise EncryptionKeyError(" ".join(problems) + " " + FIX)
    return MultiFernet([Fernet(key) for key in keys])


def _fernet() -> MultiFernet:
    return _multi_fernet(tuple(conf.encryption_keys()))


def encrypt(plaintext: str) -> str:
    """Encrypt under the first key; the token is ASCII and safe to store in a text column."""
    return _fernet().encrypt(plaintext.encode()).decode()


def decrypt(token: str) -> str:
    """Decrypt with any configured key, or raise EncryptionKeyError naming the fix."""
    try:
        return _fernet().decrypt(token.encode()).decode()
    except InvalidToken:
        raise EncryptionKeyError(
            "The stored SMTP password cannot be decrypted with any key in "
            "NOTIFICATIONS_ENCRYPTION_KEYS: the key it was encrypted with was removed or changed. "
            "Put that key back (anywhere after the first), or enter the password again in the "
            "SMTP settings."
        ) from None


def rotate(token: str) -> str:
    """Re-encrypt a token under the first key (it must decrypt with one of the keys)."""
    try:
        return _fernet().rotate(token.encode()).decode()
    except InvalidToken:
        raise EncryptionKeyError(
            "The stored SMTP password cannot be decrypted with any key in "
            "NOTIFICATIONS_ENCRYPTION_KEYS, so it cannot be re-encrypted. " + FIX
        ) from None
