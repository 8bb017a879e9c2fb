"""Connecting to an SMTP server per security mode, sending over it, and the stepwise diagnosis."""

from __future__ import annotations

import base64
import email.policy
import functools
import ipaddress
import logging
import smtplib
import socket
import ssl
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.headerregistry import Address
from email.message import EmailMessage
from email.utils import formatdate, make_msgid
from typing import Any

from cryptography import x509
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy

from .exceptions import (
    SmtpConfigurationError,
    SmtpError,
    SmtpPermanentError,
    SmtpTemporaryError,
)
from .providers import provider_for_host

logger = logging.getLogger(__name__)

MASK = "********"
_SECURITY_MODES = ("ssl", "starttls", "none")
# Preferred first; all three keep working with smtplib's own auth objects.
_AUTH_MECHANISMS = ("PLAIN", "LOGIN", "CRAM-MD5")
_SMTP_VERBS = frozenset(
    "ehlo helo mail rcpt data quit noop rset starttls auth vrfy expn help".split()
)
_NOT_TLS_REASONS = ("WRONG_VERSION_NUMBER", "RECORD_LAYER_FAILURE", "PACKET_LENGTH_TOO_LONG")
_UNTRUSTED_CODES = {2, 18, 19, 20, 21}  # X509_V_ERR_*: unknown issuer, self-signed, ...
_EXPIRED_CODES = {9, 10}  # not yet valid, expired
_HOSTNAME_MISMATCH_CODE = 62

STEP_LABELS: dict[str, Any] = {
    "dns": gettext_lazy("DNS lookup"),
    "connect": gettext_lazy("TCP connection"),
    "greeting": gettext_lazy("Server greeting"),
    "ehlo": gettext_lazy("EHLO"),
    "tls": gettext_lazy("TLS"),
    "auth": gettext_lazy("Login (AUTH)"),
    "mail": gettext_lazy("Sender (MAIL FROM)"),
    "rcpt": gettext_lazy("Recipient (RCPT TO)"),
    "data": gettext_lazy("Message (DATA)"),
    "quit": gettext_lazy("QUIT"),
}


@dataclass(frozen=True)
class SmtpConfig:
    """The settings one connection needs; the model layer converts its record to this."""

    host: str
    port: int
    security: str
    username: str
    password: str = field(repr=False)
    from_address: str
    skip_verify: bool = False
    ca_pem: str = ""
    timeout: float = 30.0
    allow_plaintext_login: bool = False
    version: int = 0

    def __post_init__(self) -> None:
        if self.security not in _SECURITY_MODES:
            raise ValueError(f"security must be one of {_SECURITY_MODES}, not {self.security!r}")
        if self.timeout <= 0:
            raise ValueError("timeout must be positive")


def make_tls_context(config: SmtpConfig) -> ssl.SSLContext:
    """A verifying client context (chain, host name, TLS >= 1.2) plus the custom CA if any."""
    context = ssl.create_default_context()
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    if config.ca_pem.strip():
        try:
            context.load_verify_locations(cadata=config.ca_pem)
        except (ssl.SSLError, ValueError) as exc:
            raise SmtpConfigurationError(
                _("The custom CA is not a valid PEM certificate."),
                step="tls",
                hint=_("Paste the CA certificate in PEM form (-----BEGIN CERTIFICATE-----…)."),
            ) from exc
    if config.skip_verify:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


# --- messages ------------------------------------------------------------------------------


def _refuse_line_breaks(name: str, value: str) -> None:
    if any(char in value for char in "\r\n\0"):
        raise ValueError(
            _("%(name)s must not contain line breaks or NUL characters.") % {"name": name}
        )


@functools.lru_cache(maxsize=1024)  # the same From is parsed for every message
def _parse_address(value: str, name: str) -> Address:
    """Parse ``a@b.c`` or ``Display Name <a@b.c>`` into one Address with an ASCII addr-spec."""
    _refuse_line_breaks(name, value)
    invalid = _("%(name)s is not a valid email address: %(value)s") % {"name": name, "value": value}
    header = email.policy.default.header_factory(name, value)
    addresses = getattr(header, "addresses", ())
    if len(addresses) != 1 or not addresses[0].username or not addresses[0].domain:
        raise ValueError(invalid)
    address = addresses[0]
    if not address.username.isascii():
        raise ValueError(
            _("%(name)s has non-ASCII characters before the @, which SMTP servers rarely accept.")
            % {"name": name}
        )
    if header.defects:
        raise ValueError(invalid)
    try:
        domain = address.domain.encode("idna").decode("ascii")
        return Address(display_name=address.display_name, username=address.username, domain=domain)
    except (UnicodeError, ValueError) as exc:
        raise ValueError(invalid) from exc


def envelope_address(from_address: str) -> str:
    """The bare address (``a@b.c``) of a From value, for MAIL FROM."""
    return _parse_address(from_address, "From").addr_spec


def build_message(
    *,
    from_address: str,
    to: str,
    subject: str,
    body: str,
    html_body: str | None = None,
    reply_to: str | None = None,
    message_id: str | None = None,
    headers: dict[str, str] | None = None,
) -> EmailMessage:
    """An RFC 5322 message with CRLF line endings, Date, Message-ID and RFC 2047 headers."""
    sender = _parse_address(from_address, "From")
    message = EmailMessage(policy=email.policy.SMTP)
    message["From"] = sender
    message["To"] = _parse_address(to, "To")
    _refuse_line_breaks("Subject", subject)
    message["Subject"] = subject
    message["Date"] = formatdate(usegmt=True)
    if message_id is not None:
        _refuse_line_breaks("Message-ID", message_id)
    message["Message-ID"] = message_id or make_msgid(domain=sender.domain)
    if reply_to:
        message["Reply-To"] = _parse_address(reply_to, "Reply-To")
    for name, value in (headers or {}).items():
        _refuse_line_breaks(name, name)
        _refuse_line_breaks(name, value)
        message[name] = value
    # Quoted-printable keeps non-ASCII bodies 7-bit clean for servers without 8BITMIME.
    message.set_content(body, cte=None if body.isascii() else "quoted-printable")
    if html_body is not None:
        cte = None if html_body.isascii() else "quoted-printable"
        message.add_alternative(html_body, subtype="html", cte=cte)
    return message


# --- secrets and the transcript ------------------------------------------------------------


def _secret_forms(config: SmtpConfig) -> tuple[str, ...]:
    """The password as written and as it travels in AUTH PLAIN / LOGIN (base64)."""
    if not config.password:
        return ()

    def b64(text: str) -> str:
        return base64.b64encode(text.encode("utf-8")).decode("ascii")

    user, password = config.username, config.password
    forms = {
        password,
        b64(password),
        b64(f"\0{user}\0{password}"),
        b64(f"{user}\0{user}\0{password}"),
    }
    return tuple(sorted(forms, key=len, reverse=True))


def _redact(text: str, secrets: tuple[str, ...]) -> str:
    for secret in secrets:
        text = text.replace(secret, MASK)
    return text


def _decode(reply: bytes | str) -> str:
    return reply.decode("utf-8", "replace") if isinstance(reply, bytes) else str(reply)


#: Most lines and bytes one server reply may have; an endless multi-line reply fails the step.
MAX_REPLY_LINES = 100
MAX_REPLY_BYTES = 64 * 1024


class ReplyTooLong(smtplib.SMTPException):
    """The server's reply exceeded MAX_REPLY_LINES or MAX_REPLY_BYTES (a protocol error)."""


class _Client(smtplib.SMTP):
    """smtplib.SMTP keeping a transcript with the AUTH exchange masked (debug output stays off).

    Replies are read with bounded memory and time: see ``getreply``. ``deadline`` is an absolute
    ``time.monotonic()`` that no read may outlast (None: only the per-reply timeout applies).
    """

    def __init__(self, *, timeout: float, transcript: list[str] | None, secrets: tuple[str, ...]):
        # A local_hostname avoids smtplib's socket.getfqdn(), a reverse DNS lookup without timeout.
        super().__init__(local_hostname="localhost", timeout=timeout)
        self.transcript = transcript
        self._secrets = secrets
        self._in_auth = False
        self.deadline: float | None = None
        self._received = bytearray()  # read from _received_on but not yet consumed as a line
        self._received_on: socket.socket | None = None

    def note(self, line: str) -> None:
        if self.transcript is not None:
            self.transcript.append(_redact(line, self._secrets))

    def putcmd(self, cmd: str, args: str = "") -> None:
        if not self._in_auth and cmd.lower() in _SMTP_VERBS:
            cmd = cmd.upper()
        super().putcmd(cmd, args)

    def send(self, s: str | bytes) -> None:
        if isinstance(s, bytes):  # only DATA sends bytes: the message itself
            self.note(f"C: [message, {len(s)} bytes]")
            self.note("C: .")
        else:
            line = s.rstrip("\r\n")
            words = line.split(" ")
            if self._in_auth:
                line = MASK
            elif words[0].upper() == "AUTH":
                self._in_auth = True
                line = " ".join([*words[:2], MASK] if len(words) > 2 else words)
            self.note(f"C: {line}")
        super().send(s)

    def getreply(self) -> tuple[int, bytes]:
        """smtplib's getreply, bounded: at most MAX_REPLY_LINES / MAX_REPLY_BYTES, and finished
        within the timeout and before ``deadline`` however slowly the server drips it in (the
        time left is each read's socket timeout). Either bound closes the connection."""
        end = time.monotonic() + self.timeout
        if self.deadline is not None:
            end = min(end, self.deadline)
        lines: list[bytes] = []
        size = 0
        while True:
            line = self._read_line(end, MAX_REPLY_BYTES - size)
            size += len(line)
            lines.append(line[4:].strip(b" \t\r\n"))
            try:
                code = int(line[:3])
            except ValueError:
                code = -1  # not SMTP: do not read on (smtplib does the same)
                break
            if line[3:4] != b"-":
                break
            if len(lines) >= MAX_REPLY_LINES:
                self.close()
                raise ReplyTooLong(
                    _("The server's reply went on for more than %(lines)s lines.")
                    % {"lines": MAX_REPLY_LINES}
                )
        reply = b"\n".join(lines)
        if code != 334:
            self._in_auth = False
        lines = _decode(reply).split("\n")
        for index, text in enumerate(lines):
            separator = "-" if index < len(lines) - 1 else " "
            self.note(f"S: {code}{separator}{text}".rstrip())
        return code, reply

    def _read_line(self, end: float, limit: int) -> bytes:
        """One CRLF-terminated line of at most ``limit`` bytes, read before ``end``."""
        sock = self.sock
        if sock is None:
            raise smtplib.SMTPServerDisconnected("Connection unexpectedly closed")
        if self._received_on is not sock:  # a new connection, or STARTTLS: drop what came before
            self._received, self._received_on = bytearray(), sock
        previous_timeout = sock.gettimeout()
        try:
            while (newline := self._received.find(b"\n")) < 0:
                if len(self._received) >= limit:
                    self.close()
                    raise ReplyTooLong(
                        _("The server's reply was longer than %(size)s KB.")
                        % {"size": MAX_REPLY_BYTES // 1024}
                    )
                try:
                    remaining = end - time.monotonic()
                    if remaining <= 0:
                        raise TimeoutError("the reply did not arrive in time")
                    sock.settimeout(remaining)
                    chunk = sock.recv(4096)
                except OSError as exc:
                    self.close()
                    raise smtplib.SMTPServerDisconnected(
                        f"Connection unexpectedly closed: {exc}"
                    ) from exc
                if not chunk:
                    self.close()
                    raise smtplib.SMTPServerDisconnected("Connection unexpectedly closed")
                self._received += chunk
        finally:
            if self.sock is sock:
                sock.settimeout(previous_timeout)
        line = bytes(self._received[: newline + 1])
        del self._received[: newline + 1]
        return line


# --- the report ----------------------------------------------------------------------------


@dataclass
class DiagnosticStep:
    name: str
    label: Any
    status: str = "not_run"  # "ok" | "failed" | "skipped" | "not_run"
    duration_ms: int | None = None
    code: int | None = None
    reply: str = ""
    detail: dict[str, Any] = field(default_factory=dict)
    hint: str = ""
    error: str = ""

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "label": str(self.label),
            "status": self.status,
            "duration_ms": self.duration_ms,
            "code": self.code,
            "reply": self.reply,
            "detail": self.detail,
            "hint": str(self.hint),
            "error": str(self.error),
        }


@dataclass
class DiagnosticReport:
    steps: list[DiagnosticStep]
    transcript: list[str]
    duration_ms: int = 0

    @property
    def failed_step(self) -> str | None:
        return next((step.name for step in self.steps if step.status == "failed"), None)

    @property
    def ok(self) -> bool:
        return self.failed_step is None and self.step("data").status == "ok"

    @property
    def error(self) -> str:
        return next((step.error for step in self.steps if step.status == "failed"), "")

    @property
    def hint(self) -> str:
        return next((step.hint for step in self.steps if step.status == "failed"), "")

    def step(self, name: str) -> DiagnosticStep:
        return next(step for step in self.steps if step.name == name)

    def as_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "failed_step": self.failed_step,
            "error": str(self.error),
            "hint": str(self.hint),
            "duration_ms": self.duration_ms,
            "steps": [step.as_dict() for step in self.steps],
            "transcript": list(self.transcript),
        }


def _step_order(security: str) -> tuple[str, ...]:
    # With implicit TLS the handshake happens before the server can greet.
    if security == "ssl":
        return ("dns", "connect", "tls", "greeting", "ehlo", "auth", "mail", "rcpt", "data", "quit")
    return ("dns", "connect", "greeting", "ehlo", "tls", "auth", "mail", "rcpt", "data", "quit")


class _OutOfTime(TimeoutError):
    """The overall deadline passed before a step could start."""


def _is_timeout(exc: BaseException) -> bool:
    # smtplib turns a read timeout into SMTPServerDisconnected raised inside ``except OSError``.
    return isinstance(exc, TimeoutError) or (
        isinstance(exc, smtplib.SMTPServerDisconnected)
        and isinstance(exc.__context__, TimeoutError)
    )


def _resolve(host: str, port: int, timeout: float) -> list[tuple[Any, ...]]:
    """getaddrinfo has no timeout of its own, so it runs in a thread we stop waiting for."""
    outcome: dict[str, Any] = {}

    def lookup() -> None:
        try:
            outcome["addresses"] = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except OSError as exc:
            outcome["error"] = exc

    worker = threading.Thread(target=lookup, name="smtp-dns", daemon=True)
    worker.start()
    worker.join(timeout)
    if worker.is_alive():
        raise TimeoutError("DNS lookup timed out")
    if "error" in outcome:
        raise outcome["error"]
    return outcome["addresses"]


def _ehlo_name(sock: socket.socket) -> str:
    hostname = socket.gethostname()
    if "." in hostname and hostname.isascii():
        return hostname
    address = sock.getsockname()[0]
    return f"[IPv6:{address}]" if ":" in address else f"[{address}]"


def _hostname_matches(cert: x509.Certificate, host: str) -> bool:
    try:
        names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return False
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        ip = None
    if ip is not None:
        return ip in names.get_values_for_type(x509.IPAddress)
    host = host.lower().rstrip(".")
    for name in names.get_values_for_type(x509.DNSName):
        name = name.lower().rstrip(".")
        if name == host:
            return True
        if name.startswith("*.") and "." in host and host.split(".", 1)[1] == name[2:]:
            return True
    return False


def _tls_facts(sock: ssl.SSLSocket, host: str, verified: bool) -> dict[str, Any]:
    cipher = sock.cipher()
    facts: dict[str, Any] = {
        "version": sock.version(),
        "cipher": cipher[0] if cipher else "",
        "verified": verified,
    }
    der = sock.getpeercert(binary_form=True)
    if der:
        cert = x509.load_der_x509_certificate(der)
        not_after = cert.not_valid_after_utc
        facts.update(
            subject=cert.subject.rfc4514_string(),
            issuer=cert.issuer.rfc4514_string(),
            not_after=not_after.isoformat(),
            days_left=(not_after - datetime.now(UTC)).days,
            hostname_match=_hostname_matches(cert, host),
        )
    return facts


def _speaks_tls(sockaddr: Any, family: int, host: str, timeout: float) -> bool:
    """Whether the port completes a TLS handshake (a probe after a missing greeting)."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    try:
        with socket.socket(family, socket.SOCK_STREAM) as raw:
            raw.settimeout(timeout)
            raw.connect(sockaddr)
            with context.wrap_socket(raw, server_hostname=host):
                return True
    except (OSError, ValueError):
        return False


# --- hints ---------------------------------------------------------------------------------


def _tls_port_hint(port: int) -> str:
    return _(
        "Port %(port)s expects SSL/TLS (implicit TLS): set Security to SSL/TLS, or use port 587 "
        "with STARTTLS."
    ) % {"port": port}


def auth_failure_hint(host: str, reply: str) -> str:
    """What to check when the server refuses the login, by provider and reply text."""
    hints = [_("Check the username and password.")]
    if "5.7.139" in reply or "5.7.30" in reply:
        hints.append(
            _(
                "Microsoft has disabled basic authentication for this mailbox or tenant: enable "
                "Authenticated SMTP for the mailbox, or use OAuth, an SMTP relay or another "
                "provider."
            )
        )
    provider = provider_for_host(host)
    if provider is not None and provider.auth_hint:
        hints.append(str(provider.auth_hint))
    return " ".join(hints)


def _cert_hint(exc: ssl.SSLCertVerificationError, config: SmtpConfig) -> str:
    insecure = _(
        "Skip Verify would also make it work, but then anyone on the network path can read the "
        "password and the mail."
    )
    code = exc.verify_code
    if code == _HOSTNAME_MISMATCH_CODE:
        fix = _(
            "The certificate is not issued for %(host)s: enter the host name the certificate "
            "names (usually the provider's documented SMTP host), not an IP address or alias."
        ) % {"host": config.host}
    elif code in _EXPIRED_CODES:
        fix = _(
            "The server's certificate has expired or is not valid yet: the server's "
            "administrator must renew it; also check this machine's clock."
        )
    else:
        fix = _(
            "The certificate is self-signed or signed by an authority this machine does not "
            "trust: paste the CA certificate (PEM) that signed it into the Custom CA field."
        )
    return f"{fix} {insecure}"


# --- the session ---------------------------------------------------------------------------


class _Recorder:
    """The per-step results and the transcript of one connection."""

    def __init__(self, security: str, *, transcript: bool) -> None:
        self.steps = {
            name: DiagnosticStep(name, STEP_LABELS[name]) for name in _step_order(security)
        }
        self.transcript: list[str] | None = [] if transcript else None

    def skip(self, name: str, reason: str) -> None:
        step = self.steps[name]
        step.status, step.detail = "skipped", {"reason": reason}

    def report(self, duration_ms: int) -> DiagnosticReport:
        return DiagnosticReport(list(self.steps.values()), list(self.transcript or []), duration_ms)


class SmtpSession:
    """One SMTP connection: connect() per security mode, then send() any number of messages."""

    def __init__(
        self,
        config: SmtpConfig,
        *,
        deadline: float | None = None,
        transcript: bool = False,
        probe_tls: bool = False,
    ) -> None:
        self.config = config
        self._deadline = deadline
        self._probe_tls = probe_tls
        self._secrets = _secret_forms(config)
        self.recorder = _Recorder(config.security, transcript=transcript)
        self._client = _Client(
            timeout=config.timeout, transcript=self.recorder.transcript, secrets=self._secrets
        )
        self._client.deadline = deadline
        self._addresses: list[tuple[Any, ...]] = []
        self._timeout = config.timeout

    # The context manager closes; open_session() has already connected.
    def __enter__(self) -> SmtpSession:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- the steps --

    def connect(self) -> None:
        """DNS, TCP, TLS and greeting, EHLO, login: everything before the first message."""
        config = self.config
        try:
            self._resolve()
            self._connect_tcp()
            if config.security == "ssl":
                self._implicit_tls()
            self._greeting()
            self._ehlo()
            if config.security == "starttls":
                self._starttls()
            elif config.security == "none":
                self.recorder.skip(
                    "tls", _("Security is set to none: the connection is not encrypted.")
                )
            if config.username:
                self._login()
            else:
                self.recorder.skip("auth", _("No username: the server is used without login."))
        except BaseException:
            self._client.close()
            raise

    def send(
        self,
        message: EmailMessage | bytes,
        *,
        envelope_from: str,
        recipient: str,
        deadline: float | None = None,
    ) -> str:
        """MAIL FROM, RCPT TO, DATA; returns the server's final reply text.

        ``message`` is an EmailMessage or its bytes with CRLF line endings. ``deadline`` (an
        absolute ``time.monotonic()``) bounds the whole exchange, however the server drips.
        """
        client = self._client
        if client.sock is None:
            raise SmtpTemporaryError(_("The SMTP connection is closed."), step="mail")
        envelope_from = self._envelope(envelope_from, "mail")
        recipient = self._envelope(recipient, "rcpt")
        if isinstance(message, bytes):
            data = message
        else:
            data = message.as_bytes(policy=message.policy.clone(linesep="\r\n"))
        options = ["BODY=8BITMIME"] if not data.isascii() and client.has_extn("8bitmime") else []
        session_deadline = self._deadline
        if deadline is not None:
            self._deadline = (
                deadline if session_deadline is None else min(deadline, session_deadline)
            )
        client.deadline = self._deadline
        try:
            with self._step("mail") as step:
                self._expect(step, client.mail(envelope_from, options), 250)
            with self._step("rcpt") as step:
                self._expect(step, client.rcpt(recipient), 250, 251)
            with self._step("data") as step:
                self._expect(step, client.data(data), 250)
        except SmtpError as exc:
            if exc.code is not None:
                self._reset()
            raise
        finally:
            self._deadline = client.deadline = session_deadline
        return step.reply

    def quit(self) -> None:
        """QUIT as a recorded step; the message is already accepted, so no reply is fine."""
        with self._step("quit") as step:
            try:
                step.code, reply = self._client.docmd("QUIT")
                step.reply = self._text(reply)
            except (OSError, smtplib.SMTPException):
                step.detail["note"] = _("The server closed the connection without answering QUIT.")
            finally:
                self._client.close()

    def is_alive(self) -> bool:
        """NOOP: whether the connection can still carry a message."""
        if self._client.sock is None:
            return False
        try:
            self._client.sock.settimeout(self.config.timeout)
            return self._client.noop()[0] == 250
        except (OSError, smtplib.SMTPException):
            self._client.close()
            return False

    def close(self) -> None:
        """QUIT if the connection is still there, then close; never raises."""
        client = self._client
        if client.sock is None:
            return
        try:
            client.sock.settimeout(min(self.config.timeout, 5.0))
            client.docmd("QUIT")
        except (OSError, smtplib.SMTPException):
            pass
        finally:
            client.close()

    def _resolve(self) -> None:
        with self._step("dns") as step:
            if not self.config.host.strip():
                raise SmtpConfigurationError(
                    _("No SMTP host is set."), step="dns", hint=_("Fill in the server's host name.")
                )
            self._addresses = _resolve(self.config.host, self.config.port, self._timeout)
            addresses = sorted({info[4][0] for info in self._addresses})
            step.detail["addresses"] = addresses
            self._client.note(f"* Resolved {self.config.host} to {', '.join(addresses)}")

    def _connect_tcp(self) -> None:
        with self._step("connect") as step:
            error: OSError | None = None
            for family, kind, proto, _canonical, sockaddr in self._addresses:
                sock = socket.socket(family, kind, proto)
                try:
                    sock.settimeout(self._next_timeout())
                    sock.connect(sockaddr)
                except OSError as exc:
                    sock.close()
                    error = exc
                    continue
                self._client.sock = sock
                self._client._host = self.config.host
                self._client.local_hostname = _ehlo_name(sock)
                step.detail["address"] = f"{sockaddr[0]} port {sockaddr[1]}"
                self._client.note(f"* Connected to {sockaddr[0]} port {sockaddr[1]}")
                return
            raise error or OSError(_("No address to connect to."))

    def _implicit_tls(self) -> None:
        with self._step("tls") as step:
            self._client.sock = make_tls_context(self.config).wrap_socket(
                self._client.sock, server_hostname=self.config.host
            )
            self._record_tls(step)

    def _greeting(self) -> None:
        with self._step("greeting") as step:
            code, reply = self._client.getreply()
            if code == -1:
                raise SmtpConfigurationError(
                    _("The server answered with something that is not an SMTP greeting."),
                    step="greeting",
                    reply=self._text(reply),
                    hint=self._greeting_hint(),
                )
            self._expect(step, (code, reply), 220)

    def _ehlo(self) -> None:
        with self._step("ehlo") as step:
            code, reply = self._client.ehlo()
            if code != 250:
                code, reply = self._client.helo()
                step.detail["esmtp"] = False
            self._expect(step, (code, reply), 250)
            step.detail["extensions"] = self._extensions()

    def _starttls(self) -> None:
        client = self._client
        with self._step("tls") as step:
            if not client.has_extn("starttls"):
                raise SmtpConfigurationError(
                    _("The server does not offer STARTTLS, so the connection cannot be encrypted."),
                    step="tls",
                    hint=_(
                        "Security is STARTTLS, which is required, never skipped. Check the port "
                        "(587 usually offers STARTTLS, 465 expects SSL/TLS); choose Security: none "
                        "only for a trusted relay on a private network."
                    ),
                )
            client.starttls(context=make_tls_context(self.config))
            self._record_tls(step)
            self._expect(step, client.ehlo(), 250)
            step.detail["extensions"] = self._extensions()

    def _login(self) -> None:
        config, client = self.config, self._client
        with self._step("auth") as step:
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
            offered = client.esmtp_features["auth"].upper().split()
            mechanism = next((name for name in _AUTH_MECHANISMS if name in offered), None)
            if mechanism is None:
                raise SmtpConfigurationError(
                    _("The server offers no login method this client supports (%(offered)s).")
                    % {"offered": " ".join(offered)},
                    step="auth",
                    hint=_("Ask the provider for PLAIN or LOGIN authentication over TLS."),
                )
            step.detail["mechanism"] = mechanism
            client.user, client.password = config.username, config.password
            try:
                authobject = getattr(client, "auth_" + mechanism.lower().replace("-", "_"))
                step.code, reply = client.auth(mechanism, authobject)
                step.reply = self._text(reply)
            finally:
                client.password = ""

    def _envelope(self, address: str, step: str) -> str:
        """The bare ASCII address for MAIL FROM / RCPT TO; a bad one fails only this message."""
        try:
            return _parse_address(address, "From" if step == "mail" else "To").addr_spec
        except ValueError as exc:
            raise SmtpPermanentError(
                str(exc), step=step, hint=_("Correct the address; it cannot be sent to as it is.")
            ) from exc

    def _reset(self) -> None:
        """RSET after a refused message so the connection can carry the next one."""
        if self._client.sock is None:
            return
        try:
            self._client.rset()
        except (OSError, smtplib.SMTPException):
            self._client.close()

    # -- plumbing --

    def _next_timeout(self) -> float:
        if self._deadline is None:
            return self.config.timeout
        remaining = self._deadline - time.monotonic()
        if remaining <= 0:
            raise _OutOfTime
        return min(self.config.timeout, remaining)

    @contextmanager
    def _step(self, name: str) -> Iterator[DiagnosticStep]:
        step = self.recorder.steps[name]
        step.status, step.code, step.reply, step.hint, step.error = "not_run", None, "", "", ""
        started = time.monotonic()
        try:
            self._timeout = self._next_timeout()
            if self._client.sock is not None:
                self._client.sock.settimeout(self._timeout)
            yield step
        except (OSError, smtplib.SMTPException, UnicodeError, SmtpError) as exc:
            error = exc if isinstance(exc, SmtpError) else self._classify(name, exc)
            step.status, step.hint, step.error = "failed", str(error.hint), str(error)
            if error.code is not None:
                step.code, step.reply = error.code, error.reply
            logger.info(
                "SMTP %s:%s step %s failed: %s", self.config.host, self.config.port, name, error
            )
            if error is exc:
                raise
            raise error from (None if isinstance(exc, UnicodeError) else exc)
        else:
            step.status = "ok"
            logger.debug("SMTP %s:%s step %s ok", self.config.host, self.config.port, name)
        finally:
            step.duration_ms = round((time.monotonic() - started) * 1000)

    def _expect(self, step: DiagnosticStep, response: tuple[int, bytes], *codes: int) -> None:
        step.code, step.reply = response[0], self._text(response[1])
        if step.code not in codes:
            raise self._reply_error(step.name, step.code, step.reply)

    def _text(self, reply: bytes | str) -> str:
        return _redact(_decode(reply), self._secrets)

    def _extensions(self) -> list[str]:
        return [
            f"{name.upper()} {value}".strip() for name, value in self._client.esmtp_features.items()
        ]

    def _record_tls(self, step: DiagnosticStep) -> None:
        sock = self._client.sock
        assert isinstance(sock, ssl.SSLSocket)
        step.detail.update(_tls_facts(sock, self.config.host, verified=not self.config.skip_verify))
        facts = step.detail
        self._client.note(f"* TLS established: {facts['version']}, {facts['cipher']}")
        if "subject" in facts:
            self._client.note(
                f"* Certificate: {facts['subject']}; issuer {facts['issuer']}; "
                f"expires {facts['not_after']}"
            )

    def _greeting_hint(self) -> str:
        config = self.config
        if config.security != "ssl":
            probe = config.port == 465
            if not probe and self._probe_tls and self._addresses:
                try:
                    family, _kind, _proto, _canonical, sockaddr = self._addresses[0]
                    probe = _speaks_tls(sockaddr, family, config.host, self._next_timeout())
                except _OutOfTime:
                    probe = False
            if probe:
                return _tls_port_hint(config.port)
        return _(
            "The server accepted the connection but did not greet. Check the host and port; if "
            "this port expects implicit TLS (usually 465), set Security to SSL/TLS. Otherwise the "
            "server is overloaded, or a firewall or antivirus is intercepting the connection."
        )

    def _reply_error(self, step: str, code: int, reply: str) -> SmtpError:
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
            hint = auth_failure_hint(self.config.host, reply)
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

    def _classify(self, step: str, exc: BaseException) -> SmtpError:
        """Turn what smtplib, ssl and socket raise into the app's errors, with a hint."""
        config, label = self.config, STEP_LABELS[step]
        where = {"host": config.host, "port": config.port, "timeout": f"{self._timeout:g}"}
        if isinstance(exc, smtplib.SMTPResponseException):
            return self._reply_error(step, exc.smtp_code, self._text(exc.smtp_error))
        if isinstance(exc, _OutOfTime):
            return SmtpTemporaryError(
                _("%(step)s: the test ran out of time before this step.") % {"step": label},
                step=step,
                hint=_("The server is slow to answer; try again, or raise the timeout."),
            )
        if isinstance(exc, socket.gaierror) or (step == "dns" and _is_timeout(exc)):
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
        if step == "connect" and _is_timeout(exc):
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
                hint=_cert_hint(exc, config),
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
        if step == "greeting" and (
            _is_timeout(exc) or isinstance(exc, smtplib.SMTPServerDisconnected)
        ):
            if _is_timeout(exc):
                message = _("Server greeting: no greeting within %(timeout)s s.") % where
            else:
                message = _("Server greeting: the server closed the connection without greeting.")
            return SmtpTemporaryError(message, step=step, hint=self._greeting_hint())
        if _is_timeout(exc):
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
                _("%(step)s: a value contains characters SMTP cannot carry here.")
                % {"step": label},
                step=step,
                hint=_("Use only ASCII characters in the username, password and addresses."),
            )
        return SmtpTemporaryError(
            _("%(step)s failed: %(error)s")
            % {"step": label, "error": _redact(str(exc) or exc.__class__.__name__, self._secrets)},
            step=step,
            hint=_("A network error. Notifications are retried automatically."),
        )


def open_session(config: SmtpConfig) -> SmtpSession:
    """Connect and log in; use as ``with open_session(config) as session: session.send(...)``."""
    session = SmtpSession(config)
    session.connect()
    return session


def diagnose(config: SmtpConfig, *, to: str, deadline: float = 30.0) -> DiagnosticReport:
    """Send a test message step by step, recording each step, its timing and the transcript."""
    started = time.monotonic()
    session = SmtpSession(config, deadline=started + deadline, transcript=True, probe_tls=True)
    address_step = "mail"  # which step a bad address fails, before any connection
    try:
        envelope_from = envelope_address(config.from_address)
        address_step = "rcpt"
        recipient = _parse_address(to, "To").addr_spec
        message = build_message(
            from_address=config.from_address,
            to=to,
            subject=_("Test email from the notification settings"),
            body=_(
                "This is a test email sent from the SMTP settings page of the Django notifications "
                "admin. If you can read it, the settings work."
            ),
        )
    except ValueError as exc:
        step = session.recorder.steps[address_step]
        step.status, step.error = "failed", str(exc)
        step.hint = _("Correct the address and try again.")
        return session.recorder.report(round((time.monotonic() - started) * 1000))
    try:
        session.connect()
        session.send(message, envelope_from=envelope_from, recipient=recipient)
        session.quit()
    except SmtpError:
        pass
    finally:
        session.close()
    return session.recorder.report(round((time.monotonic() - started) * 1000))
