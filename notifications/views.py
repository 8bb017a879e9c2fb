"""The settings page's extra views: "Send test email" / "Test connection" (the form's values,
saved or not, tested on POST) and the health panel alone, for the page to refresh after a test."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from django.contrib.admin import helpers
from django.contrib.admin.utils import flatten_fieldsets
from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpRequest, HttpResponse
from django.template.response import TemplateResponse
from django.urls import reverse
from django.utils.decorators import method_decorator
from django.utils.translation import gettext as _
from django.views import View
from django.views.decorators.debug import sensitive_post_parameters

from notifications import dashboard, diagnosis
from notifications.exceptions import NotificationsError
from notifications.forms import SmtpSettingsForm, TestEmailForm
from notifications.targets import Target

if TYPE_CHECKING:
    from django.contrib.admin import ModelAdmin
    from django.forms import ModelForm

    from notifications.models import SmtpSettings

FRAGMENT_TEMPLATE = "admin/notifications/smtpsettings/test_result.html"
HEALTH_TEMPLATE = "admin/notifications/smtpsettings/health.html"


# The POST carries typed secrets: Django's error reports must not show them.
@method_decorator(sensitive_post_parameters(*SmtpSettingsForm.SECRET_FIELDS), name="dispatch")
class SendTestEmailView(View):
    """POST the settings page's form here to test its values without saving them.

    The settings are validated with the same form (and model rules) as saving; invalid values are
    shown instead of tested. The page's script asks for the result alone (an HTML fragment it puts
    in place, ``X-Requested-With: XMLHttpRequest``); without the script the whole settings page
    comes back, the typed values kept (all but the password) and the result in it.
    """

    model_admin: ModelAdmin | None = None
    #: "Test connection": sign in and QUIT, no message (and so no recipient to validate).
    connect_only = False
    http_method_names = ["post"]

    def post(self, request: HttpRequest, object_id: str) -> HttpResponse:
        admin = self.model_admin
        obj = admin.get_object(request, object_id)
        if obj is None:
            raise Http404
        if not admin.has_change_permission(request, obj):
            raise PermissionDenied
        form = admin.get_form(
            request, obj, change=True, fields=flatten_fieldsets(admin.get_fieldsets(request, obj))
        )(request.POST, instance=obj)
        test_form = TestEmailForm(request.POST)
        result, status = self._test(request, form, test_form)
        if request.headers.get("X-Requested-With") == "XMLHttpRequest":
            response = TemplateResponse(request, FRAGMENT_TEMPLATE, result, status=status)
        else:
            response = self._page(request, obj, form, test_form, result, status)
        if "retry_after" in result:  # the page's script counts down to it
            response["Retry-After"] = str(result["retry_after"])
        return response

    def _test(
        self, request: HttpRequest, form: ModelForm, test_form: TestEmailForm
    ) -> tuple[dict[str, Any], int]:
        """Run the test if both forms are valid; the result template's context and a status."""
        # Both forms are validated, so every error shows at once.
        forms = [form] if self.connect_only else [form, test_form]
        if not all([each.is_valid() for each in forms]):
            return {"invalid": _error_list(*forms)}, 400
        recipient = "" if self.connect_only else test_form.cleaned_data["to"]
        try:
            report = diagnosis.run_test(
                settings=form.instance,
                to=recipient,
                by=request.user,
                password=form.new_password,
                unsaved=form.has_changed(),
                connect_only=self.connect_only,
            )
        except diagnosis.RateLimited as error:
            return {"problem": str(error), "retry_after": error.retry_after}, 429
        except NotificationsError as error:  # e.g. the stored password cannot be decrypted
            return {"problem": str(error)}, 200
        as_dict = report.as_dict()
        failed = next((step for step in as_dict["steps"] if step["status"] == "failed"), None)
        context = {
            "report": as_dict,
            "failed": failed,
            "recipient": recipient,
            "target": Target.from_dict(as_dict["target"]),
        }
        # Values that passed but are not saved: offer to save them from the result.
        context["offer_save"] = report.ok and form.has_changed()
        return context, 200

    def _page(
        self,
        request: HttpRequest,
        obj: SmtpSettings,
        form: ModelForm,
        test_form: TestEmailForm,
        result: dict[str, Any],
        status: int,
    ) -> TemplateResponse:
        """The settings page with the typed values and the result: the same context Django's
        change view builds for a form it re-shows, plus the test's."""
        admin = self.model_admin
        dropped = any(request.POST.get(name) for name in SmtpSettingsForm.SECRET_FIELDS)
        admin_form = helpers.AdminForm(
            form,
            list(admin.get_fieldsets(request, obj)),
            admin.get_prepopulated_fields(request, obj),
            admin.get_readonly_fields(request, obj),
            model_admin=admin,
        )
        context = {
            **admin.admin_site.each_context(request),
            "title": _("Change %s") % admin.opts.verbose_name,
            "subtitle": str(obj),
            "adminform": admin_form,
            "object_id": obj.pk,
            "original": obj,
            "is_popup": False,
            "to_field": None,
            "media": admin.media + admin_form.media,
            "inline_admin_formsets": [],
            "errors": helpers.AdminErrorList(form, []),
            "preserved_filters": admin.get_preserved_filters(request),
            "test_form": test_form,
            # Typed secrets are never sent back, so a Save after this would keep the old ones:
            # no "Save these settings" then.
            "test_result": {**result, "offer_save": result.get("offer_save") and not dropped},
            "test_password_dropped": dropped,
        }
        change_url = reverse(
            f"admin:{obj._meta.app_label}_{obj._meta.model_name}_change", args=[obj.pk]
        )
        response = admin.render_change_form(
            request, context, change=True, obj=obj, form_url=change_url
        )
        response.status_code = status
        return response


def _error_list(*forms: Any) -> list[tuple[str, list[str]]]:
    """(field label, messages) for every error in ``forms``; "" labels the form-wide ones."""
    errors = []
    for form in forms:
        for name, messages in form.errors.items():
            label = form.fields[name].label if name in form.fields else ""
            errors.append((str(label or ""), list(messages)))
    return errors


class HealthPanelView(View):
    """GET the settings page's health panel alone: the page's script puts it in place after a
    test, so that "Last test" tells the new run without reloading the page (and the form)."""

    model_admin: ModelAdmin | None = None
    http_method_names = ["get"]

    def get(self, request: HttpRequest, object_id: str) -> HttpResponse:
        admin = self.model_admin
        obj = admin.get_object(request, object_id)
        if obj is None or obj.is_fallback:  # the panel is the primary's (the sending state)
            raise Http404
        if not admin.has_view_or_change_permission(request, obj):
            raise PermissionDenied
        return TemplateResponse(
            request, HEALTH_TEMPLATE, {"health": dashboard.health(settings=obj)}
        )
