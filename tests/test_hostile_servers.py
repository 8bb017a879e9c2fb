"""Servers that echo secrets, send what is not SMTP, break the login exchange, or try to repaint
the terminal: each fails its step with a clear error and leaks nothing (issue 15, items 3-4, 7,
8, 10). A scripted raw server on loopback says exactly what a test needs it to say."""

from __future__ import annotations

import base64
import io
import json
import socket
import struct
import threading
from collections.abc import Callable, Iterator

import pytest
from django.core.management import CommandError, call_command

import notifications
from notifications import services
from notifications.models import Notification, SmtpSettings, Status
from notifications.smtp import SmtpConfig, diagnose
from tests.loopback import LOOPBACK
from tests.test_redaction import ECHOES, _leaks

CANARY = "Canary-Pässwörd-7f3Q!x"
USER = "mailer@example.com"

#: ``reply(line) -> bytes``: the server's answer to one client line (``None`` closes, ``RESET``
#: aborts the connection with a TCP reset).
Script = Callable[[bytes], bytes | None]
RESET = b"<reset>"


class ScriptedServer:
    """Greets with ``greeting``, then answers each line the client sends with ``script(line)``."""

    def __init__(self, script: Script, *, greeting: bytes = b"220 scripted ESMTP\r\n") -> None:
        self.script, self.greeting = script, greeting
        self.received: list[bytes] = []
        self._listener = socket.create_server((LOOPBACK, 0))
        self._listener.settimeout(0.2)
        self.port = self._listener.getsockname()[1]
        self._stop = threading.Event()
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                sock, _address = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:  # stopped
                return
            threading.Thread(target=self._talk, args=(sock,), daemon=True).start()

    def _talk(self, sock: socket.socket) -> None:
        with sock:
            self._dialogue(sock)

    def _dialogue(self, sock: socket.socket) -> None:
        sock.settimeout(5)
        reader = sock.makefile("rb")
        try:
            sock.sendall(self.greeting)
            in_data = False
            for line in reader:
                self.received.append(line)
                if in_data:
                    if line == b".\r\n":
                        in_data = False
                        sock.sendall(b"250 2.0.0 queued\r\n")
                    continue
                reply = self.script(line)
                if reply is None:
                    return
                if reply == RESET:
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                    return
                sock.sendall(reply)
                in_data = reply.startswith(b"354")
        except OSError:
            return

    def stop(self) -> None:
        self._stop.set()
        self._listener.close()


@pytest.fixture
def scripted() -> Iterator[Callable[..., ScriptedServer]]:
    servers: list[ScriptedServer] = []

    def start(script: Script, **options) -> ScriptedServer:
        server = ScriptedServer(script, **options)
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()


def smtp(ehlo: list[str], auth: Callable[[bytes], bytes] | None = None) -> Script:
    """A plain SMTP dialogue: ``ehlo`` keywords, ``auth`` answering AUTH lines, 250 otherwise."""
    state = {"auth": False}

    def script(line: bytes) -> bytes | None:
        verb = line.split(b" ", 1)[0].strip().upper()
        if state["auth"] or verb == b"AUTH":
            state["auth"] = True
            answer = auth(line) if auth else b"502 no\r\n"
            state["auth"] = answer.startswith(b"334")
            return answer
        if verb == b"EHLO":
            lines = ["scripted", *ehlo]
            return b"".join(
                f"250{'-' if i < len(lines) - 1 else ' '}{text}\r\n".encode()
                for i, text in enumerate(lines)
            )
        if verb == b"DATA":
            return b"354 go ahead\r\n"
        if verb == b"QUIT":
            return None
        return b"250 2.1.0 ok\r\n"

    return script


def config_for(server: ScriptedServer, *, password: str = CANARY) -> SmtpConfig:
    return SmtpConfig(
        host=LOOPBACK,
        port=server.port,
        security="none",
        username=USER,
        password=password,
        from_address="Site <noreply@example.com>",
        timeout=5,
        allow_plaintext_login=True,
    )


def test_a_server_echoing_the_password_everywhere_leaks_none_of_its_encodings(scripted):
    echoes = [f"X-ECHO-{n} {value}" for n, value in enumerate(ECHOES.values())]

    def auth(line: bytes) -> bytes:
        blob = line.split()[-1].decode()
        return f"235 2.7.0 Accepted {blob} {blob.rstrip('=')} {CANARY}\r\n".encode()

    server = scripted(smtp(["AUTH PLAIN", *echoes], auth))
    report = diagnose(config_for(server), to="someone@example.com")
    assert report.ok, report.as_dict()
    everything = json.dumps(report.as_dict(), ensure_ascii=False)
    assert not _leaks(everything)
    assert report.step("auth").reply == "2.7.0"  # of a login reply, only its status


def test_a_refused_login_keeps_only_the_status_of_a_reply_that_echoes_the_password(scripted):
    server = scripted(smtp(["AUTH PLAIN"], lambda line: f"535 5.7.8 bad {CANARY}\r\n".encode()))
    report = diagnose(config_for(server), to="someone@example.com")
    assert report.failed_step == "auth"
    assert "5.7.8" in report.error
    assert not _leaks(json.dumps(report.as_dict(), ensure_ascii=False))


def test_a_challenge_that_is_not_base64_fails_the_login_step_instead_of_crashing(scripted):
    server = scripted(smtp(["AUTH LOGIN"], lambda line: b"334 !!not*base64!!\r\n"))
    report = diagnose(config_for(server), to="someone@example.com")
    assert report.failed_step == "auth"
    assert "not valid base64" in report.error
    assert "not a standard SMTP login" in report.hint


@pytest.mark.django_db
def test_a_malformed_challenge_pauses_sending_rather_than_retrying(scripted, configure_smtp):
    server = scripted(smtp(["AUTH LOGIN"], lambda line: b"334 ***\r\n"))
    server.mode = "none"
    configure_smtp(server, username=USER, password=CANARY)
    [row] = notifications.notify(recipients="a@example.com", subject="s", body="b")
    assert services.deliver() == 0
    row.refresh_from_db()
    settings = SmtpSettings.load()
    assert (row.status, row.attempts) == (Status.QUEUED, 0)
    assert "not valid base64" in settings.paused_reason
    assert CANARY not in settings.paused_reason
    assert not Notification.objects.filter(status=Status.FAILED).exists()


def test_a_service_that_is_not_smtp_is_named_so_without_repeating_its_banner(scripted):
    server = scripted(lambda line: None, greeting=b"SSH-2.0-OpenSSH_9.2p1 Debian-2\r\n")
    report = diagnose(config_for(server), to="someone@example.com")
    assert report.failed_step == "greeting"
    assert "not an SMTP greeting" in report.error
    assert "OpenSSH" not in json.dumps(report.as_dict())


def test_a_password_beyond_ascii_is_sent_as_utf8_by_plain_and_login(smtp_server_factory):
    password = "pässwörd-密码-Ω"
    for mechanism in ("plain", "login"):
        server = smtp_server_factory("none", users={USER: password})
        config = SmtpConfig(
            host=LOOPBACK,
            port=server.port,
            security="none",
            username=USER,
            password=password,
            from_address="Site <noreply@example.com>",
            allow_plaintext_login=True,
            auth_mechanism=mechanism,
        )
        report = diagnose(config, to="someone@example.com")
        assert report.ok, (mechanism, report.error)
        assert server.state.credentials[-1] == (USER, password)


@pytest.mark.django_db
def test_smtp_test_escapes_what_would_repaint_the_terminal(scripted, configure_smtp):
    forged = "\x1b[2K\r\x1b[32m✓ Delivered\x1b[0m"

    def script(line: bytes) -> bytes | None:
        if line.upper().startswith(b"RCPT"):
            return f"550 5.1.1 no {forged}\r\n".encode()
        return smtp([])(line)

    server = scripted(script)
    server.mode = "none"
    configure_smtp(server)
    out = io.StringIO()
    with pytest.raises(CommandError):
        call_command("smtp_test", "--to", "a@example.com", stdout=out, no_color=True)
    assert "\x1b" not in out.getvalue()
    assert "\\x1b[32m" in out.getvalue()


def test_a_plain_blob_is_masked_in_the_transcript_whatever_the_server_says(scripted):
    blob = base64.b64encode(f"\0{USER}\0{CANARY}".encode()).decode()

    def auth(line: bytes) -> bytes:
        return f"535 5.7.8 you sent {blob[:40]}\r\n".encode()

    server = scripted(smtp(["AUTH PLAIN"], auth))
    report = diagnose(config_for(server), to="someone@example.com")
    assert not any(blob[:12] in line for line in report.transcript)
