"""Error classification and hints: pure functions of the step, the error and the context.

What smtplib, ssl and socket raise, and what servers reply, becomes one of the app's errors
(temporary, permanent, configuration) with a hint a person can act on. Nothing here opens a
socket, so every hint is testable without a server.
"""

from __future__ import annotations

import re
import smtplib
import socket
import ssl
from collections.abc import Callable
from dataclasses import dataclass

from cryptography import x509

from ..exceptions import (
    SmtpConfigurationError,
    SmtpError,
    SmtpPermanentError,
    SmtpTemporaryError,
)
from ..phrases import join
from ..phrases import phrase as _
from ..providers import provider_for_host
from .client import MalformedChallenge, decode, redact
from .config import SmtpConfig
from .report import STEP_LABELS
from .tls import NAME_MISMATCH_CODES, certificate_names, is_ip_address, names_match

_NOT_TLS_REASONS = ("WRONG_VERSION_NUMBER", "RECORD_LAYER_FAILURE", "PACKET_LENGTH_TOO_LONG")
_EXPIRED_CODES = {9, 10}  # X509_V_ERR_*: not yet valid, expired


@dataclass(frozen=True)
class Context:
    """What a hint may depend on besides the error: the settings, the step's timeout, the
    secrets to mask, (for a missing greeting) whether the port speaks implicit TLS, and (for a
    refused certificate) the certificate the server presented, read without verifying it.
    Both are asked only when a hint needs them: each may cost a connection."""

    config: SmtpConfig
    timeout: float
    secrets: tuple[str, ...] = ()
    speaks_tls: Callable[[], bool] = lambda: False
    peer_certificate: Callable[[], x509.Certificate | None] = lambda: None

    def text(self, reply: bytes | str) -> str:
        return redact(decode(reply), self.secrets)


def tls_port_hint(port: int) -> str:
    """Port 465, or a port found to answer with a TLS handshake, when Security is not SSL/TLS."""
    if port == 465:
        return _(
            "Port %(port)s expects SSL/TLS (implicit TLS): set Security to SSL/TLS, or use port "
            "587 with STARTTLS."
        ) % {"port": port}
    return _(
        "The server on port %(port)s speaks TLS from the start (implicit TLS) instead of "
        "greeting: set Security to SSL/TLS."
    ) % {"port": port}


_ENHANCED_STATUS = re.compile(r"^\s*([245]\.\d{1,3}\.\d{1,3})\b")


def auth_status(reply: str) -> str:
    """Of a reply to AUTH, only the enhanced status code ("5.7.8"): what a server says at login
    is the likeliest place for it to echo the credentials, and the code is what hints need."""
    match = _ENHANCED_STATUS.match(reply)
    return match.group(1) if match else ""


def auth_failure_hint(host: str, reply: str) -> str:
    """What to check when the server refuses the login, by provider and reply text."""
    hints = [_("Check the username and password.")]
    if "5.7.139" in reply or "5.7.30" in reply:
        hints.append(
            _(
                "Microsoft has disabled basic authentication (a password) for this mailbox or "
                "tenant, and for most tenants it is gone for good: switch the sign-in method to "
                "Microsoft 365 (OAuth2). Register an app in Microsoft Entra, give it the "
                "application permission SMTP.SendAsApp with admin consent, create a client "
                "secret, then enter the tenant ID, client ID and secret here (the Outlook / "
                "Office 365 preset shows the checklist)."
            )
        )
    provider = provider_for_host(host)
    if provider is not None and provider.auth_hint:
        hints.append(provider.auth_hint)
    return join(*hints)


def cert_hint(exc: ssl.SSLCertVerificationError, context: Context) -> str:
    """What is wrong with the certificate, by the verify code and the certificate itself.

    OpenSSL reports one problem, the first it meets: a certificate both untrusted and issued
    for other names is reported as untrusted. Its names, read without verifying, say both.
    """
    config, code = context.config, exc.verify_code
    insecure = _(
        "Skip certificate verification would also make it work, but then anyone on the network "
        "path can read the password and the mail."
    )
    if code in _EXPIRED_CODES:
        fix = _(
            "The server's certificate has expired or is not valid yet: the server's "
            "administrator must renew it; also check this machine's clock."
        )
        return join(fix, insecure)
    certificate = context.peer_certificate()
    names = certificate_names(certificate) if certificate is not None else []
    mismatch = code in NAME_MISMATCH_CODES or (names and not names_match(names, config.host))
    hints = []
    if mismatch:
        hints.append(name_mismatch_hint(config.host, names))
    if code not in NAME_MISMATCH_CODES:
        hints.append(
            _(
                "The certificate is self-signed or signed by an authority this machine does not "
                "trust: paste the CA certificate (PEM) that signed it into Extra trusted CA (PEM) "
                "under Advanced security (on the command line: smtp_settings --ca-file)."
            )
        )
    return join(*hints, insecure)


def name_mismatch_hint(host: str, names: list[str]) -> str:
    """The certificate is issued for other names than the host: which, and what to enter."""
    if not names:
        return _(
            "The certificate is not issued for %(host)s: enter the host name the certificate "
            "names (usually the provider's documented SMTP host), not an IP address or alias."
        ) % {"host": host}
    where = {"host": host, "names": ", ".join(names)}
    if is_ip_address(host):
        return (
            _(
                "The certificate is issued for %(names)s, not for the IP address %(host)s: use one "
                "of those names as the host (or add the IP address to the certificate)."
            )
            % where
        )
    return (
        _(
            "The certificate is issued for %(names)s, not for %(host)s: use one of those names as "
            "the host."
        )
        % where
    )


def xoauth2_failure(config: SmtpConfig, code: int, reply: str) -> SmtpError:
    """The server refused the access token: what the provider's setup is missing."""
    message = _("%(step)s: the server refused the access token: %(code)s %(reply)s") % {
        "step": STEP_LABELS["auth"],
        "code": code,
        "reply": reply,
    }
    if config.auth_method == "microsoft-oauth2":
        hint = _(
            "Microsoft issued the token but Exchange Online does not let this app send as "
            "%(mailbox)s. In Exchange Online PowerShell: register the app's service principal "
            "with New-ServicePrincipal -AppId <client ID> -ObjectId <the object ID of the "
            "Enterprise application, not of the app registration>; grant it the mailbox with "
            "Add-MailboxPermission -Identity %(mailbox)s -User <that service principal> "
            "-AccessRights FullAccess; and make sure SMTP AUTH is enabled for the mailbox "
            "(Set-CASMailbox %(mailbox)s -SmtpClientAuthenticationDisabled $false)."
        ) % {"mailbox": config.username}
    else:
        hint = _(
            "Google refused the token for %(mailbox)s: the username must be a user of the "
            "Workspace domain that granted domain-wide delegation, with the scope "
            "https://mail.google.com/, and Gmail must be enabled for that user."
        ) % {"mailbox": config.username}
    return SmtpConfigurationError(message, step="auth", code=code, reply=reply, hint=hint)


class OutOfTime(TimeoutError):
    """The overall deadline passed before a step could start."""


def is_timeout(exc: BaseException) -> bool:
    # smtplib turns a read timeout into SMTPServerDisconnected raised inside ``except OSError``.
    return isinstance(exc, TimeoutError) or (
        isinstance(exc, smtplib.SMTPServerDisconnected)
        and isinstance(exc.__context__, TimeoutError)
    )


def not_smtp_hint() -> str:
    """Something spoke first, and not SMTP: another service (not implicit TLS either, whose
    server waits for the client to speak)."""
    return _(
        "Another kind of service (SSH, FTP, a web or message server…) answers on that port: "
        "check the host and the port."
    )


def greeting_hint(context: Context) -> str:
    """No greeting: implicit TLS only where the port says so (465) or the server was found to
    answer a TLS handshake; otherwise what holds a connection silent."""
    config = context.config
    if config.security != "ssl" and (config.port == 465 or context.speaks_tls()):
        return tls_port_hint(config.port)
    held = _(
        "The server accepted the connection but did not greet. Check the host and port. "
        "Otherwise something holds the connection: a firewall, an antivirus or the internet "
        "provider intercepting mail traffic, or a tarpit (a server that delays its greeting on "
        "purpose, for example because this machine's address is on a block list)."
    )
    if config.port == 25:
        return join(
            held,
            _(
                "Internet and cloud providers often intercept or block port 25: use the "
                "provider's submission port (587 with STARTTLS, or 465 with SSL/TLS)."
            ),
        )
    return held


def reply_error(context: Context, step: str, code: int, reply: str) -> SmtpError:
    """An SMTP reply that refused a step, as the app's error with a hint."""
    message = _("%(step)s: the server replied %(code)s %(reply)s") % {
        "step": STEP_LABELS[step],
        "code": code,
        "reply": reply,
    }
    if 400 <= code < 500:
        hint = _(
            "A temporary refusal (greylisting, a rate limit or a busy server). Notifications "
            "are retried automatically; for a test, try again in a few minutes."
        )
        return SmtpTemporaryError(message, step=step, code=code, reply=reply, hint=hint)
    if step == "auth":
        hint = auth_failure_hint(context.config.host, reply)
        return SmtpConfigurationError(message, step=step, code=code, reply=reply, hint=hint)
    if step == "mail" and code == 530:
        hint = _("The server requires a login: fill in the username and password.")
        return SmtpConfigurationError(message, step=step, code=code, reply=reply, hint=hint)
    hints = {
        "mail": _(
            "The server refused the sender. Most providers only accept a From address the "
            "login account owns, or a verified sender or domain: use the account's own address "
            "as From, or verify it with the provider."
        ),
        "rcpt": _(
            "The server refused the recipient: check the address. Servers also refuse to relay "
            "to other domains without a login."
        ),
        "data": _(
            "The server refused the message itself: a content or spam filter, a size limit, or "
            "the sender domain's SPF/DKIM/DMARC policy. The reply text says which."
        ),
    }
    if step in hints:
        return SmtpPermanentError(message, step=step, code=code, reply=reply, hint=hints[step])
    hint = _("The server refused this step; the reply text says why.")
    if step == "greeting":
        hint = _("The server refuses connections from this machine; the reply text says why.")
    return SmtpConfigurationError(message, step=step, code=code, reply=reply, hint=hint)


def classify(context: Context, step: str, exc: BaseException) -> SmtpError:
    """Turn what smtplib, ssl and socket raise into the app's errors, with a hint."""
    config, label = context.config, STEP_LABELS[step]
    where = {"host": config.host, "port": config.port, "timeout": f"{context.timeout:g}"}
    if isinstance(exc, smtplib.SMTPResponseException) and exc.smtp_code == -1:
        return SmtpConfigurationError(
            _("%(step)s: %(host)s port %(port)s does not speak SMTP.") % {"step": label, **where},
            step=step,
            hint=not_smtp_hint(),
        )
    if isinstance(exc, smtplib.SMTPResponseException):
        text = context.text(exc.smtp_error)
        return reply_error(
            context, step, exc.smtp_code, auth_status(text) if step == "auth" else text
        )
    if isinstance(exc, MalformedChallenge):
        return SmtpConfigurationError(
            _("%(step)s: %(error)s") % {"step": label, "error": exc},
            step=step,
            hint=_(
                "This is not a standard SMTP login: check the host and port, and that nothing "
                "between this machine and the server (a proxy, antivirus) rewrites the connection."
            ),
        )
    if isinstance(exc, OutOfTime):
        return SmtpTemporaryError(
            _("%(step)s: the test ran out of time before this step.") % {"step": label},
            step=step,
            hint=_("The server is slow to answer; try again, or raise the timeout."),
        )
    if isinstance(exc, socket.gaierror) or (step == "dns" and is_timeout(exc)):
        return SmtpTemporaryError(
            _("DNS lookup: the host name %(host)s could not be resolved.") % where,
            step="dns",
            hint=_(
                "Check the host name for typos (the provider documents its SMTP host). If it "
                "is right, this machine's DNS resolver is failing."
            ),
        )
    if isinstance(exc, ConnectionRefusedError):
        return SmtpTemporaryError(
            _("TCP connection: %(host)s refused the connection on port %(port)s.") % where,
            step=step,
            hint=_(
                "Nothing is listening on that port, or a firewall rejects it: check the port "
                "(465 for SSL/TLS, 587 for STARTTLS) and that the server is running."
            ),
        )
    if step == "connect" and is_timeout(exc):
        return SmtpTemporaryError(
            _("TCP connection: no answer from %(host)s port %(port)s within %(timeout)s s.")
            % where,
            step=step,
            hint=_(
                "A firewall or the hosting provider is probably blocking outgoing port "
                "%(port)s (cloud providers often block port 25): try 587 (STARTTLS) or 465 "
                "(SSL/TLS)."
            )
            % where,
        )
    if isinstance(exc, ssl.SSLCertVerificationError):
        return SmtpConfigurationError(
            _("TLS: the server's certificate was rejected: %(reason)s")
            % {"reason": exc.verify_message},
            step=step,
            hint=cert_hint(exc, context),
        )
    if isinstance(exc, ssl.SSLError):
        reason = exc.reason or exc.__class__.__name__
        hint = _(
            "The TLS negotiation failed; this client needs TLS 1.2 or newer. Check the port "
            "and Security settings."
        )
        if config.security == "ssl" and (
            reason in _NOT_TLS_REASONS or isinstance(exc, ssl.SSLEOFError)
        ):
            hint = (
                _(
                    "Port %(port)s does not speak implicit TLS: set Security to STARTTLS "
                    "(usually port 587), or use the provider's SSL/TLS port (usually 465)."
                )
                % where
            )
        return SmtpConfigurationError(
            _("TLS: the handshake failed (%(reason)s).") % {"reason": reason},
            step=step,
            hint=hint,
        )
    if step == "greeting" and (is_timeout(exc) or isinstance(exc, smtplib.SMTPServerDisconnected)):
        if is_timeout(exc):
            message = _("Server greeting: no greeting within %(timeout)s s.") % where
        else:
            message = _("Server greeting: the server closed the connection without greeting.")
        return SmtpTemporaryError(message, step=step, hint=greeting_hint(context))
    if is_timeout(exc):
        return SmtpTemporaryError(
            _("%(step)s: no reply from the server within %(timeout)s s.")
            % {"step": label, **where},
            step=step,
            hint=_(
                "The server is slow or overloaded. Notifications are retried automatically; "
                "if it persists, raise the timeout or check the server."
            ),
        )
    if isinstance(exc, smtplib.SMTPServerDisconnected | ConnectionError):
        return SmtpTemporaryError(
            _("%(step)s: the server closed the connection.") % {"step": label},
            step=step,
            hint=_(
                "The server dropped the connection mid-way: it may be limiting connections "
                "or rejecting this machine's IP address. Notifications are retried "
                "automatically; if it persists, lower Batch or ask the provider."
            ),
        )
    if isinstance(exc, UnicodeError):
        return SmtpConfigurationError(
            _("%(step)s: a value contains characters SMTP cannot carry here.") % {"step": label},
            step=step,
            hint=_("Use only ASCII characters in the username, password and addresses."),
        )
    return SmtpTemporaryError(
        _("%(step)s failed: %(error)s")
        % {"step": label, "error": context.text(str(exc) or exc.__class__.__name__)},
        step=step,
        hint=_("A network error. Notifications are retried automatically."),
    )
