"""The SMTP settings form (presets, write-only password, cross-field checks) and the test recipient.

Field rules live on the model (so the ``smtp_settings`` command enforces them too); this form adds
what only a person filling it in needs: the preset picker and the password's write-only handling.
"""

from __future__ import annotations

from django import forms
from django.core.exceptions import ValidationError
from django.utils.translation import gettext_lazy as _

from notifications.models import SmtpSettings
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

    class Meta:
        model = SmtpSettings
        fields = [
            "provider",
            "host",
            "port",
            "security",
            "username",
            "from_address",
            "skip_verify",
            "ca_pem",
            "allow_plaintext_login",
            "timeout",
            "batch",
        ]
        widgets = {"ca_pem": forms.Textarea(attrs={"rows": 4, "spellcheck": "false"})}

    def clean(self):
        cleaned = super().clean()
        password = cleaned.get("password") or ""
        if password and cleaned.get("remove_password"):
            self.add_error(
                "remove_password",
                _("Either type a new password or tick “remove”, not both."),
            )
        return cleaned

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
