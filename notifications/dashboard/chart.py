"""The panel's chart: sent and failed notifications per hour, and the bars the template draws."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from django.db.models import Case, Count, DateTimeField, F, Q, When
from django.db.models.functions import TruncHour
from django.utils import timezone

from notifications.models import Notification, Status

CHART_HOURS = 24

# The chart's geometry in SVG user units; the template scales the whole drawing.
BAR_WIDTH = 10
BAR_GAP = 3
BAR_AREA_HEIGHT = 60


@dataclass(frozen=True)
class Hour:
    """One hour of the chart, starting at ``start`` (on the hour in the active time zone)."""

    start: datetime
    sent: int = 0
    failed: int = 0


@dataclass(frozen=True)
class Bar:
    """Where the template draws one hour: sent from the baseline up, failed stacked above it."""

    hour: Hour
    x: int
    sent_height: int
    failed_height: int

    @property
    def sent_y(self) -> int:
        return BAR_AREA_HEIGHT - self.sent_height

    @property
    def failed_y(self) -> int:
        return self.sent_y - self.failed_height


@dataclass(frozen=True)
class Chart:
    hours: tuple[Hour, ...]
    bar_width: int = BAR_WIDTH
    height: int = BAR_AREA_HEIGHT

    @property
    def sent(self) -> int:
        return sum(hour.sent for hour in self.hours)

    @property
    def failed(self) -> int:
        return sum(hour.failed for hour in self.hours)

    @property
    def width(self) -> int:
        return len(self.hours) * (BAR_WIDTH + BAR_GAP) - BAR_GAP

    def bars(self) -> list[Bar]:
        """Bars scaled to the busiest hour; any hour with a message gets at least 2 units, so a
        single failure among hundreds of sends stays visible."""
        peak = max((hour.sent + hour.failed for hour in self.hours), default=0) or 1

        def scale(count: int) -> int:
            return max(2, round(count * BAR_AREA_HEIGHT / peak)) if count else 0

        return [
            Bar(hour, index * (BAR_WIDTH + BAR_GAP), scale(hour.sent), scale(hour.failed))
            for index, hour in enumerate(self.hours)
        ]


def hourly_chart(*, now: datetime, hours: int = CHART_HOURS) -> Chart:
    """Sent and failed notifications per hour over the last ``hours`` hours, the current one last.

    Hours are truncated in the active time zone, so they line up with the clock the administrator
    reads even in zones a half hour off UTC. A sent row counts at ``sent_at``; a failed row, which
    records no failure time, at ``created_at`` (failures come within MAX_AGE of it anyway).
    """
    current = timezone.localtime(now).replace(minute=0, second=0, microsecond=0)
    # Step back in absolute hours (UTC) so a DST change neither skips nor repeats a bar.
    starts = [
        timezone.localtime(current.astimezone(UTC) - timedelta(hours=back))
        for back in range(hours - 1, -1, -1)
    ]
    moment = Case(
        When(status=Status.SENT, then=F("sent_at")),
        default=F("created_at"),
        output_field=DateTimeField(),
    )
    rows = (
        Notification.objects.filter(
            Q(status=Status.SENT, sent_at__gte=starts[0])
            | Q(status=Status.FAILED, created_at__gte=starts[0])
        )
        .annotate(hour=TruncHour(moment))
        .values("hour", "status")
        .annotate(count=Count("pk"))
        .order_by()
    )
    counts = {(row["hour"], row["status"]): row["count"] for row in rows}
    return Chart(
        tuple(
            Hour(
                start,
                sent=counts.get((start, Status.SENT), 0),
                failed=counts.get((start, Status.FAILED), 0),
            )
            for start in starts
        )
    )
