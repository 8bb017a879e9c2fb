"""Messages the development sink received, as they arrived."""

from __future__ import annotations

from email import message_from_bytes, policy

from django.db import models
from django.utils.translation import gettext_lazy as _


class ReceivedMessage(models.Model):
    received_at = models.DateTimeField(_("received at"), auto_now_add=True, db_index=True)
    mail_from = models.CharField(_("envelope from"), max_length=320)
    rcpt_to = models.JSONField(_("envelope recipients"), default=list)
    subject = models.CharField(_("subject"), max_length=998, blank=True)
    raw = models.BinaryField(_("raw message"))

    class Meta:
        ordering = ["-received_at", "-id"]
        verbose_name = _("received message")
        verbose_name_plural = _("received messages")

    def __str__(self) -> str:
        return self.subject or f"#{self.pk}"

    @classmethod
    def from_envelope(cls, mail_from: str, rcpt_to: list[str], raw: bytes) -> ReceivedMessage:
        parsed = message_from_bytes(raw, policy=policy.default)
        return cls(
            mail_from=mail_from,
            rcpt_to=list(rcpt_to),
            subject=str(parsed.get("Subject", ""))[:998],
            raw=raw,
        )

    def text(self) -> str:
        """The message's plain-text body (or its HTML when it has no text part)."""
        parsed = message_from_bytes(bytes(self.raw), policy=policy.default)
        part = parsed.get_body(preferencelist=("plain", "html"))
        return part.get_content() if part else ""
