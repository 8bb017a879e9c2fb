"""The SMTP settings form (presets, write-only password, cross-field checks) and the test recipient.

Field rules live on the model (so the ``smtp_settings`` command enforces them too); this form adds
what only a person filling it in needs: the preset picker and the password's write-only handling.
"""

from __future__ import annotations

from django import forms
from django.core.exceptions import ValidationError
from django.utils.translation import gettext_lazy as _

from notifications.models import AuthMechanism, AuthMethod, SmtpSettings
from notifications.oauth import parse_service_account
from notifications.providers import PROVIDERS
from notifications.validators import validate_no_control_characters, validate_recipient


class SmtpSettingsForm(forms.ModelForm):
    provider = forms.ChoiceField(
        label=_("Provider preset"),
        required=False,
        choices=[("", _("— choose to fill host, port and security —"))]
        + [(p.key, p.name) for p in PROVIDERS],
    )
    password = forms.CharField(
        label=_("Password"),
        required=False,
        strip=False,
        widget=forms.PasswordInput(render_value=False, attrs={"autocomplete": "new-password"}),
        validators=[validate_no_control_characters],
        help_text=_("Leave empty to keep the stored password. It is never shown again."),
    )
    remove_password = forms.BooleanField(
        label=_("Remove the stored password"),
        required=False,
    )
    keep_password = forms.BooleanField(
        label=_("The stored password still applies"),
        required=False,
        help_text=_(
            "Tick when the host or username changed but the stored password is still right."
        ),
    )
    # Missing from older forms and scripts that post the settings: they keep the stored values.
    auth_method = forms.ChoiceField(
        label=_("Sign-in method"), choices=AuthMethod.choices, required=False
    )
    auth_mechanism = forms.ChoiceField(
        label=_("Login mechanism"),
        choices=AuthMechanism.choices,
        required=False,
        help_text=_("Automatic picks PLAIN or LOGIN from what the server offers."),
    )
    client_secret = forms.CharField(
        label=_("Client secret"),
        required=False,
        strip=True,
        widget=forms.PasswordInput(render_value=False, attrs={"autocomplete": "new-password"}),
        validators=[validate_no_control_characters],
        help_text=_(
            "The secret's Value from Certificates & secrets (not its Secret ID). Leave empty "
            "to keep the stored one. It is never shown again."
        ),
    )
    service_account = forms.CharField(
        label=_("Service-account key (JSON)"),
        required=False,
        widget=forms.Textarea(attrs={"rows": 3, "spellcheck": "false", "autocomplete": "off"}),
        help_text=_(
            "Paste the contents of the JSON key file Google Cloud downloaded. Leave empty to "
            "keep the stored key. It is never shown again."
        ),
    )
    token_url = forms.URLField(
        label=_("Token URL"),
        required=False,
        max_length=500,
        assume_scheme="https",
        help_text=_("Leave empty for the provider's default; change it for a sovereign cloud."),
    )
    #: Which secrets were typed into a submit that failed validation (names, never values).
    retype = forms.CharField(required=False, widget=forms.HiddenInput)

    #: The write-only secrets a failed submit does not send back to the browser.
    SECRET_FIELDS = ("password", "client_secret", "service_account")
    #: Fields a client that does not send them keeps as stored (older scripts, partial posts).
    KEPT_WHEN_MISSING = (
        "auth_method",
        "auth_mechanism",
        "rate_per_minute",
        "rate_per_hour",
        "rate_per_day",
        "messages_per_connection",
    )

    class Meta:
        model = SmtpSettings
        fields = [
            "provider",
            "host",
            "port",
            "security",
            "auth_method",
            "auth_mechanism",
            "username",
            "tenant_id",
            "client_id",
            "client_secret_expires",
            "token_url",
            "scope",
            "from_address",
            "skip_verify",
            "ca_pem",
            "allow_plaintext_login",
            "timeout",
            "batch",
            "rate_per_minute",
            "rate_per_hour",
            "rate_per_day",
            "messages_per_connection",
        ]
        widgets = {
            "ca_pem": forms.Textarea(attrs={"rows": 4, "spellcheck": "false"}),
            "client_secret_expires": forms.DateInput(attrs={"type": "date"}),
        }

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if self.is_bound and any(name not in self.data for name in self.KEPT_WHEN_MISSING):
            self.data = self.data.copy()
            for name in self.KEPT_WHEN_MISSING:
                self.data.setdefault(name, getattr(self.instance, name))
        # What the stored record had before this form touched it, for "did it change?".
        self._stored = (self.instance.host, self.instance.username)

    def clean_auth_method(self) -> str:
        return self.cleaned_data.get("auth_method") or self.instance.auth_method

    def clean_auth_mechanism(self) -> str:
        return self.cleaned_data.get("auth_mechanism") or self.instance.auth_mechanism

    def clean(self):
        cleaned = super().clean()
        retype = set(filter(None, (cleaned.get("retype") or "").split(",")))
        for name in self.SECRET_FIELDS:
            if name in retype and not cleaned.get(name) and not cleaned.get("remove_" + name):
                self.add_error(
                    name,
                    _(
                        "Type it again: what you typed was not kept after the error, and "
                        "saving now would keep the old one."
                    ),
                )
        if cleaned.get("auth_method", AuthMethod.PASSWORD) == AuthMethod.PASSWORD:
            self._clean_password(cleaned)
        self._take_secrets(cleaned)
        return cleaned

    def _clean_password(self, cleaned: dict) -> None:
        password = cleaned.get("password") or ""
        if password and cleaned.get("remove_password"):
            self.add_error(
                "remove_password",
                _("Either type a new password or tick “remove”, not both."),
            )
        elif (
            cleaned.get("username")
            and not password
            and not cleaned.get("remove_password")
            and not cleaned.get("keep_password")
            and self.instance.has_password
            and all(self._stored)
            and self._stored != (cleaned.get("host"), cleaned.get("username"))
        ):
            self.add_error(
                "password",
                _(
                    "The host or username changed, and the stored password was set for "
                    "%(username)s on %(host)s: type the password for the new account, or tick "
                    "“The stored password still applies”."
                )
                % {"username": self._stored[1], "host": self._stored[0]},
            )

    def _take_secrets(self, cleaned: dict) -> None:
        """Put a typed client secret or key on the record, so that its checks (and a test of
        unsaved values) see it; nothing is saved unless the whole form is valid."""
        if cleaned.get("client_secret"):
            self.instance.set_client_secret(cleaned["client_secret"])
        if cleaned.get("service_account"):
            try:
                parse_service_account(cleaned["service_account"])
            except ValueError as error:
                self.add_error("service_account", str(error))
            else:
                self.instance.set_service_account(cleaned["service_account"])

    def full_clean(self) -> None:
        """After a failed submit, ask for the typed secrets again rather than keep the old ones
        silently: the page never sends a secret back, so its fields come back empty."""
        super().full_clean()
        if not self.is_bound or not self._errors:
            return
        typed = [name for name in self.SECRET_FIELDS if self.data.get(name)]
        if typed:
            self.data = self.data.copy()
            self.data["retype"] = ",".join(typed)
        for name in typed:
            if name not in self._errors:
                self.add_error(
                    name, _("Type it again: it is not kept after an error elsewhere in the form.")
                )

    def _post_clean(self):
        """After the model's own rules, the one that needs the typed password too."""
        super()._post_clean()
        if "password" in self.cleaned_data and "remove_password" not in self.errors:
            try:
                self.instance.validate_password_change(self.new_password)
            except ValidationError as error:
                self._update_errors(error)

    @property
    def new_password(self) -> str | None:
        """None keeps the stored password, "" removes it, anything else replaces it."""
        if self.cleaned_data.get("remove_password"):
            return ""
        return self.cleaned_data.get("password") or None


class TestEmailForm(forms.Form):
    """Where "Send test email" sends to. Prefixed, as it shares the settings page's <form>."""

    prefix = "test"

    to = forms.CharField(
        label=_("Send the test email to"),
        max_length=320,
        validators=[validate_recipient],
        widget=forms.EmailInput(attrs={"autocomplete": "email", "spellcheck": "false"}),
        help_text=_("The test is sent from the From address above, with the values in this form."),
    )
