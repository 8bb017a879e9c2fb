"""Start everything a developer needs, together: web server, Celery worker with beat, SMTP sink.

Ctrl-C (or SIGTERM) stops all of them; if one exits on its own, the others are stopped too.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

from django.core.management.base import BaseCommand

from notifications import services
from notifications.models import SmtpSettings
from notifications.providers import get_provider

SINK_PORT = 8025


class Command(BaseCommand):
    help = "Run the web server, a Celery worker (with beat) and the development SMTP sink."

    def add_arguments(self, parser) -> None:
        parser.add_argument("--addrport", default="127.0.0.1:8000")

    def handle(self, *args, addrport: str, **options) -> None:
        self._point_unconfigured_settings_at_sink()
        python = sys.executable
        children = {
            "web": [python, "manage.py", "runserver", addrport],
            "worker": [
                python,
                "-m",
                "celery",
                "-A",
                "config",
                "worker",
                "--beat",
                "--pool",
                "threads",
                "--concurrency",
                "20",
                "--loglevel",
                "INFO",
                "--schedule",
                str(_var("celerybeat-schedule")),
            ],
            "sink": [python, "manage.py", "run_dev_sink", "--port", str(SINK_PORT)],
        }
        processes = {name: subprocess.Popen(cmd) for name, cmd in children.items()}
        self.stdout.write(
            f"Serving the admin at http://{addrport}/admin/ — press Ctrl-C to stop everything."
        )
        stopping = False

        def stop(signum, frame):
            nonlocal stopping
            stopping = True

        signal.signal(signal.SIGINT, stop)
        signal.signal(signal.SIGTERM, stop)
        try:
            while not stopping:
                exited = [name for name, p in processes.items() if p.poll() is not None]
                if exited:
                    self.stderr.write(f"{', '.join(exited)} stopped; stopping the rest.")
                    break
                time.sleep(0.5)
        finally:
            for process in processes.values():
                if process.poll() is None:
                    process.send_signal(signal.SIGTERM)
            deadline = time.monotonic() + 15
            for process in processes.values():
                try:
                    process.wait(timeout=max(0.1, deadline - time.monotonic()))
                except subprocess.TimeoutExpired:
                    process.kill()
        self.stdout.write("Stopped.")

    def _point_unconfigured_settings_at_sink(self) -> None:
        settings = SmtpSettings.load()
        if settings.is_configured:
            return
        sink = get_provider("devsink")
        settings.provider = sink.key
        settings.host, settings.port, settings.security = sink.host, sink.port, sink.security
        settings.from_address = "Notifications <notifications@localhost>"
        services.save_settings(settings, source="rundev")
        self.stdout.write(
            f"SMTP settings point at the development sink ({sink.host}:{sink.port}); what it "
            "receives is listed in the admin under 'Received messages'."
        )


def _var(name: str):
    from django.conf import settings

    os.makedirs(settings.VAR_DIR, exist_ok=True)
    return settings.VAR_DIR / name
