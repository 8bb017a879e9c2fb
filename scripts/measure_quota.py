"""Measure a burst against a provider's published limits: notify() N recipients at once, two real
Celery workers on Redis send them through a loopback SMTP server, and the server's own receive
times say how many arrived in any rolling window. Not a test: it takes as long as the limits do.

    .venv/bin/python scripts/measure_quota.py [--preset office365] [--messages 1000]
        [--database-url postgres://postgres@127.0.0.1:5432/notif_quota] [--broker redis://...]
        [--window-scale 1.0]

The preset's limits are used as they are (Office 365: 30 a minute, so 1,000 take about 33
minutes). ``--window-scale 0.1`` counts each window a tenth as long, for a quick look; the
figures are then given in the scaled windows.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import subprocess
import sys
import tempfile
import time
from bisect import bisect_left
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

WINDOWS = {"minute": 60, "hour": 3600, "day": 86400}


def most_in_any_window(times: list[float], seconds: float) -> int:
    """The most receive times within any ``seconds`` long window."""
    times = sorted(times)
    return max((i - bisect_left(times, t - seconds) + 1 for i, t in enumerate(times)), default=0)


def start_worker(name: str, env: dict[str, str], log: Path) -> subprocess.Popen:
    command = [sys.executable, "-m", "celery", "-A", "config", "worker", "--pool", "threads"]
    command += ["--concurrency", "4", "--loglevel", "WARNING", "--hostname", f"{name}@%h"]
    command += ["--without-gossip", "--without-mingle"]
    return subprocess.Popen(
        command, cwd=ROOT, env=env, stdout=log.open("w"), stderr=subprocess.STDOUT
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="office365")
    parser.add_argument("--messages", type=int, default=1000)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--database-url", default="")
    parser.add_argument("--broker", default="redis://127.0.0.1:6379/9")
    parser.add_argument("--window-scale", type=float, default=1.0)
    args = parser.parse_args()

    scratch = Path(tempfile.mkdtemp(prefix="measure-quota-"))
    database_url = args.database_url or f"sqlite:///{scratch / 'db.sqlite3'}"
    windows = {name: max(1, round(length * args.window_scale)) for name, length in WINDOWS.items()}
    knobs = {"RATE_WINDOW_SECONDS": windows}
    os.environ.update(
        DJANGO_SETTINGS_MODULE="config.settings.test",
        DATABASE_URL=database_url,
        CELERY_BROKER_URL=args.broker,
        NOTIFICATIONS=json.dumps(knobs),
    )
    import logging

    import django

    django.setup()
    logging.getLogger("mail.log").setLevel(logging.WARNING)  # aiosmtpd logs every command
    from django.core.management import call_command

    if database_url.startswith("postgres"):
        call_command("flush", interactive=False, verbosity=0)
    call_command("migrate", verbosity=0)

    import notifications
    from notifications.models import Notification, SmtpSettings, Status
    from tests.smtpserver import SmtpTestServer

    server = SmtpTestServer("none")
    call_command(
        "smtp_settings",
        *("--preset", args.preset, "--host", "127.0.0.1", "--port", str(server.port)),
        *("--security", "none", "--username", "", "--from", "Measure <measure@example.com>"),
        *("--batch", str(args.batch)),
        stdout=io.StringIO(),
    )
    settings = SmtpSettings.load()
    limits = {
        name: getattr(settings, f"rate_per_{name}")
        for name in WINDOWS
        if getattr(settings, f"rate_per_{name}")
    }
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    workers = [start_worker(f"quota{n}", env, scratch / f"w{n}.log") for n in range(2)]
    time.sleep(5)  # the workers connect to the broker before the burst
    started = time.time()
    notifications.notify(
        recipients=[f"user{n}@example.com" for n in range(args.messages)],
        subject="Burst",
        body="One of a burst against the provider's limits.",
    )
    print(
        f"{args.messages} queued at {time.strftime('%H:%M:%S')}; limits {limits}, windows {windows}"
    )
    try:
        while Notification.objects.filter(status__in=[Status.QUEUED, Status.SENDING]).exists():
            time.sleep(5)
            sent = Notification.objects.filter(status=Status.SENT).count()
            print(f"  {time.time() - started:7.0f} s: {sent} sent", flush=True)
    finally:
        for worker in workers:
            worker.terminate()
        for worker in workers:
            worker.wait(30)
    elapsed = time.time() - started
    received = [message.received_at for message in server.messages]
    counts = {status.value: Notification.objects.filter(status=status).count() for status in Status}
    print(f"\n{len(received)} received by the server in {elapsed:.0f} s; rows: {counts}")
    print(
        f"attempts charged: {sorted(set(Notification.objects.values_list('attempts', flat=True)))}"
    )
    print(f"SMTP sessions opened: {server.state.total_sessions}")
    for name, limit in limits.items():
        seconds = windows[name]
        most = most_in_any_window(received, seconds)
        print(f"per {name} ({seconds} s window): limit {limit}, most in any window {most}")
    if received:
        span = max(received) - min(received)
        per_window = len(received) / max(span, 1) * windows["minute"]
        print(f"first to last receipt: {span:.0f} s, {per_window:.1f} per minute window")
    server.stop()


if __name__ == "__main__":
    main()
