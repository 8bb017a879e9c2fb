"""The SMTP settings pages: the primary's and the optional fallback's (no list), with presets,
the write-only secrets, the test views and the health panel."""

from __future__ import annotations

from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils import formats
from django.utils.decorators import method_decorator
from django.utils.translation import gettext_lazy as _
from django.views.decorators.debug import sensitive_post_parameters
from django.views.decorators.http import require_http_methods

from notifications import conf, dashboard, diagnosis, services
from notifications.forms import SmtpSettingsForm, TestEmailForm
from notifications.models import SmtpSettings
from notifications.providers import PROVIDERS
from notifications.views import HealthPanelView, SendTestEmailView

#: The fieldset whose fields some warnings are about; it opens itself when they apply.
ADVANCED_SECURITY = _("Advanced security")
OAUTH2 = _("OAuth2 sign-in")


@admin.register(SmtpSettings)
class SmtpSettingsAdmin(admin.ModelAdmin):
    form = SmtpSettingsForm
    change_form_template = "admin/notifications/smtpsettings/change_form.html"
    fieldsets = (
        (None, {"fields": ("provider",)}),
        (_("Server"), {"fields": ("host", "port", "security", "timeout")}),
        (
            _("Login"),
            {
                "fields": (
                    "auth_method",
                    "username",
                    "password",
                    "password_status",
                    "remove_password",
                    "keep_password",
                    "auth_mechanism",
                    "retype",
                )
            },
        ),
        (
            OAUTH2,
            {
                "classes": ("oauth2",),
                "description": _(
                    "The app fetches an access token with these and signs in with it (XOAUTH2, "
                    "over TLS only); no password is used."
                ),
                "fields": (
                    "tenant_id",
                    "client_id",
                    "client_secret",
                    "client_secret_status",
                    "client_secret_expires",
                    "service_account",
                    "service_account_status",
                    "token_url",
                    "scope",
                ),
            },
        ),
        (_("Sending"), {"fields": ("from_address", "batch")}),
        (
            _("Provider limits"),
            {
                "description": _(
                    "Providers limit how fast an account may send; going over gets messages "
                    "refused or the account blocked. Sending keeps under these across every "
                    "worker; a preset fills in the provider's published limits."
                ),
                "fields": (
                    "rate_per_minute",
                    "rate_per_hour",
                    "rate_per_day",
                    "messages_per_connection",
                ),
            },
        ),
        (
            ADVANCED_SECURITY,
            {
                "classes": ("collapse",),
                "fields": ("ca_pem", "skip_verify", "allow_plaintext_login"),
            },
        ),
    )
    readonly_fields = ("password_status", "client_secret_status", "service_account_status")

    def get_fieldsets(self, request: HttpRequest, obj=None):
        """Open "Advanced security" when an insecure option in it is on: a warning must not
        point at a field hidden in a closed section. The fallback's page has no Batch and no
        rate limits: the primary's cap both servers."""
        fieldsets = super().get_fieldsets(request, obj)
        if obj is not None and obj.is_fallback:
            fieldsets = _without_primary_only_fields(fieldsets)
        if obj is None or not (obj.skip_verify or obj.allow_plaintext_login):
            return fieldsets
        return [
            (name, {**options, "classes": ()} if name == ADVANCED_SECURITY else options)
            for name, options in fieldsets
        ]

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

    @admin.display(description=_("Stored client secret"))
    def client_secret_status(self, obj: SmtpSettings) -> str:
        if not obj.has_client_secret:
            return _("No client secret is stored.")
        return _("A client secret is stored.")

    @admin.display(description=_("Stored service-account key"))
    def service_account_status(self, obj: SmtpSettings) -> str:
        if not obj.has_service_account:
            return _("No service-account key is stored.")
        return _("A key of %(account)s is stored.") % {"account": obj.client_id}

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj=None) -> bool:
        return False

    @method_decorator(sensitive_post_parameters(*SmtpSettingsForm.SECRET_FIELDS))
    def changeform_view(self, request: HttpRequest, *args, **kwargs):
        """Mask the typed secrets in error reports, should saving crash."""
        return super().changeform_view(request, *args, **kwargs)

    def changelist_view(self, request: HttpRequest, extra_context=None):
        """A list of one or two: go straight to the primary's page (it links the fallback's)."""
        if not self.has_view_or_change_permission(request):
            raise PermissionDenied
        return HttpResponseRedirect(_change_url(SmtpSettings.PRIMARY_PK))

    def get_object(self, request: HttpRequest, object_id: str, from_field=None):
        """The primary's record (pk 1), or the fallback's (pk 2): a new one, not saved until
        the page is, when no fallback is set yet."""
        servers = {str(pk): pk for pk in (SmtpSettings.PRIMARY_PK, SmtpSettings.FALLBACK_PK)}
        pk = servers.get(str(object_id))
        if pk is None:
            return None
        if not self.has_view_or_change_permission(request):
            # Django answers 403 for it; a visit without permission must not create the record.
            return SmtpSettings(pk=pk)
        if pk == SmtpSettings.FALLBACK_PK:
            return SmtpSettings.load_fallback() or SmtpSettings(pk=pk)
        return SmtpSettings.load()

    def get_urls(self):
        """The test views and the panel alone, ahead of the catch-all ``<object_id>/`` of the
        defaults."""
        opts = self.opts
        test_view = SendTestEmailView.as_view(model_admin=self)
        connection_view = SendTestEmailView.as_view(model_admin=self, connect_only=True)
        return [
            path(
                "<path:object_id>/health/",
                self.admin_site.admin_view(HealthPanelView.as_view(model_admin=self)),
                name=f"{opts.app_label}_{opts.model_name}_health",
            ),
            path(
                "<path:object_id>/test-email/",
                self.admin_site.admin_view(test_view),
                name=f"{opts.app_label}_{opts.model_name}_test_email",
            ),
            path(
                "<path:object_id>/test-connection/",
                self.admin_site.admin_view(connection_view),
                name=f"{opts.app_label}_{opts.model_name}_test_connection",
            ),
            path(
                "fallback/remove/",
                self.admin_site.admin_view(
                    require_http_methods(["GET", "POST"])(self.remove_fallback_view)
                ),
                name=f"{opts.app_label}_{opts.model_name}_remove_fallback",
            ),
            *super().get_urls(),
        ]

    def remove_fallback_view(self, request: HttpRequest):
        """GET: ask first, as Django's own delete does (the fallback's settings and secrets are
        not kept anywhere). POST: remove it (audited), then show the primary's page."""
        if not self.has_change_permission(request):
            raise PermissionDenied
        fallback = SmtpSettings.load_fallback()
        if request.method == "GET" and fallback is not None:
            context = {
                **self.admin_site.each_context(request),
                "opts": self.opts,
                "title": _("Remove the fallback server?"),
                "fallback": fallback,
                "fallback_url": _change_url(SmtpSettings.FALLBACK_PK),
            }
            return TemplateResponse(
                request, "admin/notifications/smtpsettings/remove_fallback.html", context
            )
        if request.method == "POST" and services.remove_fallback(by=request.user):
            self.message_user(request, _("The fallback server was removed."), messages.SUCCESS)
        return HttpResponseRedirect(_change_url(SmtpSettings.PRIMARY_PK))

    def render_change_form(self, request, context, *args, **kwargs):
        # The test view passes the bound forms and the result; the plain page starts afresh.
        context.setdefault("test_form", TestEmailForm(initial={"to": request.user.email}))
        context["test_deadline"] = conf.get("TEST_DEADLINE_SECONDS")
        # One Save: the page stays after every save (response_change), so Django's "Save and
        # continue editing" would be a second button doing the same.
        context["show_save_and_continue"] = False
        obj = kwargs.get("obj") or context.get("original")
        fallback = SmtpSettings.load_fallback()
        # The title names what is saved, not what a failed form wrote onto the instance.
        if obj is not None and obj.is_fallback:
            context["title"] = _("Fallback SMTP server")
            context["subtitle"] = str(fallback) if fallback else _("not set")
            context["primary_url"] = _change_url(SmtpSettings.PRIMARY_PK)
            context["can_remove_fallback"] = fallback is not None
        else:
            context["subtitle"] = str(SmtpSettings.load())
            context["fallback"] = fallback
            context["fallback_url"] = _change_url(SmtpSettings.FALLBACK_PK)
        # The page's script keeps the test buttons disabled, counting down, until then.
        context["test_retry_after"] = diagnosis.seconds_until_allowed(request.user)
        context["providers"] = [
            {
                "key": p.key,
                "host": p.host,
                "port": p.port,
                "security": p.security,
                "note": str(p.note),
                "auth_method": p.auth_method,
                "password_label": str(p.password_label),
                "checklist": [str(step) for step in p.checklist],
                "rate_per_minute": p.rate_per_minute,
                "rate_per_day": p.rate_per_day,
                "limits_note": str(p.limits_note),
            }
            for p in PROVIDERS
        ]
        # The stored settings, not ``original``: a form that failed validation has written
        # its typed values onto that instance. The fallback's page shows only which server
        # sends: the panel's warnings are about the primary's fields.
        if obj is not None and obj.is_fallback:
            context["fallback_state"] = dashboard.fallback_state(
                SmtpSettings.load(), dashboard.connect_backoff()
            )
        else:
            context["health"] = dashboard.health(settings=SmtpSettings.load())
        return super().render_change_form(request, context, *args, **kwargs)

    def save_model(self, request: HttpRequest, obj: SmtpSettings, form, change: bool) -> None:
        services.save_settings(obj, new_password=form.new_password, by=request.user)

    def response_change(self, request: HttpRequest, obj: SmtpSettings):
        """Stay on the page after saving (there is no list to go back to), saying what the save
        means for sending rather than Django's "was changed successfully"."""
        if obj.is_fallback:
            text = _(
                "The fallback server was saved: notifications go through it while the primary "
                "cannot send them."
            )
        else:
            text = _("The SMTP settings were saved: notifications are sent with them from now on.")
        self.message_user(request, text, messages.SUCCESS)
        return HttpResponseRedirect(request.get_full_path())


def _change_url(pk: int) -> str:
    return reverse("admin:notifications_smtpsettings_change", args=[pk])


def _without_primary_only_fields(fieldsets):
    """The fieldsets less Batch and the rate limits, which are the primary server's."""
    trimmed = []
    for name, options in fieldsets:
        fields = [f for f in options["fields"] if f not in SmtpSettings.PRIMARY_ONLY_FIELDS]
        if fields != list(options["fields"]):
            options = {**options, "fields": fields}
            if "description" in options:
                options["description"] = _(
                    "Batch and the rate limits are the primary server's: they cap both servers "
                    "together."
                )
        trimmed.append((name, options))
    return trimmed
