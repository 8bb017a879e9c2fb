"""The mail transaction of an open SMTP session: MAIL FROM, RCPT TO and DATA for one message,
pipelined (RFC 2920) when the server offers it, each step recorded as the session's others are.

``MailTransactions`` is the part of ``SmtpSession`` that sends; it uses the session's client,
its steps (``_step``, ``_expect``) and its deadline, and is not used on its own.
"""

from __future__ import annotations

import smtplib
from collections.abc import Callable
from email.message import EmailMessage

from ..exceptions import SmtpError, SmtpPermanentError, SmtpTemporaryError
from ..phrases import phrase as _
from .client import option_list
from .message import PLAIN_ADDRESS, parse_address
from .pipelining import Group


class MailTransactions:
    """``send()`` and what it needs, mixed into ``SmtpSession``."""

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


def _ask(meanwhile: Callable[[], bool]) -> tuple[bool, BaseException | None]:
    """(whether to go on, what ``meanwhile`` raised): what it raises is raised again once the
    replies already due were read, so that the connection stays in step."""
    try:
        return bool(meanwhile()), None
    except BaseException as exc:  # raised again by the caller
        return False, exc
