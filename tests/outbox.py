"""Reading the outbox from tests that wait on worker processes."""

from __future__ import annotations

from collections import Counter

from notifications.models import Notification, Status


def statuses() -> dict[str, int]:
    """How many rows are in each status, e.g. {"sent": 198, "queued": 2}."""
    return dict(Counter(Notification.objects.values_list("status", flat=True)))


def all_sent(total: int) -> bool:
    return Notification.objects.filter(status=Status.SENT).count() == total
