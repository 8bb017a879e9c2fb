"""Development settings: embedded defaults needing no server; secrets generated once in var/."""

from __future__ import annotations

import secrets
import sys

from cryptography.fernet import Fernet

from config.settings.base import *  # noqa: F403
from config.settings.base import VAR_DIR, env


def _generated_secret(name: str, make) -> str:
    """Return the environment's value, or one generated once and kept under var/ (git-ignored)."""
    if value := env.str(name, default=""):
        return value
    path = VAR_DIR / name.lower()
    if not path.exists():
        path.write_text(make())
        path.chmod(0o600)
        print(f"Generated {name} for development in {path}", file=sys.stderr)
    return path.read_text().strip()


VAR_DIR.mkdir(parents=True, exist_ok=True)
DEBUG = env.bool("DEBUG", default=True)
ALLOWED_HOSTS = env.list("ALLOWED_HOSTS", default=["localhost", "127.0.0.1", "[::1]"])
SECRET_KEY = _generated_secret("SECRET_KEY", lambda: secrets.token_urlsafe(50))
NOTIFICATIONS_ENCRYPTION_KEYS = env.list(
    "NOTIFICATIONS_ENCRYPTION_KEYS",
    default=[
        _generated_secret("NOTIFICATIONS_ENCRYPTION_KEYS", lambda: Fernet.generate_key().decode())
    ],
)

# Without a broker URL, Celery uses kombu's filesystem transport under var/: no server to install.
if not CELERY_BROKER_URL:
    # The transport ignores the host, but kombu warns on every connection when there is none.
    CELERY_BROKER_URL = "filesystem://localhost/"
    _broker_dir = VAR_DIR / "broker"
    for _sub in ("in", "processed"):
        (_broker_dir / _sub).mkdir(parents=True, exist_ok=True)
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        "data_folder_in": str(_broker_dir / "in"),
        "data_folder_out": str(_broker_dir / "in"),
        "processed_folder": str(_broker_dir / "processed"),
        "store_processed": False,
    }
