"""The record of each "Send test email" and "Test connection"."""

from __future__ import annotations

from typing import TYPE_CHECKING

from django.conf import settings
from django.db import models
from django.utils import timezone
from django.utils.translation import gettext_lazy as _

from notifications import phrases
from notifications.models.settings import AuthMethod, Security, Server

if TYPE_CHECKING:
    from notifications.targets import Target


class TestKind(models.TextChoices):
    __test__ = False  # not a pytest test class, despite the name

    EMAIL = "email", _("test email")
    CONNECTION = "connection", _("connection test")


class TestRun(models.Model):
    """One "Send test email" or "Test connection" (admin button or ``smtp_test``): who, when,
    what was tested, and the outcome.

    Kept for the settings page's "last test result" and for rate-limiting the button per
    administrator. What was tested (server, security, sign-in method and mailbox) is recorded
    beside whether those were the saved settings: only a test of the saved settings tells their
    state. Neither the columns nor the report ever hold a password or another secret.
    """

    __test__ = False  # not a pytest test class, despite the name

    created_at = models.DateTimeField(_("tested at"), default=timezone.now, db_index=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
        verbose_name=_("tested by"),
    )
    recipient = models.CharField(_("recipient"), max_length=320)
    ok = models.BooleanField(_("succeeded"))
    failed_step = models.CharField(_("failed step"), max_length=20, blank=True)
    summary = models.TextField(_("summary"), blank=True)
    report = models.JSONField(_("report"), default=dict)
    kind = models.CharField(
        _("kind"), max_length=10, choices=TestKind.choices, default=TestKind.EMAIL
    )
    host = models.CharField(_("host"), max_length=253, blank=True)
    port = models.PositiveIntegerField(_("port"), null=True, blank=True)
    security = models.CharField(_("security"), max_length=10, choices=Security.choices, blank=True)
    auth_method = models.CharField(
        _("sign-in method"), max_length=20, choices=AuthMethod.choices, blank=True
    )
    #: The login, or with OAuth2 the mailbox: not a secret (the settings page shows it too).
    username = models.CharField(_("username"), max_length=320, blank=True)
    #: The values tested were the saved settings of ``settings_version``, nothing typed over them.
    saved = models.BooleanField(_("saved settings"), default=False)
    #: The stored settings' version when the test ran (for unsaved values: the one typed over).
    settings_version = models.PositiveIntegerField(_("settings version"), null=True, blank=True)
    server = models.CharField(
        _("server"), max_length=10, choices=Server.choices, default=Server.PRIMARY
    )
    #: A keyed digest (HMAC under SECRET_KEY) of every value the test used, secrets included,
    #: so that saving exactly those values later makes it the saved settings' test
    #: (``diagnosis.adopt_unsaved_test``) without storing them.
    values_digest = models.CharField(max_length=64, blank=True, editable=False)

    class Meta:
        ordering = ["-created_at", "-id"]
        verbose_name = _("test email")
        verbose_name_plural = _("test emails")

    def __str__(self) -> str:
        return (
            f"{self.created_at:%Y-%m-%d %H:%M} → {self.recipient}: {'ok' if self.ok else 'failed'}"
        )

    @property
    def target(self) -> Target | None:
        """What was tested; None for a run recorded before tests named it."""
        from notifications.targets import Target

        return Target.of_run(self)

    @property
    def summary_text(self) -> str:
        """The summary in the reader's language: the report keeps its phrase (``summary``)."""
        report = self.report if isinstance(self.report, dict) else {}
        return phrases.shown(self.summary, report.get("summary"))
