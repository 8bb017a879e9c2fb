"""Test settings: fixed throwaway secrets, fast hashing; DATABASE_URL picks SQLite or PostgreSQL."""

from __future__ import annotations

import os

from config.settings.base import *  # noqa: F403
from config.settings.base import VAR_DIR, env

SECRET_KEY = "test-only-secret-key-not-for-production"  # noqa: S105
DEBUG = False
ALLOWED_HOSTS = ["localhost", "127.0.0.1", "testserver"]
# A fixed test key; tests that exercise rotation override this setting.
NOTIFICATIONS_ENCRYPTION_KEYS = ["dGVzdC1rZXktMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDA="]
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
# Worker processes in the tests open the test database themselves, so SQLite's must be a file;
# one per test run, so that two runs side by side do not share it.
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    VAR_DIR.mkdir(parents=True, exist_ok=True)
    DATABASES["default"]["TEST"] = {"NAME": str(VAR_DIR / f"test-db-{os.getpid()}.sqlite3")}
CELERY_BROKER_URL = env.str("CELERY_BROKER_URL", default="memory://")
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
}

# A session with nothing left to send closes sooner than in production, so that tests calling
# deliver() in-process do not wait for it; values from the environment (worker tests) win.
NOTIFICATIONS = {"SESSION_IDLE_SECONDS": 0.1, **NOTIFICATIONS}
