"""RFC 2920 PIPELINING: commands written as a group, their replies read back in order.

The mail transaction (``transaction.MailTransactions._send_pipelined``) decides what each
reply means; a ``Group`` keeps the connection in step whatever happens: it counts the replies
still due, reads them back after a refusal, and closes the connection rather than leave it out
of step (a reply left unread, or a server left waiting for a message after its 354), so no later
command is answered by the reply to an earlier one.
"""

from __future__ import annotations

import logging
import smtplib

logger = logging.getLogger(__name__)


class Group:
    """One message's MAIL FROM and RCPT TO, and DATA once written, on ``client`` (a
    ``client._Client``): the replies due, and those read (MAIL's first, then RCPT's)."""

    def __init__(self, client) -> None:
        self.client = client
        self.due = 0  # replies written for and not read yet
        self.in_data = False  # the server took DATA (354) and waits for the message
        self.replies: list[int] = []  # the codes read, in order

    def write(self, *lines: str) -> None:
        """Write ``lines`` at once. A write that fails leaves the socket open: what the server
        said before it closed (a 421, say) is still read, and the read after it reports the
        close, at the step it belongs to."""
        client = self.client
        if client.sock is None:
            raise smtplib.SMTPServerDisconnected("Connection unexpectedly closed")
        for line in lines:
            client.note(f"C: {line}")
        self.due += len(lines)
        try:
            client.sock.sendall("".join(f"{line}\r\n" for line in lines).encode("ascii"))
        except OSError as exc:
            client.note(f"* Writing failed: {exc}")

    def read(self) -> tuple[int, bytes]:
        """The next reply due."""
        code, reply = self.client.getreply()
        self.due -= 1
        self.replies.append(code)
        self.in_data = code == 354
        return code, reply

    def send_message(self, data: bytes) -> tuple[int, bytes]:
        """The message after DATA's 354; the server's reply to it."""
        reply = self.client.send_body(data)
        self.in_data = False
        return reply

    def abandon(self) -> None:
        """After a refusal (or when the message must not go), read every reply still due.

        A server that took DATA (354) though the group failed gets the lone dot only when it
        refused the recipient (4xx or 5xx), so that nothing can be delivered; after any other
        reply to RCPT TO (a 252, or a recipient taken after a refused sender) the connection is
        closed instead, which discards the transaction. A server that closed after its refusal
        leaves nothing to read: the refusal is still what is reported.
        """
        try:
            while self.due > 0:
                self.read()
            if self.in_data:
                if 400 <= self.replies[1] < 600:
                    code, reply = self.send_message(b"")
                    if 200 <= code < 300:
                        logger.warning(
                            "SMTP server accepted an empty message after refusing its "
                            "recipient: %s %r",
                            code,
                            reply[:200],
                        )
                else:
                    self.client.close()
        except (OSError, smtplib.SMTPException):
            self.client.close()

    def close_if_out_of_step(self) -> None:
        """Close the connection if a reply is still due or the server waits for a message."""
        if (self.due > 0 or self.in_data) and self.client.sock is not None:
            self.client.close()
