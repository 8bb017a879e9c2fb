"""The stepwise diagnosis: a test message, or only the connection, with every step recorded."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from django.utils.translation import gettext

from ..exceptions import SmtpError
from ..phrases import phrase as _
from .config import SmtpConfig
from .message import build_message, envelope_address, parse_address
from .report import DiagnosticReport
from .session import SmtpSession

logger = logging.getLogger(__name__)


def _fresh_tokens():
    """A diagnosis asks the token endpoint itself: it tests the credentials as they are now."""
    from ..oauth import DIRECT

    return DIRECT


def _session(config: SmtpConfig, *, started: float, deadline: float, message: bool) -> SmtpSession:
    """A session that records everything, probes a silent port for TLS and fetches a new token."""
    return SmtpSession(
        config,
        deadline=started + deadline,
        transcript=True,
        probe_tls=True,
        message=message,
        tokens=_fresh_tokens() if config.oauth else None,
    )


def diagnose(config: SmtpConfig, *, to: str, deadline: float = 30.0) -> DiagnosticReport:
    """Send a test message step by step, recording each step, its timing and the transcript."""
    started = time.monotonic()
    session = _session(config, started=started, deadline=deadline, message=True)
    address_step = "mail"  # which step a bad address fails, before any connection
    try:
        envelope_from = envelope_address(config.from_address)
        address_step = "rcpt"
        recipient = parse_address(to, "To").addr_spec
        message = build_message(
            from_address=config.from_address,
            to=to,
            subject=gettext("Test email from the notification settings"),
            body=gettext(
                "This is a test email sent from the SMTP settings page of the Django notifications "
                "admin. If you can read it, the settings work."
            ),
        )
    except ValueError as exc:
        step = session.recorder.steps[address_step]
        step.status, step.error = "failed", str(exc)
        step.hint = _("Correct the address and try again.")
        return session.report(round((time.monotonic() - started) * 1000))
    return _run(
        session,
        started,
        lambda: session.send(message, envelope_from=envelope_from, recipient=recipient),
    )


def check_connection(config: SmtpConfig, *, deadline: float = 30.0) -> DiagnosticReport:
    """DNS, connect, TLS, token, login, QUIT: no message. The report lists what the server
    offers (its EHLO capabilities before and after TLS)."""
    started = time.monotonic()
    session = _session(config, started=started, deadline=deadline, message=False)
    return _run(session, started)


def _run(
    session: SmtpSession, started: float, send: Callable[[], object] | None = None
) -> DiagnosticReport:
    """Connect, ``send`` if given, QUIT; a failed step ends the run (the report says which)."""
    try:
        session.connect()
        if send is not None:
            send()
        session.quit()
    except SmtpError:
        pass
    except Exception:
        # A bug must not become a 500 page (whose debug view would show the settings' secrets):
        # the step that was running fails with a plain message, the details go to the log.
        logger.exception("Unexpected error in the SMTP diagnosis")
        session.recorder.fail_pending(_("Unexpected error in this step; see the server log."))
    finally:
        session.close()
    return session.report(round((time.monotonic() - started) * 1000))
