"""Password-reset mail for anonymous visitors, throttled so that it cannot flood the outbox.

Django's reset view lets anyone ask for a mail to any account's address. Here a reset mail is
skipped (silently: the page must not tell whether an address has an account) while a recent one
to the same address is still waiting, or when the address had PASSWORD_RESETS_PER_ADDRESS
in the last hour; and one client (IP address) gets PASSWORD_RESETS_PER_CLIENT an hour, then a
form error with status 429. Both are counted from the outbox rows themselves, which name the
client in their ``source``: nothing else to store, and the count holds across web processes.
"""

from __future__ import annotations

import logging
from datetime import timedelta

from django.contrib.auth import get_user_model
from django.contrib.auth import views as auth_views
from django.contrib.auth.forms import PasswordResetForm
from django.core.exceptions import ValidationError
from django.db import transaction
from django.db.models import QuerySet
from django.template import loader
from django.utils import timezone
from django.utils.translation import gettext_lazy as _

from notifications import conf, services
from notifications.models import Notification, Status

logger = logging.getLogger(__name__)

#: The window both limits count in.
WINDOW = timedelta(hours=1)
SOURCE_PREFIX = "password reset"


def _recent() -> QuerySet[Notification]:
    return Notification.objects.filter(
        source__startswith=SOURCE_PREFIX, created_at__gt=timezone.now() - WINDOW
    )


class ThrottledPasswordResetForm(PasswordResetForm):
    def __init__(self, *args, client: str = "", **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.source = f"{SOURCE_PREFIX} from {client or 'an unknown client'}"

    def clean(self):
        cleaned = super().clean()
        if _recent().filter(source=self.source).count() >= conf.get("PASSWORD_RESETS_PER_CLIENT"):
            # On the field: the reset page shows no form-wide errors.
            self.add_error(
                "email",
                ValidationError(
                    _("Too many password-reset requests from your address: try again in an hour."),
                    code="throttled",
                ),
            )
        return cleaned

    def send_mail(
        self,
        subject_template_name,
        email_template_name,
        context,
        from_email,
        to_email,
        html_email_template_name=None,
    ) -> None:
        """Put the reset mail in the outbox, unless the address is throttled (see the module)."""
        subject = "".join(loader.render_to_string(subject_template_name, context).splitlines())
        body = loader.render_to_string(email_template_name, context)
        html_body = (
            loader.render_to_string(html_email_template_name, context)
            if html_email_template_name
            else None
        )
        with transaction.atomic():
            # One request at a time per account: two must not both see "nothing pending".
            get_user_model().objects.select_for_update().filter(pk=context["user"].pk).exists()
            earlier = _recent().filter(recipient=to_email)
            if earlier.filter(status__in=[Status.QUEUED, Status.SENDING]).exists():
                logger.info(
                    "Password reset for user %s skipped: one is pending.", context["user"].pk
                )
                return
            if earlier.count() >= conf.get("PASSWORD_RESETS_PER_ADDRESS"):
                logger.warning(
                    "Password reset for user %s skipped: %d in the last hour.",
                    context["user"].pk,
                    earlier.count(),
                )
                return
            services.notify(
                recipients=to_email,
                subject=subject,
                body=body,
                html_body=html_body,
                source=self.source,
            )


class PasswordResetView(auth_views.PasswordResetView):
    """Django's view with the throttled form; a throttled client gets status 429."""

    form_class = ThrottledPasswordResetForm

    def get_form_kwargs(self):
        client = self.request.META.get(conf.get("CLIENT_IP_META_KEY"), "")
        return {**super().get_form_kwargs(), "client": client[:100]}

    def form_invalid(self, form):
        response = super().form_invalid(form)
        if form.has_error("email", "throttled"):
            response.status_code = 429
        return response
