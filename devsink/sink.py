"""The development SMTP sink: keeps every message it receives for the admin; optionally a login.

With ``auth=True`` it offers AUTH (PLAIN, LOGIN) without TLS and accepts one known account,
USERNAME / PASSWORD; any other password gets ``535 5.7.8``, so a newcomer can see what the
settings page says about a bad password. Sending without a login still works in that mode.
"""

from __future__ import annotations

import logging
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session
from asgiref.sync import sync_to_async

from devsink.models import ReceivedMessage

#: The one account the sink accepts in AUTH mode (a test account: nothing here is secret).
USERNAME = "sink"
PASSWORD = "sink-password"  # noqa: S105 (a known test account, documented)

#: aiosmtpd logs every SMTP command at INFO; a developer needs only its warnings.
AIOSMTPD_LOGGER = "mail.log"


class SinkHandler:
    async def handle_DATA(self, server, session, envelope) -> str:
        message = ReceivedMessage.from_envelope(
            envelope.mail_from, envelope.rcpt_tos, envelope.original_content or envelope.content
        )
        await sync_to_async(message.save, thread_sensitive=False)()
        return "250 Message accepted for delivery"


def authenticate(
    server: SMTP, session: Session, envelope: Envelope, mechanism: str, data: Any
) -> AuthResult:
    """Accept USERNAME with PASSWORD; anything else is aiosmtpd's 535."""
    if isinstance(data, LoginPassword) and (data.login, data.password) == (
        USERNAME.encode(),
        PASSWORD.encode(),
    ):
        return AuthResult(success=True, auth_data=USERNAME)
    return AuthResult(success=False, handled=False)


def _not_login_data_deprecation(record: logging.LogRecord) -> bool:
    """aiosmtpd warns of its own deprecated attribute on every successful login, whoever logs in."""
    return "login_data is deprecated" not in record.getMessage()


def controller(*, host: str, port: int, auth: bool = False) -> Controller:
    """The sink, not started yet (``.start()`` / ``.stop()``)."""
    aiosmtpd_log = logging.getLogger(AIOSMTPD_LOGGER)
    aiosmtpd_log.setLevel(logging.WARNING)
    if _not_login_data_deprecation not in aiosmtpd_log.filters:
        aiosmtpd_log.addFilter(_not_login_data_deprecation)
    options: dict[str, Any] = {}
    if auth:
        # A loopback sink with a known account: a login in clear text is the point of it.
        options = {"authenticator": authenticate, "auth_require_tls": False}
    return Controller(SinkHandler(), hostname=host, port=port, **options)
