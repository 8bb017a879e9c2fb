"""SMTP: building messages, TLS, the session and its steps, error hints, the diagnosis report.

Laid out like ``django.core.mail``, which keeps building apart from sending:

- ``message``: RFC 5322 messages and envelope addresses
- ``tls``: the verifying TLS context and certificate facts
- ``client``: smtplib with a masked transcript
- ``auth``: password login (PLAIN / LOGIN) and XOAUTH2
- ``session``: one connection, step by step
- ``errors``: error classification and hints (pure functions)
- ``report``: the per-step report
- ``diagnose``: "Send test email" and "Test connection"

The names other modules use are importable from here.
"""

from __future__ import annotations

from .client import MASK
from .config import AUTH_MECHANISMS, AUTH_METHODS, OAuthCredentials, SmtpConfig
from .diagnose import check_connection, diagnose
from .errors import auth_failure_hint
from .message import build_message, envelope_address
from .report import STEP_LABELS, DiagnosticReport, DiagnosticStep
from .session import SmtpSession, open_session
from .tls import make_tls_context

__all__ = [
    "AUTH_MECHANISMS",
    "AUTH_METHODS",
    "MASK",
    "STEP_LABELS",
    "DiagnosticReport",
    "DiagnosticStep",
    "OAuthCredentials",
    "SmtpConfig",
    "SmtpSession",
    "auth_failure_hint",
    "build_message",
    "check_connection",
    "diagnose",
    "envelope_address",
    "make_tls_context",
    "open_session",
]
