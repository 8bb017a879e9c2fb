"""The settings page's health panel: numbers from the outbox, test runs and worker heartbeats, and
warnings about the stored settings. Read-only: a handful of aggregate queries per page view."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from django.core.exceptions import ValidationError
from django.db.models import Case, Count, DateTimeField, F, Max, Min, Q, Subquery, Sum, When
from django.db.models.functions import TruncHour
from django.utils import timezone
from django.utils.translation import gettext as _
from django.utils.translation import ngettext

from notifications import phrases, quotas, services
from notifications.models import (
    ConnectBackoff,
    Notification,
    Server,
    SmtpSettings,
    Status,
    TestRun,
    WorkerHeartbeat,
)
from notifications.providers import provider_for_host
from notifications.targets import server_name
from notifications.validators import parse_from_address

CHART_HOURS = 24
#: Past this age the panel asks for a new password ("change the SMTP password regularly").
PASSWORD_MAX_AGE = timedelta(days=180)
#: How long before a client secret expires the page starts warning.
SECRET_EXPIRY_NOTICE = timedelta(days=30)
WAITING = (Status.QUEUED, Status.SENDING)

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
class HealthWarning:
    """Something the administrator should act on; ``field`` names the form field it is about."""

    message: str
    field: str = ""


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
                "time": _clock(self.since),
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
        since, reason = backoff.since or backoff.failed_at, _shown_reason(backoff)
    problem = fallback.paused_text
    if not problem and (own := services.backed_off(SmtpSettings.FALLBACK_PK)):
        problem = _shown_reason(own)
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


def _shown_reason(backoff: ConnectBackoff) -> str:
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
                "time": _clock(settings.paused_at),
            }
        return SendingState("bad", _("Configured, sending paused"), detail)
    if backoff is not None and backoff.throttled:
        return SendingState(
            "warn",
            _("Configured, throttled by the provider"),
            _("%(server)s; sending waits until %(time)s")
            % {"server": server, "time": _clock(backoff.retry_at)},
        )
    if backoff is not None:
        return SendingState(
            "warn",
            _("Configured, server out of reach"),
            _("%(server)s; next try at %(time)s")
            % {"server": server, "time": _clock(backoff.retry_at)},
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


def worker_summary() -> Workers:
    live = services.live_workers().aggregate(alive=Count("pk"), concurrency=Sum("concurrency"))
    return Workers(
        alive=live["alive"],
        last_seen=WorkerHeartbeat.objects.aggregate(last=Max("last_seen"))["last"],
        concurrency=live["concurrency"] or 0,
    )


#: ``warnings()`` reads the connection back-off itself unless given it (None: there is none).
_READ = object()


def warnings(
    *,
    settings: SmtpSettings,
    workers: Workers,
    now: datetime,
    backoff: object = _READ,
    fallback: FallbackState | None = None,
) -> list[HealthWarning]:
    """What needs attention, most urgent first: no worker, then risks in the stored settings."""
    if backoff is _READ:
        backoff = connect_backoff()
    found = [
        _worker_warning(workers, now),
        _capacity_warning(settings, workers),
        # While the fallback sends, its own line in the panel says why the primary is not used.
        None if fallback and fallback.active else _connection_warning(settings, backoff),
        _rate_warning(settings, now, fallback=fallback),
    ]
    if settings.skip_verify:
        found.append(
            HealthWarning(
                _(
                    "Skip Verify is on (insecure): certificate verification is skipped, so "
                    "anyone between this site and the server can read the password and the mail. "
                    "Paste the server's CA certificate into Extra trusted CA (PEM) under "
                    "Advanced security instead."
                ),
                "skip_verify",
            )
        )
    if settings.allow_plaintext_login:
        found.append(
            HealthWarning(
                _(
                    "Plaintext login is allowed: with Security set to None the username and "
                    "password cross the network unencrypted. Keep it for a trusted relay on a "
                    "private network only."
                ),
                "allow_plaintext_login",
            )
        )
    found += [_password_age_warning(settings, now), _office365_warning(settings)]
    found.append(_client_secret_warning(settings, now))
    found.append(_sender_domain_warning(settings))
    return [warning for warning in found if warning is not None]


def _worker_warning(workers: Workers, now: datetime) -> HealthWarning | None:
    if workers.alive:
        return None
    if workers.last_seen is None:
        return HealthWarning(
            _("No worker has reported yet: nothing will be sent until a Celery worker runs.")
        )
    minutes = max(1, int((now - workers.last_seen).total_seconds() // 60))
    return HealthWarning(
        ngettext(
            "No worker has reported in %(minutes)d minute: nothing will be sent.",
            "No worker has reported in %(minutes)d minutes: nothing will be sent.",
            minutes,
        )
        % {"minutes": minutes}
    )


def _capacity_warning(settings: SmtpSettings, workers: Workers) -> HealthWarning | None:
    """Each session is one running task: fewer task slots than Batch cap sending below Batch."""
    if not workers.alive or not workers.concurrency or workers.concurrency >= settings.batch:
        return None  # (no concurrency recorded: unknown, not zero)
    return HealthWarning(
        _(
            "The live workers can run %(concurrency)d tasks at once: at most %(concurrency)d of "
            "Batch %(batch)d in flight. Raise the workers' concurrency (CELERY_WORKER_CONCURRENCY "
            "or --concurrency) or start more workers."
        )
        % {"concurrency": workers.concurrency, "batch": settings.batch},
        "batch",
    )


def _connection_warning(
    settings: SmtpSettings, backoff: ConnectBackoff | None
) -> HealthWarning | None:
    """Sessions that could not open charge no notification, so only this says why mail waits."""
    if backoff is None or settings.paused_reason:
        return None
    reason = _shown_reason(backoff)
    if backoff.throttled:
        return HealthWarning(
            _(
                "Throttled by the provider until %(time)s: “%(reply)s”. Every worker waits, and "
                "no notification is charged for it; if it keeps happening, lower the limits."
            )
            % {"time": _clock(backoff.retry_at), "reply": reason},
            "rate_per_minute",
        )
    return HealthWarning(
        ngettext(
            "The SMTP server could not be reached (%(count)d failed attempt); sending waits and "
            "tries again by itself: %(reason)s",
            "The SMTP server could not be reached (%(count)d failed attempts); sending waits and "
            "tries again by itself: %(reason)s",
            backoff.failures,
        )
        % {"count": backoff.failures, "reason": reason},
        "host",
    )


def _rate_warning(
    settings: SmtpSettings, now: datetime, *, fallback: FallbackState | None = None
) -> HealthWarning | None:
    """A full rate-limit window: what waits, and until when (the limits hold for the fallback
    too, so a paused primary hides it only when no fallback sends)."""
    refusal = quotas.next_send_at(quotas.limits_of(settings), now=now)
    if refusal is None or (settings.paused_reason and not (fallback and fallback.active)):
        return None
    return HealthWarning(
        _("Rate limited: the next send is at %(time)s, when the limits allow it again.")
        % {"time": _clock(refusal)},
        "rate_per_minute",
    )


def _clock(moment: datetime | None) -> str:
    """A moment today as HH:MM in the site's time zone (with the date when it is another day)."""
    if moment is None:
        return "?"
    local = timezone.localtime(moment)
    if local.date() == timezone.localtime().date():
        return local.strftime("%H:%M")
    return local.strftime("%Y-%m-%d %H:%M")


def _password_age_warning(settings: SmtpSettings, now: datetime) -> HealthWarning | None:
    changed = settings.password_changed_at
    if not settings.has_password or changed is None or now - changed < PASSWORD_MAX_AGE:
        return None
    days = (now - changed).days
    return HealthWarning(
        ngettext(
            "The SMTP password was set %(days)d day ago: change the SMTP password regularly.",
            "The SMTP password was set %(days)d days ago: change the SMTP password regularly.",
            days,
        )
        % {"days": days},
        "password",
    )


def _office365_warning(settings: SmtpSettings) -> HealthWarning | None:
    provider = provider_for_host(settings.host)
    if settings.provider != "office365" and (provider is None or provider.key != "office365"):
        return None
    if settings.uses_oauth:
        return None
    return HealthWarning(
        _(
            "Microsoft is retiring basic authentication (username and password) for SMTP AUTH "
            "in Outlook / Office 365. Switch the sign-in method to Microsoft 365 (OAuth2), or "
            "use an SMTP relay connector or another provider."
        ),
        "auth_method",
    )


def _client_secret_warning(settings: SmtpSettings, now: datetime) -> HealthWarning | None:
    """The Microsoft client secret expires (Entra allows two years at most): say so in time."""
    expires = settings.client_secret_expires
    if settings.auth_method != "microsoft-oauth2" or expires is None:
        return None
    days = (expires - timezone.localdate(now)).days
    if days < 0:
        message = _(
            "The client secret expired on %(date)s: sending fails until you create a new one "
            "in Microsoft Entra (Certificates & secrets) and enter it here."
        ) % {"date": expires.isoformat()}
    elif days <= SECRET_EXPIRY_NOTICE.days:
        message = ngettext(
            "The client secret expires in %(days)d day (%(date)s): create a new one in "
            "Microsoft Entra (Certificates & secrets) and enter it here before then.",
            "The client secret expires in %(days)d days (%(date)s): create a new one in "
            "Microsoft Entra (Certificates & secrets) and enter it here before then.",
            days,
        ) % {"days": days, "date": expires.isoformat()}
    else:
        return None
    return HealthWarning(message, "client_secret")


def _sender_domain_warning(settings: SmtpSettings) -> HealthWarning | None:
    """From's domain differs from the login's: servers often refuse it (553 sender rejected)."""
    _local, at, login_domain = settings.username.rpartition("@")
    if not at or not settings.from_address:
        return None
    try:
        from_domain = parse_from_address(settings.from_address).domain
    except ValidationError:
        return None
    if from_domain.lower().rstrip(".") == login_domain.lower().rstrip("."):
        return None
    return HealthWarning(
        _(
            "The From address's domain (%(from_domain)s) differs from the login's "
            "(%(login_domain)s): many servers refuse such mail with “553 sender rejected”. Send "
            "from an address the login may use."
        )
        % {"from_domain": from_domain, "login_domain": login_domain},
        "from_address",
    )
