"""App configuration: registers system checks and signal receivers once Django is ready."""

from __future__ import annotations

from django.apps import AppConfig
from django.utils.translation import gettext_lazy as _


class NotificationsConfig(AppConfig):
    name = "notifications"
    verbose_name = _("Notifications")
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        # tasks registers itself as the services' publisher of drain requests.
        from notifications import checks, receivers, tasks  # noqa: F401  (registration on import)
