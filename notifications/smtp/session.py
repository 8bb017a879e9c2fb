"""The SMTP session: connecting per security mode, logging in, each step recorded; the mail
transaction that sends a message is ``transaction.MailTransactions``."""

from __future__ import annotations

import logging
import smtplib
import socket
import ssl
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from cryptography import x509

from ..exceptions import SmtpConfigurationError, SmtpError
from ..phrases import phrase as _
from . import auth
from .client import _Client, b64, redactor, secret_forms
from .config import SmtpConfig
from .errors import Context, OutOfTime, auth_status, classify, not_smtp_hint, reply_error
from .report import DiagnosticReport, DiagnosticStep, Recorder, step_order
from .tls import make_tls_context, presented_certificate, speaks_tls, tls_facts
from .transaction import MailTransactions

logger = logging.getLogger(__name__)


class SmtpSession(MailTransactions):
    """One SMTP connection: connect() per security mode, then send() any number of messages."""

    def __init__(
        self,
        config: SmtpConfig,
        *,
        deadline: float | None = None,
        transcript: bool = False,
        probe_tls: bool = False,
        message: bool = True,
        tokens: auth.TokenSource | None = None,
    ) -> None:
        self.config = config
        self._deadline = deadline
        self._probe_tls = probe_tls
        self._secrets = secret_forms(config.username, config.password)
        self._tokens = tokens
        self._token: Any = None
        steps = step_order(config.security, token=config.oauth is not None, message=message)
        self.recorder = Recorder(steps, transcript=transcript)
        self._client = _Client(
            timeout=config.timeout, transcript=self.recorder.transcript, secrets=self._secrets
        )
        self._client.deadline = deadline
        self._addresses: list[tuple[Any, ...]] = []
        self._connected_to: tuple[int, Any] | None = None  # (family, sockaddr)
        self._speaks_tls: bool | None = None  # the probe's answer, once asked
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
            if config.oauth is not None:
                self._fetch_token()
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
            self._addresses = resolve(self.config.host, self.config.port, self._timeout)
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
                    # Each command goes out in one write: without Nagle's algorithm a pipelined
                    # DATA is not held back until the server acknowledges MAIL FROM and RCPT TO.
                    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                except OSError as exc:
                    sock.close()
                    error = exc
                    continue
                self._client.sock = sock
                self._connected_to = (family, sockaddr)
                self._client._host = self.config.host
                self._client.local_hostname = ehlo_name(sock)
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
                    hint=not_smtp_hint(),  # it spoke first, so not TLS: no probe
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

    def _fetch_token(self) -> None:
        if self._tokens is None:
            self._tokens = auth.shared_tokens()
        with self._step("token") as step:
            self._token = self._tokens.get(self.config.oauth, timeout=self._timeout)
            self._keep_secret(self._token.value)
            step.detail.update(self._token.facts())
            self._client.note(f"* Access token from {self.config.oauth.token_url}")

    def _login(self) -> None:
        config, client = self.config, self._client
        with self._step("auth") as step:
            auth.check_can_login(config, client)
            if config.oauth is None:
                step.code, reply = auth.password(config, client, step)
            else:
                step.code, reply = auth.xoauth2(
                    config, client, step, self._token, refetch=self._refetch_token
                )
            step.reply = auth_status(self._text(reply))

    def report(self, duration_ms: int) -> DiagnosticReport:
        """What was recorded, every server-supplied string masked: EHLO keywords, certificate
        names, replies and the transcript can all echo a secret back. (Errors quote replies
        already masked; hints are this app's own words.)"""
        report = self.recorder.report(duration_ms)
        if not self._secrets:
            return report
        masking = redactor(self._secrets)
        for step in report.steps:
            step.reply = masking.redact(step.reply)
            step.detail = masking.redact_tree(step.detail)
        report.transcript = [masking.redact(line) for line in report.transcript]
        return report

    def _refetch_token(self, rejected: Any) -> Any:
        """After the server refused ``rejected``: drop it from the cache, fetch one new token."""
        self._token = self._tokens.refresh(self.config.oauth, rejected, timeout=self._timeout)
        self._keep_secret(self._token.value)
        return self._token

    def _keep_secret(self, value: str) -> None:
        """Mask a new secret (a token and its XOAUTH2 encoding) in the transcript and replies."""
        line = auth.xoauth2_string(self.config.username, value)
        # Not the line itself: its plain text holds the mailbox, which is no secret.
        forms = (b64(line), *secret_forms(self.config.username, value))
        self._secrets = (*forms, *self._secrets)
        self._client._secrets = self._secrets

    # -- plumbing --

    def _next_timeout(self) -> float:
        if self._deadline is None:
            return self.config.timeout
        remaining = self._deadline - time.monotonic()
        if remaining <= 0:
            raise OutOfTime
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
            error = exc if isinstance(exc, SmtpError) else classify(self._context(), name, exc)
            step.status, step.hint, step.error = "failed", error.hint, error.message
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
            raise reply_error(self._context(), step.name, step.code, step.reply)

    def _text(self, reply: bytes | str) -> str:
        return self._context().text(reply)

    def _context(self) -> Context:
        return Context(
            self.config,
            self._timeout,
            self._secrets,
            self._port_speaks_tls,
            self._peer_certificate,
        )

    def _port_speaks_tls(self) -> bool:
        """Probe (only when diagnosing) whether a port that did not greet expects implicit TLS.

        A second connection, so asked only when the hint depends on it (not on port 465, not
        with Security SSL/TLS, where the answer is known) and at most once per session.
        """
        if self._speaks_tls is None:
            self._speaks_tls = False
            if self._probe_tls and self._addresses:
                try:
                    family, _kind, _proto, _canonical, sockaddr = self._addresses[0]
                    timeout = self._next_timeout()
                    self._speaks_tls = speaks_tls(sockaddr, family, self.config.host, timeout)
                except OutOfTime:
                    pass
        return self._speaks_tls

    def _peer_certificate(self) -> x509.Certificate | None:
        """The certificate the server presents (``tls.presented_certificate``), read within one
        step's timeout and the overall deadline."""
        if self._connected_to is None:
            return None
        try:
            timeout = self._next_timeout()
        except OutOfTime:
            return None
        family, sockaddr = self._connected_to
        return presented_certificate(self.config, family, sockaddr, timeout)

    def _extensions(self) -> list[str]:
        return [
            f"{name.upper()} {value}".strip() for name, value in self._client.esmtp_features.items()
        ]

    def _record_tls(self, step: DiagnosticStep) -> None:
        sock = self._client.sock
        assert isinstance(sock, ssl.SSLSocket)
        step.detail.update(tls_facts(sock, self.config.host, verified=not self.config.skip_verify))
        facts = step.detail
        self._client.note(f"* TLS established: {facts['version']}, {facts['cipher']}")
        if "subject" in facts:
            self._client.note(
                f"* Certificate: {facts['subject']}; issuer {facts['issuer']}; "
                f"expires {facts['not_after']}"
            )


def open_session(config: SmtpConfig) -> SmtpSession:
    """Connect and log in; use as ``with open_session(config) as session: session.send(...)``."""
    session = SmtpSession(config)
    session.connect()
    return session


def resolve(host: str, port: int, timeout: float) -> list[tuple[Any, ...]]:
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


def ehlo_name(sock: socket.socket) -> str:
    hostname = socket.gethostname()
    if "." in hostname and hostname.isascii():
        return hostname
    address = sock.getsockname()[0]
    return f"[IPv6:{address}]" if ":" in address else f"[{address}]"
