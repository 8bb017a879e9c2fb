"""Read-only admin for the messages the development sink received."""

from __future__ import annotations

from django.contrib import admin
from django.utils.html import format_html
from django.utils.translation import gettext_lazy as _

from devsink.models import ReceivedMessage


@admin.register(ReceivedMessage)
class ReceivedMessageAdmin(admin.ModelAdmin):
    list_display = ("received_at", "subject", "mail_from", "recipients")
    search_fields = ("subject", "mail_from")
    fields = ("received_at", "mail_from", "recipients", "subject", "body", "source")
    readonly_fields = fields

    @admin.display(description=_("recipients"))
    def recipients(self, obj: ReceivedMessage) -> str:
        return ", ".join(obj.rcpt_to)

    @admin.display(description=_("body"))
    def body(self, obj: ReceivedMessage) -> str:
        return format_html("<pre style='white-space: pre-wrap'>{}</pre>", obj.text())

    @admin.display(description=_("message source"))
    def source(self, obj: ReceivedMessage) -> str:
        raw = bytes(obj.raw).decode("utf-8", errors="replace")
        return format_html("<pre style='white-space: pre-wrap'>{}</pre>", raw)

    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False
