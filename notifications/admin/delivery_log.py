"""The delivery log: every notification, its attempts and outcome; Retry now and Cancel."""

from __future__ import annotations

from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.db.models import Count
from django.http import Http404, HttpRequest, HttpResponseRedirect
from django.urls import path, reverse
from django.utils import formats, timezone
from django.utils.html import format_html
from django.utils.text import capfirst
from django.utils.translation import gettext_lazy as _
from django.utils.translation import ngettext
from django.views.decorators.http import require_POST

from notifications import services
from notifications.models import Notification, Status


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
