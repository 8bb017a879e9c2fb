"""The logic: saving the settings; storing, claiming, sending and recording notifications.

Admin views, tasks, signal receivers and management commands call in here. Dispatch in short:
``notify()`` writes rows in the caller's transaction and enqueues their ids after commit; a worker
takes a send slot (at most Batch are out at once), opens one SMTP session, and drains due rows over
it, claiming each with a lease so that only one worker ever sends a row.
"""

from __future__ import annotations

import logging
import os
import random
import socket
import time
import uuid
from collections.abc import Iterable
from contextlib import contextmanager, suppress
from datetime import timedelta

from django.core.exceptions import ValidationError
from django.db import IntegrityError, connection, transaction
from django.db.models import F, Q
from django.utils import timezone
from django.views.decorators.debug import sensitive_variables

from notifications import conf
from notifications.exceptions import (
    InvalidNotification,
    NotificationsError,
    SmtpConfigurationError,
    SmtpError,
    SmtpPermanentError,
)
from notifications.models import (
    Notification,
    SendSlot,
    SettingsChange,
    SmtpSettings,
    Status,
    WorkerHeartbeat,
)
from notifications.signals import (
    notification_failed,
    notification_sent,
    smtp_settings_changed,
)
from notifications.validators import (
    parse_from_address,
    validate_header_text,
    validate_no_control_characters,
    validate_recipient,
)

logger = logging.getLogger(__name__)

#: Fields whose old and new values the audit trail records verbatim.
AUDITED_FIELDS = (
    "provider",
    "host",
    "port",
    "security",
    "username",
    "from_address",
    "skip_verify",
    "allow_plaintext_login",
    "timeout",
    "batch",
    "auth_method",
    "auth_mechanism",
    "tenant_id",
    "client_id",
    "client_secret_expires",
    "token_url",
    "scope",
)
#: Encrypted secrets besides the password: audited only as "changed" / "removed".
AUDITED_SECRETS = {
    "client_secret_encrypted": "client_secret",
    "service_account_encrypted": "service_account",
}


@sensitive_variables("new_password")
def save_settings(
    settings: SmtpSettings,
    *,
    new_password: str | None = None,
    by=None,
    source: str = "admin",
) -> SettingsChange:
    """Save the settings as a new version and record who changed what.

    ``new_password``: None keeps the stored password, "" removes it, anything else replaces it.
    Saving clears a dispatch pause: the administrator has acted on the problem.
    """
    settings.full_clean()
    with transaction.atomic():
        previous = SmtpSettings.objects.select_for_update().filter(pk=settings.SINGLETON_PK).first()
        changes = _changes(previous, settings)
        if new_password is not None:
            if new_password or settings.has_password:
                changes["password"] = "changed" if new_password else "removed"
            settings.set_password(new_password, by=by)
        settings.version = (previous.version if previous else 0) + 1
        settings.updated_at = timezone.now()
        settings.updated_by = by
        settings.paused_reason = ""
        settings.paused_at = None
        settings.save()
        change = SettingsChange.objects.create(
            changed_by=by, version=settings.version, changes=changes, source=source
        )
        transaction.on_commit(
            lambda: send_robust(
                smtp_settings_changed, sender=SmtpSettings, settings=settings, changes=changes
            )
        )
        # A raised Batch or a lifted pause should be used at once, not at the next sweep.
        transaction.on_commit(kick_workers, robust=True)
    logger.info(
        "SMTP settings saved as version %s by %s: %s",
        settings.version,
        by or source,
        ", ".join(changes) or "no field changed",
    )
    return change


def _changes(previous: SmtpSettings | None, current: SmtpSettings) -> dict:
    changes: dict = {}
    for name in AUDITED_FIELDS:
        old = getattr(previous, name) if previous else None
        new = getattr(current, name)
        if old != new:
            changes[name] = [old, new]
    if (previous.ca_pem if previous else "") != current.ca_pem:
        changes["ca_pem"] = "changed"
    for column, name in AUDITED_SECRETS.items():
        old, new = getattr(previous, column) if previous else "", getattr(current, column)
        if old != new:
            changes[name] = "changed" if new else "removed"
    return changes


def send_robust(signal, *, sender, **kwargs) -> None:
    """Send an observer signal; a receiver that raises is logged, never propagated."""
    for receiver, result in signal.send_robust(sender=sender, **kwargs):
        if isinstance(result, Exception):
            logger.error(
                "Receiver %r of a notifications signal raised %r", receiver, result, exc_info=result
            )


# --- Ways in ---------------------------------------------------------------------------------

MAX_SUBJECT_LENGTH = 998  # RFC 5322's line limit


def notify(
    *,
    recipients: str | Iterable[str],
    subject: str,
    body: str,
    html_body: str | None = None,
    reply_to: str | None = None,
    idempotency_key: str | None = None,
    headers: dict[str, str] | None = None,
    source: str = "",
) -> list[Notification]:
    """Store one notification per recipient, in the caller's transaction; enqueue after commit.

    Every argument is validated first: on bad input InvalidNotification says what is wrong and
    nothing is stored. With an ``idempotency_key``, a repeated call returns the rows the first
    call made for each recipient instead of making new ones.
    """
    addresses = _clean_recipients(recipients)
    _require_text("subject", subject, allow_empty=False, max_length=MAX_SUBJECT_LENGTH)
    _require_text("body", body)
    if html_body is not None:
        _require_text("html_body", html_body)
    if not body and not html_body:
        raise InvalidNotification("Give the notification a body (body= or html_body=).")
    if reply_to is not None:
        _require_text("reply_to", reply_to)
        _validate("reply_to", parse_from_address, reply_to)
    if idempotency_key is not None:
        _require_text("idempotency_key", idempotency_key, allow_empty=False, max_length=200)
    clean_headers = _clean_headers(headers or {})

    rows = [
        Notification(
            recipient=address,
            subject=subject,
            body=body,
            html_body=html_body or "",
            reply_to=reply_to or "",
            headers=clean_headers,
            idempotency_key=idempotency_key,
            source=source[:200],
        )
        for address in addresses
    ]
    with transaction.atomic(savepoint=False):
        if idempotency_key is None:
            created = Notification.objects.bulk_create(rows)
            result = created
        else:
            created, result = _create_once(rows)
        if created:
            ids = [row.pk for row in created]
            transaction.on_commit(lambda: enqueue(ids), robust=True)
    return result


def _create_once(rows: list[Notification]) -> tuple[list[Notification], list[Notification]]:
    """Create each keyed row unless it exists; (the created rows, the rows to return)."""
    created: list[Notification] = []
    result: list[Notification] = []
    for row in rows:
        existing = _existing(row.idempotency_key, row.recipient)
        if existing is None:
            try:
                with transaction.atomic():  # only the key's unique constraint needs a savepoint
                    row.save()
            except IntegrityError:  # a concurrent call with the same key won the race
                existing = _existing(row.idempotency_key, row.recipient)
                if existing is None:
                    raise
        if existing is None:
            created.append(row)
        result.append(existing or row)
    return created, result


#: The keywords of the public contract (the ``notify`` signal and ``notifications.notify``).
NOTIFY_ARGUMENTS = frozenset(
    {"recipients", "subject", "body", "html_body", "reply_to", "idempotency_key"}
)


def notify_from(source: str, arguments: dict) -> list[Notification]:
    """``notify`` for the public ways in: unknown or missing keywords are InvalidNotification."""
    if unknown := sorted(set(arguments) - NOTIFY_ARGUMENTS):
        raise InvalidNotification(
            f"Unknown argument(s) {', '.join(unknown)}; notify takes "
            f"{', '.join(sorted(NOTIFY_ARGUMENTS))}."
        )
    if missing := sorted({"recipients", "subject"} - set(arguments)):
        raise InvalidNotification(f"Missing argument(s): {', '.join(missing)}.")
    arguments = {"body": "", **arguments}
    return notify(source=source[:200], **arguments)


def _existing(idempotency_key: str | None, recipient: str) -> Notification | None:
    if idempotency_key is None:
        return None
    return Notification.objects.filter(idempotency_key=idempotency_key, recipient=recipient).first()


def _clean_recipients(recipients) -> list[str]:
    if isinstance(recipients, str):
        recipients = [recipients]
    elif not isinstance(recipients, Iterable):
        raise InvalidNotification(
            "recipients must be an email address or a list of them, "
            f"not {type(recipients).__name__}."
        )
    addresses: list[str] = []
    for recipient in recipients:
        if not isinstance(recipient, str):
            raise InvalidNotification(
                f"Each recipient must be an email address string, not {type(recipient).__name__}."
            )
        address = recipient.strip()
        _validate("recipients", validate_recipient, address)
        if address.lower() not in {a.lower() for a in addresses}:
            addresses.append(address)
    if not addresses:
        raise InvalidNotification("Give at least one recipient (recipients=).")
    return addresses


def _require_text(
    name: str, value, *, allow_empty: bool = True, max_length: int | None = None
) -> None:
    if not isinstance(value, str):
        raise InvalidNotification(f"{name} must be a string, not {type(value).__name__}.")
    if not allow_empty and not value.strip():
        raise InvalidNotification(f"{name} must not be empty.")
    if "\0" in value:
        raise InvalidNotification(f"{name} contains a NUL character: remove it.")
    if max_length is not None and len(value) > max_length:
        raise InvalidNotification(f"{name} is {len(value)} characters; at most {max_length}.")
    if name in {"subject", "reply_to"}:
        _validate(name, validate_header_text, value)
    elif name == "idempotency_key":
        _validate(name, validate_no_control_characters, value)


def _validate(name: str, validator, value: str) -> None:
    try:
        validator(value)
    except ValidationError as error:
        raise InvalidNotification(f"{name}: {' '.join(error.messages)}") from None


#: Headers the outbox sets itself; a caller may not override them.
RESERVED_HEADERS = frozenset(
    {
        "from",
        "to",
        "cc",
        "bcc",
        "subject",
        "date",
        "message-id",
        "reply-to",
        "sender",
        "content-type",
        "content-transfer-encoding",
        "mime-version",
        "return-path",
    }
)


def _clean_headers(headers: dict) -> dict[str, str]:
    if not isinstance(headers, dict):
        raise InvalidNotification("headers must be a dict of header name to value.")
    clean: dict[str, str] = {}
    for name, value in headers.items():
        if not isinstance(name, str) or not isinstance(value, str):
            raise InvalidNotification("Header names and values must be strings.")
        if name.lower() in RESERVED_HEADERS:
            raise InvalidNotification(f"The {name} header is set by the outbox; remove it.")
        # RFC 5322 field names: printable US-ASCII but the colon (33-126), so never NUL or CR/LF.
        if not name or any(not 33 <= ord(c) <= 126 or c == ":" for c in name):
            raise InvalidNotification(f"{name!r} is not a valid header name.")
        _validate(f"header {name}", validate_header_text, value)
        clean[name] = value
    return clean


def enqueue(ids: Iterable[int]) -> None:
    """Hand ids to the workers, at most one task per free send slot.

    A task is a request to drain the outbox; its id only saves work when another worker already
    sent that row. With every slot taken no task is needed: a slot holder looks for due rows
    again after giving its slot back, which is after this check saw the slot taken. A broker
    outage is logged, never raised: the sweeper catches up.
    """
    from notifications.tasks import send_notification

    for notification_id in list(ids)[: free_slots()]:
        try:
            send_notification.apply_async(args=[notification_id], retry=False)
        except Exception as error:
            logger.warning(
                "Could not enqueue notification %s (%s); the sweeper will send it.",
                notification_id,
                type(error).__name__,
            )
            return


def free_slots() -> int:
    """How many more SMTP sessions Batch allows right now (leases that ran out count as free)."""
    batch = SmtpSettings.objects.values_list("batch", flat=True).first() or 1
    busy = SendSlot.objects.filter(number__lte=batch, expires_at__gt=timezone.now()).count()
    return max(0, batch - busy)


def kick_workers() -> None:
    """Ask for up to Batch drain tasks when due rows are waiting (after a save, or a sweep)."""
    from notifications.tasks import drain_outbox

    settings = SmtpSettings.load()
    if settings.paused_reason or not settings.is_configured:
        return
    due = Notification.objects.filter(_due(timezone.now())).count()
    for _ in range(min(due, settings.batch)):
        try:
            drain_outbox.apply_async(retry=False)
        except Exception as error:
            logger.warning("Could not enqueue a drain task (%s).", type(error).__name__)
            return


# --- Claims and slots --------------------------------------------------------------------------


def _due(now) -> Q:
    """Rows a worker may claim: queued and due, or sending with a lease that ran out."""
    return Q(status=Status.QUEUED, next_attempt_at__lte=now) | Q(
        status=Status.SENDING, claimed_until__lt=now
    )


def _lease_end():
    return timezone.now() + timedelta(seconds=conf.get("LEASE_SECONDS"))


@contextmanager
def _bookkeeping():
    """A transaction for a worker's own bookkeeping (claims, attempt counts, lease renewals).

    On PostgreSQL its commit does not wait for the disk: after a database crash such a write may
    be lost, which at worst re-sends a message (delivery is at least once) or holds a slot until
    its lease runs out. The outcome of a send is written durably, outside this.
    """
    with transaction.atomic():
        if connection.vendor == "postgresql":
            with connection.cursor() as cursor:
                cursor.execute("SET LOCAL synchronous_commit TO OFF")
        yield


def claim_batch(token: str, *, limit: int) -> list[Notification]:
    """Claim up to ``limit`` of the oldest due rows in one transaction; they carry ``token``.

    On PostgreSQL, SKIP LOCKED lets workers claim side by side without waiting on each other;
    SQLite takes the write lock at BEGIN (IMMEDIATE), so the select and update are atomic there.
    """
    now = timezone.now()
    with _bookkeeping():
        ids = list(
            Notification.objects.select_for_update(skip_locked=True)
            .filter(_due(now))
            .order_by("next_attempt_at", "id")
            .values_list("id", flat=True)[:limit]
        )
        if not ids:
            return []
        Notification.objects.filter(pk__in=ids).update(
            status=Status.SENDING, claim_token=token, claimed_until=_lease_end()
        )
    rows = Notification.objects.filter(pk__in=ids, claim_token=token).order_by(
        "next_attempt_at", "id"
    )
    return [row for row in rows if not _crashed_too_often(row, token)]


def _unclaim(rows: list[Notification], token: str) -> None:
    """Give back rows claimed but not attempted (the session ended first)."""
    if rows:
        with _bookkeeping():
            Notification.objects.filter(
                pk__in=[row.pk for row in rows], claim_token=token, status=Status.SENDING
            ).update(status=Status.QUEUED, claim_token="", claimed_until=None)


def _start_attempt(row: Notification, token: str) -> None:
    """Count the attempt before sending, so one that never ends (its worker died) still counts.

    Counted per row at send time, not at claim time: rows claimed alongside one that kills its
    worker must not pay for it.
    """
    with _bookkeeping():
        _owned(row, token).update(attempts=F("attempts") + 1)
    row.attempts += 1


def _crashed_too_often(row: Notification, token: str) -> bool:
    """A due row whose attempts reached MAX_ATTEMPTS never got an outcome: its sends kill workers.

    (An attempt that ends records an outcome, and the last one a final failure.)
    """
    if row.attempts < conf.get("MAX_ATTEMPTS"):
        return False
    reason = (
        f"Gave up after {row.attempts} attempts that never finished: the worker stopped "
        "while sending this message each time. Check the worker logs."
    )
    _give_up(row, _owned(row, token), reason, settings_version=None)
    return True


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
        if taken.update(token=token, holder=_holder(), expires_at=_lease_end()):
            return number
    return None


def renew_slot(number: int, token: str) -> bool:
    with _bookkeeping():
        slot = SendSlot.objects.filter(number=number, token=token)
        return bool(slot.update(expires_at=_lease_end()))


def release_slot(number: int, token: str) -> None:
    with _bookkeeping():
        slot = SendSlot.objects.filter(number=number, token=token)
        slot.update(token="", holder="", expires_at=None)


def _holder() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"[:200]


# --- Sending -----------------------------------------------------------------------------------


def deliver(*, prefer: int | None = None) -> int:
    """Send due notifications while a send slot is free; returns how many were sent.

    Holds at most one slot at a time, so at most Batch of these run SMTP sessions at once. After
    giving its slot back it looks again, so a row whose own task found every slot taken is never
    left waiting for the sweeper. ``prefer`` is the row this task was enqueued for: when another
    worker already took it, there is nothing to do (the cheap, common case under load).
    """
    if prefer is not None and not _is_due(prefer):
        return 0
    sent = 0
    budget_end = time.monotonic() + conf.get("DRAIN_SECONDS")
    while time.monotonic() < budget_end:
        settings = SmtpSettings.load()
        if settings.paused_reason or not settings.is_configured:
            break
        token = uuid.uuid4().hex
        slot = acquire_slot(token, settings.batch)
        if slot is None:
            break
        try:
            sent += _drain_over_one_session(settings, slot, token, budget_end)
        finally:
            release_slot(slot, token)
        if not Notification.objects.filter(_due(timezone.now())).exists():
            break
    return sent


def _is_due(notification_id: int) -> bool:
    return Notification.objects.filter(_due(timezone.now()), pk=notification_id).exists()


def _drain_over_one_session(settings, slot: int, token: str, budget_end: float) -> int:
    """Claim due rows a few at a time and send them over one SMTP session, bounded.

    The settings and the slot's lease are checked every SETTINGS_CHECK_SECONDS, not for every
    message: a changed version, a pause, or a Batch lowered below this slot ends the session.
    """
    from notifications.smtp import open_session

    sent = 0
    session = None
    config = None
    claimed: list[Notification] = []
    remaining = conf.get("MESSAGES_PER_SESSION")
    next_check = 0.0
    try:
        while remaining > 0 and time.monotonic() < budget_end:
            if time.monotonic() >= next_check:
                if not _slot_still_current(settings, slot, token):
                    break
                next_check = time.monotonic() + conf.get("SETTINGS_CHECK_SECONDS")
            if not claimed:
                claimed = claim_batch(token, limit=min(remaining, conf.get("CLAIM_BATCH")))
                if not claimed and not (session and _more_arrive_soon(budget_end)):
                    break
                if not claimed:
                    continue
            row = claimed.pop(0)
            remaining -= 1
            started = time.monotonic()
            error: SmtpError | None = None
            _start_attempt(row, token)
            try:
                config = config or settings.to_smtp_config()
                session = session or open_session(config)
                message_id = _send_one(session, config, row)
            except SmtpError as exc:
                error = exc
            except NotificationsError as exc:  # e.g. the password cannot be decrypted
                error = _as_configuration_error(exc)
            except Exception as exc:  # a bug, or a message we cannot build: retry, bounded
                logger.exception("Unexpected error while sending notification %s", row.pk)
                error = _unexpected(exc)
            if error is None:
                outcome = _record_sent(row, token, settings, message_id)
                sent += 1
            else:
                outcome = _record_failure(row, token, settings, error, config)
            _log_attempt(row, settings, outcome=outcome, error=error, started=started)
            if error is None:
                continue
            if error.code is None or isinstance(error, SmtpConfigurationError):
                session = _discard(session)  # the connection itself failed
            if isinstance(error, SmtpConfigurationError):
                break
    finally:
        _unclaim(claimed, token)
        _discard(session)
    return sent


def _more_arrive_soon(budget_end: float) -> bool:
    """Keep an open session a moment for rows still arriving, rather than reconnecting for each.

    While this worker holds its slot, notify() enqueues no task for it (see ``enqueue``), so a
    trickle of notifications is served by the sessions already open.
    """
    idle_end = min(budget_end, time.monotonic() + conf.get("SESSION_IDLE_SECONDS"))
    while time.monotonic() < idle_end:
        time.sleep(conf.get("IDLE_POLL_SECONDS"))
        if Notification.objects.filter(_due(timezone.now())).exists():
            return True
    return False


def _slot_still_current(settings, slot: int, token: str) -> bool:
    """Renew the slot's lease; False when the settings changed or Batch no longer covers it."""
    current = (
        SmtpSettings.objects.filter(pk=settings.pk)
        .values_list("version", "batch", "paused_reason")
        .first()
    )
    if current is None or current[0] != settings.version or current[2] or slot > current[1]:
        return False  # sessions opened with the old version end here
    return renew_slot(slot, token)


def message_for(row: Notification, *, from_address: str):
    """The email a stored notification becomes, sent from ``from_address``."""
    from notifications.smtp import build_message

    return build_message(
        from_address=from_address,
        to=row.recipient,
        subject=row.subject,
        body=row.body,
        html_body=row.html_body or None,
        reply_to=row.reply_to or None,
        message_id=row.message_id or None,
        headers=row.headers or None,
    )


def _send_one(session, config, row: Notification) -> str:
    from notifications.smtp import envelope_address

    try:
        message = message_for(row, from_address=config.from_address)
    except ValueError as error:  # this row can never become a message: no point retrying
        raise SmtpPermanentError(str(error), step="message") from None
    row.message_id = message["Message-ID"]
    session.send(
        message, envelope_from=envelope_address(config.from_address), recipient=row.recipient
    )
    return row.message_id


def _discard(session) -> None:
    if session is not None:
        with suppress(Exception):
            session.close()
    return None


def _as_configuration_error(error: NotificationsError) -> SmtpConfigurationError:
    return SmtpConfigurationError(str(error), step="config")


def _unexpected(error: Exception) -> SmtpError:
    from notifications.exceptions import SmtpTemporaryError

    return SmtpTemporaryError(
        f"Unexpected {type(error).__name__} while sending; see the worker log.", step="internal"
    )


def _owned(row: Notification, token: str):
    return Notification.objects.filter(pk=row.pk, claim_token=token, status=Status.SENDING)


def _record_sent(row: Notification, token: str, settings, message_id: str) -> str:
    now = timezone.now()
    if _owned(row, token).update(
        status=Status.SENT,
        sent_at=now,
        message_id=message_id,
        last_error="",
        claim_token="",
        claimed_until=None,
        settings_version=settings.version,
    ):
        row.status, row.sent_at, row.settings_version = Status.SENT, now, settings.version
        send_robust(notification_sent, sender=Notification, notification=row)
        return "sent"
    logger.warning("Notification %s was sent, but its claim had passed to another worker.", row.pk)
    return "sent-claim-lost"


def describe(error: SmtpError, config=None) -> str:
    """The error as the delivery log and the settings page show it: step, reply, hint; no secret."""
    parts = [f"[{error.step}]"]
    if error.code:
        parts.append(str(error.code))
    parts.append(str(error))
    if error.hint:
        parts.append(str(error.hint))
    text = " ".join(parts)
    password = getattr(config, "password", "")
    return text.replace(password, "********") if password else text


def _record_failure(row, token: str, settings, error: SmtpError, config) -> str:
    """Reschedule, fail or pause, by the kind of error; returns the outcome for the log."""
    now = timezone.now()
    reason = describe(error, config)
    owned = _owned(row, token)
    if isinstance(error, SmtpConfigurationError):
        # Not this message's fault: give the attempt back and pause until the settings change.
        owned.update(
            status=Status.QUEUED,
            attempts=F("attempts") - 1,
            next_attempt_at=now,
            last_error=reason,
            claim_token="",
            claimed_until=None,
            message_id=row.message_id,
        )
        pause(settings.version, reason)
        return "paused"
    if isinstance(error, SmtpPermanentError) or _exhausted(row, now):
        _give_up(row, owned, reason, settings_version=settings.version)
        return "failed"
    delay = retry_delay(row.attempts)
    owned.update(
        status=Status.QUEUED,
        next_attempt_at=now + timedelta(seconds=delay),
        last_error=reason,
        claim_token="",
        claimed_until=None,
        message_id=row.message_id,
    )
    return "retry"


def _give_up(row: Notification, owned, reason: str, *, settings_version: int | None) -> None:
    if owned.update(
        status=Status.FAILED,
        last_error=reason,
        claim_token="",
        claimed_until=None,
        settings_version=settings_version,
        message_id=row.message_id,
    ):
        row.status, row.last_error = Status.FAILED, reason
        logger.warning("Notification %s failed: %s", row.pk, reason)
        send_robust(notification_failed, sender=Notification, notification=row, error=reason)


def _log_attempt(row: Notification, settings, *, outcome: str, error, started: float) -> None:
    """One structured line per delivery attempt; no recipient address, no secret."""
    fields = {
        "notification_id": row.pk,
        "settings_version": settings.version,
        "host": settings.host,
        "port": settings.port,
        "security": settings.security,
        "reply_code": error.code if error is not None else 250,
        "step": error.step if error is not None else "",
        "attempt": row.attempts,
        "duration_ms": round((time.monotonic() - started) * 1000),
        "outcome": outcome,
    }
    logger.log(
        logging.INFO if outcome.startswith("sent") or outcome == "retry" else logging.WARNING,
        "delivery attempt %(notification_id)s: %(outcome)s (code %(reply_code)s%(step_text)s) "
        "via %(host)s:%(port)s/%(security)s, attempt %(attempt)s, %(duration_ms)s ms, "
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


def pause(version: int, reason: str) -> None:
    """Stop sending with settings ``version`` until they are saved again."""
    if SmtpSettings.objects.filter(pk=SmtpSettings.SINGLETON_PK, version=version).update(
        paused_reason=reason, paused_at=timezone.now()
    ):
        logger.error("Sending is paused until the SMTP settings are saved again: %s", reason)


# --- Upkeep ------------------------------------------------------------------------------------


def sweep() -> int:
    """Re-enqueue work when due rows wait: lost broker messages, dead workers, expired leases."""
    now = timezone.now()
    Notification.objects.filter(status=Status.SENDING, claimed_until__lt=now).update(
        status=Status.QUEUED, claim_token="", claimed_until=None
    )
    due = Notification.objects.filter(_due(now)).count()
    if due:
        kick_workers()
    return due


def retry_now(queryset) -> int:
    """Queue failed or waiting rows for an immediate attempt (the admin's "retry now").

    A failed row starts a fresh attempt budget: the administrator has decided it is worth it.
    """
    ids = list(
        queryset.filter(status__in=[Status.QUEUED, Status.FAILED]).values_list("id", flat=True)
    )
    now = timezone.now()
    Notification.objects.filter(pk__in=ids, status=Status.FAILED).update(
        status=Status.QUEUED, attempts=0
    )
    Notification.objects.filter(pk__in=ids).update(next_attempt_at=now)
    transaction.on_commit(lambda: enqueue(ids), robust=True)
    return len(ids)


def cancel(queryset, *, by=None) -> int:
    """Fail rows that have not been sent yet, so no worker sends them."""
    return queryset.filter(status=Status.QUEUED).update(
        status=Status.FAILED, last_error=f"Cancelled by {by or 'an administrator'}."
    )


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
