"""The settings page's health panel: numbers from the outbox, test runs and worker heartbeats, and
warnings about the stored settings. Read-only: a handful of aggregate queries per page view.

``state`` holds the facts, ``alerts`` the warnings, ``chart`` the hourly chart; ``health()``
gathers them for one page view.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta

from django.utils import timezone

from notifications import quotas
from notifications.dashboard.alerts import (
    PASSWORD_MAX_AGE,
    SECRET_EXPIRY_NOTICE,
    HealthWarning,
    warnings,
)
from notifications.dashboard.chart import (
    BAR_AREA_HEIGHT,
    BAR_GAP,
    BAR_WIDTH,
    CHART_HOURS,
    Bar,
    Chart,
    Hour,
    hourly_chart,
)
from notifications.dashboard.state import (
    DailyQuota,
    FallbackState,
    Outbox,
    SendingState,
    Workers,
    connect_backoff,
    fallback_state,
    latest_tests,
    outbox_summary,
    sending_state,
    worker_summary,
)
from notifications.models import SmtpSettings, TestRun

__all__ = [
    "BAR_AREA_HEIGHT",
    "BAR_GAP",
    "BAR_WIDTH",
    "CHART_HOURS",
    "PASSWORD_MAX_AGE",
    "SECRET_EXPIRY_NOTICE",
    "Bar",
    "Chart",
    "DailyQuota",
    "FallbackState",
    "Health",
    "HealthWarning",
    "Hour",
    "Outbox",
    "SendingState",
    "Workers",
    "connect_backoff",
    "fallback_state",
    "health",
    "hourly_chart",
    "latest_tests",
    "outbox_summary",
    "sending_state",
    "warnings",
    "worker_summary",
]


@dataclass(frozen=True)
class Health:
    now: datetime
    settings: SmtpSettings
    #: The latest test of the saved settings (of their current version or an earlier one).
    last_test: TestRun | None
    outbox: Outbox
    chart: Chart
    workers: Workers
    warnings: list[HealthWarning] = field(default_factory=list)
    daily_quota: DailyQuota | None = None
    #: A test of unsaved values newer than ``last_test``: shown as such, never as their state.
    scratch_test: TestRun | None = None
    state: SendingState | None = None
    fallback: FallbackState | None = None

    @property
    def paused(self) -> bool:
        """Nothing is sent until the settings are saved: the primary is paused, and no
        fallback sends instead."""
        return bool(self.settings.paused_reason) and not (self.fallback and self.fallback.active)

    @property
    def just_now(self) -> datetime:
        """Moments after this read "just now" rather than "0 minutes ago"."""
        return self.now - timedelta(minutes=1)

    @property
    def last_test_is_current(self) -> bool:
        """The last test was of the settings as they are now, not of an earlier version."""
        return (
            self.last_test is not None and self.last_test.settings_version == self.settings.version
        )


def health(*, settings: SmtpSettings, now: datetime | None = None) -> Health:
    """Everything the panel shows, for the stored ``settings``."""
    now = now or timezone.now()
    workers = worker_summary()
    backoff = connect_backoff()  # read once: the Settings state, the fallback and a warning
    fallback = fallback_state(settings, backoff)
    last_test, scratch_test = latest_tests()
    return Health(
        now=now,
        settings=settings,
        last_test=last_test,
        scratch_test=scratch_test,
        state=sending_state(settings, backoff, fallback),
        outbox=outbox_summary(),
        chart=hourly_chart(now=now),
        workers=workers,
        warnings=warnings(
            settings=settings, workers=workers, now=now, backoff=backoff, fallback=fallback
        ),
        daily_quota=(
            DailyQuota(quotas.used("day", now=now), settings.rate_per_day)
            if settings.rate_per_day
            else None
        ),
        fallback=fallback,
    )
