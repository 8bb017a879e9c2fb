"""Production-like smoke test: the compose services' commands as processes, on PostgreSQL + Redis.

gunicorn, a Celery worker and beat run exactly the commands in docker-compose.yml (only the bind
address and beat's schedule file differ), with ``config.settings.production``, against a database
of this test's own on the local PostgreSQL and a private redis-server. A browser-like client logs
in to the admin as it would behind the TLS-terminating proxy, saves the SMTP settings pointing at
a local SMTP server, and a notification sent with ``notify()`` arrives there.
"""

from __future__ import annotations

import html
import http.client
import json
import os
import re
import secrets
import shlex
import shutil
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from contextlib import suppress
from dataclasses import dataclass, field
from http.cookies import SimpleCookie
from pathlib import Path
from typing import IO, Any
from urllib.parse import urlencode

import environ
import psycopg
import pytest
from cryptography.fernet import Fernet
from psycopg import sql
from ruamel.yaml import YAML

from tests.availability import require_service
from tests.loopback import free_port, wait_for
from tests.processes import RedisServer

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
#: The server the smoke test makes its own database on (the same server as the PostgreSQL pass).
POSTGRES_URL = os.environ.get("TEST_POSTGRES_URL", "postgres://postgres@127.0.0.1:5432/postgres")
HOW_TO_START_POSTGRES = "pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start"
ADMIN_USERNAME = "smoke-admin"
RECIPIENT = "smoke@example.com"

pytestmark = [
    # It never uses the suite's database (it makes a PostgreSQL database of its own), so the
    # Makefile runs it in the first of the suite's two passes only.
    pytest.mark.production,
]


# --- PostgreSQL: a database of the test's own ------------------------------------------------


def _connect(database: str) -> psycopg.Connection:
    db = environ.Env.db_url_config(POSTGRES_URL)
    return psycopg.connect(
        host=db["HOST"] or "127.0.0.1",
        port=db["PORT"] or 5432,
        user=db["USER"] or None,
        password=db["PASSWORD"] or None,
        dbname=database,
        connect_timeout=3,
        autocommit=True,
    )


def _postgres_reachable() -> bool:
    try:
        _connect("postgres").close()
    except psycopg.OperationalError:
        return False
    return True


@pytest.fixture
def smoke_database() -> Iterator[str]:
    """Create ``smoke_<random>`` and return its URL; drop it afterwards, whatever happened."""
    require_service(_postgres_reachable(), "PostgreSQL at 127.0.0.1:5432", HOW_TO_START_POSTGRES)
    name = f"smoke_{uuid.uuid4().hex[:12]}"
    with _connect("postgres") as admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    db = environ.Env.db_url_config(POSTGRES_URL)
    auth = db["USER"] + (f":{db['PASSWORD']}" if db["PASSWORD"] else "")
    try:
        yield f"postgres://{auth}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/{name}"
    finally:
        with _connect("postgres") as admin:
            admin.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[RedisServer]:
    require_service(
        shutil.which("redis-server") is not None, "redis-server", "apt-get install redis-server"
    )
    server = RedisServer(tmp_path)
    try:
        yield server
    finally:
        server.stop()


# --- processes -------------------------------------------------------------------------------


def compose_command(service: str) -> list[str]:
    services = YAML(typ="safe").load((ROOT / "docker-compose.yml").read_text())["services"]
    return list(services[service]["command"])


def with_option(command: list[str], option: str, value: str) -> list[str]:
    """``command`` with ``option``'s value replaced (the option must be there)."""
    index = command.index(option)
    return [*command[: index + 1], value, *command[index + 2 :]]


def local(command: list[str]) -> list[str]:
    """Run the compose command's program from this virtualenv."""
    program = sys.executable if command[0] == "python" else str(BIN / command[0])
    return [program, *command[1:]]


@dataclass
class Stack:
    """The processes this test started, each with its log file; all killed on teardown."""

    directory: Path
    env: dict[str, str]
    processes: dict[str, subprocess.Popen] = field(default_factory=dict)
    logs: list[IO[str]] = field(default_factory=list)

    def log(self, name: str) -> str:
        path = self.directory / f"{name}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def start(self, name: str, command: list[str]) -> subprocess.Popen:
        log = (self.directory / f"{name}.log").open("w")
        self.logs.append(log)
        process = subprocess.Popen(
            command,
            cwd=ROOT,
            env=self.env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.processes[name] = process
        return process

    def run(self, *command: str, timeout: float = 120, env: dict[str, str] | None = None) -> str:
        """Run a one-off command (like ``docker compose run``); its stdout, or fail with both."""
        result = subprocess.run(
            command,
            cwd=ROOT,
            env={**self.env, **(env or {})},
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        assert result.returncode == 0, f"{shlex.join(command)}:\n{result.stdout}\n{result.stderr}"
        return result.stdout

    def manage(self, *args: str, timeout: float = 120, env: dict[str, str] | None = None) -> str:
        return self.run(sys.executable, "manage.py", *args, timeout=timeout, env=env)

    def alive(self, name: str) -> bool:
        return self.processes[name].poll() is None

    def stop(self, name: str, timeout: float = 60) -> int:
        """SIGTERM to the main process (as ``docker stop`` does), then wait for it to exit."""
        process = self.processes[name]
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
        return process.wait(timeout)

    def kill_all(self) -> None:
        """Whatever is still running (a failed test), with its children: SIGKILL."""
        for process in self.processes.values():
            with suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait(10)
        for log in self.logs:
            log.close()


@pytest.fixture
def stack(tmp_path: Path, smoke_database: str, private_redis: RedisServer) -> Iterator[Stack]:
    """The environment production requires, pointing at the test's own PostgreSQL and Redis."""
    require_service((BIN / "gunicorn").exists(), "gunicorn", "make install")
    inherited = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith(("DJANGO_", "CELERY_", "NOTIFICATIONS", "SECURE_", "CSRF_"))
        and name not in {"DATABASE_URL", "REDIS_URL", "SECRET_KEY", "ALLOWED_HOSTS", "DEBUG"}
    }
    env = {
        **inherited,
        "DJANGO_SETTINGS_MODULE": "config.settings.production",
        "SECRET_KEY": secrets.token_urlsafe(50),
        "ALLOWED_HOSTS": "127.0.0.1,localhost",
        "NOTIFICATIONS_ENCRYPTION_KEYS": Fernet.generate_key().decode(),
        "DATABASE_URL": smoke_database,
        "CELERY_BROKER_URL": private_redis.url,
        "VAR_DIR": str(tmp_path / "var"),
        "STATIC_ROOT": str(tmp_path / "static"),
        "LOG_FORMAT": "json",
        "LOG_LEVEL": "INFO",
        # Beat asks the sweeper every second, so the lost-message case below resolves quickly.
        "NOTIFICATIONS_SWEEP_SECONDS": "1",
        "PYTHONUNBUFFERED": "1",
    }
    (tmp_path / "var").mkdir()
    started = Stack(tmp_path, env)
    try:
        yield started
    finally:
        started.kill_all()


# --- a browser behind the TLS-terminating proxy ----------------------------------------------


@dataclass
class Response:
    status: int
    headers: http.client.HTTPMessage
    body: str

    def json(self) -> Any:
        return json.loads(self.body)


class Browser:
    """Cookies and CSRF as a browser handles them, over the proxy's plain-HTTP hop to gunicorn.

    The proxy in front of gunicorn terminates TLS and says so with X-Forwarded-Proto; this client
    plays browser and proxy at once. Secure cookies travel only on those "HTTPS" requests.
    """

    def __init__(self, port: int) -> None:
        self.port = port
        self.origin = f"https://127.0.0.1:{port}"
        self.cookies: dict[str, str] = {}
        self.cookie_flags: dict[str, set[str]] = {}

    def request(
        self, method: str, path: str, *, form: dict[str, str] | None = None, https: bool = True
    ) -> Response:
        headers = {"Host": f"127.0.0.1:{self.port}", "User-Agent": "smoke-test"}
        if https:
            headers["X-Forwarded-Proto"] = "https"
            if self.cookies:
                headers["Cookie"] = "; ".join(f"{k}={v}" for k, v in self.cookies.items())
        body = None
        if form is not None:
            body = urlencode(form)
            headers.update(
                {
                    "Content-Type": "application/x-www-form-urlencoded",
                    "Origin": self.origin,
                    "Referer": self.origin + path,
                }
            )
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        try:
            connection.request(method, path, body=body, headers=headers)
            raw = connection.getresponse()
            response = Response(raw.status, raw.headers, raw.read().decode("utf-8", "replace"))
        finally:
            connection.close()
        for header in response.headers.get_all("Set-Cookie") or []:
            for name, morsel in SimpleCookie(header).items():
                self.cookies[name] = morsel.value
                self.cookie_flags[name] = {flag for flag in ("secure", "httponly") if morsel[flag]}
        return response

    def get(self, path: str, **kwargs: Any) -> Response:
        return self.request("GET", path, **kwargs)

    def post(self, path: str, form: dict[str, str]) -> Response:
        page = self.get(path)
        assert page.status == 200, f"GET {path}: {page.status}"
        token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page.body)
        assert token, f"no CSRF token in {path}"
        return self.request("POST", path, form={"csrfmiddlewaretoken": token.group(1), **form})


def form_errors(page: str) -> str:
    return html.unescape(" | ".join(re.findall(r'class="errorlist[^"]*">(.*?)</ul>', page, re.S)))


def healthz(port: int) -> Response | None:
    """/healthz over plain HTTP, the way a load balancer probes an instance; None if no answer."""
    try:
        return Browser(port).get("/healthz", https=False)
    except OSError:
        return None


def notification_row(database_url: str, pk: int) -> tuple[str, int] | None:
    with psycopg.connect(database_url, connect_timeout=3) as connection:
        return connection.execute(
            "SELECT status, attempts FROM notifications_notification WHERE id = %s", [pk]
        ).fetchone()


def received(server, recipient: str) -> list:
    return [m for m in server.messages if recipient in m.rcpt_tos]


# --- the test --------------------------------------------------------------------------------


def test_compose_commands_serve_the_admin_and_deliver_a_notification(stack, plain_smtp_server):
    env = stack.env
    admin_password = secrets.token_urlsafe(16)

    # The image's build step and the one-shot migrate service; the deploy checks pass as run.
    stack.manage("collectstatic", "--noinput")
    stack.run(*local(compose_command("migrate")))
    stack.manage("check", "--deploy", "--fail-level", "WARNING")
    stack.manage(
        "createsuperuser",
        "--noinput",
        "--username",
        ADMIN_USERNAME,
        "--email",
        "admin@example.com",
        env={"DJANGO_SUPERUSER_PASSWORD": admin_password},
    )

    port = free_port()
    stack.start("web", local(with_option(compose_command("web"), "--bind", f"127.0.0.1:{port}")))
    stack.start("worker", local(compose_command("worker")))
    stack.start(
        "beat",
        local(with_option(compose_command("beat"), "--schedule", str(stack.directory / "beat"))),
    )
    wait_for(
        lambda: healthz(port) is not None or not stack.alive("web"),
        timeout=60,
        what="gunicorn to answer",
    )
    assert stack.alive("web"), stack.log("web")
    wait_for(
        lambda: "ready." in stack.log("worker") or not stack.alive("worker"),
        timeout=60,
        what="the Celery worker to be ready",
    )
    assert stack.alive("worker"), stack.log("worker")

    # /healthz on plain HTTP: the database, the broker and the worker's heartbeat.
    wait_for(lambda: healthz(port).status == 200, timeout=30, what="/healthz to say healthy")
    health = healthz(port).json()
    assert health["database"] and health["broker"] and health["workers"] >= 1
    assert health["smtp_configured"] is False

    # Plain HTTP anywhere else is sent to HTTPS; over "HTTPS", the security headers are there.
    browser = Browser(port)
    insecure = browser.get("/admin/login/", https=False)
    assert insecure.status == 301
    assert insecure.headers["Location"].startswith("https://")
    login_page = browser.get("/admin/login/")
    assert login_page.status == 200
    assert "max-age=31536000" in login_page.headers["Strict-Transport-Security"]
    assert "secure" in browser.cookie_flags["csrftoken"]

    # WhiteNoise serves the collected, hashed static files with a far-future cache lifetime.
    stylesheet = re.search(r'href="(/static/admin/css/base\.[0-9a-f]{12}\.css)"', login_page.body)
    assert stylesheet, "the admin's CSS is not served under a hashed name"
    css = browser.get(stylesheet.group(1))
    assert css.status == 200
    assert "font-family" in css.body
    assert "max-age=315360000" in css.headers["Cache-Control"]

    # Log in like a browser: GET the form, send its CSRF token and the cookie back.
    logged_in = browser.post(
        "/admin/login/?next=/admin/",
        {"username": ADMIN_USERNAME, "password": admin_password, "next": "/admin/"},
    )
    assert logged_in.status == 302, form_errors(logged_in.body) or logged_in.body[:500]
    assert {"secure", "httponly"} <= browser.cookie_flags["sessionid"]

    # Save the SMTP settings through the admin form: the local server, no TLS, no login.
    change_url = "/admin/notifications/smtpsettings/1/change/"
    saved = browser.post(
        change_url,
        {
            "provider": "",
            "host": "127.0.0.1",
            "port": str(plain_smtp_server.port),
            "security": "none",
            "timeout": "10",
            "username": "",
            "password": "",
            "from_address": "Smoke Test <noreply@example.com>",
            "batch": "2",
            "ca_pem": "",
            "_save": "Save",
        },
    )
    assert saved.status == 302, form_errors(saved.body) or saved.body[:500]
    assert healthz(port).json()["smtp_configured"] is True

    # notify() in a one-off process with the production settings, like `docker compose run`.
    created = stack.manage(
        "shell",
        "-c",
        "import json; from notifications import notify; "
        f"rows = notify(recipients={RECIPIENT!r}, subject='Production smoke', "
        "body='Through gunicorn, Redis and a Celery worker.'); "
        "print(json.dumps([row.pk for row in rows]))",
    )
    [pk] = json.loads(created.strip().splitlines()[-1])
    wait_for(
        lambda: (
            received(plain_smtp_server, RECIPIENT)
            and notification_row(env["DATABASE_URL"], pk) == ("sent", 1)
        ),
        timeout=60,
        what=f"the notification to be delivered, row {notification_row(env['DATABASE_URL'], pk)}",
    )
    [message] = received(plain_smtp_server, RECIPIENT)
    assert b"Subject: Production smoke" in message.raw
    assert message.mail_from == "noreply@example.com"

    # A row whose broker message was lost: beat's sweeper finds it and the worker sends it.
    lost = "lost@example.com"
    created = stack.manage(
        "shell",
        "-c",
        "from notifications.models import Notification; "
        f"print(Notification.objects.create(recipient={lost!r}, subject='Lost', body='b').pk)",
    )
    lost_pk = int(created.strip().splitlines()[-1])
    wait_for(
        lambda: notification_row(env["DATABASE_URL"], lost_pk) == ("sent", 1),
        timeout=60,
        what="beat's sweeper to re-enqueue the row with no broker message",
    )
    assert len(received(plain_smtp_server, lost)) == 1

    # Stop everything as `docker compose down` does; each process exits cleanly.
    for name in ("web", "beat", "worker"):
        code = stack.stop(name)
        assert code == 0, f"{name} exited with {code}:\n{stack.log(name)[-3000:]}"

    # JSON lines from the worker, and no secret in any log.
    worker_lines = [line for line in stack.log("worker").splitlines() if line.startswith("{")]
    records = [json.loads(line) for line in worker_lines]
    assert any(record["message"].endswith("ready.") for record in records)
    for name in ("web", "worker", "beat"):
        log = stack.log(name)
        for secret in (admin_password, env["SECRET_KEY"], env["NOTIFICATIONS_ENCRYPTION_KEYS"]):
            assert secret not in log, f"a secret in the {name} log"
