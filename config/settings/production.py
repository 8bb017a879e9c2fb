"""Production settings: every secret comes from the environment, and start-up fails without it."""

from __future__ import annotations

from pathlib import Path

from django.core.exceptions import ImproperlyConfigured

from config.settings.base import *  # noqa: F403
from config.settings.base import DATABASES, MIDDLEWARE, VAR_DIR, env


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

# A connection kept across requests (CONN_MAX_AGE) may have been closed by the server meanwhile.
DATABASES["default"].setdefault("CONN_HEALTH_CHECKS", True)

# HTTPS is terminated by a proxy in front of gunicorn, which must set X-Forwarded-Proto (and drop
# any the client sent). SECURE_SSL_REDIRECT=false only where nothing but plain HTTP on loopback
# reaches the app; /healthz answers on plain HTTP either way (see notifications/health.py).
SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
SECURE_SSL_REDIRECT = env.bool("SECURE_SSL_REDIRECT", default=True)
SECURE_HSTS_SECONDS = env.int("SECURE_HSTS_SECONDS", default=31536000)
SECURE_HSTS_INCLUDE_SUBDOMAINS = env.bool("SECURE_HSTS_INCLUDE_SUBDOMAINS", default=True)
SECURE_HSTS_PRELOAD = env.bool("SECURE_HSTS_PRELOAD", default=False)
SESSION_COOKIE_SECURE = True
CSRF_COOKIE_SECURE = True
CSRF_TRUSTED_ORIGINS = env.list("CSRF_TRUSTED_ORIGINS", default=[])
# Joining the browsers' HSTS preload list binds the whole registrable domain and every subdomain,
# and is slow to undo: the operator opts in with SECURE_HSTS_PRELOAD=true; until then the check
# that asks for it (W021) is not a defect of this deployment.
SILENCED_SYSTEM_CHECKS = [] if SECURE_HSTS_PRELOAD else ["security.W021"]

# The health probe answers before host validation and the HTTPS redirect: load balancers and the
# container's own check call instances by address, over plain HTTP. WhiteNoise serves the static
# files that the image's build collected (hashed names, compressed, cached for a year).
_after_security = MIDDLEWARE.index("django.middleware.security.SecurityMiddleware") + 1
MIDDLEWARE = [
    "notifications.health.HealthCheckMiddleware",
    *MIDDLEWARE[:_after_security],  # SecurityMiddleware's headers go on static files too
    "whitenoise.middleware.WhiteNoiseMiddleware",
    *MIDDLEWARE[_after_security:],
]
STATIC_ROOT = Path(env.str("STATIC_ROOT", default=str(VAR_DIR / "static")))
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedManifestStaticFilesStorage"},
}

# Workers log through LOGGING above (JSON lines when LOG_FORMAT=json) instead of Celery's format.
CELERY_WORKER_HIJACK_ROOT_LOGGER = False
