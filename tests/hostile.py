"""A raw TCP "SMTP server" on loopback that misbehaves on purpose: endless or dripping replies.

aiosmtpd always answers well-formed and in one piece, so these faults need a server of our own:
it speaks just enough SMTP (no TLS, no AUTH) to reach the step where it turns hostile.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable, Iterator

import pytest

from tests.loopback import LOOPBACK

#: What the server does at its hostile step: write to the socket until it fails or is stopped.
Behaviour = Callable[[socket.socket, threading.Event], None]


def flood(sock: socket.socket, stop: threading.Event, code: bytes = b"220") -> None:
    """Continuation lines as fast as the client reads them, never a last line."""
    line = code + b"-" + b"x" * 70 + b"\r\n"
    chunk = line * 100
    while not stop.is_set():
        sock.sendall(chunk)


def drip(interval: float, code: bytes = b"250") -> Behaviour:
    """One continuation line every ``interval`` seconds, never a last line."""

    def behaviour(sock: socket.socket, stop: threading.Event) -> None:
        while not stop.wait(interval):
            sock.sendall(code + b"-still working\r\n")

    return behaviour


class HostileServer:
    """Greets and answers EHLO/MAIL/RCPT/DATA normally, then runs ``behaviour`` at ``at``.

    ``at`` is "greeting" (instead of the greeting) or "data" (instead of the reply to the end of
    the message). ``connections`` counts the TCP connections accepted. ``pipelining`` offers
    PIPELINING; ``rcpt_reply`` answers RCPT, and DATA is taken (354) whatever it said, as a
    careless server does. ``message_lines`` are the lines received after DATA, the dot included.
    """

    def __init__(
        self,
        behaviour: Behaviour,
        *,
        at: str = "data",
        pipelining: bool = False,
        rcpt_reply: bytes = b"250 OK",
    ) -> None:
        self.behaviour, self.at = behaviour, at
        self.pipelining, self.rcpt_reply = pipelining, rcpt_reply
        self.message_lines: list[bytes] = []
        self.connections = 0
        self._stop = threading.Event()
        self._listener = socket.create_server((LOOPBACK, 0))
        self._listener.settimeout(0.2)
        self.port = self._listener.getsockname()[1]
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                sock, _address = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self.connections += 1
            threading.Thread(target=self._serve, args=(sock,), daemon=True).start()

    def _serve(self, sock: socket.socket) -> None:
        with sock:
            try:
                if self.at == "greeting":
                    self.behaviour(sock, self._stop)
                    return
                sock.sendall(b"220 hostile.test ESMTP\r\n")
                reader = sock.makefile("rb")
                in_data = False
                while not self._stop.is_set():
                    line = reader.readline()
                    if not line:
                        return
                    if in_data:
                        self.message_lines.append(line)
                        if line == b".\r\n":
                            self.behaviour(sock, self._stop)
                            in_data = False
                        continue
                    verb = line[:4].upper()
                    if verb == b"EHLO":
                        offered = b"250-PIPELINING\r\n" if self.pipelining else b""
                        sock.sendall(b"250-hostile.test\r\n" + offered + b"250 8BITMIME\r\n")
                    elif verb == b"RCPT":
                        sock.sendall(self.rcpt_reply + b"\r\n")
                    elif verb == b"DATA":
                        in_data = True
                        sock.sendall(b"354 go ahead\r\n")
                    elif verb == b"QUIT":
                        sock.sendall(b"221 bye\r\n")
                        return
                    else:
                        sock.sendall(b"250 OK\r\n")
            except OSError:  # the client gave up: what the test wants
                return

    def stop(self) -> None:
        self._stop.set()
        self._listener.close()
        self._thread.join(5)


@pytest.fixture
def hostile_server() -> Iterator[Callable[..., HostileServer]]:
    servers: list[HostileServer] = []

    def start(behaviour: Behaviour, **options) -> HostileServer:
        server = HostileServer(behaviour, **options)
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()
