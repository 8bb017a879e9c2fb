"""App configuration for the development SMTP sink."""

from __future__ import annotations

from django.apps import AppConfig
from django.utils.translation import gettext_lazy as _


class DevsinkConfig(AppConfig):
    name = "devsink"
    verbose_name = _("Development mail sink")
    default_auto_field = "django.db.models.BigAutoField"
