"""Leases: claims on due rows, the Batch send slots, and the shared permit to (re)connect.

Every lease has an owner token and an end; an owner that outlives its lease has lost it. A
session renews what it holds while it holds it (``renew``), a row is sent only after an update
proving its owner still holds it (``start_attempt``), and one message's send is bounded well
below the lease (``message_seconds``), so no healthy worker outlives a lease.
"""

from __future__ import annotations

import logging
import os
import random
import socket
from contextlib import contextmanager
from datetime import timedelta

from django.db import connection, transaction
from django.db.models import F, Q
from django.utils import timezone

from notifications import conf
from notifications.models import ConnectBackoff, Notification, SendSlot, SmtpSettings, Status
from notifications.phrases import Phrase, english, to_json
from notifications.phrases import phrase as _
from notifications.services import hotpath
from notifications.services.hooks import send_robust
from notifications.signals import notification_failed

logger = logging.getLogger("notifications.services")

PRIMARY = SmtpSettings.PRIMARY_PK


def lease_end():
    return timezone.now() + timedelta(seconds=conf.get("LEASE_SECONDS"))


def message_seconds() -> float:
    """The most one message's whole SMTP exchange may take: SEND_SECONDS, and at most a third
    of the lease, so a row's send always ends while its claim holds."""
    return min(conf.get("SEND_SECONDS"), conf.get("LEASE_SECONDS") / 3)


@contextmanager
def bookkeeping():
    """A transaction for a worker's own bookkeeping (claims, lease renewals, back-off).

    On PostgreSQL its commit does not wait for the disk: after a database crash such a write may
    be lost, which at worst re-sends a message (delivery is at least once) or holds a slot until
    its lease runs out. The outcome of a send is written durably, outside this.
    """
    with transaction.atomic():
        if connection.vendor == "postgresql":
            with connection.cursor() as cursor:
                cursor.execute("SET LOCAL synchronous_commit TO OFF")
        yield


# --- claims on rows ----------------------------------------------------------------------------


def claim_batch(token: str, *, limit: int) -> list[Notification]:
    """Claim up to ``limit`` of the oldest due rows in one transaction; they carry ``token``.

    On PostgreSQL one statement (``hotpath.claim``): SKIP LOCKED lets workers claim side by side
    without waiting on each other. SQLite takes the write lock at BEGIN (IMMEDIATE), so the
    select and update are atomic there.
    """
    if connection.vendor == "postgresql":
        rows = hotpath.claim(token=token, limit=limit, now=timezone.now(), lease_end=lease_end())
    else:
        rows = _claim_with_orm(token, limit)
    return [row for row in rows if not _crashed_too_often(row, token)]


def _claim_with_orm(token: str, limit: int) -> list[Notification]:
    with bookkeeping():
        ids = list(
            Notification.objects.select_for_update(skip_locked=True)
            .due()
            .order_by("next_attempt_at", "id")
            .values_list("id", flat=True)[:limit]
        )
        if not ids:
            return []
        Notification.objects.filter(pk__in=ids).update(
            status=Status.SENDING, claim_token=token, claimed_until=lease_end()
        )
    return list(
        Notification.objects.filter(pk__in=ids, claim_token=token).order_by("next_attempt_at", "id")
    )


def send_ends():
    """The latest moment a message begun now may still be on its way (``message_seconds``)."""
    return timezone.now() + timedelta(seconds=message_seconds())


def start_attempt_query(row: Notification, token: str):
    """The update that counts an attempt, matching only if ``token`` holds a lease on the row
    that outlasts the send: a row is sent only when it matched.

    It leaves the lease as it is (the session renews every lease it holds, by time: ``renew``).
    Moving ``claimed_until``, an indexed column, made this update write an entry in each of the
    table's indexes; counting an attempt alone is a heap-only (HOT) update on PostgreSQL, which
    cut the database's CPU per message by about a fifth.
    """
    return (
        Notification.objects.owned(token)
        .filter(pk=row.pk, claimed_until__gt=send_ends())
        .update(attempts=F("attempts") + 1)
    )


def start_attempt(row: Notification, token: str) -> bool:
    """Count the attempt before sending, so one that never ends (its worker died) still counts.

    Counted per row at send time, not at claim time: rows claimed alongside one that kills its
    worker must not pay for it. False: the claim was lost, and the row must not be sent.
    """
    with bookkeeping():
        owned = bool(start_attempt_query(row, token))
    if owned:
        row.attempts += 1
    return owned


def renew(token: str, slot: int | None = None) -> bool:
    """Extend the leases of the rows ``token`` holds, and of its slot; False if the slot is lost."""
    with bookkeeping():
        Notification.objects.owned(token).update(claimed_until=lease_end())
        if slot is None:
            return True
        return bool(
            SendSlot.objects.filter(number=slot, token=token).update(expires_at=lease_end())
        )


def unclaim(rows: list[Notification], token: str) -> None:
    """Give back rows claimed but not attempted (the session ended first)."""
    if rows:
        with bookkeeping():
            Notification.objects.owned(token).filter(pk__in=[row.pk for row in rows]).release()


def give_up(row: Notification, owned, reason: Phrase, *, settings_version: int | None) -> None:
    """Fail the row for good (if ``owned`` still matches it) and tell the observers.

    The row, the log and the signal carry ``reason`` in English; its phrase is stored beside it,
    so that the delivery log shows it in the reader's language.
    """
    text = english(reason)
    if owned.release(
        Status.FAILED,
        last_error=text,
        last_error_detail=to_json(reason),
        settings_version=settings_version,
        message_id=row.message_id,
    ):
        row.status, row.last_error = Status.FAILED, text
        logger.warning("Notification %s failed: %s", row.pk, text)
        send_robust(notification_failed, sender=Notification, notification=row, error=text)


def _crashed_too_often(row: Notification, token: str) -> bool:
    """A due row whose attempts reached MAX_ATTEMPTS never got an outcome: its sends kill workers.

    (An attempt that ends records an outcome, a delivered one "sent" even if its claim was lost,
    and the last one a final failure; so this is never a row that was delivered.)
    """
    if row.attempts < conf.get("MAX_ATTEMPTS"):
        return False
    reason = _(
        "Gave up after %(attempts)s attempts that never finished: the worker stopped while "
        "sending this message each time. Check the worker logs."
    ) % {"attempts": row.attempts}
    give_up(row, Notification.objects.owned(token).filter(pk=row.pk), reason, settings_version=None)
    return True


# --- send slots --------------------------------------------------------------------------------


def acquire_slot(token: str, batch: int) -> int | None:
    """Lease one of the first ``batch`` send slots, or None when all of them are taken."""
    now = timezone.now()
    slots = list(SendSlot.objects.filter(number__lte=batch).values_list("number", "expires_at"))
    if len(slots) < batch:
        # The slots were flushed (a test database) or Batch outgrew them: make the missing ones.
        SendSlot.objects.bulk_create(
            [SendSlot(number=n) for n in range(1, batch + 1)], ignore_conflicts=True
        )
        slots = list(SendSlot.objects.filter(number__lte=batch).values_list("number", "expires_at"))
    free = [number for number, expires_at in slots if expires_at is None or expires_at < now]
    random.shuffle(free)
    for number in free:
        taken = SendSlot.objects.filter(number=number).filter(
            Q(expires_at__isnull=True) | Q(expires_at__lt=now)
        )
        if taken.update(token=token, holder=_holder(), expires_at=lease_end()):
            return number
    return None


def renew_slot(number: int, token: str) -> bool:
    with bookkeeping():
        slot = SendSlot.objects.filter(number=number, token=token)
        return bool(slot.update(expires_at=lease_end()))


def release_slot(number: int, token: str) -> None:
    with bookkeeping():
        slot = SendSlot.objects.filter(number=number, token=token)
        slot.update(token="", holder="", expires_at=None)


def free_slots(batch: int) -> int:
    """How many more SMTP sessions Batch allows right now (leases that ran out count as free)."""
    busy = SendSlot.objects.filter(number__lte=batch, expires_at__gt=timezone.now()).count()
    return max(0, batch - busy)


def _holder() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"[:200]


# --- the permit to connect ---------------------------------------------------------------------
# One back-off per server (``server`` is its SmtpSettings pk): the fallback's failures never
# hold the primary back, nor the other way round.


def may_connect(server: int = PRIMARY) -> bool:
    """Whether this worker may open a session to ``server`` now: always, unless connecting to
    it failed lately.

    After a failure only one worker tries again per back-off: the one whose update moves
    ``retry_at`` on (the next back-off starts now, ended early by a success). While the primary
    is backed off that one attempt is the probe that brings every worker back to it.
    """
    state = ConnectBackoff.objects.filter(pk=server).first()
    if state is None or not state.failures:
        return True
    now = timezone.now()
    with bookkeeping():
        return bool(
            ConnectBackoff.objects.filter(pk=state.pk, failures=state.failures)
            .filter(Q(retry_at__isnull=True) | Q(retry_at__lte=now))
            .update(retry_at=now + timedelta(seconds=backoff_delay(state.failures)))
        )


def connect_failed(
    reason: str, *, server: int = PRIMARY, throttled: bool = False, at_least: float = 0
) -> float:
    """Record a failed connection to ``server``, or a throttling reply (``throttled``); returns
    the back-off (seconds, never below ``at_least``) before the next try."""
    now = timezone.now()
    with bookkeeping():
        state, _created = ConnectBackoff.objects.select_for_update().get_or_create(pk=server)
        if not state.failures:
            state.since = now
        state.failures += 1
        delay = max(backoff_delay(state.failures), at_least)
        state.retry_at, state.reason, state.failed_at = now + timedelta(seconds=delay), reason, now
        state.reason_detail = getattr(reason, "detail", None)  # see attempts.describe
        state.throttled = throttled
        state.save()
    return delay


def connect_succeeded(server: int = PRIMARY) -> None:
    if ConnectBackoff.objects.filter(pk=server, failures__gt=0).exists():
        clear_backoff(server)


def clear_backoff(server: int = PRIMARY) -> None:
    """Forget past connection failures (a session opened, or the settings were saved)."""
    ConnectBackoff.objects.filter(pk=server).update(
        failures=0, retry_at=None, reason="", throttled=False, since=None
    )


def backed_off(server: int) -> ConnectBackoff | None:
    """``server``'s back-off while connecting to it is failing, else None."""
    return ConnectBackoff.objects.filter(pk=server, failures__gt=0).first()


def backoff_delay(failures: int) -> float:
    """CONNECT_BACKOFF_SECONDS doubling per failure, capped, with jitter."""
    base = conf.get("CONNECT_BACKOFF_SECONDS") * 2 ** max(0, failures - 1)
    capped = min(base, conf.get("CONNECT_BACKOFF_MAX_SECONDS"))
    return capped * random.uniform(0.8, 1.2)  # noqa: S311  (jitter, not security)
