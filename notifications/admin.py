"""Admin: the SMTP settings pages (the primary's, and the optional fallback's; no list), their
audit trail, and the delivery log."""

from __future__ import annotations

from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.db.models import Count
from django.http import Http404, HttpRequest, HttpResponseRedirect
from django.template.loader import render_to_string
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils import formats, timezone
from django.utils.decorators import method_decorator
from django.utils.html import format_html, format_html_join
from django.utils.safestring import mark_safe
from django.utils.text import capfirst
from django.utils.translation import gettext_lazy as _
from django.utils.translation import ngettext
from django.views.decorators.debug import sensitive_post_parameters
from django.views.decorators.http import require_http_methods, require_POST

from notifications import audit, conf, dashboard, diagnosis, phrases, services
from notifications.forms import SmtpSettingsForm, TestEmailForm
from notifications.models import Notification, SettingsChange, SmtpSettings, Status, TestRun
from notifications.providers import PROVIDERS
from notifications.smtp import STEP_LABELS
from notifications.targets import Target
from notifications.views import FRAGMENT_TEMPLATE, HealthPanelView, SendTestEmailView

#: The fieldset whose fields some warnings are about; it opens itself when they apply.
ADVANCED_SECURITY = _("Advanced security")
OAUTH2 = _("OAuth2 sign-in")


class ReadOnlyAdminMixin:
    """A record of what happened: viewable, never added, edited or deleted in the admin."""

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj=None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj=None) -> bool:
        return False


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


@admin.register(SettingsChange)
class SettingsChangeAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = ("changed_at", "server", "version", "changed_by", "source", "summary")
    list_filter = ("server", "source")
    fields = ("changed_at", "changed_by", "server", "version", "source", "summary")
    readonly_fields = fields

    @admin.display(description=_("changes"))
    def summary(self, obj: SettingsChange) -> str:
        lines = audit.describe(obj.changes)
        if not lines:
            return "—"
        return format_html_join(mark_safe("<br>"), "{}", ((line,) for line in lines))


@admin.register(TestRun)
class TestRunAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    """Every "Send test email", newest first; a run's page shows its stored report."""

    list_display = (
        *("created_at", "created_by", "kind", "server", "tested", "values", "recipient"),
        *("ok", "failed_step_label", "summary_shown"),
    )
    list_filter = ("ok", "kind", "server", "saved", "created_at")
    search_fields = ("recipient", "summary", "host", "username")
    date_hierarchy = "created_at"
    fields = (
        *("created_at", "created_by", "kind", "server", "host", "port", "security"),
        *("auth_method", "username", "saved", "settings_version", "recipient", "ok"),
        "stored_report",
    )
    readonly_fields = fields

    class Media:
        css = {"all": ("notifications/test_email.css",)}

    def get_queryset(self, request: HttpRequest):
        return super().get_queryset(request).select_related("created_by")

    @admin.display(description=_("server and sign-in"))
    def tested(self, obj: TestRun) -> str:
        return str(obj.target or "—")

    @admin.display(description=_("values"), ordering="saved")
    def values(self, obj: TestRun) -> str:
        return obj.target.values if obj.target else "—"

    @admin.display(description=_("failed step"), ordering="failed_step")
    def failed_step_label(self, obj: TestRun) -> str:
        return str(STEP_LABELS.get(obj.failed_step, obj.failed_step)) or "—"

    @admin.display(description=_("summary"), ordering="summary")
    def summary_shown(self, obj: TestRun) -> str:
        return obj.summary_text

    @admin.display(description=_("report"))
    def stored_report(self, obj: TestRun) -> str:
        target = Target.of_run(obj)
        if not obj.report.get("steps"):  # the run never finished (the process died mid-test)
            return render_to_string(
                FRAGMENT_TEMPLATE, {"problem": obj.summary_text, "target": target}
            )
        # In the reader's language: the stored phrases (runs recorded before them hold text, and
        # only their step labels can be translated again).
        report = phrases.localise(obj.report)
        steps = [
            {**step, "label": STEP_LABELS.get(step.get("name"), step.get("label", ""))}
            for step in report["steps"]
        ]
        context = {
            "report": {**report, "steps": steps},
            "failed": next((step for step in steps if step["status"] == "failed"), None),
            "recipient": obj.recipient,
            "target": target,
        }
        return render_to_string(FRAGMENT_TEMPLATE, context)


@admin.register(Notification)
class NotificationAdmin(admin.ModelAdmin):
    """The delivery log: read-only rows, with "retry now" and "cancel" as the only changes."""

    list_display = (
        *("created_at", "recipient_address", "subject", "status_label", "attempts", "sent"),
        "error",
    )
    list_filter = ("status", "server", "created_at")
    search_fields = ("recipient", "subject", "message_id", "idempotency_key")
    date_hierarchy = "created_at"
    actions = ("retry_now", "cancel")
    change_form_template = "admin/notifications/notification/change_form.html"
    fieldsets = (
        (None, {"fields": ("recipient", "subject", "status_label", "source", "idempotency_key")}),
        (
            _("Delivery"),
            {
                "fields": (
                    "attempts",
                    "next_attempt_at",
                    "last_error_shown",
                    "sent_at",
                    "server",
                    "message_id",
                    "settings_version",
                    "created_at",
                )
            },
        ),
        (_("Content"), {"fields": ("reply_to", "headers", "body", "html_body")}),
    )

    class Media:
        css = {"all": ("notifications/delivery_log.css",)}

    def get_readonly_fields(self, request, obj=None):
        return [field.name for field in Notification._meta.fields] + [
            "status_label",
            "last_error_shown",
        ]

    def changelist_view(self, request: HttpRequest, extra_context=None):
        """Titled "Delivery log": the list is for reading, not "Select notification to change"."""
        title = capfirst(self.opts.verbose_name_plural)
        return super().changelist_view(request, {"title": title, **(extra_context or {})})

    def get_fieldsets(self, request: HttpRequest, obj=None):
        """ "Next attempt" only while there will be one."""
        fieldsets = super().get_fieldsets(request, obj)
        if obj is None or obj.status in PENDING:
            return fieldsets
        return [
            (name, {**options, "fields": [f for f in options["fields"] if f != "next_attempt_at"]})
            for name, options in fieldsets
        ]

    @admin.display(description=_("status"), ordering="status")
    def status_label(self, obj: Notification):
        """The status in words and in colour (the class names the status for the stylesheet)."""
        return format_html(
            '<span class="delivery-status delivery-status-{}">{}</span>',
            obj.status,
            obj.get_status_display(),
        )

    @admin.display(description=_("recipient"), ordering="recipient")
    def recipient_address(self, obj: Notification):
        """The address, allowed to wrap before its "@" in a narrow column."""
        local, at, domain = obj.recipient.rpartition("@")
        return format_html("{}<wbr>{}{}", local, at, domain) if at else obj.recipient

    @admin.display(description=_("sent at"), ordering="sent_at")
    def sent(self, obj: Notification):
        """When, and through which server (a line of its own: no column more to fit)."""
        if obj.sent_at is None:
            return self.get_empty_value_display()
        return format_html(
            '{}<br><span class="delivery-server delivery-server-{}">{}</span>',
            formats.localize(timezone.template_localtime(obj.sent_at)),
            obj.server,
            _("via %(server)s") % {"server": obj.get_server_display()} if obj.server else "",
        )

    @admin.display(description=_("last error"))
    def error(self, obj: Notification):
        """The start of the error, two lines at most (the stylesheet); all of it on hover."""
        text = obj.error_text
        if not text:
            return "—"
        short = (text[:200] + "…") if len(text) > 200 else text
        return format_html('<span class="delivery-error" title="{}">{}</span>', text, short)

    @admin.display(description=_("last error"))
    def last_error_shown(self, obj: Notification) -> str:
        """``last_error`` in the reader's language."""
        return obj.error_text or self.get_empty_value_display()

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj=None) -> bool:
        return False

    def get_urls(self):
        """Retry and cancel one notification from its page (POST only)."""
        opts = self.opts
        views = {"retry": self.retry_view, "cancel": self.cancel_view}
        return [
            *(
                path(
                    f"<path:object_id>/{name}/",
                    self.admin_site.admin_view(require_POST(view)),
                    name=f"{opts.app_label}_{opts.model_name}_{name}",
                )
                for name, view in views.items()
            ),
            *super().get_urls(),
        ]

    def render_change_form(self, request, context, *args, obj=None, **kwargs):
        """The page is a record: no Save buttons; Retry and Cancel when they can apply."""
        can_act = obj is not None and self.has_change_permission(request, obj)
        context.update(
            title=_("View %s") % self.opts.verbose_name,  # not "Change": nothing here is editable
            can_retry=can_act and obj.status in RETRYABLE,
            can_cancel=can_act and obj.status == Status.QUEUED,
        )
        return super().render_change_form(request, context, *args, obj=obj, **kwargs)

    def retry_view(self, request: HttpRequest, object_id: str):
        return self._act_on_one(request, object_id, self.retry_now)

    def cancel_view(self, request: HttpRequest, object_id: str):
        return self._act_on_one(request, object_id, self.cancel)

    def _act_on_one(self, request: HttpRequest, object_id: str, action):
        obj = self.get_object(request, object_id)
        if obj is None:
            raise Http404
        if not self.has_change_permission(request, obj):
            raise PermissionDenied
        action(request, Notification.objects.filter(pk=obj.pk))
        opts = self.opts
        return HttpResponseRedirect(
            reverse(f"admin:{opts.app_label}_{opts.model_name}_change", args=[obj.pk])
        )

    @admin.action(description=_("Retry now"), permissions=["change"])
    def retry_now(self, request: HttpRequest, queryset) -> None:
        skipped = _by_status(queryset.exclude(status__in=RETRYABLE))
        count = services.retry_now(queryset)
        if count or not skipped:
            self.message_user(
                request,
                ngettext(
                    "%d notification queued to retry now.",
                    "%d notifications queued to retry now.",
                    count,
                )
                % count,
                messages.SUCCESS,
            )
        for status, number in skipped.items():
            self.message_user(request, _not_retried(status, number), messages.WARNING)

    @admin.action(description=_("Cancel (if not sent yet)"), permissions=["change"])
    def cancel(self, request: HttpRequest, queryset) -> None:
        skipped = sum(_by_status(queryset.exclude(status=Status.QUEUED)).values())
        count = services.cancel(queryset, by=request.user)
        if count or not skipped:
            self.message_user(
                request,
                ngettext("%d notification cancelled.", "%d notifications cancelled.", count)
                % count,
                messages.SUCCESS,
            )
        if skipped:
            self.message_user(
                request,
                ngettext(
                    "%d notification was not cancelled: only a queued one can be.",
                    "%d notifications were not cancelled: only queued ones can be.",
                    skipped,
                )
                % skipped,
                messages.WARNING,
            )


#: Statuses with an attempt still to come, and those "retry now" applies to.
PENDING = (Status.QUEUED, Status.SENDING)
RETRYABLE = (Status.QUEUED, Status.FAILED, Status.CANCELLED)


def _by_status(queryset) -> dict[str, int]:
    counts = queryset.values("status").annotate(number=Count("pk")).order_by("status")
    return {row["status"]: row["number"] for row in counts}


def _not_retried(status: str, number: int) -> str:
    """Why ``number`` selected notifications in ``status`` were not queued."""
    if status == Status.SENT:
        return (
            ngettext(
                "%d notification was not queued: it was sent already, and is not sent twice.",
                "%d notifications were not queued: they were sent already, and are not sent twice.",
                number,
            )
            % number
        )
    return (
        ngettext(
            "%d notification was not queued: a worker is sending it right now.",
            "%d notifications were not queued: a worker is sending them right now.",
            number,
        )
        % number
    )
