"""What the panel states as fact: the outbox, the workers, which server sends and whether it
can, and the latest tests."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from django.db.models import Count, Max, Min, Q, Subquery, Sum
from django.utils import timezone
from django.utils.translation import gettext as _

from notifications import phrases, services
from notifications.models import (
    ConnectBackoff,
    Notification,
    Server,
    SmtpSettings,
    Status,
    TestRun,
    WorkerHeartbeat,
)
from notifications.targets import server_name

WAITING = (Status.QUEUED, Status.SENDING)


@dataclass(frozen=True)
class Outbox:
    waiting: int  # queued or being sent
    oldest_queued_at: datetime | None
    last_sent_at: datetime | None
    last_error: Notification | None  # the latest waiting or failed row that has an error


@dataclass(frozen=True)
class Workers:
    alive: int
    last_seen: datetime | None  # the latest heartbeat of any worker, alive or gone
    concurrency: int = 0  # the live workers' pool sizes, summed: the most sessions they can hold


@dataclass(frozen=True)
class DailyQuota:
    used: int  # sends in the last rolling day
    limit: int


@dataclass(frozen=True)
class SendingState:
    """What the "Settings" fact says: green only when nothing holds sending back.

    ``tone`` is "good", "warn" or "bad"; ``label`` the state, ``detail`` the server and, for
    a state that ends by itself, when.
    """

    tone: str
    label: str
    detail: str


@dataclass(frozen=True)
class FallbackState:
    """Which server sends now, when a fallback is set, and why.

    ``active``: sessions go to the fallback, since ``since``, because of ``reason`` (the
    primary's pause or its last failure); ``problem``: why the fallback itself cannot be used.
    """

    fallback: SmtpSettings
    active: bool = False
    since: datetime | None = None
    reason: str = ""
    problem: str = ""
    primary_paused: bool = False

    @property
    def message(self) -> str:
        if self.active:
            message = _("Using the fallback server since %(time)s: %(reason)s") % {
                "time": clock(self.since),
                "reason": self.reason,
            }
            if self.primary_paused:  # no cool-down ends that: the administrator must act
                message += " " + _("Fix the primary server's settings and save them to return.")
            return message
        if self.reason:  # the primary fails, and the fallback cannot take over
            return _("The primary server fails (%(reason)s) and the fallback cannot take over.") % {
                "reason": self.reason
            }
        return _("Using the primary server.")


def fallback_state(primary: SmtpSettings, backoff: ConnectBackoff | None) -> FallbackState | None:
    """Whether the fallback sends now and why (None without a fallback): it does while the
    primary is paused or backed off (``backoff``, the primary's), if it can send itself."""
    fallback = SmtpSettings.load_fallback()
    if fallback is None:
        return None
    since, reason = None, ""
    if primary.paused_reason:
        since, reason = primary.paused_at, primary.paused_text
    elif backoff is not None:
        since, reason = backoff.since or backoff.failed_at, shown_reason(backoff)
    problem = fallback.paused_text
    if not problem and (own := services.backed_off(SmtpSettings.FALLBACK_PK)):
        problem = shown_reason(own)
    return FallbackState(
        fallback,
        active=bool(reason) and fallback.can_send,
        since=since,
        reason=reason,
        problem=problem,
        primary_paused=bool(primary.paused_reason),
    )


def latest_tests() -> tuple[TestRun | None, TestRun | None]:
    """The latest test of the saved settings, and a test of unsaved values run after it (None
    when there is none): one query."""

    def latest(*, saved: bool) -> Subquery:
        # The primary's: the fallback's tests are listed with the test emails, not its state.
        tests = TestRun.objects.filter(saved=saved, server=Server.PRIMARY)
        return Subquery(tests.values("pk")[:1])

    runs = list(
        TestRun.objects.filter(Q(pk=latest(saved=True)) | Q(pk=latest(saved=False)))
        .select_related("created_by")
        .order_by()
    )
    saved = next((run for run in runs if run.saved), None)
    scratch = next((run for run in runs if not run.saved), None)
    if scratch is not None and saved is not None and _order(scratch) < _order(saved):
        scratch = None  # tested before the saved settings' last test: nothing to tell
    return saved, scratch


def _order(run: TestRun) -> tuple[datetime, int]:
    """TestRun.Meta.ordering's key: a later run compares greater."""
    return run.created_at, run.pk


def connect_backoff() -> ConnectBackoff | None:
    """The primary server's connection back-off while it holds sessions back, else None."""
    return services.backed_off(SmtpSettings.PRIMARY_PK)


def shown_reason(backoff: ConnectBackoff) -> str:
    """A back-off's reason in the reader's language."""
    return phrases.shown(backoff.reason, backoff.reason_detail)


def sending_state(
    settings: SmtpSettings,
    backoff: ConnectBackoff | None,
    fallback: FallbackState | None = None,
) -> SendingState:
    """Configured and sending, or what stops or delays it: paused (until saved), the server out
    of reach, the provider throttling (both end by themselves); amber while the fallback sends
    in the primary's place (its own line says since when and why)."""
    if not settings.is_configured:
        return SendingState("bad", _("Not configured"), _("choose a provider preset below"))
    server = server_name(settings.host, settings.port)
    if fallback is not None and fallback.active:
        spare = fallback.fallback
        return SendingState(
            "warn",
            _("Configured, sending through the fallback server"),
            _("%(server)s instead of %(primary)s")
            % {"server": server_name(spare.host, spare.port), "primary": server},
        )
    if settings.paused_reason:
        # The reason is the alert atop the panel; here, that nothing goes out until a save.
        detail = _("%(server)s; paused until the settings are saved") % {"server": server}
        if settings.paused_at is not None:
            detail = _("%(server)s; paused since %(time)s, until the settings are saved") % {
                "server": server,
                "time": clock(settings.paused_at),
            }
        return SendingState("bad", _("Configured, sending paused"), detail)
    if backoff is not None and backoff.throttled:
        return SendingState(
            "warn",
            _("Configured, throttled by the provider"),
            _("%(server)s; sending waits until %(time)s")
            % {"server": server, "time": clock(backoff.retry_at)},
        )
    if backoff is not None:
        return SendingState(
            "warn",
            _("Configured, server out of reach"),
            _("%(server)s; next try at %(time)s")
            % {"server": server, "time": clock(backoff.retry_at)},
        )
    return SendingState("good", _("Configured"), server)


def outbox_summary() -> Outbox:
    totals = Notification.objects.aggregate(
        waiting=Count("pk", filter=Q(status__in=WAITING)),
        oldest_queued_at=Min("created_at", filter=Q(status=Status.QUEUED)),
        last_sent_at=Max("sent_at"),
    )
    last_error = (
        Notification.objects.filter(status__in=[Status.QUEUED, Status.FAILED])
        .exclude(last_error="")
        .only("pk", "status", "last_error", "last_error_detail", "created_at")
        .first()
    )
    return Outbox(**totals, last_error=last_error)


def worker_summary() -> Workers:
    live = services.live_workers().aggregate(alive=Count("pk"), concurrency=Sum("concurrency"))
    return Workers(
        alive=live["alive"],
        last_seen=WorkerHeartbeat.objects.aggregate(last=Max("last_seen"))["last"],
        concurrency=live["concurrency"] or 0,
    )


def clock(moment: datetime | None) -> str:
    """A moment today as HH:MM in the site's time zone (with the date when it is another day)."""
    if moment is None:
        return "?"
    local = timezone.localtime(moment)
    if local.date() == timezone.localtime().date():
        return local.strftime("%H:%M")
    return local.strftime("%Y-%m-%d %H:%M")
