"""The smtplib client with a masked transcript, and the forms a secret takes on the wire."""

from __future__ import annotations

import base64
import binascii
import functools
import re
import smtplib
import socket
import time

from django.utils.translation import gettext as _

from ..redaction import MASK, Redactor
from .message import PLAIN_ADDRESS

_SMTP_VERBS = frozenset(
    "ehlo helo mail rcpt data quit noop rset starttls auth vrfy expn help".split()
)


def b64(text: str) -> str:
    return base64.b64encode(text.encode("utf-8")).decode("ascii")


def secret_forms(username: str, password: str) -> tuple[str, ...]:
    """The password as written and as it travels in AUTH PLAIN / LOGIN (base64)."""
    if not password:
        return ()
    forms = {
        password,
        b64(password),
        b64(f"\0{username}\0{password}"),
        b64(f"{username}\0{username}\0{password}"),
    }
    return tuple(sorted(forms))  # a stable key for redactor()'s cache


@functools.lru_cache(maxsize=16)
def redactor(secrets: tuple[str, ...]) -> Redactor:
    """Masks every fragment of these secrets in any encoding (built once per set of secrets)."""
    return Redactor(secrets)


def redact(text: str, secrets: tuple[str, ...]) -> str:
    return redactor(secrets).redact(text) if secrets else text


#: More challenges than any mechanism here needs (LOGIN takes two) means a broken server.
_MAX_CHALLENGES = 5


def decode(reply: bytes | str) -> str:
    return reply.decode("utf-8", "replace") if isinstance(reply, bytes) else str(reply)


#: Most lines and bytes one server reply may have; an endless multi-line reply fails the step.
MAX_REPLY_LINES = 100
MAX_REPLY_BYTES = 64 * 1024


_LINE_STARTING_WITH_DOT = re.compile(rb"(?m)^\.")


class ReplyTooLong(smtplib.SMTPException):
    """The server's reply exceeded MAX_REPLY_LINES or MAX_REPLY_BYTES (a protocol error)."""


class MalformedChallenge(smtplib.SMTPException):
    """A 334 challenge that is not base64: no SMTP server sends one (a protocol error)."""


def option_list(client: smtplib.SMTP, options) -> str:
    """MAIL/RCPT parameters as smtplib writes them (only when the server speaks ESMTP)."""
    return " " + " ".join(options) if options and client.does_esmtp else ""


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
            self.transcript.append(redact(line, self._secrets))

    def putcmd(self, cmd: str, args: str = "") -> None:
        if not self._in_auth and cmd.lower() in _SMTP_VERBS:
            cmd = cmd.upper()
        super().putcmd(cmd, args)

    # smtplib's mail() and rcpt() parse each address once more (email.utils.parseaddr, a tenth
    # of a worker's CPU) only to put it in angle brackets; a plain addr-spec goes as it is.
    def mail(self, sender: str, options=(), *, meanwhile=None) -> tuple[int, bytes]:
        """MAIL FROM; ``meanwhile()``, if given, runs while the command is on its way."""
        if not PLAIN_ADDRESS.fullmatch(sender) or any(o.lower() == "smtputf8" for o in options):
            if meanwhile is not None:
                meanwhile()
            return super().mail(sender, options)
        self.putcmd("mail", f"FROM:<{sender}>{option_list(self, options)}")
        if meanwhile is not None:
            meanwhile()
        return self.getreply()

    def rcpt(self, recip: str, options=()) -> tuple[int, bytes]:
        if not PLAIN_ADDRESS.fullmatch(recip):
            return super().rcpt(recip, options)
        self.putcmd("rcpt", f"TO:<{recip}>{option_list(self, options)}")
        return self.getreply()

    def send_body(self, data: bytes) -> tuple[int, bytes]:
        """The message after DATA's 354, as smtplib's ``data`` sends it (lines that start with a
        dot doubled, then CRLF.CRLF; empty: the lone dot); the server's reply."""
        if not data:
            self.note("C: .")
            super().send(b".\r\n")
            return self.getreply()
        body = _LINE_STARTING_WITH_DOT.sub(b"..", data)
        if not body.endswith(b"\r\n"):
            body += b"\r\n"
        self.send(body + b".\r\n")
        return self.getreply()

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
                # Not SMTP (an SSH or FTP banner, say): neither read on nor repeat its bytes.
                self._in_auth = False
                self.note(f"S: [not an SMTP reply: {len(line)} bytes]")
                return -1, b""
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
        lines = decode(reply).split("\n")
        for index, text in enumerate(lines):
            separator = "-" if index < len(lines) - 1 else " "
            self.note(f"S: {code}{separator}{text}".rstrip())
        return code, reply

    def auth(self, mechanism, authobject, *, initial_response_ok=True) -> tuple[int, bytes]:
        """smtplib's ``auth``, but in UTF-8 (RFC 4616 PLAIN, and LOGIN, carry any password; smtplib
        encodes ASCII only), and a challenge that is not base64 refused as MalformedChallenge
        instead of an uncaught binascii.Error."""
        mechanism = mechanism.upper()
        initial = authobject() if initial_response_ok else None
        # smtplib's auth_login tells the username from the password by this count.
        if initial is not None:
            code, reply = self.docmd("AUTH", f"{mechanism} {b64(initial)}")
            self._auth_challenge_count = 1
        else:
            code, reply = self.docmd("AUTH", mechanism)
            self._auth_challenge_count = 0
        for _round in range(_MAX_CHALLENGES):
            if code != 334:
                break
            self._auth_challenge_count += 1
            try:
                challenge = base64.b64decode(reply, validate=True)
            except (binascii.Error, ValueError):
                raise MalformedChallenge(
                    _("The server's login challenge is not valid base64.")
                ) from None
            code, reply = self.docmd(b64(authobject(challenge)))
        else:
            raise MalformedChallenge(_("The server kept sending login challenges."))
        if code in (235, 503):
            return code, reply
        raise smtplib.SMTPAuthenticationError(code, reply)

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
