"""The outbox: one row per message and recipient, which workers claim, send and record."""

from __future__ import annotations

from django.db import models
from django.utils import timezone
from django.utils.translation import gettext_lazy as _

from notifications import phrases
from notifications.models.settings import Server
from notifications.validators import validate_recipient


class Status(models.TextChoices):
    QUEUED = "queued", _("queued")
    SENDING = "sending", _("sending")
    SENT = "sent", _("sent")
    FAILED = "failed", _("failed")
    CANCELLED = "cancelled", _("cancelled")


#: A claimed row's claim fields once it is no longer claimed.
UNCLAIMED = {"claim_token": "", "claimed_until": None}


class NotificationQuerySet(models.QuerySet):
    """The outbox queries every part of dispatch shares."""

    def due(self, now=None) -> NotificationQuerySet:
        """Rows a worker may claim: queued and due, or sending with a lease that ran out."""
        now = now or timezone.now()
        return self.filter(
            models.Q(status=Status.QUEUED, next_attempt_at__lte=now)
            | models.Q(status=Status.SENDING, claimed_until__lt=now)
        )

    def owned(self, token: str) -> NotificationQuerySet:
        """Rows claimed with ``token`` and still being sent: only their owner may touch them."""
        return self.filter(claim_token=token, status=Status.SENDING)

    def release(self, status: str = Status.QUEUED, **fields) -> int:
        """End the claim on these rows, leaving them in ``status`` with ``fields`` set."""
        return self.update(status=status, **UNCLAIMED, **fields)


class Notification(models.Model):
    """One message to one recipient: the outbox row workers claim, send and record."""

    recipient = models.CharField(_("recipient"), max_length=320, validators=[validate_recipient])
    subject = models.CharField(_("subject"), max_length=998)
    body = models.TextField(_("text body"), blank=True)
    html_body = models.TextField(_("HTML body"), blank=True)
    reply_to = models.CharField(_("reply-to"), max_length=320, blank=True)
    headers = models.JSONField(_("extra headers"), default=dict, blank=True)
    idempotency_key = models.CharField(_("idempotency key"), max_length=200, null=True, blank=True)
    source = models.CharField(
        _("source"), max_length=200, blank=True, help_text=_("Who asked for it.")
    )
    status = models.CharField(
        _("status"), max_length=10, choices=Status.choices, default=Status.QUEUED
    )
    attempts = models.PositiveIntegerField(_("attempts"), default=0)
    next_attempt_at = models.DateTimeField(_("next attempt at"), default=timezone.now)
    claim_token = models.CharField(max_length=32, blank=True, editable=False)
    claimed_until = models.DateTimeField(null=True, blank=True, editable=False)
    last_error = models.TextField(_("last error"), blank=True)
    # last_error's phrases (``notifications.phrases``): the page shows them in its language.
    last_error_detail = models.JSONField(null=True, blank=True, editable=False)
    message_id = models.CharField(_("Message-ID"), max_length=255, blank=True)
    settings_version = models.PositiveIntegerField(_("settings version"), null=True, blank=True)
    created_at = models.DateTimeField(_("created at"), default=timezone.now, db_index=True)
    sent_at = models.DateTimeField(_("sent at"), null=True, blank=True)
    server = models.CharField(
        _("server"),
        max_length=10,
        choices=Server.choices,
        blank=True,
        help_text=_("Which SMTP server sent it: the primary, or the fallback."),
    )

    objects = NotificationQuerySet.as_manager()

    class Meta:
        verbose_name = _("notification")
        verbose_name_plural = _("delivery log")
        ordering = ["-created_at", "-id"]
        indexes = [
            # The workers' queries: what is due, and which leases have expired. Partial, so that
            # a claim reads only the rows it may take, in its own order (an index on status
            # first made PostgreSQL sort every due row on each claim), and a row sent or
            # failed leaves both.
            models.Index(
                fields=["next_attempt_at", "id"],
                condition=models.Q(status=Status.QUEUED),
                name="notif_waiting_idx",
            ),
            models.Index(
                fields=["claimed_until"],
                condition=models.Q(status=Status.SENDING),
                name="notif_leased_idx",
            ),
            # The settings page's health panel: last send, and the 24-hour chart.
            models.Index(fields=["status", "sent_at"], name="notif_sent_idx"),
            models.Index(fields=["status", "created_at"], name="notif_created_idx"),
        ]
        constraints = [
            models.UniqueConstraint(
                fields=["idempotency_key", "recipient"],
                condition=models.Q(idempotency_key__isnull=False),
                name="notif_idempotency_unique",
            )
        ]

    def __str__(self) -> str:
        return f"{self.subject} → {self.recipient}"

    @property
    def error_text(self) -> str:
        """The last error in the reader's language (``last_error`` holds it in English)."""
        return phrases.shown(self.last_error, self.last_error_detail)
