"""What the end-to-end run stands on: a PostgreSQL database of its own, a private Redis, workers.

Every process is started in its own session and ended by its own id; the database is dropped.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import psycopg
import redis

from tests.loopback import LOOPBACK, free_port, wait_for

ROOT = Path(__file__).resolve().parent.parent


def _end(process: subprocess.Popen, *, grace: float = 20.0) -> None:
    """SIGTERM to the process's own group, SIGKILL after ``grace`` seconds."""
    if process.poll() is not None:
        return
    os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(grace)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(10)


class Database:
    """``CREATE DATABASE notifications_bench_<pid>`` on the local server; ``drop()`` removes it."""

    def __init__(
        self,
        *,
        name: str | None = None,
        host: str = LOOPBACK,
        port: int = 5432,
        user: str = "postgres",
    ) -> None:
        self.name = name or f"notifications_bench_{os.getpid()}"
        self._admin = {"host": host, "port": port, "user": user, "dbname": "postgres"}
        self.url = f"postgres://{user}@{host}:{port}/{self.name}"
        self._admin_sql(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)')
        self._admin_sql(f'CREATE DATABASE "{self.name}"')

    def _admin_sql(self, sql: str) -> None:
        with psycopg.connect(**self._admin, autocommit=True, connect_timeout=5) as connection:
            connection.execute(sql)

    def drop(self) -> None:
        self._admin_sql(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)')

    def backend_pids(self) -> list[int]:
        """The server processes serving connections to this database right now."""
        with psycopg.connect(**self._admin, autocommit=True, connect_timeout=5) as connection:
            rows = connection.execute(
                "SELECT pid FROM pg_stat_activity WHERE datname = %s", [self.name]
            ).fetchall()
        return [pid for (pid,) in rows]


class Redis:
    """A redis-server of our own on a free loopback port, nothing saved to disk."""

    def __init__(self, directory: Path) -> None:
        self.port = free_port()
        self.url = f"redis://{LOOPBACK}:{self.port}/0"
        self.process = subprocess.Popen(
            [
                shutil.which("redis-server") or "redis-server",
                *("--port", str(self.port), "--bind", LOOPBACK, "--save", ""),
                *("--appendonly", "no", "--dir", str(directory)),
            ],
            stdout=subprocess.DEVNULL,
            start_new_session=True,
        )
        try:
            wait_for(self._ping, timeout=10, what="redis-server to answer PING")
        except BaseException:
            self.stop()
            raise

    def _ping(self) -> bool:
        try:
            return bool(redis.Redis.from_url(self.url, socket_timeout=1).ping())
        except redis.ConnectionError:
            return False

    def stop(self) -> None:
        _end(self.process, grace=10)


def child_environment(database_url: str, broker_url: str) -> dict[str, str]:
    """What every child process of the bench runs with (workers, ``manage.py migrate``)."""
    return {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "bench.settings",
        "DATABASE_URL": database_url,
        "CELERY_BROKER_URL": broker_url,
        "PYTHONUNBUFFERED": "1",
    }


def migrate(environment: dict[str, str]) -> None:
    subprocess.run(
        [sys.executable, "manage.py", "migrate", "--noinput", "-v", "0"],
        cwd=ROOT,
        env=environment,
        check=True,
        timeout=300,
    )


@dataclass(frozen=True)
class Memory:
    rss_mb: float
    peak_mb: float  # VmHWM: the most the process ever had resident


class Worker:
    """``celery -A config worker --pool threads --concurrency C``; its log goes to ``log``."""

    def __init__(
        self, name: str, *, concurrency: int, environment: dict[str, str], log: Path
    ) -> None:
        self.name, self.log = name, log
        with log.open("w") as output:
            self.process = subprocess.Popen(
                [
                    *(sys.executable, "-m", "celery", "-A", "config", "worker"),
                    *("--pool", "threads", "--concurrency", str(concurrency)),
                    *("--loglevel", "INFO", "--hostname", f"{name}@%h"),
                    *("--without-gossip", "--without-mingle"),
                ],
                cwd=ROOT,
                env=environment,
                stdout=output,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def wait_ready(self, timeout: float = 90) -> None:
        wait_for(
            lambda: "ready." in self.log.read_text() or self.process.poll() is not None,
            timeout=timeout,
            what=f"worker {self.name} to start",
        )
        if self.process.poll() is not None:
            raise RuntimeError(f"worker {self.name} exited:\n{self.log.read_text()[-3000:]}")

    def memory(self) -> Memory:
        fields: dict[str, float] = {}
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                fields[key] = int(value.split()[0]) / 1024
        return Memory(fields["VmRSS"], fields["VmHWM"])

    def stop(self) -> None:
        _end(self.process)


_TICK = os.sysconf("SC_CLK_TCK")


def process_cpu(pid: int) -> float:
    """CPU seconds (user + system) that process ``pid`` has used so far; 0 if it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / _TICK  # utime, stime


def machine_cpu() -> float:
    """CPU seconds all cores have been busy (not idle, not waiting for I/O) since boot."""
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = values[3] + values[4]
    return (sum(values[:8]) - idle) / _TICK


class CpuMeter:
    """CPU used between ``start()`` and ``stop()``, per named group of our processes.

    A group is a list of pids, or a function returning the pids of the moment (PostgreSQL's
    backends come and go with connections): a process seen only at the stop counts whole, one
    gone by then is missed. Whatever the machine did beyond the groups is "other": the other
    databases' backends and anything else running.
    """

    def __init__(self, groups: dict[str, list[int] | Callable[[], list[int]]]) -> None:
        self.groups = groups
        self._before: dict[str, dict[int, float]] = {}
        self._machine = 0.0

    def _sample(self) -> dict[str, dict[int, float]]:
        return {
            name: {pid: process_cpu(pid) for pid in (pids() if callable(pids) else pids)}
            for name, pids in self.groups.items()
        }

    def start(self) -> None:
        self._before, self._machine = self._sample(), machine_cpu()

    def stop(self) -> dict[str, float]:
        after, machine = self._sample(), machine_cpu()
        used = {
            name: sum(cpu - self._before[name].get(pid, 0.0) for pid, cpu in pids.items())
            for name, pids in after.items()
        }
        used["machine"] = machine - self._machine
        used["other"] = used["machine"] - sum(used[name] for name in self.groups)
        return used
