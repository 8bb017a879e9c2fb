"""Logging in: a password over PLAIN / LOGIN (automatic or chosen), or an OAuth2 token (XOAUTH2).

An OAuth2 login never falls back to a password, and only ever travels over TLS.
"""

from __future__ import annotations

import smtplib
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

from ..exceptions import SmtpConfigurationError
from ..phrases import phrase as _
from .client import _Client
from .config import OAuthCredentials, SmtpConfig
from .errors import auth_status, xoauth2_failure

if TYPE_CHECKING:
    from ..oauth import AccessToken
    from .report import DiagnosticStep

# Preferred first; all three keep working with smtplib's own auth objects.
AUTOMATIC_MECHANISMS = ("PLAIN", "LOGIN", "CRAM-MD5")


class TokenSource(Protocol):
    """Where a session gets its access token: the shared cache, or a fresh fetch (diagnosis)."""

    def get(self, credentials: OAuthCredentials, *, timeout: float) -> AccessToken: ...

    def refresh(
        self, credentials: OAuthCredentials, rejected: AccessToken, *, timeout: float
    ) -> AccessToken: ...


def shared_tokens() -> TokenSource:
    """The database cache every worker shares (imported late: it needs the app registry)."""
    from .. import tokens

    return tokens.SHARED


def xoauth2_string(mailbox: str, token: str) -> str:
    """The SASL XOAUTH2 initial client response (before base64)."""
    return f"user={mailbox}\x01auth=Bearer {token}\x01\x01"


def check_can_login(config: SmtpConfig, client: _Client) -> None:
    """Refuse a login the connection must not carry, or one the server does not offer."""
    if config.oauth is not None and config.security == "none":
        raise SmtpConfigurationError(
            _("Refusing to send an access token over an unencrypted connection."),
            step="auth",
            hint=_("OAuth2 sign-in needs Security SSL/TLS or STARTTLS."),
        )
    if config.security == "none" and not config.allow_plaintext_login:
        raise SmtpConfigurationError(
            _("Refusing to send the password over an unencrypted connection."),
            step="auth",
            hint=_(
                "Choose SSL/TLS or STARTTLS, or allow plaintext login only for a trusted "
                "relay on a private network."
            ),
        )
    if not client.has_extn("auth"):
        raise SmtpConfigurationError(
            _("The server does not offer login (AUTH) on this connection."),
            step="auth",
            hint=_(
                "Use the provider's submission port (587 with STARTTLS or 465 with "
                "SSL/TLS); port 25 usually offers no login. If this server relays for your "
                "network without login, clear the username."
            ),
        )


def _offered(client: _Client) -> list[str]:
    return client.esmtp_features["auth"].upper().split()


def password(config: SmtpConfig, client: _Client, step: DiagnosticStep) -> tuple[int, bytes]:
    """AUTH with the password, by the chosen mechanism or the best one offered."""
    offered = _offered(client)
    if config.auth_mechanism == "auto":
        mechanism = next((name for name in AUTOMATIC_MECHANISMS if name in offered), None)
        if mechanism is None:
            raise SmtpConfigurationError(
                _("The server offers no login method this client supports (%(offered)s).")
                % {"offered": " ".join(offered)},
                step="auth",
                hint=_("Ask the provider for PLAIN or LOGIN authentication over TLS."),
            )
    else:
        mechanism = config.auth_mechanism.upper()
        if mechanism not in offered:
            raise SmtpConfigurationError(
                _("The server does not offer %(mechanism)s login; it offers %(offered)s.")
                % {"mechanism": mechanism, "offered": " ".join(offered) or "-"},
                step="auth",
                hint=_("Set the login mechanism to automatic, or to one the server offers."),
            )
    step.detail["mechanism"] = mechanism
    client.user, client.password = config.username, config.password
    try:
        authobject = getattr(client, "auth_" + mechanism.lower().replace("-", "_"))
        return client.auth(mechanism, authobject)
    finally:
        client.password = ""


def xoauth2(
    config: SmtpConfig,
    client: _Client,
    step: DiagnosticStep,
    token: AccessToken,
    *,
    refetch: Callable[[AccessToken], AccessToken],
) -> tuple[int, bytes]:
    """AUTH XOAUTH2; when the server refuses the token, one new token and one more try."""
    if "XOAUTH2" not in _offered(client):
        raise SmtpConfigurationError(
            _("The server does not offer XOAUTH2 login (it offers %(offered)s).")
            % {"offered": " ".join(_offered(client)) or "-"},
            step="auth",
            hint=_(
                "Check the host: Microsoft 365 is smtp.office365.com, Google is smtp.gmail.com. "
                "OAuth2 sign-in never falls back to a password."
            ),
        )
    step.detail["mechanism"] = "XOAUTH2"
    try:
        return _xoauth2_once(config, client, step, token)
    except smtplib.SMTPAuthenticationError as first:
        # A 535 may mean the token was revoked or expired early; anything else is the setup.
        if first.smtp_code != 535 or client.sock is None:
            raise xoauth2_failure(
                config, first.smtp_code, auth_status(_text(first.smtp_error))
            ) from None
        step.detail["refetched"] = True
        try:
            return _xoauth2_once(config, client, step, refetch(token))
        except smtplib.SMTPAuthenticationError as second:
            raise xoauth2_failure(
                config, second.smtp_code, auth_status(_text(second.smtp_error))
            ) from None


def _xoauth2_once(
    config: SmtpConfig, client: _Client, step: DiagnosticStep, token: AccessToken
) -> tuple[int, bytes]:
    def authobject(challenge: bytes | None = None) -> str:
        if challenge is None:
            return xoauth2_string(config.username, token.value)
        # The server's error details (JSON); the empty answer makes it send the final reply.
        step.detail["server_error"] = _text(challenge)[:500]
        return ""

    return client.auth("XOAUTH2", authobject)


def _text(reply: Any) -> str:
    return reply.decode("utf-8", "replace") if isinstance(reply, bytes) else str(reply)
