"""Upkeep: the sweeper (expired claims, lost broker messages), worker heartbeats and capacity."""

from __future__ import annotations

from datetime import timedelta

from django.db.models import Sum
from django.utils import timezone

from notifications import conf
from notifications.models import Notification, SmtpSettings, Status, WorkerHeartbeat
from notifications.services.hooks import request_sessions


def sweep() -> int:
    """Re-enqueue work when due rows wait: lost broker messages, dead workers, expired leases."""
    now = timezone.now()
    Notification.objects.filter(status=Status.SENDING, claimed_until__lt=now).release()
    due = Notification.objects.due(now).count()
    if due:
        kick_workers(due=due)
    return due


def kick_workers(*, due: int | None = None) -> None:
    """Ask for up to Batch drain tasks when due rows are waiting (after a save, or a sweep)."""
    primary, servers = SmtpSettings.load_senders()
    if not servers:  # paused, or not configured, with no fallback to send through
        return
    if due is None:
        due = Notification.objects.due().count()
    request_sessions(min(due, primary.batch))


def record_heartbeat(*, name: str, started_at, concurrency: int) -> None:
    """Note that worker ``name`` is alive now."""
    WorkerHeartbeat.objects.update_or_create(
        name=name[:200],
        defaults={
            "last_seen": timezone.now(),
            "started_at": started_at,
            "concurrency": concurrency,
        },
    )


def live_workers():
    """Workers whose last heartbeat is recent enough to count them as alive."""
    horizon = timezone.now() - timedelta(seconds=conf.get("HEARTBEAT_STALE_SECONDS"))
    return WorkerHeartbeat.objects.filter(last_seen__gte=horizon)


def live_concurrency() -> int:
    """How many tasks the live workers can run at once: the most sessions they can hold."""
    return live_workers().aggregate(total=Sum("concurrency"))["total"] or 0
