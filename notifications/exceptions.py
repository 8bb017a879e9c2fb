"""The one small exception hierarchy that services, the transport and the interfaces share."""

from __future__ import annotations


class NotificationsError(Exception):
    """Base class of every error this app raises on purpose."""


class EncryptionKeyError(NotificationsError):
    """The encryption keys are missing, malformed, or cannot decrypt the stored password."""


class InvalidNotification(NotificationsError, ValueError):
    """A caller passed an argument a notification cannot be made from; nothing was stored."""


class SmtpError(NotificationsError):
    """An SMTP step failed.

    ``step`` names the SMTP step (``dns``, ``connect``, ``greeting``, ``ehlo``, ``tls``, ``auth``,
    ``mail``, ``rcpt``, ``data``, ``quit``; see ``smtp.STEP_LABELS``) or, in dispatch only, what
    failed before SMTP (``config``: the stored settings cannot be used; ``message``: the row
    cannot be made into a message; ``internal``: an unexpected error), ``code`` and ``reply`` hold
    the server's reply when
    there was one, and ``hint`` says what a person can do about it. The message never holds the
    password. ``message`` and ``hint`` may be phrases (``notifications.phrases``), kept as such
    so that what is stored of them can be shown in another language later.
    """

    def __init__(
        self,
        message: str,
        *,
        step: str,
        code: int | None = None,
        reply: str = "",
        hint: str = "",
    ) -> None:
        super().__init__(message)
        self.message = message
        self.step = step
        self.code = code
        self.reply = reply
        self.hint = hint


class SmtpTemporaryError(SmtpError):
    """Worth retrying later: 4xx replies, timeouts, dropped connections, unreachable servers."""


class SmtpPermanentError(SmtpError):
    """This message will never be accepted as it is (5xx for the sender, recipient or content)."""


class SmtpConfigurationError(SmtpError):
    """The settings themselves are wrong (login, certificate, TLS, security mode).

    Dispatch pauses instead of retrying every message against a server that will refuse them all.
    """
