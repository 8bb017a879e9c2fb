"""The ways in: validating and storing notifications, and the admin's "retry now" and "cancel".

``notify()`` writes rows in the caller's transaction and, after it commits, asks for one draining
session (one broker publish per commit at most, no query about slots: a worker that finds every
slot taken simply returns, and the slot holders pick the rows up).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

from django.core.exceptions import ValidationError
from django.db import IntegrityError, connection, transaction
from django.utils import timezone

from notifications.exceptions import InvalidNotification
from notifications.models import Notification, Status
from notifications.phrases import english, to_json
from notifications.phrases import phrase as _
from notifications.services import hotpath
from notifications.services.hooks import request_sessions, send_robust
from notifications.signals import notification_cancelled
from notifications.validators import (
    parse_from_address,
    validate_header_text,
    validate_no_control_characters,
    validate_recipient,
)

logger = logging.getLogger("notifications.services")

MAX_SUBJECT_LENGTH = 998  # RFC 5322's line limit
#: The most text one notification's body and HTML body may hold together. Notification mail is
#: short; past this, a message is an attachment in disguise that providers refuse anyway (most
#: cap a whole message at 10-35 MB, encoded), and a row this size slows every page that shows it.
MAX_BODY_CHARACTERS = 1_000_000

#: The keywords of the public contract (the ``notify`` signal and ``notifications.notify``).
NOTIFY_ARGUMENTS = frozenset(
    {"recipients", "subject", "body", "html_body", "reply_to", "idempotency_key"}
)

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
    size = len(body) + len(html_body or "")
    if size > MAX_BODY_CHARACTERS:
        raise InvalidNotification(
            f"body and html_body hold {size:,} characters together; at most "
            f"{MAX_BODY_CHARACTERS:,}. Link to large content instead of sending it."
        )
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
    if idempotency_key is None:
        # One statement, all or nothing by itself (bulk_create wraps its batches in a
        # transaction): outside the caller's transaction a BEGIN and COMMIT around it would only
        # add two round trips to the database, about two fifths of notify()'s time.
        created = result = _insert(rows)
    else:
        with transaction.atomic(savepoint=False):
            created, result = _create_once(idempotency_key, rows)
    if created:
        transaction.on_commit(request_sessions, robust=True)  # at once, outside a transaction
    return result


def _insert(rows: list[Notification]) -> list[Notification]:
    if connection.vendor == "postgresql":
        hotpath.insert_recipients(rows)
        return rows
    return Notification.objects.bulk_create(rows)


def _create_once(
    key: str, rows: list[Notification]
) -> tuple[list[Notification], list[Notification]]:
    """Create each keyed row unless it exists; (the created rows, the rows to return)."""
    existing = _existing(key, [row.recipient for row in rows])
    missing = [row for row in rows if row.recipient not in existing]
    if missing:
        try:
            with transaction.atomic():  # only the key's unique constraint needs a savepoint
                Notification.objects.bulk_create(missing)
        except IntegrityError:  # a concurrent call with the same key won a race: row by row
            return _create_one_by_one(key, rows)
    return missing, [existing.get(row.recipient, row) for row in rows]


def _create_one_by_one(key, rows) -> tuple[list[Notification], list[Notification]]:
    created: list[Notification] = []
    result: list[Notification] = []
    for row in rows:
        found = _existing(key, [row.recipient]).get(row.recipient)
        if found is None:
            try:
                with transaction.atomic():
                    row.save()
            except IntegrityError:
                found = _existing(key, [row.recipient]).get(row.recipient)
                if found is None:
                    raise
        if found is None:
            created.append(row)
        result.append(found or row)
    return created, result


def _existing(key: str, recipients: list[str]) -> dict[str, Notification]:
    rows = Notification.objects.filter(idempotency_key=key, recipient__in=recipients)
    return {row.recipient: row for row in rows}


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


def _clean_recipients(recipients) -> list[str]:
    """The addresses in order, each once (compared without case), validated."""
    if isinstance(recipients, str):
        recipients = [recipients]
    elif not isinstance(recipients, Iterable):
        raise InvalidNotification(
            "recipients must be an email address or a list of them, "
            f"not {type(recipients).__name__}."
        )
    addresses: dict[str, str] = {}
    for recipient in recipients:
        if not isinstance(recipient, str):
            raise InvalidNotification(
                f"Each recipient must be an email address string, not {type(recipient).__name__}."
            )
        address = _envelope_form(recipient.strip())
        addresses.setdefault(address.lower(), address)
    if not addresses:
        raise InvalidNotification("Give at least one recipient (recipients=).")
    return list(addresses.values())


def _envelope_form(address: str) -> str:
    """``address`` as the envelope will carry it (an IDNA domain in its ASCII form), refused
    when the parser that builds the envelope would change it any other way: an invisible
    character dropped from the domain would otherwise send to another address, past the
    de-duplication and the idempotency key."""
    _validate("recipients", validate_recipient, address)
    from notifications.smtp.message import PLAIN_ADDRESS, parse_address

    if PLAIN_ADDRESS.fullmatch(address):  # what the envelope parser returns unchanged
        return address

    try:
        parsed = parse_address(address, "To")
    except ValueError as error:
        raise InvalidNotification(f"recipients: {error}") from None
    local, _at, domain = address.rpartition("@")
    try:
        same_domain = parsed.domain.encode("ascii").decode("idna") == domain.lower()
    except UnicodeError:
        same_domain = False
    if parsed.display_name or parsed.username != local or not same_domain:
        raise InvalidNotification(
            f"recipients: “{address}” would be sent to {parsed.addr_spec!r}: it holds characters "
            "(invisible or not allowed in an address) that the envelope cannot carry."
        )
    return parsed.addr_spec


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


def retry_now(queryset) -> int:
    """Queue failed, cancelled or waiting rows for an immediate attempt (the admin's "retry now").

    A failed or cancelled row starts a fresh attempt budget: the administrator has decided it is
    worth it.
    """
    ids = list(
        queryset.filter(status__in=[Status.QUEUED, Status.FAILED, Status.CANCELLED]).values_list(
            "id", flat=True
        )
    )
    now = timezone.now()
    Notification.objects.filter(pk__in=ids, status__in=[Status.FAILED, Status.CANCELLED]).update(
        status=Status.QUEUED, attempts=0
    )
    Notification.objects.filter(pk__in=ids).update(next_attempt_at=now)
    if ids:
        transaction.on_commit(lambda: request_sessions(len(ids)), robust=True)
    return len(ids)


def cancel(queryset, *, by=None) -> int:
    """Cancel rows that have not been sent yet, so no worker sends them.

    Cancelled is a status of its own, not a failure: the delivery counts and the chart leave it
    out, and observers hear of it through ``notification_cancelled`` (not notification_failed).
    """
    reason = (
        _("Cancelled by %(who)s.") % {"who": str(by)} if by else _("Cancelled by an administrator.")
    )
    ids = list(queryset.filter(status=Status.QUEUED).values_list("id", flat=True))
    count = Notification.objects.filter(pk__in=ids, status=Status.QUEUED).update(
        status=Status.CANCELLED, last_error=english(reason), last_error_detail=to_json(reason)
    )
    for row in Notification.objects.filter(pk__in=ids, status=Status.CANCELLED):
        send_robust(notification_cancelled, sender=Notification, notification=row, by=by)
    return count
