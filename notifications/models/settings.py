"""The SMTP settings: the primary server's record and the optional fallback's, and their audit
trail."""

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
)

if TYPE_CHECKING:
    from notifications.smtp import OAuthCredentials, SmtpConfig

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
