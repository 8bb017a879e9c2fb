"""Log formatting: plain lines a message cannot break, or JSON lines (LOG_FORMAT=json); and
``quiet()``, for commands whose own output already says what a logger would."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

from notifications.redaction import printable

#: Attributes every LogRecord has; anything else on a record came from ``extra=``.
_STANDARD = frozenset(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {
    "message",
    "asctime",
}
#: Extra fields whose name says they hold a secret are written as REDACTED, whatever they hold.
SECRET_WORDS = ("password", "passwd", "secret", "token", "authorization", "cookie", "api_key")
REDACTED = "[redacted]"


def is_secret(name: str) -> bool:
    lowered = name.lower()
    return any(word in lowered for word in SECRET_WORDS)


class PlainFormatter(logging.Formatter):
    """The standard format, with control characters in the message escaped.

    Messages quote what SMTP servers say: a reply with a line break could otherwise forge a second
    record, and ANSI escapes could repaint the terminal reading the log.
    """

    def formatMessage(self, record: logging.LogRecord) -> str:
        record.message = printable(record.message)
        return super().formatMessage(record)


class JsonFormatter(logging.Formatter):
    """``{"time", "level", "logger", "message", ...extra fields, "exception"?}`` on one line."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for name, value in vars(record).items():
            if name in _STANDARD or name.startswith("_") or name in entry:
                continue
            entry[name] = REDACTED if is_secret(name) else value
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        if record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        return json.dumps(entry, default=str, ensure_ascii=False)


@contextmanager
def quiet(name: str) -> Iterator[None]:
    """Let only warnings and errors of logger ``name`` through while the block runs."""
    logger = logging.getLogger(name)
    level = logger.level
    logger.setLevel(max(logging.WARNING, logger.getEffectiveLevel()))
    try:
        yield
    finally:
        logger.setLevel(level)
