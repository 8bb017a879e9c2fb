"""Logs: JSON lines with the record's extra fields when LOG_FORMAT=json, plain text otherwise."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

from config.logging import REDACTED, JsonFormatter, PlainFormatter

ROOT = Path(__file__).resolve().parent.parent
DELIVERY_FIELDS = {
    "notification_id": 42,
    "settings_version": 3,
    "host": "smtp.example.com",
    "port": 587,
    "security": "starttls",
    "reply_code": 250,
    "attempt": 1,
    "duration_ms": 87,
    "outcome": "sent",
}


def record(message: str = "delivery attempt", *, exc_info=None, **extra) -> logging.LogRecord:
    logger = logging.getLogger("notifications.services")
    return logger.makeRecord(
        logger.name, logging.INFO, __file__, 1, message, (), exc_info, extra=extra
    )


def test_a_delivery_attempt_is_one_json_line_with_its_extra_fields():
    line = JsonFormatter().format(record("sent %s", **DELIVERY_FIELDS))
    assert "\n" not in line
    entry = json.loads(line)
    assert entry["level"] == "INFO"
    assert entry["logger"] == "notifications.services"
    assert entry["message"] == "sent %s"  # no args: the message as given
    assert entry["time"].endswith("+00:00")
    assert {k: entry[k] for k in DELIVERY_FIELDS} == DELIVERY_FIELDS
    # LogRecord's own attributes stay out: only what the caller chose to log.
    assert not {"args", "msg", "pathname", "lineno", "process"} & set(entry)


def test_fields_named_like_secrets_are_redacted_whatever_they_hold():
    entry = json.loads(
        JsonFormatter().format(record(password="hunter2", smtp_password="x", api_token="t"))
    )
    assert entry["password"] == entry["smtp_password"] == entry["api_token"] == REDACTED
    assert "hunter2" not in json.dumps(entry)


def test_exceptions_and_unserialisable_values_still_make_one_json_line():
    try:
        raise ConnectionResetError("dropped")
    except ConnectionResetError:
        line = JsonFormatter().format(record(exc_info=sys.exc_info(), when=object()))
    entry = json.loads(line)
    assert "ConnectionResetError: dropped" in entry["exception"]
    assert entry["when"].startswith("<object object")


PROBE = (
    "import django, logging; django.setup(); "
    "logging.getLogger('notifications.services').info('attempt', extra={'attempt': 2})"
)


def run_probe(**env: str) -> str:
    clean = {k: v for k, v in os.environ.items() if k not in {"LOG_FORMAT", "LOG_LEVEL"}}
    result = subprocess.run(
        [sys.executable, "-c", PROBE],
        cwd=ROOT,
        env={**clean, "DJANGO_SETTINGS_MODULE": "config.settings.test", **env},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    return result.stderr.strip().splitlines()[-1]


def test_log_format_json_switches_the_console_to_json_lines():
    entry = json.loads(run_probe(LOG_FORMAT="json"))
    assert entry["message"] == "attempt"
    assert entry["attempt"] == 2


def test_plain_text_by_default():
    line = run_probe()
    assert line.endswith("INFO notifications.services attempt")


def test_a_server_reply_cannot_forge_a_plain_log_record_or_colour_the_terminal():
    formatter = PlainFormatter("%(levelname)s %(name)s %(message)s")
    reply = "451 busy\r\nINFO notifications.services sent\x1b[32m ok"
    entry = record("Temporary failure: %s")
    entry.args = (reply,)
    line = formatter.format(entry)
    assert "\n" not in line
    assert "\x1b" not in line
    assert line == (
        "INFO notifications.services Temporary failure: 451 busy\\r\\nINFO "
        "notifications.services sent\\x1b[32m ok"
    )
