"""Shared fixtures: services the suite needs, and the settings record in a known state."""

from __future__ import annotations

import os

import pytest

from tests.availability import IN_CI

# A real browser: Debian's Chromium driven by Playwright.
from tests.browser import admin_page, browser, page_factory  # noqa: F401  (fixtures)

# Hostile servers: raw TCP that floods or drips replies.
from tests.hostile import hostile_server  # noqa: F401  (fixture)

# Real processes: a private Redis server and Celery workers on the test database.
from tests.processes import celery_worker_factory, redis_server  # noqa: F401  (fixtures)

# Real SMTP servers (aiosmtpd with real TLS and AUTH on loopback), shared by every test module.
from tests.smtpserver import (  # noqa: F401  (fixtures)
    backlogged_port,
    closed_port,
    plain_smtp_server,
    silent_port,
    smtp_pki,
    smtp_server_factory,
    ssl_smtp_server,
    starttls_smtp_server,
)

# A real HTTPS OAuth2 token endpoint on loopback (Microsoft Entra and Google stand-in).
from tests.tokenserver import token_server  # noqa: F401  (fixture)


@pytest.fixture(autouse=True)
def _no_language_left_active():
    """A Chinese page requested through the test client leaves Chinese active in this thread;
    the next test, whatever the order, starts in the default language."""
    yield
    from django.utils import translation

    translation.deactivate()


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


@pytest.fixture
def configure_smtp():
    """Point the stored settings at a test server: ``configure_smtp(server, batch=3, ...)``;
    with ``fallback=True``, the fallback server's settings."""
    from notifications import services
    from notifications.models import SmtpSettings

    def configure(server, *, pki=None, username="", password=None, fallback=False, **fields):
        if fallback:
            pk = SmtpSettings.FALLBACK_PK
            record = SmtpSettings.load_fallback() or SmtpSettings(pk=pk)
        else:
            record = SmtpSettings.load()
        record.host, record.port, record.security = "127.0.0.1", server.port, server.mode
        record.username = username
        record.from_address = fields.pop("from_address", "Site <noreply@example.com>")
        record.allow_plaintext_login = server.mode == "none" and bool(username)
        if pki is not None:
            record.ca_pem = pki.ca_pem
        for name, value in fields.items():
            setattr(record, name, value)
        services.save_settings(record, new_password=password, source="test")
        return record

    return configure


def pytest_collection_modifyitems(config, items) -> None:
    """Deselect (not skip) the tests that need the suite's database to be PostgreSQL."""
    if os.environ.get("DATABASE_URL", "").startswith(("postgres://", "postgresql://")):
        return
    keep = [item for item in items if "postgres_database" not in item.keywords]
    if len(keep) != len(items):
        config.hook.pytest_deselected(items=[i for i in items if i not in keep])
        items[:] = keep
