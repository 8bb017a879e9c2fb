"""What happened, read-only: the settings' audit trail and the test emails."""

from __future__ import annotations

from django.contrib import admin
from django.http import HttpRequest
from django.template.loader import render_to_string
from django.utils.html import format_html_join
from django.utils.safestring import mark_safe
from django.utils.translation import gettext_lazy as _

from notifications import audit, phrases
from notifications.models import SettingsChange, TestRun
from notifications.smtp import STEP_LABELS
from notifications.targets import Target
from notifications.views import FRAGMENT_TEMPLATE


class ReadOnlyAdminMixin:
    """A record of what happened: viewable, never added, edited or deleted in the admin."""

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj=None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj=None) -> bool:
        return False


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
