"""System checks: the encryption keys must exist and be valid Fernet keys."""

from __future__ import annotations

from django.core.checks import Error, register

from notifications import conf
from notifications.crypto import FIX, key_problems


@register()
def check_encryption_keys(app_configs, **kwargs) -> list[Error]:
    keys = conf.encryption_keys()
    if not keys:
        return [
            Error(
                "NOTIFICATIONS_ENCRYPTION_KEYS is not set: the SMTP password cannot be stored.",
                hint=FIX,
                id="notifications.E001",
            )
        ]
    return [Error(problem, hint=FIX, id="notifications.E002") for problem in key_problems(keys)]
