"""The rows of one open SMTP session (``dispatch`` opens it): claimed a few at a time, each
attempted, sent and recorded, with one durable write a message — its outcome, written in the
same transaction as the next row's attempt."""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from datetime import timedelta
from typing import NamedTuple

from django.db import DatabaseError, transaction
from django.db.models import F
from django.utils import timezone

from notifications import conf, quotas
from notifications.exceptions import (
    NotificationsError,
    SmtpConfigurationError,
    SmtpError,
    SmtpPermanentError,
)
from notifications.models import Notification, SmtpSettings, Status
from notifications.services import hotpath, leases
from notifications.services.attempts import (
    as_configuration_error,
    describe,
    exhausted,
    log_attempt,
    message_or_permanent_error,
    retry_delay,
    unexpected_error,
)
from notifications.services.hooks import request_sessions_at, send_robust
from notifications.services.settings import pause
from notifications.signals import notification_failed, notification_sent
from notifications.smtp import envelope_address

logger = logging.getLogger("notifications.services")


def drain_again_at(moment) -> None:
    """A rate-limit window is full until ``moment``: one drain request for then, from whoever
    noted it first, instead of every worker polling or all of them waking at once."""
    if quotas.hold_until(moment):
        request_sessions_at(moment)


@dataclass
class _Outcome:
    """What to write for one attempted row, and what to say about it once written."""

    row: Notification
    kind: str  # "sent" | "retry" | "failed" | "paused" | "throttled"
    started: float
    fields: dict = field(default_factory=dict)
    error: SmtpError | None = None
    reason: str = ""
    daily: bool = False  # a throttling reply about the daily quota


class Drain:
    """The rows of one session: claimed a few at a time, each attempted, sent and recorded.

    The settings are re-read every SETTINGS_CHECK_SECONDS, once for every session of the process
    (a changed version, a pause, or a Batch lowered below this slot ends the session) and the
    leases held renewed every quarter lease: both by time, never per message. ``settings`` is
    the server this session is open to; ``primary`` holds Batch and the rate limits, which cap
    both servers together.
    """

    def __init__(self, session, config, settings, primary, slot: int, token: str, budget_end):
        self.session, self.config, self.settings = session, config, settings
        self.slot, self.token, self.budget_end = slot, token, budget_end
        self.claimed: deque[Notification] = deque()
        self.pending: _Outcome | None = None  # written with the next attempt's start
        self.sent = 0
        self.limits = quotas.limits_of(primary)
        self.reservation: int | None = None  # the current attempt's place in the rate windows
        self.next_renewal = 0.0  # monotonic: renewed at once, then every quarter lease

    def run(self) -> int:
        remaining = self.settings.messages_per_connection
        started = time.monotonic()
        try:
            while remaining > 0 and time.monotonic() < self.budget_end:
                if not self._settings_current(started) or not self._renew_if_due():
                    break
                if not self.claimed:
                    # The last outcome waits for the first claimed row's start (one write for
                    # both); with nothing claimed it is written before the session idles.
                    limit = min(remaining, conf.get("CLAIM_BATCH"))
                    self.claimed.extend(leases.claim_batch(self.token, limit=limit))
                    if not self.claimed:
                        self._write(None)
                        if _more_arrive_soon(self.budget_end):
                            continue
                        break
                row = self.claimed.popleft()
                if not self._reserve(row):
                    break
                if not self._renew_if_due():  # again: waiting for the rate windows took time
                    quotas.refund(self.reservation)
                    self.claimed.appendleft(row)
                    break
                outcome = self._attempt(row)
                if outcome is None:
                    quotas.refund(self.reservation)
                    logger.warning("Notification %s: claim lost before sending; skipped", row.pk)
                    if not self.session.is_alive():  # the next row must not pay for it
                        break
                    continue
                remaining -= 1
                self.pending = outcome
                if outcome.kind in ("paused", "throttled") or not self._still_usable(outcome.error):
                    break
        finally:
            self._write(None)
            leases.unclaim(list(self.claimed), self.token)
        return self.sent

    def _renew_if_due(self) -> bool:
        """Renew the leases this session holds (its rows and its slot) a quarter lease after the
        last renewal; False when the slot was lost. Checked again just before each start, so
        that the lease a start requires (``leases.start_attempt_query``: one that outlasts the
        send) always has three quarters of LEASE_SECONDS left."""
        now = time.monotonic()
        if now < self.next_renewal:
            return True
        if not leases.renew(self.token, self.slot):
            return False
        self.next_renewal = now + conf.get("LEASE_SECONDS") / 4
        return True

    def _settings_current(self, since: float) -> bool:
        """This server's settings unchanged and not paused, this slot within the primary's
        Batch, and, on the fallback, the primary still unusable."""
        reading = _settings_probe.read(since)
        mine = reading.servers.get(self.settings.pk)
        primary = reading.servers.get(SmtpSettings.PRIMARY_PK)
        if (
            mine is None
            or primary is None
            or mine[0] != self.settings.version
            or mine[2]
            or self.slot > primary[1]
        ):
            return False
        if self.settings.is_fallback and not primary[2]:
            return reading.primary_backed_off  # the primary is back: go to it
        return True

    def _reserve(self, row: Notification) -> bool:
        """A place for ``row`` in the rate-limit windows. When they are full, wait for the moment
        one has room if that is soon; otherwise give ``row`` back and end the session."""
        while True:
            try:
                self.reservation = quotas.reserve(self.limits)
                return True
            except quotas.RateLimitReached as full:
                wait = (full.retry_at - timezone.now()).total_seconds()
                if wait > conf.get("RATE_WAIT_IN_SESSION_SECONDS") or (
                    time.monotonic() + wait >= self.budget_end
                ):
                    self.claimed.appendleft(row)
                    drain_again_at(full.retry_at)
                    return False
                self._write(None)  # the last outcome need not wait with us
                time.sleep(max(wait, 0.01))  # a known moment: sleep to it rather than poll

    def _attempt(self, row: Notification) -> _Outcome | None:
        """Send ``row``; None when its claim was lost first (nothing was sent).

        The last outcome and ``row``'s start are written (``_write``) while MAIL FROM is on its
        way, so that the durable write overlaps that round trip; the message is handed over only
        after the write proved the row still ours. A database error ends the session.
        """
        started = time.monotonic()
        ours: list[bool] = []  # the write's answer, once made

        def start() -> bool:
            ours.append(self._write(row))
            return ours[0]

        try:
            row.message_id, message = message_or_permanent_error(row, self.config.from_address)
            self.session.send(
                message,
                envelope_from=envelope_address(self.config.from_address),
                recipient=row.recipient,
                deadline=started + leases.message_seconds(),
                meanwhile=start,
            )
        except DatabaseError:
            raise
        except SmtpError as exc:
            error = exc
        except NotificationsError as exc:  # e.g. the password cannot be decrypted
            error = as_configuration_error(exc)
        except Exception as exc:  # a bug: retry, bounded
            logger.exception("Unexpected error while sending notification %s", row.pk)
            error = unexpected_error(exc)
        else:
            error = None
        if not (ours[0] if ours else start()):  # failed before MAIL FROM: started now
            return None
        if error is not None:
            return self._failure(row, error, started)
        fields = {
            "sent_at": timezone.now(),
            "message_id": row.message_id,
            "last_error": "",
            "settings_version": self.settings.version,
            "server": self.settings.server,
        }
        return _Outcome(row, "sent", started, fields)

    def _failure(self, row: Notification, error: SmtpError, started: float) -> _Outcome:
        """Reschedule, fail or pause, by the kind of error."""
        now = timezone.now()
        reason = describe(error, self.config)
        base = {
            "last_error": reason,
            "last_error_detail": reason.detail,
            "message_id": row.message_id,
        }
        throttle = self._throttling(error)
        if throttle or error.step in ("message", "mail", "rcpt"):
            quotas.refund(self.reservation)  # nothing was accepted: the provider counted none
        if throttle:
            # The provider limits the sender, whatever the message: it is not charged, and every
            # worker backs off this server (see _announce), so the next session goes to the
            # fallback if there is one. Refused, the message was not accepted: no duplicate.
            fields = {**base, "attempts": F("attempts") - 1, "next_attempt_at": now}
            return _Outcome(row, "throttled", started, fields, error, reason, throttle.daily)
        if isinstance(error, SmtpConfigurationError):
            # Not this message's fault: give the attempt back and pause until the settings change.
            fields = {**base, "attempts": F("attempts") - 1, "next_attempt_at": now}
            return _Outcome(row, "paused", started, fields, error, reason)
        if isinstance(error, SmtpPermanentError) or exhausted(row, now):
            fields = {**base, "settings_version": self.settings.version}
            return _Outcome(row, "failed", started, fields, error, reason)
        delay = retry_delay(row.attempts)
        fields = {**base, "next_attempt_at": now + timedelta(seconds=delay)}
        return _Outcome(row, "retry", started, fields, error, reason)

    def _throttling(self, error: SmtpError) -> quotas.Throttle | None:
        """A throttling or quota reply; or a known provider dropping the connection right after
        MAIL or RCPT, which is how some of them (NetEase, QQ) say the same."""
        if throttle := quotas.throttling(error.code, error.reply):
            return throttle
        if error.code is None and error.step in ("mail", "rcpt") and _known_provider(self.config):
            return quotas.Throttle(daily=False, reply=str(error))
        return None

    def _still_usable(self, error: SmtpError | None) -> bool:
        """After a failed message: whether the connection can carry the next one."""
        return error is None or error.step == "message" or self.session.is_alive()

    def _write(self, upcoming: Notification | None) -> bool:
        """Write the pending outcome and start ``upcoming``'s attempt in one transaction.

        Returns whether ``upcoming`` is still ours to send (False when it is None).
        """
        outcome, self.pending = self.pending, None
        if outcome is None and upcoming is None:
            return False
        if outcome is not None and outcome.kind == "sent" and hotpath.applies():
            written, started = self._record_sent_in_one_statement(outcome, upcoming)
        else:
            with transaction.atomic() if outcome is not None else leases.bookkeeping():
                written = self._record(outcome) if outcome is not None else ""
                started = bool(upcoming and leases.start_attempt_query(upcoming, self.token))
        if started:
            upcoming.attempts += 1
        if outcome is not None:
            self._announce(outcome, written)
        return started

    def _record_sent_in_one_statement(self, outcome: _Outcome, upcoming) -> tuple[str, bool]:
        done, started = hotpath.record_sent_and_start(
            token=self.token,
            row_id=outcome.row.pk,
            fields=outcome.fields,
            upcoming_id=upcoming.pk if upcoming is not None else None,
            send_ends=leases.send_ends(),
        )
        if done:
            return "sent", started
        with transaction.atomic():  # the claim passed on: the ORM path says what to record
            return self._record(outcome), started

    def _record(self, outcome: _Outcome) -> str:
        """The outcome's update; returns what the log calls it ("" when the claim was lost)."""
        row = outcome.row
        owned = Notification.objects.owned(self.token).filter(pk=row.pk)
        status = {
            "sent": Status.SENT,
            "retry": Status.QUEUED,
            "paused": Status.QUEUED,
            "throttled": Status.QUEUED,
            "failed": Status.FAILED,
        }[outcome.kind]
        if owned.release(status, **outcome.fields):
            return outcome.kind
        if outcome.kind == "sent":
            # The server took it: say so even though the claim passed on (a lease outlived by a
            # stalled database), so that the row is neither sent again nor called a crash.
            if (
                Notification.objects.filter(pk=row.pk)
                .exclude(status=Status.SENT)
                .release(Status.SENT, **outcome.fields)
            ):
                return "sent-claim-lost"
        return ""

    def _announce(self, outcome: _Outcome, written: str) -> None:
        """Signals, the pause and the log line of an outcome just written."""
        row = outcome.row
        if outcome.kind in ("paused", "throttled"):
            row.attempts -= 1  # given back, so the log agrees with the row
        if outcome.kind == "paused":
            pause(self.settings.version, outcome.reason, server=self.settings.pk)
        elif outcome.kind == "throttled":
            _back_off_throttled(self.settings.pk, self.limits, outcome)
        if written in ("sent", "sent-claim-lost"):
            self.sent += 1
            row.status, row.sent_at = Status.SENT, outcome.fields["sent_at"]
            row.settings_version, row.server = self.settings.version, self.settings.server
            send_robust(notification_sent, sender=Notification, notification=row)
        elif written == "failed":
            row.status, row.last_error = Status.FAILED, outcome.reason
            logger.warning("Notification %s failed: %s", row.pk, outcome.reason)
            send_robust(
                notification_failed, sender=Notification, notification=row, error=outcome.reason
            )
        log_attempt(
            row,
            self.settings,
            error=outcome.error,
            started=outcome.started,
            written=written or "claim-lost",
        )


class _Reading(NamedTuple):
    """Every server's (version, Batch, pause) by pk, and whether the primary is backed off (read
    only while a fallback is set: no session needs it otherwise)."""

    servers: dict[int, tuple]
    primary_backed_off: bool


class SettingsProbe:
    """The settings read at most once per SETTINGS_CHECK_SECONDS for every session of this
    process: per session, Batch 50 made that 250 queries a second, and a fallback session's
    look at the primary's back-off one a message. A session uses only a reading taken after it
    started, so it never acts on one older than the settings it opened with."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._reading: tuple[float, _Reading] | None = None  # (when, what)

    def read(self, since: float) -> _Reading:
        now = time.monotonic()
        with self._lock:
            reading = self._reading
        if (
            reading is not None
            and since <= reading[0]
            and now - reading[0] < conf.get("SETTINGS_CHECK_SECONDS")
        ):
            return reading[1]
        servers = {
            pk: rest
            for pk, *rest in SmtpSettings.objects.values_list(
                "pk", "version", "batch", "paused_reason"
            )
        }
        backed_off = SmtpSettings.FALLBACK_PK in servers and (
            leases.backed_off(SmtpSettings.PRIMARY_PK) is not None
        )
        fresh = _Reading(servers, backed_off)
        with self._lock:
            self._reading = (now, fresh)
        return fresh


_settings_probe = SettingsProbe()


def _back_off_throttled(server: int, limits: quotas.RateLimits, outcome: _Outcome) -> None:
    """Every worker waits for ``server`` after a throttling reply; after a daily-quota one, until
    the day's window has room (when a daily limit is set) and at least THROTTLE_DAILY_SECONDS."""
    at_least = 0.0
    if outcome.daily:
        at_least = conf.get("THROTTLE_DAILY_SECONDS")
        if window_opens := quotas.next_send_at(limits):
            at_least = max(at_least, (window_opens - timezone.now()).total_seconds())
    error = outcome.error
    # The server's own words, which the health panel quotes ("throttled by the provider until…").
    words = f"{error.code} {error.reply}" if error is not None and error.code else outcome.reason
    delay = leases.connect_failed(words, server=server, throttled=True, at_least=at_least)
    logger.warning(
        "Throttled by the provider (%s); every worker waits %.0f s for this server, no "
        "notification is charged",
        outcome.reason,
        delay,
    )


def _known_provider(config) -> bool:
    from notifications.providers import provider_for_host

    return config is not None and provider_for_host(config.host) is not None


def _more_arrive_soon(budget_end: float) -> bool:
    """Keep an open session a moment for rows still arriving, rather than reconnecting for each.

    The callers' drain requests are only hints; a trickle of notifications is served by the
    sessions already open.
    """
    idle_end = min(budget_end, time.monotonic() + conf.get("SESSION_IDLE_SECONDS"))
    while time.monotonic() < idle_end:
        time.sleep(conf.get("IDLE_POLL_SECONDS"))
        if Notification.objects.due().exists():
            return True
    return False
