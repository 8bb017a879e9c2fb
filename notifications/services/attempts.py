"""What one delivery attempt is made of and leaves behind: the message a stored row becomes, its
error as the delivery log and the settings page describe it, the attempt's log line, and when
to try again."""

from __future__ import annotations

import logging
import random
import time

from notifications import conf
from notifications.exceptions import (
    NotificationsError,
    SmtpConfigurationError,
    SmtpError,
    SmtpPermanentError,
    SmtpTemporaryError,
)
from notifications.mime import render
from notifications.models import Notification
from notifications.phrases import english, join, map_text, to_json

logger = logging.getLogger("notifications.services")


def message_for(row: Notification, *, from_address: str) -> tuple[str, bytes]:
    """(Message-ID, bytes) of the email a stored row becomes, sent from ``from_address``."""
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


def message_or_permanent_error(row: Notification, from_address: str) -> tuple[str, bytes]:
    try:
        return message_for(row, from_address=from_address)
    except ValueError as error:  # this row can never become a message: no point retrying
        raise SmtpPermanentError(str(error), step="message") from None


def as_configuration_error(error: NotificationsError) -> SmtpConfigurationError:
    return SmtpConfigurationError(str(error), step="config")


def unexpected_error(error: Exception) -> SmtpError:
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


def log_attempt(
    row: Notification, settings, *, error: SmtpError | None, started: float, written: str
) -> None:
    """One structured line per delivery attempt begun at ``started`` (monotonic); no recipient
    address, no secret."""
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
        "duration_ms": round((time.monotonic() - started) * 1000),
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


def exhausted(row: Notification, now) -> bool:
    too_old = (now - row.created_at).total_seconds() >= conf.get("MAX_AGE_SECONDS")
    return row.attempts >= conf.get("MAX_ATTEMPTS") or too_old


def retry_delay(attempts: int) -> float:
    """Exponential backoff with jitter: about RETRY_BASE doubling per attempt, capped."""
    base = conf.get("RETRY_BASE_SECONDS") * 2 ** max(0, attempts - 1)
    capped = min(base, conf.get("RETRY_MAX_SECONDS"))
    return capped * random.uniform(0.8, 1.2)  # noqa: S311  (jitter, not security)
