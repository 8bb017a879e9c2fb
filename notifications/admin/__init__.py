"""Admin: the SMTP settings pages (``smtp_settings``), their audit trail and the test emails
(``records``), and the delivery log (``delivery_log``). Importing the package registers them."""

from notifications.admin.delivery_log import NotificationAdmin
from notifications.admin.records import SettingsChangeAdmin, TestRunAdmin
from notifications.admin.smtp_settings import SmtpSettingsAdmin

__all__ = ["NotificationAdmin", "SettingsChangeAdmin", "SmtpSettingsAdmin", "TestRunAdmin"]
