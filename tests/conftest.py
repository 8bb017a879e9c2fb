"""Shared fixtures: services the suite needs, and the settings record in a known state."""

from __future__ import annotations

import os

import pytest

IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}


def require_service(available: bool, what: str, how_to_start: str) -> None:
    """Skip on a laptop without the service (one line naming how to start it); fail in CI."""
    if available:
        return
    message = f"{what} is not reachable: start it with `{how_to_start}`."
    if IN_CI:
        pytest.fail(f"{message} It is required in CI (CI=true).", pytrace=False)
    pytest.skip(message)


@pytest.fixture
def admin_user(django_user_model):
    return django_user_model.objects.create_superuser("root", "root@example.com", "pw-for-tests")


@pytest.fixture
def admin_client(client, admin_user):
    client.force_login(admin_user)
    return client


def pytest_configure(config) -> None:
    """With DATABASE_URL on PostgreSQL, check the server once, before any test runs."""
    url = os.environ.get("DATABASE_URL", "")
    if not url.startswith(("postgres://", "postgresql://")):
        return
    import environ
    import psycopg

    db = environ.Env.db_url_config(url)
    try:
        psycopg.connect(
            host=db["HOST"] or None,
            port=db["PORT"] or None,
            user=db["USER"] or None,
            password=db["PASSWORD"] or None,
            dbname="postgres",
            connect_timeout=3,
        ).close()
    except psycopg.OperationalError:
        how = "pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start"
        if IN_CI:
            pytest.exit(f"PostgreSQL at {db['HOST']}:{db['PORT']} is required in CI: `{how}`.", 1)
        pytest.exit(f"Skipping the PostgreSQL run: start PostgreSQL with `{how}`.", 0)
