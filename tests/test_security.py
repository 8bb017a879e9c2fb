"""Security claims, each tried against the running code: the SMTP password never leaks (database,
admin pages, logs, broker, audit rows, error pages and reports), access control and CSRF, refusal
of header injection, and Django's deployment checks with the production settings.
"""

from __future__ import annotations

import base64
import html
import io
import json
import logging
import os
import re
import secrets
import subprocess
import sys
from collections import deque
from pathlib import Path
from urllib.parse import urljoin, urlsplit

import pytest
from cryptography.fernet import Fernet
from django.contrib.auth.models import Permission
from django.core import mail
from django.core.mail import EmailMessage
from django.core.management import call_command
from django.db import connection, transaction
from django.test import Client
from django.urls import reverse

import notifications
from notifications import services
from notifications.exceptions import InvalidNotification
from notifications.forms import SmtpSettingsForm
from notifications.models import Notification, SettingsChange, SmtpSettings, Status, TestRun
from tests.loopback import wait_for
from tests.smtpserver import USERNAME

ROOT = Path(__file__).resolve().parent.parent

#: The password under test. The core is what any encoding that keeps letters and digits (HTML,
#: JSON, URL or quoted-printable escaping) still shows; the punctuation tests the escaped forms.
CORE = "Kx7Q9zCanaryPw"
CANARY = f"<{CORE}>&'\"%+"
CHANGE_URL = reverse("admin:notifications_smtpsettings_change", args=[1])
DELIVERY_LOG_URL = reverse("admin:notifications_notification_changelist")
AUDIT_URL = reverse("admin:notifications_settingschange_changelist")
XHR = {"HTTP_X_REQUESTED_WITH": "XMLHttpRequest"}


TEST_EMAIL_URL = reverse("admin:notifications_smtpsettings_test_email", args=[1])


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def secret_forms(password: str = CANARY, username: str = USERNAME) -> set[str]:
    """The password as written, escaped, and as AUTH PLAIN / LOGIN carry it."""
    return {
        password,
        CORE,
        html.escape(password),
        json.dumps(password)[1:-1],
        b64(password),
        b64(f"\0{username}\0{password}"),
        b64(f"{username}\0{username}\0{password}"),
    }


def leaks(text: str | bytes, password: str = CANARY) -> list[str]:
    if isinstance(text, bytes):
        text = text.decode("latin-1")
    return sorted(form for form in secret_forms(password) if form in text)


def settings_form(server, *, password: str = "", ca_pem: str = "", **changes) -> dict:
    data = {
        "provider": "",
        "host": "127.0.0.1",
        "port": str(server.port),
        "security": server.mode,
        "username": USERNAME,
        "password": password,
        "from_address": "Site <noreply@example.com>",
        "timeout": "10",
        "batch": "2",
        "ca_pem": ca_pem,
    }
    data.update(changes)
    return data


# --- where the password must never be ----------------------------------------------------------


def database_dump() -> str:
    """Every row of every table, as text."""
    parts = []
    with connection.cursor() as cursor:
        for table in connection.introspection.table_names(cursor):
            cursor.execute(f"SELECT * FROM {connection.ops.quote_name(table)}")  # noqa: S608
            for row in cursor.fetchall():
                for value in row:
                    if isinstance(value, bytes | memoryview):
                        value = bytes(value).decode("latin-1")
                    parts.append(f"{table}: {value}")
    return "\n".join(parts)


def database_files() -> bytes:
    """SQLite: the database file and its write-ahead log, byte for byte ("" on PostgreSQL).

    Read by another process: closing a file descriptor of the database in this one would drop
    this process's POSIX locks on it, and SQLite in another process could then delete the WAL
    and shared-memory files under this one's feet ("disk I/O error" for every later test).
    """
    if connection.vendor != "sqlite":
        return b""
    name = connection.settings_dict["NAME"]
    reader = (
        "import sys, pathlib; "
        "sys.stdout.buffer.write(b''.join(pathlib.Path(p).read_bytes() "
        "for p in sys.argv[1:] if pathlib.Path(p).exists()))"
    )
    return subprocess.run(
        [sys.executable, "-c", reader, name, f"{name}-wal"], capture_output=True, check=True
    ).stdout


def redis_dump(client) -> str:
    """Every key's value, with the Celery message bodies base64-decoded as well."""
    parts = []
    for key in client.scan_iter("*"):
        kind = client.type(key).decode()
        if kind == "list":
            values = client.lrange(key, 0, -1)
        elif kind == "hash":
            values = [k + b"=" + v for k, v in client.hgetall(key).items()]
        elif kind == "set":
            values = list(client.smembers(key))
        elif kind == "zset":
            values = [v for v, _score in client.zrange(key, 0, -1, withscores=True)]
        else:
            values = [client.dump(key) or b""]
        for value in values:
            text = value.decode("latin-1")
            parts.append(text)
            for body in re.findall(r'"body": "([A-Za-z0-9+/=]+)"', text):
                parts.append(base64.b64decode(body).decode("latin-1"))
    return "\n".join(parts)


class _Keep(logging.Handler):
    def __init__(self) -> None:
        super().__init__(level=logging.DEBUG)
        self.texts: list[str] = []
        self.setFormatter(logging.Formatter("%(name)s %(levelname)s %(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        if record.name == "mail.log":
            return  # aiosmtpd's own log: the test SMTP server in this process, not the product
        # The formatted line with any traceback, and every attribute (extra= fields included).
        self.texts.append(self.format(record) + " " + repr(vars(record)))


@pytest.fixture
def all_logs():
    """Every record of every logger at DEBUG, formatted, while the test runs."""
    root = logging.getLogger()
    loggers = [root] + [
        logger for logger in root.manager.loggerDict.values() if isinstance(logger, logging.Logger)
    ]
    saved = [(logger, logger.level, logger.disabled) for logger in loggers]
    keep = _Keep()
    for logger in loggers:
        logger.setLevel(logging.DEBUG)
        logger.disabled = False
        if logger is root or not logger.propagate:
            logger.addHandler(keep)
    yield keep.texts
    for logger, level, disabled in saved:
        logger.setLevel(level)
        logger.disabled = disabled
        logger.removeHandler(keep)


def admin_pages(client: Client, limit: int = 400) -> dict[str, str]:
    """Every admin page a link leads to from /admin/ (logout aside): url → body."""
    pages: dict[str, str] = {}
    seen: set[str] = set()
    queue = deque(["/admin/"])
    while queue and len(seen) < limit:
        url = queue.popleft()
        if url in seen:
            continue
        seen.add(url)
        page = client.get(url)
        assert page.status_code < 500, url
        if page.status_code in (301, 302):
            queue.append(urljoin(url, page["Location"]))
            continue
        body = page.content.decode()
        pages[url] = body
        for href in re.findall(r'href="([^"#]+)', body):
            link = urljoin(url, html.unescape(href))
            parts = urlsplit(link)
            if parts.netloc or not parts.path.startswith("/admin/") or "logout" in parts.path:
                continue
            queue.append(parts.path + (f"?{parts.query}" if parts.query else ""))
    return pages


def send_two_through_a_worker(celery_worker_factory, redis_server, *, already_sent: int):
    """Two notifications sent by a real worker on Redis; the broker's contents before and after
    the worker took them, and the (stopped) worker, for its log."""
    with transaction.atomic():
        notifications.notify(recipients=["w1@example.com", "w2@example.com"], subject="s", body="b")
    client = redis_server.client()
    broker_before = redis_dump(client)
    worker = celery_worker_factory(concurrency=2)
    wait_for(
        lambda: Notification.objects.filter(status=Status.SENT).count() == already_sent + 2,
        timeout=60,
        what="the worker's two sends",
    )
    broker_after = redis_dump(client)
    worker.stop()
    return broker_before, broker_after, worker


@pytest.mark.django_db(transaction=True)
@pytest.mark.redis
def test_password_never_reaches_database_logs_broker_audit_or_test_report(
    admin_client,
    smtp_server_factory,
    smtp_pki,
    celery_worker_factory,
    redis_server,
    all_logs,
):
    """Save through the admin, test (success, then a hostile server that echoes the password in
    its refusal), send in-process at DEBUG and through a real worker on Redis, fail a send."""
    good = smtp_server_factory("starttls", users={USERNAME: CANARY})
    hostile = smtp_server_factory(
        "starttls",
        users={USERNAME: "another-password"},
        auth_failure_reply=f"535 5.7.8 refused {CANARY} {b64(CANARY)}",
    )
    form = settings_form(good, password=CANARY, ca_pem=smtp_pki.ca_pem)
    response = admin_client.post(CHANGE_URL, form)
    assert response.status_code == 302, response.content.decode()[:2000]
    assert SmtpSettings.load().get_password() == CANARY
    pages = []

    url = TEST_EMAIL_URL
    # The test button: with the stored password, then the hostile server with it typed in.
    ok = admin_client.post(url, {**form, "password": "", "test-to": "a@example.com"}, **XHR)
    assert ok.status_code == 200 and good.messages, ok.content.decode()[:2000]
    hostile_form = settings_form(hostile, password=CANARY, ca_pem=smtp_pki.ca_pem)
    failed_fragment = admin_client.post(url, {**hostile_form, "test-to": "a@example.com"}, **XHR)
    failed_page = admin_client.post(url, {**hostile_form, "test-to": "a@example.com"})
    assert [failed_fragment.status_code, failed_page.status_code] == [200, 200]
    assert TestRun.objects.filter(ok=False).count() == 2
    pages += [ok, failed_fragment, failed_page]
    assert hostile.state.credentials == [(USERNAME, CANARY), (USERNAME, CANARY)]

    # A full send in this process, every logger at DEBUG.
    [direct] = notifications.notify(recipients="direct@example.com", subject="s", body="b")
    assert services.deliver() == 1
    direct.refresh_from_db()
    assert direct.status == Status.SENT

    # Through a real worker: the broker holds only ids.
    broker_before, broker_after, worker = send_two_through_a_worker(
        celery_worker_factory, redis_server, already_sent=1
    )

    # A failed send: the hostile server refuses the login and quotes the password back.
    record = SmtpSettings.load()
    record.port = hostile.port
    services.save_settings(record, source="test")
    [refused] = notifications.notify(recipients="refused@example.com", subject="s", body="b")
    services.deliver()
    refused.refresh_from_db()
    record.refresh_from_db()
    # Refused at login, before any row was attempted: the row is not charged, the pause says why.
    assert record.paused_reason and (refused.status, refused.attempts) == (Status.QUEUED, 0)

    changes = list(SettingsChange.objects.values_list("changes", flat=True))
    assert {"password": "changed"}.items() <= changes[-1].items()
    found = {
        "database rows": leaks(database_dump()),
        "database files": leaks(database_files()),
        "log records": leaks("\n".join(all_logs)),
        "worker log": leaks(worker.log.read_text()),
        "broker before the worker": leaks(broker_before),
        "broker after the worker": leaks(broker_after),
        "pause reason and last error": leaks(record.paused_reason + refused.last_error),
        "test pages": leaks("\n".join(p.content.decode() for p in pages)),
    }
    assert found == {where: [] for where in found}
    assert len(all_logs) > 20  # the capture really saw the sends, at DEBUG
    assert "notifications.drain_outbox" in broker_before  # the dump saw the tasks


def oauth_secret_forms(*secrets_: str) -> set[str]:
    """Client secret, key and tokens as written, escaped, and inside an XOAUTH2 line."""
    forms = set()
    for secret in secrets_:
        forms |= {secret, html.escape(secret), json.dumps(secret)[1:-1], b64(secret)}
        forms.add(b64(f"user={USERNAME}\x01auth=Bearer {secret}\x01\x01"))
    return forms


@pytest.mark.django_db(transaction=True)
@pytest.mark.redis
def test_client_secret_key_and_tokens_never_reach_database_logs_broker_pages_or_json(
    admin_client,
    smtp_server_factory,
    smtp_pki,
    token_server,
    celery_worker_factory,
    redis_server,
    all_logs,
    tmp_path,
):
    """Microsoft set up in the admin, Google by the command line; a test, a connection test,
    sends in-process at DEBUG and through a real worker on Redis, for each."""
    from tests.tokenserver import CLIENT_ID, CLIENT_SECRET, TENANT_ID

    server = smtp_server_factory("starttls", xoauth2=token_server.accepts, auth_mechanisms=())
    form = {
        **settings_form(server, ca_pem=smtp_pki.ca_pem),
        **{"auth_method": "microsoft-oauth2", "tenant_id": TENANT_ID, "client_id": CLIENT_ID},
        **{"client_secret": CLIENT_SECRET, "token_url": token_server.microsoft_url},
    }
    response = admin_client.post(CHANGE_URL, form)
    assert response.status_code == 302, response.content.decode()[:2000]
    outputs = []
    for url in (
        TEST_EMAIL_URL,
        reverse("admin:notifications_smtpsettings_test_connection", args=[1]),
    ):
        page = admin_client.post(
            url, {**form, "client_secret": "", "test-to": "a@example.com"}, **XHR
        )
        assert page.status_code == 200 and "✓" in page.content.decode(), page.content.decode()
        outputs.append(page.content.decode())
    notifications.notify(recipients="direct@example.com", subject="s", body="b")
    assert services.deliver() == 1

    key_file = tmp_path / "key.json"
    key_file.write_text(token_server.service_account.key_json)
    out = io.StringIO()
    call_command(
        "smtp_settings",
        "--auth-method",
        "google-oauth2",
        "--service-account-file",
        str(key_file),
        stdout=out,
    )
    outputs.append(out.getvalue())
    for args in (["--to", "a@example.com", "--json"], ["--connect-only", "--json"]):
        out = io.StringIO()
        call_command("smtp_test", *args, stdout=out)
        assert json.loads(out.getvalue())["ok"]
        outputs.append(out.getvalue())

    broker_before, broker_after, worker = send_two_through_a_worker(
        celery_worker_factory, redis_server, already_sent=1
    )
    assert len(server.messages) == 5

    private_key = json.loads(token_server.service_account.key_json)["private_key"]
    key_lines = [line for line in private_key.splitlines() if "PRIVATE KEY" not in line]
    secret_values = [CLIENT_SECRET, *key_lines, *token_server.issued]
    secret_values += [token.rsplit(".", 1)[1] for token in token_server.issued]  # signatures
    forms = oauth_secret_forms(*secret_values)
    assert len(token_server.issued) >= 4

    def found(text: str | bytes) -> list[str]:
        if isinstance(text, bytes):
            text = text.decode("latin-1")
        return sorted(form[:12] for form in forms if form in text)

    assert len(found(" ".join(secret_values))) == len(set(secret_values))  # the scanner works
    pages = admin_pages(admin_client)
    where = {
        "database rows": found(database_dump()),
        "database files": found(database_files()),
        "log records": found("\n".join(all_logs)),
        "worker log": found(worker.log.read_text()),
        "broker before the worker": found(broker_before),
        "broker after the worker": found(broker_after),
        "admin pages": found("\n".join(pages.values())),
        "test pages and command output": found("\n".join(outputs)),
    }
    assert where == {place: [] for place in where}
    assert SettingsChange.objects.first().changes["service_account"] == "changed"
    assert len(pages) > 20 and len(all_logs) > 20


@pytest.mark.django_db
def test_no_admin_page_reachable_by_a_superuser_shows_the_password(
    admin_client, plain_smtp_server, closed_port
):
    response = admin_client.post(
        CHANGE_URL,
        settings_form(
            plain_smtp_server, password=CANARY, allow_plaintext_login="on", security="none"
        ),
    )
    assert response.status_code == 302, response.content.decode()[:2000]
    url = TEST_EMAIL_URL
    # A failed test run, so its record and report have pages too.
    form = settings_form(
        plain_smtp_server, port=str(closed_port), allow_plaintext_login="on", security="none"
    )
    admin_client.post(url, {**form, "test-to": "a@example.com"}, **XHR)
    [row] = notifications.notify(recipients="log@example.com", subject="s", body="b")
    Notification.objects.filter(pk=row.pk).update(status=Status.FAILED, last_error="[auth] 535")
    encrypted = SmtpSettings.load().password_encrypted

    pages = admin_pages(admin_client)
    for url, body in pages.items():
        assert leaks(body) == [], url
        assert encrypted not in body, url
    seen = set(pages)
    assert CHANGE_URL in seen and DELIVERY_LOG_URL in seen and AUDIT_URL in seen
    assert len(seen) > 20


@pytest.fixture
def crash_with_the_password_posted(admin_user, plain_smtp_server, monkeypatch, request):
    """A crash while handling a POST that carries the password: saving the settings, or the test
    button (whose frames also hold the typed password, in ``diagnosis.run_test``)."""
    from notifications import diagnosis

    def crash(*args, **kwargs):
        raise RuntimeError("the database went away")

    form = settings_form(
        plain_smtp_server, password=CANARY, security="none", allow_plaintext_login="on"
    )
    if request.param == "settings save":
        SmtpSettings.load()  # the record exists; the save of the new values is what fails
        monkeypatch.setattr(SmtpSettings, "save", crash)
        url = CHANGE_URL
    else:
        url = TEST_EMAIL_URL
        monkeypatch.setattr(diagnosis, "diagnose", crash)
        form["test-to"] = "a@example.com"
    client = Client(raise_request_exception=False)
    client.force_login(admin_user)

    def post():
        return client.post(url, form)

    return post


CRASH_SITES = ["settings save", "test email"]


@pytest.mark.django_db
@pytest.mark.parametrize("crash_with_the_password_posted", CRASH_SITES, indirect=True)
def test_500_page_with_debug_off_does_not_show_the_password(
    settings, crash_with_the_password_posted
):
    settings.DEBUG = False
    response = crash_with_the_password_posted()
    assert response.status_code == 500
    assert leaks(response.content) == []
    assert b"Traceback" not in response.content and b"RuntimeError" not in response.content


@pytest.mark.django_db
@pytest.mark.parametrize("crash_with_the_password_posted", CRASH_SITES, indirect=True)
def test_error_report_mailed_to_admins_does_not_contain_the_password(
    settings, crash_with_the_password_posted, all_logs
):
    """With ADMINS set, Django mails a report of every 500 (through the outbox, as in production);
    it lists the request's POST unless the view marks fields sensitive."""
    settings.DEBUG = False
    settings.ADMINS = [("Ops", "ops@example.com")]
    settings.EMAIL_BACKEND = "notifications.backends.OutboxEmailBackend"
    assert crash_with_the_password_posted().status_code == 500
    report = Notification.objects.get(recipient="ops@example.com")
    assert "RuntimeError" in report.body  # the report does describe the crash
    found = {
        "mailed report": leaks(report.body + report.html_body),
        "database rows": leaks(database_dump()),
        "log records": leaks("\n".join(all_logs)),
    }
    assert found == {"mailed report": [], "database rows": [], "log records": []}


# --- access ------------------------------------------------------------------------------------


def _protected_gets() -> list[str]:
    return [CHANGE_URL, DELIVERY_LOG_URL, AUDIT_URL]


@pytest.fixture
def staff_client(django_user_model):
    def make(*permissions: str) -> Client:
        user = django_user_model.objects.create_user(
            f"staff{django_user_model.objects.count()}", password="pw", is_staff=True
        )
        for codename in permissions:
            user.user_permissions.add(Permission.objects.get(codename=codename))
        client = Client()
        client.force_login(user)
        return client

    return make


@pytest.mark.django_db
def test_anonymous_users_are_sent_to_login(client, plain_smtp_server):
    [row] = notifications.notify(recipients="a@example.com", subject="s", body="b")
    urls = [*_protected_gets(), reverse("admin:notifications_notification_change", args=[row.pk])]
    for url in urls:
        response = client.get(url)
        assert response.status_code == 302, url
        assert response["Location"].startswith("/admin/login/"), url
    response = client.post(CHANGE_URL, settings_form(plain_smtp_server, password=CANARY))
    assert response.status_code == 302 and response["Location"].startswith("/admin/login/")
    url = TEST_EMAIL_URL
    response = client.post(url, {**settings_form(plain_smtp_server), "test-to": "a@b.cd"})
    assert response.status_code == 302 and response["Location"].startswith("/admin/login/")
    assert not SmtpSettings.objects.filter(host="127.0.0.1").exists()


@pytest.mark.django_db
def test_staff_without_permission_get_403_on_settings_delivery_log_and_test_endpoint(
    staff_client, plain_smtp_server
):
    client = staff_client()
    [row] = notifications.notify(recipients="a@example.com", subject="s", body="b")
    urls = [*_protected_gets(), reverse("admin:notifications_notification_change", args=[row.pk])]
    for url in urls:
        assert client.get(url).status_code == 403, url
    assert client.post(CHANGE_URL, settings_form(plain_smtp_server)).status_code == 403
    url = TEST_EMAIL_URL
    form = {**settings_form(plain_smtp_server), "test-to": "a@example.com"}
    assert client.post(url, form, **XHR).status_code == 403
    assert plain_smtp_server.state.total_sessions == 0


@pytest.mark.django_db
def test_staff_without_permission_get_403_from_the_settings_list_and_create_no_record(
    staff_client,
):
    client = staff_client()
    for url in [reverse("admin:notifications_smtpsettings_changelist"), CHANGE_URL]:
        assert client.get(url).status_code == 403, url
    assert not SmtpSettings.objects.exists()
    # With permission, the list of one goes straight to the record.
    allowed = staff_client("view_smtpsettings")
    response = allowed.get(reverse("admin:notifications_smtpsettings_changelist"))
    assert (response.status_code, response["Location"]) == (302, CHANGE_URL)


@pytest.mark.django_db
def test_view_only_staff_can_read_but_not_change_settings_test_or_act_on_the_log(
    staff_client, plain_smtp_server
):
    client = staff_client("view_smtpsettings", "view_notification")
    assert client.get(CHANGE_URL).status_code == 200
    assert client.post(CHANGE_URL, settings_form(plain_smtp_server)).status_code == 403
    url = TEST_EMAIL_URL
    # The test connects to whatever host the form names: change permission only.
    form = {**settings_form(plain_smtp_server), "test-to": "a@example.com"}
    assert client.post(url, form, **XHR).status_code == 403
    assert plain_smtp_server.state.total_sessions == 0
    [row] = notifications.notify(recipients="a@example.com", subject="s", body="b")
    client.post(DELIVERY_LOG_URL, {"action": "cancel", "_selected_action": [row.pk]})
    assert Notification.objects.get(pk=row.pk).status == Status.QUEUED


@pytest.mark.django_db
def test_posts_without_a_csrf_token_are_refused(admin_user, plain_smtp_server):
    client = Client(enforce_csrf_checks=True)
    client.force_login(admin_user)
    [row] = notifications.notify(recipients="a@example.com", subject="s", body="b")
    version = SmtpSettings.load().version
    form = settings_form(plain_smtp_server, password=CANARY)
    assert client.post(CHANGE_URL, form).status_code == 403
    response = client.post(DELIVERY_LOG_URL, {"action": "cancel", "_selected_action": [row.pk]})
    assert response.status_code == 403
    url = TEST_EMAIL_URL
    assert client.post(url, {**form, "test-to": "a@example.com"}, **XHR).status_code == 403
    assert SmtpSettings.load().version == version
    assert Notification.objects.get(pk=row.pk).status == Status.QUEUED
    assert plain_smtp_server.state.total_sessions == 0


@pytest.mark.django_db
def test_send_test_email_is_rate_limited_per_administrator(
    admin_client, django_user_model, plain_smtp_server, closed_port
):
    url = TEST_EMAIL_URL
    form = {
        **settings_form(plain_smtp_server, port=str(closed_port), username=""),
        "security": "none",
        "test-to": "a@example.com",
    }
    statuses = [admin_client.post(url, form, **XHR).status_code for _ in range(6)]
    assert statuses == [200] * 5 + [429]
    other = django_user_model.objects.create_superuser("other", "o@example.com", "pw")
    other_client = Client()
    other_client.force_login(other)
    assert other_client.post(url, form, **XHR).status_code == 200


# --- header injection --------------------------------------------------------------------------

CONTROL = {"CR": "\r", "LF": "\n", "CRLF": "\r\n", "NUL": "\0"}
CLEAR_ERROR = re.compile(r"line break|NUL|not a valid header name", re.IGNORECASE)


def _injections():
    for name, char in CONTROL.items():
        injected = f"x{char}Bcc: victim@example.com"
        yield name, "subject", {"subject": injected}
        yield name, "recipient", {"recipients": f"a@example.com{char}Bcc: victim@example.com"}
        yield name, "reply-to display name", {"reply_to": f"Name{char}Bcc: v <r@example.com>"}
        yield name, "header value", {"headers": {"X-Tag": injected}}
        yield name, "header name", {"headers": {f"X-Tag{char}Bcc": "x"}}
        yield name, "idempotency key", {"idempotency_key": injected}


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("char", "where", "arguments"),
    list(_injections()),
    ids=[f"{char}-{where}" for char, where, _args in _injections()],
)
def test_control_characters_in_notify_are_refused_with_a_clear_error(char, where, arguments):
    call = {"recipients": "a@example.com", "subject": "s", "body": "b", **arguments}
    with pytest.raises(InvalidNotification) as refused:
        services.notify(**call)
    assert CLEAR_ERROR.search(str(refused.value)), str(refused.value)
    assert not Notification.objects.exists()


#: Line breaks to Python's email package (str.splitlines) besides CR and LF: it refuses to write a
#: header holding one, so a row stored with one could never be sent.
OTHER_BREAKS = {"VT": "\x0b", "FF": "\x0c", "RS": "\x1e", "NEL": "\x85", "LS": "\u2028"}


@pytest.mark.django_db
@pytest.mark.parametrize("char", list(OTHER_BREAKS.values()), ids=list(OTHER_BREAKS))
@pytest.mark.parametrize("where", ["subject", "headers", "reply_to"])
def test_other_line_breaks_in_header_text_are_refused_not_stored_unsendable(char, where):
    value = {
        "subject": f"x{char}y",
        "headers": {"X-Tag": f"x{char}y"},
        "reply_to": f"Na{char}me <r@example.com>",
    }[where]
    call = {"recipients": "a@example.com", "subject": "s", "body": "b", where: value}
    with pytest.raises(InvalidNotification) as refused:
        services.notify(**call)
    assert CLEAR_ERROR.search(str(refused.value)), str(refused.value)
    assert not Notification.objects.exists()


@pytest.mark.django_db
@pytest.mark.parametrize("char", list(CONTROL.values()), ids=list(CONTROL))
def test_control_characters_through_the_email_backend_are_refused(settings, char):
    settings.EMAIL_BACKEND = "notifications.backends.OutboxEmailBackend"
    messages = [
        EmailMessage(f"Hi{char}Bcc: v@example.com", "b", None, ["a@example.com"]),
        EmailMessage("Hi", "b", None, [f"a@example.com{char}Bcc: v@example.com"]),
        EmailMessage("Hi", "b", None, ["a@example.com"], headers={"X-Tag": f"x{char}y"}),
        EmailMessage("Hi", "b", None, ["a@example.com"], reply_to=[f"N{char}x <r@example.com>"]),
    ]
    for message in messages:
        with pytest.raises(InvalidNotification) as refused:
            message.send()
        assert CLEAR_ERROR.search(str(refused.value)), str(refused.value)
    assert not Notification.objects.exists()
    assert mail.get_connection(fail_silently=True).send_messages(messages) == 0


@pytest.mark.django_db
@pytest.mark.parametrize("char", list(CONTROL.values()), ids=list(CONTROL))
@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("from_address", "Site{} <noreply@example.com>"),
        ("from_address", "noreply@exa{}mple.com"),
        ("username", "robot{}@example.com"),
        ("host", "smtp.exa{}mple.com"),
        ("password", "secret{}Bcc"),
    ],
)
def test_control_characters_in_the_settings_form_are_refused(plain_smtp_server, char, field, value):
    data = settings_form(plain_smtp_server, password="pw", security="none")
    data.update(allow_plaintext_login="on", **{field: value.format(char)})
    form = SmtpSettingsForm(data, instance=SmtpSettings.load())
    assert not form.is_valid()
    messages = " ".join(form.errors.get(field, []))
    assert re.search(r"line break|NUL|null characters|not a valid|neither", messages, re.I), (
        form.errors
    )


# --- deployment --------------------------------------------------------------------------------


def test_deploy_check_passes_with_the_production_settings(tmp_path):
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(tmp_path),
        "DJANGO_SETTINGS_MODULE": "config.settings.production",
        "SECRET_KEY": secrets.token_urlsafe(64),
        "ALLOWED_HOSTS": "notifications.example.com",
        "NOTIFICATIONS_ENCRYPTION_KEYS": Fernet.generate_key().decode(),
        "CELERY_BROKER_URL": "redis://127.0.0.1:6379/0",
        "VAR_DIR": str(tmp_path),
    }
    result = subprocess.run(
        [sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "System check identified no issues" in result.stdout
