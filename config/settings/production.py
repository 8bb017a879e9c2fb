"""Production settings: every secret comes from the environment, and start-up fails without it."""

from __future__ import annotations

from django.core.exceptions import ImproperlyConfigured

from config.settings.base import *  # noqa: F403
from config.settings.base import env


def _required(name: str, value):
    if not value:
        raise ImproperlyConfigured(
            f"{name} must be set in the environment (or .env) for production; "
            "see .env.example for what it holds."
        )
    return value


DEBUG = env.bool("DEBUG", default=False)
SECRET_KEY = _required("SECRET_KEY", env.str("SECRET_KEY", default=""))
ALLOWED_HOSTS = _required("ALLOWED_HOSTS", env.list("ALLOWED_HOSTS", default=[]))
NOTIFICATIONS_ENCRYPTION_KEYS = _required(
    "NOTIFICATIONS_ENCRYPTION_KEYS", env.list("NOTIFICATIONS_ENCRYPTION_KEYS", default=[])
)
CELERY_BROKER_URL = _required("CELERY_BROKER_URL", CELERY_BROKER_URL)

SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
SECURE_SSL_REDIRECT = env.bool("SECURE_SSL_REDIRECT", default=True)
SECURE_HSTS_SECONDS = env.int("SECURE_HSTS_SECONDS", default=31536000)
SECURE_HSTS_INCLUDE_SUBDOMAINS = True
SECURE_HSTS_PRELOAD = env.bool("SECURE_HSTS_PRELOAD", default=False)
SESSION_COOKIE_SECURE = True
CSRF_COOKIE_SECURE = True
CSRF_TRUSTED_ORIGINS = env.list("CSRF_TRUSTED_ORIGINS", default=[])
