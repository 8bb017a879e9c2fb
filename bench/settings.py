"""Benchmark settings: the project's base settings, fixed throwaway secrets, nothing else changed.

DATABASE_URL and CELERY_BROKER_URL come from the environment the harness sets up.
"""

from __future__ import annotations

from config.settings.base import *  # noqa: F403

SECRET_KEY = "bench-only-secret-key-not-for-production"  # noqa: S105
DEBUG = False
NOTIFICATIONS_ENCRYPTION_KEYS = ["YmVuY2gta2V5LTAwMDAwMDAwMDAwMDAwMDAwMDAwMDA="]
