"""The send pipeline: a worker takes a Batch slot, opens one SMTP session, then streams due rows
through it: claim a few, and for each attempt, send, record.

The session goes to the primary server, or to the fallback while the primary cannot take one
(paused, backed off, or it failed to open just now: DNS, connect, TLS, login) or throttled the
sender; never because of what happened to a message once handed over. Batch and the rate limits
are the primary's, for both servers together.

Shape (Django's ``EmailBackend.send_messages`` is the model)::

    with open_session(config) as session:
        for row in claimed rows:
            attempt(session, row)

The session opens before any row is claimed, so an unreachable server charges no row; a failed
connection backs every worker off (``leases.may_connect``). On the hot path each message costs
one durable write: its outcome, written in the same transaction as the next row's attempt.
"""

from __future__ import annotations

import logging
import math
import random
import threading
import time
import uuid
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
    SmtpTemporaryError,
)
from notifications.models import Notification, SmtpSettings, Status
from notifications.phrases import english, join, map_text, to_json
from notifications.services import hotpath, leases
from notifications.services.hooks import request_sessions, request_sessions_at, send_robust
from notifications.services.settings import pause
from notifications.signals import notification_failed, notification_sent

logger = logging.getLogger("notifications.services")


def deliver(*, prefer: int | None = None) -> int:
    """Send due notifications while a send slot is free; returns how many were sent.

    Holds at most one slot at a time, so at most Batch of these run SMTP sessions at once. After
    giving its slot back it looks again, so a row whose own task found every slot taken is never
    left waiting for the sweeper. ``prefer`` is a row a task was enqueued for: when it is no
    longer due, another worker took it and there is nothing to do.
    """
    if prefer is not None and not Notification.objects.due().filter(pk=prefer).exists():
        return 0
    sent = 0
    budget_end = time.monotonic() + conf.get("DRAIN_SECONDS")
    while time.monotonic() < budget_end:
        primary, servers = SmtpSettings.load_senders()
        if not servers:
            break
        if not Notification.objects.due().exists():
            break
        if (wait := quotas.next_send_at(quotas.limits_of(primary))) is not None:
            _drain_again_at(wait)
            break
        token = uuid.uuid4().hex
        slot = leases.acquire_slot(token, primary.batch)
        if slot is None:
            break
        try:
            drained = _one_session(primary, servers, slot, token, budget_end)
        finally:
            leases.release_slot(slot, token)
        if drained is None:  # could not connect: backed off, or paused
            break
        sent += drained
    return sent


def _one_session(
    primary: SmtpSettings, servers: list[SmtpSettings], slot: int, token: str, budget_end: float
) -> int | None:
    """Open a session to the first of ``servers`` that may be tried and opens (or return None:
    each backed off, paused or failing) and drain due rows through it.

    A primary that fails to open is recorded (backed off, or paused by a setup problem) and the
    fallback is tried within the same slot. While the primary is backed off, the one worker
    whose ``may_connect`` moves its back-off on probes it; that success brings every new session
    back to the primary, and ends the fallback's (``_Drain._settings_current``).
    """
    for settings in servers:
        if not leases.may_connect(settings.pk):
            continue
        opened = _open(settings)
        if opened is None:
            continue
        session, config = opened
        _ask_for_more_sessions(primary.batch)
        with session:
            return _Drain(session, config, settings, primary, slot, token, budget_end).run()
    return None


def _open(settings: SmtpSettings):
    """(session, config) to ``settings``' server, or None after recording why it failed."""
    from notifications.smtp import open_session

    config = None
    started = time.monotonic()
    try:
        config = settings.to_smtp_config()
        session = open_session(config)
    except SmtpConfigurationError as error:
        pause(settings.version, describe(error, config), server=settings.pk)
        return None
    except SmtpError as error:
        reason = describe(error, config)
        delay = leases.connect_failed(reason, server=settings.pk)
        logger.warning(
            "Could not open an SMTP session to the %s server %s:%s after %s ms: %s; trying it "
            "again in %.0f s (no notification is charged for it)",
            settings.server,
            settings.host,
            settings.port,
            round((time.monotonic() - started) * 1000),
            reason,
            delay,
        )
        return None
    except NotificationsError as error:  # e.g. the password cannot be decrypted
        pause(
            settings.version, describe(_as_configuration_error(error), config), server=settings.pk
        )
        return None
    leases.connect_succeeded(settings.pk)
    return session, config


def _drain_again_at(moment) -> None:
    """A rate-limit window is full until ``moment``: one drain request for then, from whoever
    noted it first, instead of every worker polling or all of them waking at once."""
    if quotas.hold_until(moment):
        request_sessions_at(moment)


def _ask_for_more_sessions(batch: int) -> None:
    """A burst wants more than this session: ask for drain tasks for the other free slots.

    Not again for the sessions this process asked for within the last ASKED_SECONDS (they are
    on their way): otherwise each of them, opening, asks for the slots still free, and a burst
    at Batch 50 made hundreds of drain tasks that found every slot taken.
    """
    if batch <= 1:
        return
    claim = conf.get("CLAIM_BATCH")
    due = len(Notification.objects.due().order_by().values_list("pk", flat=True)[: batch * claim])
    wanted = min(leases.free_slots(batch), math.ceil(due / claim) - 1)
    request_sessions(_asked.more(wanted))


class _Asked:
    """The drain tasks this process asked for lately, still counted as on their way."""

    SECONDS = 1.0

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._sessions, self._until = 0, 0.0

    def more(self, wanted: int) -> int:
        """How many of ``wanted`` sessions to ask for now (the rest were asked for lately)."""
        now = time.monotonic()
        with self._lock:
            pending = self._sessions if now < self._until else 0
            extra = wanted - pending
            if extra <= 0:
                return 0
            self._sessions, self._until = pending + extra, now + self.SECONDS
            return extra


_asked = _Asked()


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


class _Drain:
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

    def run(self) -> int:
        remaining = self.settings.messages_per_connection
        lease = conf.get("LEASE_SECONDS")
        started = next_renewal = time.monotonic()
        try:
            while remaining > 0 and time.monotonic() < self.budget_end:
                now = time.monotonic()
                if not self._settings_current(started):
                    break
                if now >= next_renewal:
                    if not leases.renew(self.token, self.slot):
                        break
                    next_renewal = now + lease / 4
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
                outcome = self._attempt(row)
                if outcome is None:
                    quotas.refund(self.reservation)
                    logger.warning("Notification %s: claim lost before sending; skipped", row.pk)
                    continue
                remaining -= 1
                self.pending = outcome
                if outcome.kind in ("paused", "throttled") or not self._still_usable(outcome.error):
                    break
        finally:
            self._write(None)
            leases.unclaim(list(self.claimed), self.token)
        return self.sent

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
                    _drain_again_at(full.retry_at)
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
            row.message_id, message = _message_or_permanent_error(row, self.config.from_address)
            self.session.send(
                message,
                envelope_from=_envelope_address(self.config.from_address),
                recipient=row.recipient,
                deadline=started + leases.message_seconds(),
                meanwhile=start,
            )
        except DatabaseError:
            raise
        except SmtpError as exc:
            error = exc
        except NotificationsError as exc:  # e.g. the password cannot be decrypted
            error = _as_configuration_error(exc)
        except Exception as exc:  # a bug: retry, bounded
            logger.exception("Unexpected error while sending notification %s", row.pk)
            error = _unexpected(exc)
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
        if isinstance(error, SmtpPermanentError) or _exhausted(row, now):
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
            now=timezone.now(),
            lease_end=leases.lease_end(),
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
        _log_attempt(row, self.settings, outcome, written or "claim-lost")


class _Reading(NamedTuple):
    """Every server's (version, Batch, pause) by pk, and whether the primary is backed off (read
    only while a fallback is set: no session needs it otherwise)."""

    servers: dict[int, tuple]
    primary_backed_off: bool


class _SettingsProbe:
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


_settings_probe = _SettingsProbe()


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


def message_for(row: Notification, *, from_address: str) -> tuple[str, bytes]:
    """(Message-ID, bytes) of the email a stored row becomes, sent from ``from_address``."""
    from notifications.mime import render

    return render(
        from_address=from_address,
        to=row.recipient,
        subject=row.subject,
        body=row.body,
        html_body=row.html_body or None,
        reply_to=row.reply_to or None,
        message_id=row.message_id or None,
        headers=row.headers or None,
    )


def _message_or_permanent_error(row: Notification, from_address: str) -> tuple[str, bytes]:
    try:
        return message_for(row, from_address=from_address)
    except ValueError as error:  # this row can never become a message: no point retrying
        raise SmtpPermanentError(str(error), step="message") from None


def _envelope_address(from_address: str) -> str:
    from notifications.smtp import envelope_address

    return envelope_address(from_address)


def _as_configuration_error(error: NotificationsError) -> SmtpConfigurationError:
    return SmtpConfigurationError(str(error), step="config")


def _unexpected(error: Exception) -> SmtpError:
    return SmtpTemporaryError(
        f"Unexpected {type(error).__name__} while sending; see the worker log.", step="internal"
    )


class Described(str):
    """``describe``'s English text (for the row, logs and signals), carrying the phrases it is
    made of as ``detail`` (stored beside it, so that pages show it in the reader's language)."""

    detail: dict


def describe(error: SmtpError, config=None) -> Described:
    """The error as the delivery log and the settings page show it: step, reply, hint; no secret."""
    code = str(error.code) if error.code else ""
    parts = join(f"[{error.step}]", code, error.message, error.hint)
    detail = to_json(parts)
    password = getattr(config, "password", "")
    if password:
        detail = map_text(detail, lambda text: text.replace(password, "********"))
    described = Described(english(detail))
    described.detail = detail
    return described


def _log_attempt(row: Notification, settings, outcome: _Outcome, written: str) -> None:
    """One structured line per delivery attempt; no recipient address, no secret."""
    error = outcome.error
    fields = {
        "notification_id": row.pk,
        "settings_version": settings.version,
        "server": settings.server,
        "host": settings.host,
        "port": settings.port,
        "security": settings.security,
        "reply_code": error.code if error is not None else 250,
        "step": error.step if error is not None else "",
        "attempt": row.attempts,
        "duration_ms": round((time.monotonic() - outcome.started) * 1000),
        "outcome": written,
    }
    logger.log(
        logging.INFO if written.startswith("sent") or written == "retry" else logging.WARNING,
        "delivery attempt %(notification_id)s: %(outcome)s (code %(reply_code)s%(step_text)s) "
        "via %(server)s %(host)s:%(port)s/%(security)s, attempt %(attempt)s, %(duration_ms)s ms, "
        "settings v%(settings_version)s",
        {**fields, "step_text": f" at {fields['step']}" if fields["step"] else ""},
        extra=fields,
    )


def _exhausted(row: Notification, now) -> bool:
    too_old = (now - row.created_at).total_seconds() >= conf.get("MAX_AGE_SECONDS")
    return row.attempts >= conf.get("MAX_ATTEMPTS") or too_old


def retry_delay(attempts: int) -> float:
    """Exponential backoff with jitter: about RETRY_BASE doubling per attempt, capped."""
    base = conf.get("RETRY_BASE_SECONDS") * 2 ** max(0, attempts - 1)
    capped = min(base, conf.get("RETRY_MAX_SECONDS"))
    return capped * random.uniform(0.8, 1.2)  # noqa: S311  (jitter, not security)
