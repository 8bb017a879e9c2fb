"""SmtpSettings (the primary server's record and the optional fallback's), its audit trail, the
outbox and the send slots."""

from __future__ import annotations

from typing import TYPE_CHECKING

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.serializers.json import DjangoJSONEncoder
from django.core.validators import MaxValueValidator, MinValueValidator, URLValidator
from django.db import models
from django.utils import timezone
from django.utils.translation import gettext_lazy as _

from notifications import crypto, phrases
from notifications.validators import (
    validate_ca_pem,
    validate_from_address,
    validate_host,
    validate_no_control_characters,
    validate_recipient,
)

if TYPE_CHECKING:
    from notifications.smtp import OAuthCredentials, SmtpConfig
    from notifications.targets import Target

MAX_BATCH = 100
#: Bounds of the quota fields: beyond these a value is a typo, not a provider's limit.
MAX_RATE = 10_000_000
MAX_MESSAGES_PER_CONNECTION = 10_000


class Security(models.TextChoices):
    SSL = "ssl", _("SSL/TLS")
    STARTTLS = "starttls", _("STARTTLS")
    NONE = "none", _("None (plaintext)")


class AuthMethod(models.TextChoices):
    PASSWORD = "password", _("Password")
    MICROSOFT = "microsoft-oauth2", _("Microsoft 365 (OAuth2, client credentials)")
    GOOGLE = "google-oauth2", _("Google Workspace (OAuth2, service account)")


class AuthMechanism(models.TextChoices):
    AUTO = "auto", _("Automatic")
    PLAIN = "plain", _("PLAIN")
    LOGIN = "login", _("LOGIN")


class Server(models.TextChoices):
    """Which SMTP server: the primary, or the fallback used while the primary cannot be."""

    PRIMARY = "primary", _("primary")
    FALLBACK = "fallback", _("fallback")


#: The security mode each well-known port expects, and the port each mode usually runs on.
PORT_SECURITY = {465: Security.SSL, 587: Security.STARTTLS}


class SmtpSettings(models.Model):
    """An SMTP server's settings: the primary (pk 1) and, optionally, the fallback (pk 2).

    The fallback is used only while the primary cannot open a session (see services.dispatch);
    its Batch and rate limits are ignored: the primary's cap both servers together. Secrets are
    stored encrypted and never shown.
    """

    PRIMARY_PK = 1
    FALLBACK_PK = 2
    #: The fields that hold for both servers together, set on the primary only.
    PRIMARY_ONLY_FIELDS = ("batch", "rate_per_minute", "rate_per_hour", "rate_per_day")

    provider = models.CharField(_("provider preset"), max_length=40, blank=True)
    host = models.CharField(
        _("host"),
        max_length=253,
        blank=True,
        validators=[validate_host],
        help_text=_("The SMTP server's name or IP address, e.g. smtp.example.com."),
    )
    port = models.PositiveIntegerField(
        _("port"),
        default=587,
        validators=[MinValueValidator(1), MaxValueValidator(65535)],
        help_text=_("465 for SSL/TLS, 587 for STARTTLS, 25 for a relay."),
    )
    security = models.CharField(
        _("security"),
        max_length=10,
        choices=Security.choices,
        default=Security.STARTTLS,
        help_text=_(
            "SSL/TLS: encrypted from the first byte (usually port 465). STARTTLS: upgraded to "
            "TLS after connecting, and refused if the server does not offer it (usually 587). "
            "None: unencrypted, for trusted relays only."
        ),
    )
    username = models.CharField(
        _("username"),
        max_length=320,
        blank=True,
        validators=[validate_no_control_characters],
        help_text=_(
            "The login; with OAuth2, the mailbox to send as. Leave empty if the server needs no "
            "login."
        ),
    )
    password_encrypted = models.TextField(blank=True, editable=False)
    auth_method = models.CharField(
        _("sign-in method"),
        max_length=20,
        choices=AuthMethod.choices,
        default=AuthMethod.PASSWORD,
        help_text=_(
            "How to log in: a password, or an OAuth2 access token (XOAUTH2) that the app "
            "fetches itself. Microsoft 365 and Google Workspace need OAuth2 or an app password."
        ),
    )
    auth_mechanism = models.CharField(
        _("login mechanism"),
        max_length=10,
        choices=AuthMechanism.choices,
        default=AuthMechanism.AUTO,
        help_text=_("Automatic picks PLAIN or LOGIN from what the server offers."),
    )
    tenant_id = models.CharField(
        _("tenant ID"),
        max_length=100,
        blank=True,
        validators=[validate_no_control_characters],
        help_text=_("The Directory (tenant) ID on the app registration's Overview page."),
    )
    client_id = models.CharField(
        _("client ID"),
        max_length=320,
        blank=True,
        validators=[validate_no_control_characters],
        help_text=_("The Application (client) ID on the app registration's Overview page."),
    )
    client_secret_encrypted = models.TextField(blank=True, editable=False)
    client_secret_expires = models.DateField(
        _("client secret expires"),
        null=True,
        blank=True,
        help_text=_("The Expires date shown next to the secret; the page warns 30 days before."),
    )
    service_account_encrypted = models.TextField(blank=True, editable=False)
    token_url = models.URLField(
        _("token URL"),
        max_length=500,
        blank=True,
        validators=[URLValidator(schemes=["https"], message=_("Enter an https:// URL."))],
        help_text=_("Leave empty for the provider's default; change it for a sovereign cloud."),
    )
    scope = models.CharField(
        _("scope"),
        max_length=500,
        blank=True,
        validators=[validate_no_control_characters],
        help_text=_("Leave empty for the provider's default."),
    )
    from_address = models.CharField(
        _("from"),
        max_length=320,
        blank=True,
        validators=[validate_from_address],
        # The admin renders help texts as HTML, hence the entities.
        help_text=_("name@example.com or Display Name &lt;name@example.com&gt;."),
    )
    skip_verify = models.BooleanField(
        _("skip certificate verification (insecure)"),
        default=False,
        help_text=_(
            "Accept any TLS certificate, even a forged one. Prefer adding the server's CA to "
            "Extra trusted CA (PEM) above."
        ),
    )
    ca_pem = models.TextField(
        _("extra trusted CA (PEM)"),
        blank=True,
        validators=[validate_ca_pem],
        help_text=_(
            "For a server whose certificate is signed by a private CA: paste the CA certificate. "
            "It is trusted in addition to the system's CAs."
        ),
    )
    allow_plaintext_login = models.BooleanField(
        _("allow plaintext login (trusted relay only)"),
        default=False,
        help_text=_("Send the username and password without encryption when Security is None."),
    )
    timeout = models.PositiveSmallIntegerField(
        _("timeout (seconds)"),
        default=30,
        validators=[MinValueValidator(1), MaxValueValidator(300)],
        help_text=_("How long to wait for the server at each step."),
    )
    batch = models.PositiveSmallIntegerField(
        _("batch"),
        default=4,
        validators=[MinValueValidator(1), MaxValueValidator(MAX_BATCH)],
        help_text=_(
            "The most emails in flight at once, across all workers: at most this many SMTP "
            "sessions are open at the same moment."
        ),
    )
    rate_per_minute = models.PositiveIntegerField(
        _("most messages per minute"),
        default=0,
        validators=[MinValueValidator(0), MaxValueValidator(MAX_RATE)],
        help_text=_("Across all workers, in any rolling minute. 0: no limit."),
    )
    rate_per_hour = models.PositiveIntegerField(
        _("most messages per hour"),
        default=0,
        validators=[MinValueValidator(0), MaxValueValidator(MAX_RATE)],
        help_text=_("In any rolling hour. 0: no limit."),
    )
    rate_per_day = models.PositiveIntegerField(
        _("most messages per day"),
        default=0,
        validators=[MinValueValidator(0), MaxValueValidator(MAX_RATE)],
        help_text=_(
            "In any rolling 24 hours: the provider's daily quota (Google Workspace 2,000, "
            "Exchange Online 10,000 recipients). 0: no limit."
        ),
    )
    messages_per_connection = models.PositiveSmallIntegerField(
        _("messages per connection"),
        default=100,
        validators=[MinValueValidator(1), MaxValueValidator(MAX_MESSAGES_PER_CONNECTION)],
        help_text=_("After this many messages an SMTP session is closed and a new one opened."),
    )
    version = models.PositiveIntegerField(default=0, editable=False)
    updated_at = models.DateTimeField(null=True, editable=False)
    updated_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
        editable=False,
    )
    password_changed_at = models.DateTimeField(null=True, editable=False)
    password_changed_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
        editable=False,
    )
    # Dispatch pauses on a configuration failure (bad login, untrusted certificate) until the
    # settings are saved again: a retry storm would only lock the mailbox.
    paused_reason = models.TextField(blank=True, editable=False)
    # The reason's phrases (``notifications.phrases``), shown in the reader's language.
    paused_detail = models.JSONField(null=True, blank=True, editable=False)
    paused_at = models.DateTimeField(null=True, editable=False)

    class Meta:
        verbose_name = _("SMTP settings")
        verbose_name_plural = _("SMTP settings")

    def __str__(self) -> str:
        if not self.host:
            return str(_("SMTP settings (not configured)"))
        # "smtp.example.com:587, STARTTLS"; not "(None (plaintext))" inside parentheses.
        return f"{self.host}:{self.port}, {self.get_security_display()}"

    def save(self, *args, **kwargs):
        # Two records at most: anything but the fallback's is the primary's.
        if self.pk != self.FALLBACK_PK:
            self.pk = self.PRIMARY_PK
        super().save(*args, **kwargs)

    @property
    def paused_text(self) -> str:
        """Why sending is paused, in the reader's language ("" when it is not)."""
        return phrases.shown(self.paused_reason, self.paused_detail)

    def clean(self) -> None:
        # One spelling of the same PEM, so that re-saving an unchanged form records no change.
        self.ca_pem = self.ca_pem.strip()
        errors: dict[str, list] = {}
        if not self.host:
            # An empty host would silently stop all sending; there is no "unconfigure" on purpose.
            errors.setdefault("host", []).append(
                ValidationError(
                    _("Enter the SMTP server's host name or IP address."), code="host_required"
                )
            )
        expected = PORT_SECURITY.get(self.port)
        if expected and self.security != expected:
            errors.setdefault("security", []).append(self._port_mismatch_message(expected))
        if self.username and self.security == Security.NONE and not self.allow_plaintext_login:
            errors.setdefault("security", []).append(
                ValidationError(
                    _(
                        "A login over an unencrypted connection would send the password in "
                        "clear text. Choose SSL/TLS or STARTTLS, or tick “allow plaintext login” "
                        "if this is a trusted relay."
                    ),
                    code="plaintext_login",
                )
            )
        if self.uses_oauth:
            self._check_oauth(errors)
        if self.host and not self.from_address:
            errors.setdefault("from_address", []).append(
                ValidationError(
                    _("Enter the sender address (From) that notifications are sent from."),
                    code="from_required",
                )
            )
        if errors:
            raise ValidationError(errors)

    def _check_oauth(self, errors: dict[str, list]) -> None:
        """What an OAuth2 sign-in cannot do without (the secret itself is checked by whoever
        takes it: the form or the command)."""
        if self.security == Security.NONE:
            errors.setdefault("security", []).append(
                _("OAuth2 sign-in sends an access token: choose SSL/TLS or STARTTLS.")
            )
        if not self.username:
            errors.setdefault("username", []).append(
                _("Enter the mailbox to send as (its e-mail address).")
            )
        if self.auth_method == AuthMethod.MICROSOFT:
            if not self.client_id:
                errors.setdefault("client_id", []).append(
                    _("Enter the Application (client) ID of the app registration.")
                )
            if not self.tenant_id and not self.token_url:
                errors.setdefault("tenant_id", []).append(
                    _("Enter the Directory (tenant) ID, or a token URL.")
                )
            if not self.has_client_secret:
                errors.setdefault("client_secret", []).append(_("Enter the client secret's Value."))
        elif not self.has_service_account:
            errors.setdefault("service_account", []).append(
                _("Upload the service account's JSON key.")
            )

    def validate_password_change(self, new_password: str | None) -> None:
        """Refuse a login without a password, ``new_password`` meaning what save_settings takes.

        Separate from clean(): the typed password is not a field of the model. The form and the
        ``smtp_settings`` command both call it, so neither can store a username alone.
        """
        will_have_password = bool(new_password) if new_password is not None else self.has_password
        if self.username and not self.uses_oauth and not will_have_password:
            raise ValidationError(
                {
                    "password": ValidationError(
                        _("Enter the password (or authorization code) for %(username)s."),
                        code="password_required",
                        params={"username": self.username},
                    )
                }
            )

    def _port_mismatch_message(self, expected: str):
        if expected == Security.SSL:
            return _(
                "Port 465 expects implicit TLS, but Security is set to %(security)s: choose "
                "SSL/TLS, or use port 587 for STARTTLS."
            ) % {"security": self.get_security_display()}
        return _(
            "Port 587 expects STARTTLS, but Security is set to %(security)s: choose STARTTLS, "
            "or use port 465 for SSL/TLS."
        ) % {"security": self.get_security_display()}

    @classmethod
    def load(cls) -> SmtpSettings:
        """The primary server's record, created with defaults on first use."""
        obj, _created = cls.objects.get_or_create(pk=cls.PRIMARY_PK)
        return obj

    @classmethod
    def load_fallback(cls) -> SmtpSettings | None:
        """The fallback server's record, or None when no fallback is set."""
        return cls.objects.filter(pk=cls.FALLBACK_PK).first()

    @classmethod
    def load_senders(cls) -> tuple[SmtpSettings, list[SmtpSettings]]:
        """The primary's record, and the servers a session may use, in order: the primary, then
        the fallback, each while it can send; none while the primary is not configured."""
        primary = cls.load()
        if not primary.is_configured:
            return primary, []
        candidates = (primary, cls.load_fallback())
        return primary, [record for record in candidates if record is not None and record.can_send]

    @property
    def server(self) -> Server:
        return Server.FALLBACK if self.pk == self.FALLBACK_PK else Server.PRIMARY

    @property
    def is_fallback(self) -> bool:
        return self.pk == self.FALLBACK_PK

    @property
    def can_send(self) -> bool:
        """Configured, and not paused by a setup problem."""
        return self.is_configured and not self.paused_reason

    @property
    def is_configured(self) -> bool:
        return bool(self.host and self.from_address)

    @property
    def has_password(self) -> bool:
        return bool(self.password_encrypted)

    def set_password(self, raw_password: str, *, by=None) -> None:
        """Encrypt and keep a new password (an empty one removes it); saved by the caller."""
        self.password_encrypted = crypto.encrypt(raw_password) if raw_password else ""
        self.password_changed_at = timezone.now()
        self.password_changed_by = by

    def get_password(self) -> str:
        """The decrypted password ("" when none is stored); EncryptionKeyError if keys are wrong."""
        return crypto.decrypt(self.password_encrypted) if self.password_encrypted else ""

    @property
    def uses_oauth(self) -> bool:
        return self.auth_method != AuthMethod.PASSWORD

    @property
    def has_client_secret(self) -> bool:
        return bool(self.client_secret_encrypted)

    @property
    def has_service_account(self) -> bool:
        return bool(self.service_account_encrypted)

    def set_client_secret(self, raw_secret: str) -> None:
        """Encrypt and keep a new client secret (an empty one removes it); saved by the caller."""
        self.client_secret_encrypted = crypto.encrypt(raw_secret) if raw_secret else ""

    def set_service_account(self, key_json: str) -> None:
        """Encrypt and keep a service-account JSON key ("" removes it); its e-mail becomes the
        client ID shown. ValueError if it is not a service-account key."""
        from notifications.oauth import parse_service_account

        if key_json:
            self.client_id = parse_service_account(key_json)["client_email"]
        self.service_account_encrypted = crypto.encrypt(key_json) if key_json else ""

    def oauth_credentials(
        self, *, client_secret: str | None = None, service_account: str | None = None
    ) -> OAuthCredentials | None:
        """How to fetch tokens (None for a password); the arguments override the stored secrets."""
        from notifications import oauth
        from notifications.smtp import OAuthCredentials

        if self.auth_method == AuthMethod.MICROSOFT:
            secret = client_secret
            if secret is None:
                secret = (
                    crypto.decrypt(self.client_secret_encrypted) if self.has_client_secret else ""
                )
            token_url = self.token_url or oauth.MICROSOFT_TOKEN_URL.format(tenant=self.tenant_id)
            return OAuthCredentials(
                method=self.auth_method,
                token_url=token_url,
                scope=self.scope or oauth.MICROSOFT_SCOPE,
                mailbox=self.username,
                client_id=self.client_id,
                secret=secret,
                ca_pem=self.ca_pem,
            )
        if self.auth_method == AuthMethod.GOOGLE:
            key_json = service_account
            if key_json is None:
                key_json = (
                    crypto.decrypt(self.service_account_encrypted)
                    if self.has_service_account
                    else ""
                )
            key = oauth.parse_service_account(key_json) if key_json else {}
            return OAuthCredentials(
                method=self.auth_method,
                token_url=self.token_url or key.get("token_uri", oauth.GOOGLE_TOKEN_URL),
                scope=self.scope or oauth.GOOGLE_SCOPE,
                mailbox=self.username,
                client_id=key.get("client_email", ""),
                secret=key.get("private_key", ""),
                key_id=key.get("private_key_id", ""),
                ca_pem=self.ca_pem,
            )
        return None

    def to_smtp_config(
        self,
        *,
        password: str | None = None,
        client_secret: str | None = None,
        service_account: str | None = None,
    ) -> SmtpConfig:
        """The transport's view of these settings; the arguments override the stored secrets."""
        from notifications.smtp import SmtpConfig

        oauth_credentials = self.oauth_credentials(
            client_secret=client_secret, service_account=service_account
        )
        if oauth_credentials is not None:
            password = ""
        return SmtpConfig(
            host=self.host,
            port=self.port,
            security=self.security,
            username=self.username,
            password=self.get_password() if password is None else password,
            from_address=self.from_address,
            skip_verify=self.skip_verify,
            ca_pem=self.ca_pem,
            timeout=float(self.timeout),
            allow_plaintext_login=self.allow_plaintext_login,
            version=self.version,
            auth_mechanism=self.auth_mechanism,
            oauth=oauth_credentials,
        )


class SettingsChange(models.Model):
    """One save of the SMTP settings: who, when, which fields (the password only as changed)."""

    changed_at = models.DateTimeField(_("changed at"), default=timezone.now, db_index=True)
    changed_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
        verbose_name=_("changed by"),
    )
    version = models.PositiveIntegerField(_("settings version"))
    changes = models.JSONField(
        _("changes"),
        default=dict,
        encoder=DjangoJSONEncoder,  # dates, e.g. the client secret's expiry
        help_text=_("Field name → [old, new]; the password appears only as “changed”."),
    )
    source = models.CharField(_("source"), max_length=40, default="admin")
    server = models.CharField(
        _("server"), max_length=10, choices=Server.choices, default=Server.PRIMARY
    )

    class Meta:
        ordering = ["-changed_at", "-id"]
        verbose_name = _("settings change")
        verbose_name_plural = _("settings changes")

    def __str__(self) -> str:
        return f"v{self.version} {self.changed_at:%Y-%m-%d %H:%M}"


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


class SendSlot(models.Model):
    """One of the MAX_BATCH permits to hold an SMTP session open, leased by one worker.

    Slots numbered up to the current Batch may be taken; a lease whose ``expires_at`` passed
    (its worker died) is free again. Living in the database, the cap holds across every worker
    and host with either broker, and needs nothing else to run.
    """

    number = models.PositiveSmallIntegerField(primary_key=True)
    token = models.CharField(max_length=32, blank=True)
    holder = models.CharField(max_length=200, blank=True)
    expires_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["number"]

    def __str__(self) -> str:
        return f"slot {self.number}"


class ConnectBackoff(models.Model):
    """Failed attempts to open an SMTP session to one server, shared by every worker: its pk is
    the server's SmtpSettings pk (1 the primary, 2 the fallback).

    While ``failures`` is above zero, a worker connects only after ``retry_at``, and the first one
    to move ``retry_at`` on is the only one that tries: one connection per back-off, whatever
    the number of workers, and no notification is charged for it.
    """

    failures = models.PositiveIntegerField(default=0)
    # When the current run of failures began: "using the fallback server since …".
    since = models.DateTimeField(null=True, blank=True)
    retry_at = models.DateTimeField(null=True, blank=True)
    reason = models.TextField(blank=True)  # the last failure, sanitised like last_error
    reason_detail = models.JSONField(null=True, blank=True)  # its phrases (notifications.phrases)
    failed_at = models.DateTimeField(null=True, blank=True)
    # The last failure was the provider limiting this sender (a throttling or quota reply), not
    # a server out of reach.
    throttled = models.BooleanField(default=False)

    def __str__(self) -> str:
        return f"{self.failures} failed connection(s)"


class SendReservation(models.Model):
    """One send counted against the rate limits' rolling windows (see ``quotas``).

    Taken just before a message is handed over, given back when nothing was; rows older than the
    longest window are pruned by the sweeper.
    """

    reserved_at = models.DateTimeField(db_index=True)

    def __str__(self) -> str:
        return f"send at {self.reserved_at:%Y-%m-%d %H:%M:%S}"


class RateHold(models.Model):
    """The one record (pk 1) of when a full rate-limit window next has room.

    Whoever moves ``wake_at`` asks for a drain at that moment; everyone else who finds the window
    full leaves it to them, so the workers neither poll nor stampede when the window opens.
    """

    SINGLETON_PK = 1

    wake_at = models.DateTimeField(null=True, blank=True)

    def __str__(self) -> str:
        return f"rate limited until {self.wake_at}" if self.wake_at else "not rate limited"


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


class CachedToken(models.Model):
    """An OAuth2 access token every worker shares, encrypted, and the lease of whoever fetches it.

    ``key`` is an HMAC of the credentials (see ``tokens.cache_key``), never the credentials.
    """

    key = models.CharField(max_length=64, primary_key=True)
    token_encrypted = models.TextField(blank=True)
    expires_at = models.DateTimeField(null=True, blank=True)
    fetched_at = models.DateTimeField(null=True, blank=True)
    lease_owner = models.CharField(max_length=32, blank=True)
    lease_until = models.DateTimeField(null=True, blank=True)

    def __str__(self) -> str:
        return f"token {self.key[:8]}"


class WorkerHeartbeat(models.Model):
    """The last time each Celery worker said it was alive (every HEARTBEAT_SECONDS)."""

    name = models.CharField(max_length=200, primary_key=True)
    last_seen = models.DateTimeField(db_index=True)
    started_at = models.DateTimeField()
    concurrency = models.PositiveIntegerField(default=0)

    class Meta:
        ordering = ["-last_seen"]

    def __str__(self) -> str:
        return self.name
