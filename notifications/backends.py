"""The Django email backend that puts ``send_mail`` and ``EmailMessage.send()`` in the outbox.

Each recipient (To, Cc and Bcc alike) gets a notification of its own, sent from the From in the
SMTP settings (the provider accepts only that sender); the message's from_email is not used.
"""

from __future__ import annotations

import logging

from django.core.mail.backends.base import BaseEmailBackend
from django.core.mail.message import EmailMessage

from notifications import services
from notifications.exceptions import InvalidNotification

logger = logging.getLogger(__name__)


class OutboxEmailBackend(BaseEmailBackend):
    def send_messages(self, email_messages) -> int:
        stored = 0
        for message in email_messages:
            try:
                self._store(message)
            except InvalidNotification:
                if not self.fail_silently:
                    raise
                logger.warning("An email was not stored in the outbox: invalid", exc_info=True)
                continue
            stored += 1
        return stored

    def _store(self, message: EmailMessage) -> None:
        if message.attachments:
            raise InvalidNotification(
                "Attachments are not supported by the notifications outbox; link to the file "
                "instead, or send this email with another backend."
            )
        html_body = None
        for content, mimetype in getattr(message, "alternatives", []):
            if mimetype != "text/html" or html_body is not None:
                raise InvalidNotification(
                    f"Only one text/html alternative is supported, not {mimetype}."
                )
            html_body = content
        body = message.body
        if message.content_subtype == "html":
            html_body, body = body, ""
        reply_to = message.reply_to[0] if message.reply_to else None
        if len(message.reply_to) > 1:
            raise InvalidNotification("Give at most one Reply-To address.")
        services.notify(
            recipients=message.recipients(),
            subject=str(message.subject),
            body=str(body),
            html_body=str(html_body) if html_body is not None else None,
            reply_to=reply_to,
            headers={str(k): str(v) for k, v in message.extra_headers.items()},
            source="email backend",
        )
