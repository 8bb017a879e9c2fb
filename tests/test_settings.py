"""Configuration: production refuses to start without its secrets; development makes them once."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from cryptography.fernet import Fernet

ROOT = Path(__file__).resolve().parent.parent
PROBE = "import django; django.setup(); from django.conf import settings; print(settings.DEBUG)"


def start(settings_module: str, tmp_path: Path, **env: str) -> subprocess.CompletedProcess:
    clean = {
        k: v
        for k, v in os.environ.items()
        if k
        not in {
            "SECRET_KEY",
            "ALLOWED_HOSTS",
            "NOTIFICATIONS_ENCRYPTION_KEYS",
            "CELERY_BROKER_URL",
            "REDIS_URL",
            "DATABASE_URL",
        }
    }
    return subprocess.run(
        [sys.executable, "-c", PROBE],
        cwd=ROOT,
        env={**clean, "DJANGO_SETTINGS_MODULE": settings_module, "VAR_DIR": str(tmp_path), **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


PRODUCTION_ENV = {
    "SECRET_KEY": "x" * 50,
    "ALLOWED_HOSTS": "mail.example.com",
    "NOTIFICATIONS_ENCRYPTION_KEYS": Fernet.generate_key().decode(),
    "CELERY_BROKER_URL": "redis://127.0.0.1:6379/0",
}


def test_production_starts_with_its_secrets(tmp_path):
    result = start("config.settings.production", tmp_path, **PRODUCTION_ENV)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "False"


def test_production_refuses_to_start_without_each_secret(tmp_path):
    for missing in ("SECRET_KEY", "ALLOWED_HOSTS", "NOTIFICATIONS_ENCRYPTION_KEYS"):
        env = {k: v for k, v in PRODUCTION_ENV.items() if k != missing}
        result = start("config.settings.production", tmp_path, **env)
        assert result.returncode != 0
        assert f"{missing} must be set" in result.stderr


def test_development_generates_its_secrets_once_and_says_so(tmp_path):
    first = start("config.settings.local", tmp_path)
    assert first.returncode == 0, first.stderr
    assert "Generated SECRET_KEY" in first.stderr
    assert "Generated NOTIFICATIONS_ENCRYPTION_KEYS" in first.stderr
    key = (tmp_path / "notifications_encryption_keys").read_text()
    Fernet(key)  # a usable key
    second = start("config.settings.local", tmp_path)
    assert "Generated" not in second.stderr
    assert (tmp_path / "notifications_encryption_keys").read_text() == key
    assert oct((tmp_path / "secret_key").stat().st_mode & 0o777) == "0o600"
