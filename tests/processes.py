"""Real processes for tests: a private Redis server and Celery worker processes on the test DB."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import redis
from django.db import connection

from config.celery_app import app as celery_app
from tests.availability import require_service
from tests.loopback import free_port, wait_for

ROOT = Path(__file__).resolve().parent.parent


class RedisServer:
    """A redis-server of our own on a free loopback port, which a test may stop and start."""

    def __init__(self, directory: Path) -> None:
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.directory = directory
        self.process: subprocess.Popen | None = None
        self.start()

    def start(self) -> None:
        self.process = subprocess.Popen(
            [
                shutil.which("redis-server") or "redis-server",
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.directory),
            ],
            stdout=subprocess.DEVNULL,
        )
        wait_for(self.ping, timeout=10, what="redis-server to answer PING")

    def ping(self) -> bool:
        try:
            return self.client().ping()
        except redis.ConnectionError:
            return False

    def client(self) -> redis.Redis:
        return redis.Redis.from_url(self.url, socket_timeout=2)

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(10)


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    require_service(
        shutil.which("redis-server") is not None, "redis-server", "apt-get install redis-server"
    )
    server = RedisServer(tmp_path)
    yield server
    server.stop()


@contextmanager
def publishing_to(url: str) -> Iterator[None]:
    """Make this process's Celery app publish to ``url`` (it was set up for the memory broker)."""
    previous = celery_app.conf.broker_url
    celery_app.conf.broker_url = url
    celery_app._after_fork()  # drops the cached connection and producer pools
    try:
        yield
    finally:
        celery_app.conf.broker_url = previous
        celery_app._after_fork()


def current_database_url() -> str:
    """The URL of the database this test runs on, for processes the test starts."""
    db = connection.settings_dict
    if db["ENGINE"].endswith("sqlite3"):
        return f"sqlite:///{db['NAME']}"
    auth = db["USER"] + (f":{db['PASSWORD']}" if db["PASSWORD"] else "")
    return f"postgres://{auth}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/{db['NAME']}"


class Worker:
    def __init__(self, process: subprocess.Popen, log: Path) -> None:
        self.process, self.log = process, log

    def kill(self) -> None:
        """kill -9: no warm shutdown, no acknowledgement, leases left behind."""
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(10)

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                self.kill()


@pytest.fixture
def celery_worker_factory(redis_server: RedisServer, tmp_path: Path):
    """Start real ``celery worker`` processes on the test database and the private Redis.

    ``start(concurrency=4, beat=False, notifications={...})``; the test must use
    ``transactional_db`` so that the workers see committed rows.
    """
    workers: list[Worker] = []

    def start(*, concurrency: int = 4, beat: bool = False, notifications: dict | None = None):
        name = f"w{len(workers)}-{uuid.uuid4().hex[:6]}"
        log = tmp_path / f"{name}.log"
        env = {
            **os.environ,
            "DJANGO_SETTINGS_MODULE": "config.settings.test",
            "DATABASE_URL": current_database_url(),
            "CELERY_BROKER_URL": redis_server.url,
            "NOTIFICATIONS": json.dumps(notifications or {}),
            "NOTIFICATIONS_SWEEP_SECONDS": "1",
            "PYTHONUNBUFFERED": "1",
        }
        command = [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "config",
            "worker",
            "--pool",
            "threads",
            "--concurrency",
            str(concurrency),
            "--loglevel",
            "INFO",
            "--hostname",
            f"{name}@%h",
            "--without-gossip",
            "--without-mingle",
        ]
        if beat:
            command += ["--beat", "--schedule", str(tmp_path / f"{name}-beat")]
        process = subprocess.Popen(
            command,
            cwd=ROOT,
            env=env,
            stdout=log.open("w"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        worker = Worker(process, log)
        workers.append(worker)
        wait_for(
            lambda: "ready." in log.read_text() or process.poll() is not None,
            timeout=60,
            what=f"worker {name} to start",
        )
        assert process.poll() is None, log.read_text()
        return worker

    with publishing_to(redis_server.url):
        yield start
    for worker in workers:
        worker.stop()
