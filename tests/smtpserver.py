"""Real SMTP servers for tests: a throwaway CA, aiosmtpd per security mode, failures on demand."""

from __future__ import annotations

import argparse
import asyncio
import base64
import binascii
import datetime as dt
import ipaddress
import json
import signal
import socket
import ssl
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

USERNAME = "sender@example.com"
PASSWORD = "Tr0ub4dor-and-3-horses"
HOST = "127.0.0.1"
CERT_VARIANTS = ("good", "self_signed", "expired", "wrong_host", "ip_only")
MODES = ("ssl", "starttls", "none")

__all__ = [
    "backlogged_port",
    "closed_port",
    "plain_smtp_server",
    "silent_port",
    "smtp_pki",
    "smtp_server_factory",
    "ssl_smtp_server",
    "starttls_smtp_server",
]


# --- certificates ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Pki:
    """A throwaway CA and server certificates (PEM files in ``directory``)."""

    directory: Path
    ca_pem: str

    def cert_files(self, variant: str = "good") -> tuple[Path, Path]:
        return self.directory / f"{variant}.crt", self.directory / f"{variant}.key"

    def server_context(self, variant: str = "good") -> ssl.SSLContext:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(*self.cert_files(variant))
        return context


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _certificate(
    subject: str,
    key: ec.EllipticCurvePrivateKey,
    *,
    issuer: str,
    issuer_key: ec.EllipticCurvePrivateKey,
    is_ca: bool = False,
    dns_names: tuple[str, ...] = (),
    ip_addresses: tuple[str, ...] = (),
    expired: bool = False,
) -> x509.Certificate:
    now = dt.datetime.now(dt.UTC)
    start, end = (
        (now - dt.timedelta(days=30), now - dt.timedelta(days=1))
        if expired
        else (
            now - dt.timedelta(hours=1),
            now + dt.timedelta(days=30),
        )
    )
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(subject))
        .issuer_name(_name(issuer))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=is_ca, path_length=None), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key()),
            critical=False,
        )
    )
    if is_ca:
        usage = x509.KeyUsage(False, False, False, False, False, True, True, False, False)
        builder = builder.add_extension(usage, critical=True)
    else:
        names: list[x509.GeneralName] = [x509.DNSName(name) for name in dns_names]
        names += [x509.IPAddress(ipaddress.ip_address(ip)) for ip in ip_addresses]
        usage = x509.KeyUsage(True, False, False, False, False, False, False, False, False)
        builder = (
            builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
            .add_extension(usage, critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), False)
        )
    return builder.sign(issuer_key, hashes.SHA256())


def _write(directory: Path, variant: str, cert: x509.Certificate, key: Any) -> None:
    (directory / f"{variant}.crt").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    (directory / f"{variant}.key").write_bytes(key_pem)


def make_pki(directory: Path) -> Pki:
    """A CA plus certificates for localhost/127.0.0.1: good, self_signed, expired; wrong_host
    (wrong.example only) and ip_only (only the IP address 127.0.0.1)."""
    directory.mkdir(parents=True, exist_ok=True)
    ca_name = "Throwaway Test CA"
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = _certificate(ca_name, ca_key, issuer=ca_name, issuer_key=ca_key, is_ca=True)
    local: dict[str, Any] = {"dns_names": ("localhost",), "ip_addresses": ("127.0.0.1",)}
    for variant in CERT_VARIANTS:
        key = ec.generate_private_key(ec.SECP256R1())
        if variant == "self_signed":
            cert = _certificate("localhost", key, issuer="localhost", issuer_key=key, **local)
        elif variant == "wrong_host":
            names = {"dns_names": ("wrong.example",)}
            cert = _certificate("wrong.example", key, issuer=ca_name, issuer_key=ca_key, **names)
        elif variant == "ip_only":
            ips = {"ip_addresses": ("127.0.0.1",)}
            cert = _certificate("127.0.0.1", key, issuer=ca_name, issuer_key=ca_key, **ips)
        else:
            expired = variant == "expired"
            cert = _certificate(
                "localhost", key, issuer=ca_name, issuer_key=ca_key, expired=expired, **local
            )
        _write(directory, variant, cert, key)
    ca_pem = ca.public_bytes(serialization.Encoding.PEM).decode("ascii")
    (directory / "ca.pem").write_text(ca_pem)
    return Pki(directory, ca_pem)


# --- what the server saw ---------------------------------------------------------------------


@dataclass(frozen=True)
class ReceivedMessage:
    mail_from: str
    rcpt_tos: tuple[str, ...]
    raw: bytes  # the DATA bytes as received (dot-unstuffed), line endings untouched
    auth_username: str | None
    received_at: float = field(default_factory=time.time)  # when DATA was accepted


@dataclass
class ServerState:
    """Everything the server received and its session counts; thread-safe."""

    events_path: Path | None = None
    messages: list[ReceivedMessage] = field(default_factory=list)
    auth_commands: list[str] = field(default_factory=list)  # mechanism of every AUTH received
    credentials: list[tuple[str, str]] = field(default_factory=list)  # (username, password)
    current_sessions: int = 0
    peak_sessions: int = 0
    total_sessions: int = 0
    in_data: int = 0  # sessions currently held inside DATA
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def _event(self, kind: str, **data: Any) -> None:
        if self.events_path is not None:
            line = json.dumps({"event": kind, "time": time.time(), **data})
            with self.events_path.open("a", encoding="utf-8") as events:
                events.write(line + "\n")

    def session_opened(self) -> None:
        with self._lock:
            self.current_sessions += 1
            self.total_sessions += 1
            self.peak_sessions = max(self.peak_sessions, self.current_sessions)
            self._event("session_opened", current=self.current_sessions, peak=self.peak_sessions)

    def session_closed(self) -> None:
        with self._lock:
            self.current_sessions -= 1
            self._event("session_closed", current=self.current_sessions, peak=self.peak_sessions)

    def data_entered(self, delta: int) -> None:
        with self._lock:
            self.in_data += delta
            self._event("data_held" if delta > 0 else "data_released", in_data=self.in_data)

    def auth_command(self, mechanism: str) -> None:
        with self._lock:
            self.auth_commands.append(mechanism)
            self._event("auth_command", mechanism=mechanism)

    def credentials_received(self, username: str, password: str, success: bool) -> None:
        with self._lock:
            self.credentials.append((username, password))
            self._event("auth", username=username, success=success)

    def message_received(self, message: ReceivedMessage) -> None:
        with self._lock:
            self.messages.append(message)
            self._event(
                "message",
                mail_from=message.mail_from,
                rcpt_tos=list(message.rcpt_tos),
                auth_username=message.auth_username,
                raw=message.raw.decode("latin-1"),
            )

    def reset_counts(self) -> None:
        with self._lock:
            self.peak_sessions = self.current_sessions
            self.total_sessions = 0


def read_events(path: Path) -> list[dict[str, Any]]:
    """The JSON-lines events an out-of-process server wrote (see ``main``)."""
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line]


# --- the handler: normal behaviour plus failures on demand -----------------------------------


class Handler:
    """aiosmtpd hooks. ``replies[command]`` queues replies ("250" = behave normally)."""

    def __init__(
        self, state: ServerState, *, offer_auth: bool = True, pipelining: bool = True
    ) -> None:
        self.state = state
        self.offer_auth = offer_auth
        self.pipelining = pipelining
        self.replies: dict[str, deque[str]] = {c: deque() for c in ("MAIL", "RCPT", "DATA")}
        self.drop_at: set[str] = set()  # "EHLO", "MAIL", "RCPT", "DATA": abort the connection
        self.data_delay = 0.0
        self.data_release: Callable[[], bool] | None = None  # DATA waits until this is true

    def _override(self, server: SMTP, command: str) -> str | None:
        if command in self.drop_at:
            assert server.transport is not None
            server.transport.abort()
            return "421 dropped by the test server"
        queue = self.replies.get(command)
        if queue:
            reply = queue.popleft()
            return None if reply.startswith("250") else reply
        return None

    async def handle_EHLO(
        self, server: SMTP, session: Session, envelope: Envelope, hostname: str, responses: list
    ) -> list[str]:
        session.host_name = hostname
        if dropped := self._override(server, "EHLO"):
            return [dropped]
        if not self.offer_auth:
            responses = [line for line in responses if not line[4:].upper().startswith("AUTH")]
        if self.pipelining:  # aiosmtpd reads commands in order whether or not it says so
            responses = [*responses[:-1], "250-PIPELINING", responses[-1]]
        return responses

    async def handle_MAIL(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list
    ) -> str:
        if reply := self._override(server, "MAIL"):
            return reply
        envelope.mail_from = address
        envelope.mail_options.extend(options)
        return "250 OK"

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list
    ) -> str:
        if reply := self._override(server, "RCPT"):
            return reply
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.extend(options)
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        self.state.data_entered(1)
        try:
            if self.data_delay:
                await asyncio.sleep(self.data_delay)
            while self.data_release is not None and not self.data_release():
                await asyncio.sleep(0.02)
        finally:
            self.state.data_entered(-1)
        if reply := self._override(server, "DATA"):
            return reply
        auth = session.auth_data
        self.state.message_received(
            ReceivedMessage(
                mail_from=envelope.mail_from or "",
                rcpt_tos=tuple(envelope.rcpt_tos),
                raw=bytes(envelope.original_content or b""),
                auth_username=auth.decode() if isinstance(auth, bytes) else auth,
            )
        )
        return f"250 OK queued as {len(self.state.messages)}"


class XOAuth2Handler(Handler):
    """Adds the XOAUTH2 mechanism: ``accepts(mailbox, token)`` decides, like Exchange or Gmail.

    A refused token gets the error challenge (334 with JSON, answered by an empty line) and
    then ``failure_reply``, as Gmail does.
    """

    def __init__(self, state: ServerState, *, accepts: Callable[[str, str], bool], **kw: Any):
        super().__init__(state, **kw)
        self.accepts = accepts
        self.failure_reply = "535 5.7.3 Authentication unsuccessful"

    async def auth_XOAUTH2(self, server: SMTP, args: list[str]) -> AuthResult:
        if len(args) > 1:
            try:
                blob = base64.b64decode(args[1], validate=True)
            except binascii.Error:
                return AuthResult(success=False, handled=False, message="501 5.5.2 bad base64")
        else:
            answer = await server.challenge_auth("", encode_to_b64=False)
            if not isinstance(answer, bytes):
                return AuthResult(success=False, handled=True)
            blob = answer
        fields = dict(
            part.split("=", 1)
            for part in blob.decode("utf-8", "replace").split("\x01")
            if "=" in part
        )
        mailbox, bearer = fields.get("user", ""), fields.get("auth", "")
        token = bearer.removeprefix("Bearer ")
        ok = bearer.startswith("Bearer ") and self.accepts(mailbox, token)
        self.state.credentials_received(mailbox, "(token)", ok)
        if ok:
            return AuthResult(success=True, auth_data=mailbox)
        error = json.dumps(
            {"status": "401", "schemes": "bearer", "scope": "https://mail.google.com/"}
        )
        await server.challenge_auth(error)
        return AuthResult(success=False, handled=False, message=self.failure_reply)


class _RecordingSMTP(SMTP):
    """Counts sessions (a STARTTLS upgrade is the same session) and records AUTH commands."""

    def __init__(self, handler: Handler, **kwargs: Any) -> None:
        super().__init__(handler, **kwargs)
        self._state = handler.state
        self._counted = False
        # An XOAUTH2 line carries a token of a few kilobytes; RFC 4954 allows 12,288 octets.
        self.command_size_limits["AUTH"] = 12288

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        if not self._counted:
            self._counted = True
            self._state.session_opened()

    def connection_lost(self, error: Exception | None) -> None:
        if self._counted:
            self._counted = False
            self._state.session_closed()
        super().connection_lost(error)

    async def smtp_AUTH(self, arg: str) -> None:
        self._state.auth_command((arg or "").split(" ")[0].upper())
        await super().smtp_AUTH(arg)


class _Controller(Controller):
    def factory(self) -> SMTP:
        return _RecordingSMTP(self.handler, **self.SMTP_kwargs)

    def _trigger_server(self) -> None:
        if self.port == 0 and self.server is not None:  # bound to an ephemeral port
            self.port = self.server.sockets[0].getsockname()[1]
        super()._trigger_server()


def _authenticator(
    users: dict[str, str], state: ServerState, failure_reply: str | None
) -> Callable[..., AuthResult]:
    def authenticate(
        server: SMTP, session: Session, envelope: Envelope, mechanism: str, data: Any
    ) -> AuthResult:
        if not isinstance(data, LoginPassword):
            return AuthResult(success=False, handled=False)
        username, password = data.login.decode(), data.password.decode()
        ok = users.get(username) == password
        state.credentials_received(username, password, ok)
        if ok:
            return AuthResult(success=True, auth_data=username)
        return AuthResult(success=False, handled=False, message=failure_reply)

    return authenticate


# --- servers ---------------------------------------------------------------------------------


class SmtpTestServer:
    """A running aiosmtpd server on 127.0.0.1 with its state and failure hooks."""

    def __init__(
        self,
        mode: str = "starttls",
        *,
        pki: Pki | None = None,
        cert: str = "good",
        port: int = 0,
        host: str = HOST,
        offer_starttls: bool = True,
        offer_auth: bool = True,
        auth_mechanisms: tuple[str, ...] = ("PLAIN", "LOGIN"),
        auth_require_tls: bool | None = None,
        require_auth: bool = False,
        users: dict[str, str] | None = None,
        auth_failure_reply: str | None = None,
        events_path: Path | None = None,
        xoauth2: Callable[[str, str], bool] | None = None,
        data_size_limit: int | None = None,
        pipelining: bool = True,
    ) -> None:
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}")
        if mode != "none" and pki is None:
            raise ValueError("TLS modes need a Pki")
        self.mode = mode
        self.host = host
        self.state = ServerState(events_path=events_path)
        self.handler: Handler = (
            Handler(self.state, offer_auth=offer_auth, pipelining=pipelining)
            if xoauth2 is None
            else XOAuth2Handler(
                self.state, offer_auth=offer_auth, pipelining=pipelining, accepts=xoauth2
            )
        )
        self._release = threading.Event()
        tls = pki.server_context(cert) if pki is not None and mode != "none" else None
        # aiosmtpd only counts STARTTLS as TLS, so implicit TLS must not "require" it for AUTH.
        kwargs: dict[str, Any] = {
            "server_hostname": "localhost",
            "authenticator": _authenticator(
                users or {USERNAME: PASSWORD}, self.state, auth_failure_reply
            ),
            "auth_require_tls": mode == "starttls"
            if auth_require_tls is None
            else auth_require_tls,
            "auth_exclude_mechanism": [m for m in ("PLAIN", "LOGIN") if m not in auth_mechanisms],
            "auth_required": require_auth,
        }
        if data_size_limit is not None:  # advertised as SIZE, and enforced
            kwargs["data_size_limit"] = data_size_limit
        if mode == "starttls" and offer_starttls:
            kwargs.update(tls_context=tls, require_starttls=True)
        self._controller = _Controller(
            self.handler,
            hostname=host,
            port=port,
            ssl_context=tls if mode == "ssl" else None,
            ready_timeout=10.0,
            **kwargs,
        )
        self._controller.start()
        self.port: int = self._controller.port
        self._settle()

    def _settle(self) -> None:
        """Forget the controller's own readiness probe connection."""
        deadline = time.monotonic() + 2.0
        while self.state.current_sessions and time.monotonic() < deadline:
            time.sleep(0.01)
        self.state.reset_counts()

    @property
    def messages(self) -> list[ReceivedMessage]:
        return list(self.state.messages)

    def queue_replies(self, command: str, *replies: str) -> None:
        """E.g. ``queue_replies("RCPT", "451 try later", "451 try later")``, then normal."""
        self.handler.replies[command.upper()].extend(replies)

    def drop_at(self, command: str) -> None:
        self.handler.drop_at.add(command.upper())

    def hold_data(self) -> None:
        """Hold every DATA open (no reply) until release_data()."""
        self._release.clear()
        self.handler.data_release = self._release.is_set

    def release_data(self) -> None:
        self._release.set()

    def stop(self) -> None:
        """Stop serving (idempotent)."""
        self.release_data()
        if self._controller._thread is not None:
            self._controller.stop()


class _Listener:
    """A TCP listener that never accepts: connects succeed but nothing is ever said."""

    def __init__(self, backlog: int) -> None:
        self.sock = socket.socket()
        self.sock.bind((HOST, 0))
        self.sock.listen(backlog)
        self.port = self.sock.getsockname()[1]
        self.fillers: list[socket.socket] = []

    def fill_backlog(self) -> None:
        """With a full accept queue the kernel drops new SYNs: connects time out."""
        for _ in range(4):
            filler = socket.socket()
            filler.setblocking(False)
            filler.connect_ex((HOST, self.port))
            self.fillers.append(filler)
        time.sleep(0.1)

    def close(self) -> None:
        for sock in [*self.fillers, self.sock]:
            sock.close()


# --- pytest fixtures -------------------------------------------------------------------------


@pytest.fixture(scope="session")
def smtp_pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    """The throwaway CA (``.ca_pem``) and server certificates."""
    return make_pki(tmp_path_factory.mktemp("smtp-pki"))


@pytest.fixture
def smtp_server_factory(smtp_pki: Pki) -> Iterator[Callable[..., SmtpTestServer]]:
    """``start(mode, **options) -> SmtpTestServer``; every server stops after the test."""
    servers: list[SmtpTestServer] = []

    def start(mode: str = "starttls", **options: Any) -> SmtpTestServer:
        options.setdefault("pki", smtp_pki)
        server = SmtpTestServer(mode, **options)
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()


@pytest.fixture
def ssl_smtp_server(smtp_server_factory: Callable[..., SmtpTestServer]) -> SmtpTestServer:
    return smtp_server_factory("ssl")


@pytest.fixture
def starttls_smtp_server(smtp_server_factory: Callable[..., SmtpTestServer]) -> SmtpTestServer:
    return smtp_server_factory("starttls")


@pytest.fixture
def plain_smtp_server(smtp_server_factory: Callable[..., SmtpTestServer]) -> SmtpTestServer:
    return smtp_server_factory("none")


@pytest.fixture
def silent_port() -> Iterator[int]:
    """A port that accepts TCP connections and never says anything."""
    listener = _Listener(backlog=16)
    yield listener.port
    listener.close()


@pytest.fixture
def backlogged_port() -> Iterator[int]:
    """A port whose accept queue is full, so a connect times out (like a firewall drop)."""
    listener = _Listener(backlog=0)
    listener.fill_backlog()
    yield listener.port
    listener.close()


@pytest.fixture
def closed_port() -> int:
    """A port nothing listens on: connecting is refused."""
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


# --- out of process --------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> None:
    """Serve until killed; print the port; write events as JSON lines (see ``read_events``)."""
    parser = argparse.ArgumentParser(prog="python -m tests.smtpserver", description=main.__doc__)
    parser.add_argument("--host", default=HOST)
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--mode", choices=MODES, default="none")
    parser.add_argument("--pki-dir", type=Path, help="where the CA (ca.pem) and certs go")
    parser.add_argument("--events", type=Path, help="JSON-lines file of sessions and messages")
    parser.add_argument("--data-delay-ms", type=int, default=0)
    parser.add_argument("--hold-data-file", type=Path, help="hold DATA until this file exists")
    parser.add_argument("--username", default=USERNAME)
    parser.add_argument("--password", default=PASSWORD)
    args = parser.parse_args(argv)

    pki = None
    if args.mode != "none":
        pki_dir = args.pki_dir or Path(f"smtp-pki-{time.time_ns()}")
        pki = make_pki(pki_dir)
    server = SmtpTestServer(
        args.mode,
        pki=pki,
        port=args.port,
        host=args.host,
        users={args.username: args.password},
        events_path=args.events,
    )
    server.handler.data_delay = args.data_delay_ms / 1000
    if args.hold_data_file is not None:
        server.handler.data_release = args.hold_data_file.exists
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    print(server.port, flush=True)
    while not stop.wait(0.5):
        pass
    server.stop()


if __name__ == "__main__":
    main()
