"""Start everything a developer needs, together: web server, Celery worker with beat, SMTP sink.

Each part logs to ``var/log/<part>.log``; the terminal gets one summary once the admin answers.
If a port is taken or a part stops on its own, the command says which and exits non-zero;
Ctrl-C (or SIGTERM) stops all of them and exits 0.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from config.logging import quiet
from devsink import sink
from notifications import services
from notifications.models import SmtpSettings
from notifications.providers import get_provider

HOST = "127.0.0.1"
#: How long the web server and the sink may take to answer (a cold start on a slow machine).
READY_SECONDS = 120
#: How much of a failed part's log to show.
LOG_TAIL_LINES = 15


class Command(BaseCommand):
    help = "Run the web server, a Celery worker (with beat) and the development SMTP sink."

    def add_arguments(self, parser) -> None:
        parser.add_argument(
            "--port", type=int, default=int(os.environ.get("PORT") or 8000), help="(env PORT)"
        )
        parser.add_argument(
            "--sink-port",
            type=int,
            default=int(os.environ.get("SINK_PORT") or 8025),
            help="(env SINK_PORT)",
        )
        parser.add_argument(
            "--sink-auth",
            action="store_true",
            default=bool(os.environ.get("SINK_AUTH")),
            help=f"The sink offers a login too ({sink.USERNAME} / {sink.PASSWORD}). (SINK_AUTH)",
        )

    def handle(self, *args, port: int, sink_port: int, sink_auth: bool, **options) -> None:
        _require_free(port, "PORT")
        _require_free(sink_port, "SINK_PORT")
        self._point_settings_at_sink(sink_port)
        logs = settings.VAR_DIR / "log"
        logs.mkdir(parents=True, exist_ok=True)
        python = sys.executable
        commands = {
            "web": [python, "manage.py", "runserver", f"{HOST}:{port}"],
            "worker": [
                *(python, "-m", "celery", "-A", "config", "worker", "--beat"),
                *("--pool", "threads", "--concurrency", "20", "--loglevel", "INFO"),
                *("--schedule", str(settings.VAR_DIR / "celerybeat-schedule")),
            ],
            "sink": [
                *(python, "manage.py", "run_dev_sink", "--port", str(sink_port)),
                *(["--auth"] if sink_auth else []),
            ],
        }
        processes = {
            name: _start(command, logs / f"{name}.log") for name, command in commands.items()
        }
        stopping = False

        def stop(signum, frame):
            nonlocal stopping
            stopping = True

        signal.signal(signal.SIGINT, stop)
        signal.signal(signal.SIGTERM, stop)
        failure = ""
        try:
            failure = self._wait_until_ready(processes, port, sink_port, lambda: stopping)
            if not failure and not stopping:
                self._summary(port, sink_port, sink_auth, logs)
            while not failure and not stopping:
                failure = _exited(processes)
                time.sleep(0.5)
        finally:
            _stop_all(processes)
        if failure:
            raise CommandError(failure)
        self.stdout.write("Stopped.")

    def _wait_until_ready(self, processes, port: int, sink_port: int, stopping) -> str:
        """ "" once the admin and the sink answer; otherwise what went wrong."""
        deadline = time.monotonic() + READY_SECONDS
        while time.monotonic() < deadline and not stopping():
            if failure := _exited(processes):
                return failure
            if _admin_answers(port) and _accepts(sink_port):
                return ""
            time.sleep(0.3)
        if stopping():
            return ""
        return f"The admin did not answer within {READY_SECONDS} s; see {settings.VAR_DIR / 'log'}."

    def _summary(self, port: int, sink_port: int, sink_auth: bool, logs: Path) -> None:
        password_file = settings.VAR_DIR / "admin_password"
        login = (
            f"user admin, password in {password_file}"
            if password_file.exists()
            else "your existing superuser"
        )
        sink_login = f" (login {sink.USERNAME} / {sink.PASSWORD})" if sink_auth else ""
        lines = [
            self.style.SUCCESS(f"The admin is ready: http://{HOST}:{port}/admin/"),
            f"  log in:    {login}",
            f"  mail sink: {HOST}:{sink_port}{sink_login}; see 'Received messages' in the admin",
            f"  logs:      {logs}/web.log, worker.log, sink.log",
            "Press Ctrl-C to stop everything.",
        ]
        self.stdout.write("\n".join(lines))

    def _point_settings_at_sink(self, sink_port: int) -> None:
        """Unconfigured settings (or ones on the sink preset) send to this run's sink."""
        record = SmtpSettings.load()
        devsink = get_provider("devsink")
        if record.is_configured and (record.provider != devsink.key or record.port == sink_port):
            return
        record.provider = devsink.key
        record.host, record.port, record.security = devsink.host, sink_port, devsink.security
        record.from_address = record.from_address or "Notifications <notifications@localhost>"
        with quiet("notifications.services"):  # the summary names the sink
            services.save_settings(record, source="rundev")


def _require_free(port: int, variable: str) -> None:
    """Refuse to start on a port something already listens on, naming the knob to turn."""
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((HOST, port))
        except OSError:
            raise CommandError(
                f"Port {port} on {HOST} is in use (another `make run`?): stop it, or choose "
                f"another port, e.g. `make run {variable}={port + 1}`."
            ) from None


def _start(command: list[str], log: Path) -> subprocess.Popen:
    with log.open("ab") as output:
        return subprocess.Popen(command, stdout=output, stderr=subprocess.STDOUT)


def _exited(processes: dict[str, subprocess.Popen]) -> str:
    """ "" while every part runs; otherwise which stopped, with the end of its log."""
    for name, process in processes.items():
        if process.poll() is not None:
            log = settings.VAR_DIR / "log" / f"{name}.log"
            tail = log.read_text(errors="replace").splitlines()[-LOG_TAIL_LINES:]
            return "\n".join(
                [f"The {name} process stopped (exit status {process.returncode}); from {log}:"]
                + [f"  {line}" for line in tail]
            )
    return ""


def _stop_all(processes: dict[str, subprocess.Popen]) -> None:
    for process in processes.values():
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + 15
    for process in processes.values():
        try:
            process.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _admin_answers(port: int) -> bool:
    try:
        urllib.request.urlopen(f"http://{HOST}:{port}/admin/login/", timeout=2).close()
    except urllib.error.HTTPError:
        return True  # an answer, even an error page, means the server serves
    except OSError:
        return False
    return True


def _accepts(port: int) -> bool:
    try:
        socket.create_connection((HOST, port), timeout=1).close()
    except OSError:
        return False
    return True
