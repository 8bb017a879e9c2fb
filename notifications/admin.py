"""Admin: the single SMTP settings page (no list of one), its audit trail, and the delivery log."""

from __future__ import annotations

from django.contrib import admin
from django.http import HttpRequest, HttpResponseRedirect
from django.urls import reverse
from django.utils import formats
from django.utils.translation import gettext_lazy as _

from notifications import services
from notifications.forms import SmtpSettingsForm
from notifications.models import SettingsChange, SmtpSettings
from notifications.providers import PROVIDERS


@admin.register(SmtpSettings)
class SmtpSettingsAdmin(admin.ModelAdmin):
    form = SmtpSettingsForm
    change_form_template = "admin/notifications/smtpsettings/change_form.html"
    fieldsets = (
        (None, {"fields": ("provider",)}),
        (_("Server"), {"fields": ("host", "port", "security", "timeout")}),
        (
            _("Login"),
            {"fields": ("username", "password", "password_status", "remove_password")},
        ),
        (_("Sending"), {"fields": ("from_address", "batch")}),
        (
            _("Advanced security"),
            {
                "classes": ("collapse",),
                "fields": ("ca_pem", "skip_verify", "allow_plaintext_login"),
            },
        ),
    )
    readonly_fields = ("password_status",)

    @admin.display(description=_("Stored password"))
    def password_status(self, obj: SmtpSettings) -> str:
        if not obj.has_password:
            return _("No password is stored.")
        if obj.password_changed_at is None:
            return _("A password is stored.")
        return _("A password is stored, set on %(date)s by %(user)s.") % {
            "date": formats.date_format(obj.password_changed_at, "DATETIME_FORMAT"),
            "user": obj.password_changed_by or _("an unknown user"),
        }

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj=None) -> bool:
        return False

    def changelist_view(self, request: HttpRequest, extra_context=None):
        """There is one record: the list would be a list of one, so go straight to it."""
        SmtpSettings.load()
        return HttpResponseRedirect(
            reverse("admin:notifications_smtpsettings_change", args=[SmtpSettings.SINGLETON_PK])
        )

    def get_object(self, request: HttpRequest, object_id: str, from_field=None):
        if str(object_id) == str(SmtpSettings.SINGLETON_PK):
            return SmtpSettings.load()
        return None

    def render_change_form(self, request, context, *args, **kwargs):
        context["providers"] = [
            {
                "key": p.key,
                "host": p.host,
                "port": p.port,
                "security": p.security,
                "note": str(p.note),
            }
            for p in PROVIDERS
        ]
        return super().render_change_form(request, context, *args, **kwargs)

    def save_model(self, request: HttpRequest, obj: SmtpSettings, form, change: bool) -> None:
        services.save_settings(obj, new_password=form.new_password, by=request.user)

    def response_change(self, request: HttpRequest, obj: SmtpSettings):
        """Stay on the page after saving: there is no list to go back to."""
        if "_continue" not in request.POST:
            request.POST = request.POST.copy()
            request.POST["_continue"] = "1"
        return super().response_change(request, obj)


@admin.register(SettingsChange)
class SettingsChangeAdmin(admin.ModelAdmin):
    list_display = ("changed_at", "version", "changed_by", "source", "changed_fields")
    list_filter = ("source",)
    readonly_fields = ("changed_at", "changed_by", "version", "changes", "source")

    @admin.display(description=_("changed fields"))
    def changed_fields(self, obj: SettingsChange) -> str:
        return ", ".join(obj.changes) or "—"

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj=None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj=None) -> bool:
        return False
