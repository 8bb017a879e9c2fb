"""The SMTP session: connecting per security mode, logging in, sending; each step recorded."""

from __future__ import annotations

import logging
import smtplib
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from email.message import EmailMessage
from typing import Any

from cryptography import x509

from ..exceptions import (
    SmtpConfigurationError,
    SmtpError,
    SmtpPermanentError,
    SmtpTemporaryError,
)
from ..phrases import phrase as _
from . import auth
from .client import _Client, b64, option_list, redactor, secret_forms
from .config import SmtpConfig
from .errors import Context, OutOfTime, auth_status, classify, not_smtp_hint, reply_error
from .message import PLAIN_ADDRESS, parse_address
from .pipelining import Group
from .report import DiagnosticReport, DiagnosticStep, Recorder, step_order
from .tls import make_tls_context, speaks_tls, tls_facts, unverified_certificate

logger = logging.getLogger(__name__)


class SmtpSession:
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

    def send(
        self,
        message: EmailMessage | bytes,
        *,
        envelope_from: str,
        recipient: str,
        deadline: float | None = None,
        meanwhile: Callable[[], bool] | None = None,
    ) -> str | None:
        """MAIL FROM, RCPT TO, DATA; returns the server's final reply text. Pipelined when the
        server offers PIPELINING (as most do) and both addresses are plain ASCII.

        ``message`` is an EmailMessage or its bytes with CRLF line endings. ``deadline`` (an
        absolute ``time.monotonic()``) bounds the whole exchange, however the server drips.

        ``meanwhile``, if given, is called once, while MAIL FROM is on its way, so that the
        caller's own work (the outbox's write before a send) overlaps the round trip instead of
        adding to it. When it returns False the transaction is reset (RSET) before the message
        was sent, and None is returned. What it raises propagates (an OSError among it would be
        reported as the MAIL step's failure, so the caller's work should not raise one).
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
        self._check_size(len(data))
        session_deadline = self._deadline
        if deadline is not None:
            self._deadline = (
                deadline if session_deadline is None else min(deadline, session_deadline)
            )
        client.deadline = self._deadline
        try:
            if (
                client.has_extn("pipelining")
                and PLAIN_ADDRESS.fullmatch(envelope_from)
                and PLAIN_ADDRESS.fullmatch(recipient)
            ):
                return self._send_pipelined(envelope_from, recipient, data, options, meanwhile)
            return self._send_one_by_one(envelope_from, recipient, data, options, meanwhile)
        except SmtpError as exc:
            if exc.code is not None:
                self._reset()
            raise
        finally:
            self._deadline = client.deadline = session_deadline

    def _send_one_by_one(self, envelope_from, recipient, data, options, meanwhile) -> str | None:
        """MAIL FROM, RCPT TO and DATA, each waiting for its reply: four round trips."""
        client = self._client
        go_on, raised = True, None

        def overlap() -> None:
            nonlocal go_on, raised
            go_on, raised = _ask(meanwhile)

        with self._step("mail") as step:
            reply = client.mail(envelope_from, options, meanwhile=meanwhile and overlap)
            if not go_on:
                self._reset()  # MAIL's reply was read: the connection is in step
                if raised is not None:
                    raise raised
                return None
            self._expect(step, reply, 250)
        with self._step("rcpt") as step:
            self._expect(step, client.rcpt(recipient), 250, 251)
        with self._step("data") as step:
            self._expect(step, client.data(data), 250)
        return step.reply

    def _send_pipelined(self, envelope_from, recipient, data, options, meanwhile) -> str | None:
        """RFC 2920: MAIL FROM, RCPT TO and DATA go out as one group and their replies are read
        in order, so a message costs two round trips instead of four (on a distant server, about
        twice the messages a session sends in a second).

        DATA joins the group only once ``meanwhile`` said to go on, so a claim lost meanwhile
        sends nothing. Every reply due is read before a refusal is raised, so the connection
        stays in step for the RSET that follows; leaving with replies due (the deadline, say)
        closes it instead (``pipelining.Group``).
        """
        group = Group(self._client)
        commands = [
            f"MAIL FROM:<{envelope_from}>{option_list(self._client, options)}",
            f"RCPT TO:<{recipient}>",
        ]
        go_on, raised = True, None
        try:
            with self._step("mail") as step:
                if meanwhile is None:
                    group.write(*commands, "DATA")
                else:
                    group.write(*commands)
                    go_on, raised = _ask(meanwhile)
                    if go_on:
                        group.write("DATA")
                reply = group.read()
                if reply[0] != 250 or not go_on:
                    group.abandon()
                    if not go_on:
                        self._reset()
                        if raised is not None:
                            raise raised
                        return None
                self._expect(step, reply, 250)
            with self._step("rcpt") as step:
                reply = group.read()
                if reply[0] not in (250, 251):
                    group.abandon()
                self._expect(step, reply, 250, 251)
            with self._step("data") as step:
                code, text = group.read()
                if code != 354:  # as smtplib's data() says it, so it is classified alike
                    raise smtplib.SMTPDataError(code, text)
                self._expect(step, group.send_message(data), 250)
            return step.reply
        finally:
            group.close_if_out_of_step()

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

    def _check_size(self, size: int) -> None:
        """RFC 1870: a message over the server's SIZE is refused here, before MAIL FROM, for
        good (it would be refused after the whole upload otherwise)."""
        limit = self._client.esmtp_features.get("size", "").strip()
        if limit.isdigit() and 0 < int(limit) < size:
            step = self.recorder.steps["mail"]
            step.status = "failed"
            step.error = _(
                "The message is %(size)s bytes; the server accepts at most %(limit)s (its SIZE)."
            ) % {"size": size, "limit": limit}
            raise SmtpPermanentError(
                step.error,
                step="mail",
                hint=_("Send less: link to large content instead of putting it in the message."),
            )

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

    def _envelope(self, address: str, step: str) -> str:
        """The bare ASCII address for MAIL FROM / RCPT TO; a bad one fails only this message."""
        try:
            return parse_address(address, "From" if step == "mail" else "To").addr_spec
        except ValueError as exc:
            raise SmtpPermanentError(
                str(exc), step=step, hint=_("Correct the address; it cannot be sent to as it is.")
            ) from exc

    def _reset(self) -> None:
        """RSET after a refused message so the connection can carry the next one; a server
        that does not take it is not trusted with another (the connection is closed)."""
        if self._client.sock is None:
            return
        try:
            if self._client.rset()[0] != 250:
                self._client.close()
        except (OSError, smtplib.SMTPException):
            self._client.close()

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
        """After the certificate was refused: the one the server presents, read unverified over
        a second connection to the same address (STARTTLS replayed), the whole of it within one
        step's timeout and the overall deadline. See ``tls.unverified_certificate``."""
        if self._connected_to is None:
            return None
        family, sockaddr = self._connected_to
        try:
            timeout = self._next_timeout()
        except OutOfTime:
            return None
        end = time.monotonic() + timeout

        def time_left() -> float:
            left = end - time.monotonic()
            if left <= 0:
                raise TimeoutError("no time left to read the certificate")
            return left

        probe = _Client(timeout=timeout, transcript=None, secrets=())
        probe.deadline = end  # bounds every reply read
        try:
            probe.sock = socket.socket(family, socket.SOCK_STREAM)
            probe.sock.settimeout(time_left())
            probe.sock.connect(sockaddr)
            if self.config.security == "starttls":
                probe._host = self.config.host
                if probe.getreply()[0] != 220 or probe.ehlo()[0] != 250:
                    return None
                if probe.docmd("STARTTLS")[0] != 220:
                    return None
            left = time_left()
            sock, probe.sock = probe.sock, None
            sock.settimeout(left)  # the handshake's bound
            return unverified_certificate(sock, self.config.host)
        except (OSError, smtplib.SMTPException):
            return None
        finally:
            probe.close()

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


def _ask(meanwhile: Callable[[], bool]) -> tuple[bool, BaseException | None]:
    """(whether to go on, what ``meanwhile`` raised): what it raises is raised again once the
    replies already due were read, so that the connection stays in step."""
    try:
        return bool(meanwhile()), None
    except BaseException as exc:  # raised again by the caller
        return False, exc


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
