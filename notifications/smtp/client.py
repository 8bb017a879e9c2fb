"""The smtplib client with a masked transcript, and the forms a secret takes on the wire."""

from __future__ import annotations

import base64
import smtplib

MASK = "********"
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
    return tuple(sorted(forms, key=len, reverse=True))


def redact(text: str, secrets: tuple[str, ...]) -> str:
    for secret in secrets:
        text = text.replace(secret, MASK)
    return text


def decode(reply: bytes | str) -> str:
    return reply.decode("utf-8", "replace") if isinstance(reply, bytes) else str(reply)


class _Client(smtplib.SMTP):
    """smtplib.SMTP keeping a transcript with the AUTH exchange masked (debug output stays off)."""

    def __init__(self, *, timeout: float, transcript: list[str] | None, secrets: tuple[str, ...]):
        # A local_hostname avoids smtplib's socket.getfqdn(), a reverse DNS lookup without timeout.
        super().__init__(local_hostname="localhost", timeout=timeout)
        self.transcript = transcript
        self._secrets = secrets
        self._in_auth = False

    def note(self, line: str) -> None:
        if self.transcript is not None:
            self.transcript.append(redact(line, self._secrets))

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
        code, reply = super().getreply()
        if code != 334:
            self._in_auth = False
        lines = decode(reply).split("\n")
        for index, text in enumerate(lines):
            separator = "-" if index < len(lines) - 1 else " "
            self.note(f"S: {code}{separator}{text}".rstrip())
        return code, reply
