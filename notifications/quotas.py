"""Provider quotas: rolling-window rate limits shared by every worker, and throttling replies.

A send takes one reservation from every configured window (per minute, hour, day) before its
message is handed over; the windows are counted in the database, under one lock, so the limit
holds across every worker process and host whichever broker is used. A worker refused a
reservation learns when the oldest one in the way expires, so it can wait for exactly that moment
instead of polling.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.db import connection, transaction
from django.db.models import Q
from django.utils import timezone

from . import conf
from .exceptions import NotificationsError
from .models import RateHold, SendReservation

#: The windows an administrator can limit, in the order they are checked.
WINDOWS = ("minute", "hour", "day")
#: How much longer than its nominal length a window is counted (5%, at most 2 s).
MARGIN = 0.05
MAX_MARGIN = timedelta(seconds=2)
# Any constant shared by every process: the key of PostgreSQL's transaction-level advisory lock.
_LOCK_KEY = 0x5E4D_0001


class RateLimitReached(NotificationsError):
    """Every reservation the window allows is taken; ``retry_at`` is when the next one frees up."""

    def __init__(self, *, window: str, limit: int, retry_at: datetime) -> None:
        super().__init__(
            f"At most {limit} messages per {window}: next send at {retry_at:%H:%M:%S}."
        )
        self.window = window
        self.limit = limit
        self.retry_at = retry_at


@dataclass(frozen=True)
class RateLimits:
    """Most messages per rolling minute, hour and day; 0 means no limit for that window."""

    per_minute: int = 0
    per_hour: int = 0
    per_day: int = 0

    def __bool__(self) -> bool:
        return any((self.per_minute, self.per_hour, self.per_day))

    def active(self) -> list[tuple[str, int, timedelta]]:
        """(window, limit, length) for each window that has a limit."""
        lengths = conf.get("RATE_WINDOW_SECONDS")
        limits = (self.per_minute, self.per_hour, self.per_day)
        return [
            (name, limit, timedelta(seconds=lengths[name]))
            for name, limit in zip(WINDOWS, limits, strict=True)
            if limit
        ]


def limits_of(settings) -> RateLimits:
    """The rate limits an SmtpSettings record sets."""
    return RateLimits(settings.rate_per_minute, settings.rate_per_hour, settings.rate_per_day)


def reserve(limits: RateLimits, *, now: datetime | None = None) -> int | None:
    """Take one send from every window and return the reservation's id (None: nothing limited).

    Raises RateLimitReached, taking nothing, when a window is full.
    """
    if not limits:
        return None
    with transaction.atomic():
        _lock()
        now = now or timezone.now()
        if full := _full_window(limits, now):
            raise full
        return SendReservation.objects.create(reserved_at=now).pk


def next_send_at(limits: RateLimits, *, now: datetime | None = None) -> datetime | None:
    """When a send will next be allowed: None for now, else the moment a window has room."""
    if not limits:
        return None
    full = _full_window(limits, now or timezone.now())
    return full.retry_at if full else None


def _full_window(limits: RateLimits, now: datetime) -> RateLimitReached | None:
    """The refusal for the window that stays full longest, or None when every one has room."""
    refusals = []
    for window, limit, window_length in limits.active():
        # A reservation is taken a moment before its message arrives, and arrivals spread by
        # that much: counting a slightly longer window keeps the provider's count within limit.
        length = window_length + min(MAX_MARGIN, window_length * MARGIN)
        in_window = SendReservation.objects.filter(reserved_at__gt=now - length)
        count = in_window.count()
        if count >= limit:
            # The window has room again once the (count - limit + 1) oldest have aged out.
            oldest = in_window.order_by("reserved_at").values_list("reserved_at", flat=True)
            retry_at = oldest[count - limit] + length
            refusals.append(RateLimitReached(window=window, limit=limit, retry_at=retry_at))
    return max(refusals, key=lambda refusal: refusal.retry_at, default=None)


def hold_until(moment: datetime) -> bool:
    """Note that sending waits until ``moment``; True for the one caller that should ask for a
    drain then (every other worker finding the window full leaves it to that one)."""
    now = timezone.now()
    RateHold.objects.get_or_create(pk=RateHold.SINGLETON_PK)
    return bool(
        RateHold.objects.filter(pk=RateHold.SINGLETON_PK)
        .filter(Q(wake_at__isnull=True) | Q(wake_at__lt=now) | Q(wake_at__gt=moment))
        .update(wake_at=moment)
    )


def refund(reservation_id: int | None) -> None:
    """Give a reservation back: nothing was handed over, so the provider counted nothing."""
    if reservation_id is not None:
        SendReservation.objects.filter(pk=reservation_id).delete()


def used(window: str, *, now: datetime | None = None) -> int:
    """How many sends the rolling ``window`` holds now (the health panel's "today: 812 / 2,000")."""
    length = timedelta(seconds=conf.get("RATE_WINDOW_SECONDS")[window])
    since = (now or timezone.now()) - length
    return SendReservation.objects.filter(reserved_at__gt=since).count()


def prune(*, now: datetime | None = None) -> int:
    """Forget reservations older than the longest window; the sweeper calls this."""
    longest = timedelta(seconds=max(conf.get("RATE_WINDOW_SECONDS").values()))
    cutoff = (now or timezone.now()) - longest
    deleted, _ = SendReservation.objects.filter(reserved_at__lte=cutoff).delete()
    return deleted


def _lock() -> None:
    """Serialise reservations: count and insert must not interleave between two workers.

    SQLite's IMMEDIATE transactions already hold the database's write lock from BEGIN.
    """
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_xact_lock(%s)", [_LOCK_KEY])


# --- Throttling replies ------------------------------------------------------------------------


@dataclass(frozen=True)
class Throttle:
    """A reply that limits the sender rather than judging the message."""

    daily: bool  # a daily quota: waiting minutes will not help
    reply: str


_ENHANCED = re.compile(r"\b([245])\.(\d{1,3})\.(\d{1,3})\b")
# Words providers use when they limit a sender (Exchange Online, Gmail, Amazon SES, NetEase, QQ):
# these mean throttling in any reply class; the looser ones only in a temporary (4xx) reply.
_THROTTLE_WORDS = re.compile(
    r"throttl|frequenc|too many (messages|mails|emails|connections|login)", re.IGNORECASE
)
_RATE_WORDS = re.compile(
    r"rate limit|sending rate|\brate\b|server busy|slow down|concurrent",
    re.IGNORECASE,
)
_QUOTA_WORDS = re.compile(
    r"quota|daily (user )?sending limit|sending limit exceeded|message limit|"
    r"limit exceeded|SubmissionQuotaExceeded",
    re.IGNORECASE,
)
_DAILY_WORDS = re.compile(r"\bdaily\b|\bper day\b|\b24 ?hours?\b", re.IGNORECASE)


def throttling(code: int | None, reply: str) -> Throttle | None:
    """Whether ``code``/``reply`` limits the sender (back off, charge no message) and how.

    Throttling words in any reply, rate words in a 4xx, 421 with enhanced status 4.7.x, and quota
    replies of any class (Exchange's "554 5.2.0 ...SubmissionQuotaExceeded" and Gmail's "550 5.4.5
    Daily sending quota exceeded" are 5xx, yet no message is at fault). Per-recipient limits
    (Gmail's 4.2.1 "the user you are trying to contact is receiving mail at a rate…") judge the
    recipient, not us.
    """
    if code is None or code < 400:
        return None
    enhanced = _ENHANCED.search(reply)
    detail = (enhanced.group(2), enhanced.group(3)) if enhanced else None
    if detail == ("2", "1"):
        return None
    if _QUOTA_WORDS.search(reply):
        return Throttle(daily=bool(_DAILY_WORDS.search(reply)), reply=reply)
    if _THROTTLE_WORDS.search(reply) or (code < 500 and _RATE_WORDS.search(reply)):
        return Throttle(daily=False, reply=reply)
    if code == 421 and detail and detail[0] == "7":
        return Throttle(daily=False, reply=reply)
    return None
