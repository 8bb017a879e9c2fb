"""The app's models, one module a concern: ``settings`` (the SMTP settings and their audit
trail), ``outbox`` (the notifications), ``workers`` (what the workers share: slots, back-off,
rate windows, the token cache, heartbeats) and ``diagnoses`` (the recorded test emails and
connection tests). Import them from here."""

from notifications.models.diagnoses import TestKind, TestRun
from notifications.models.outbox import UNCLAIMED, Notification, NotificationQuerySet, Status
from notifications.models.settings import (
    MAX_BATCH,
    MAX_MESSAGES_PER_CONNECTION,
    MAX_RATE,
    PORT_SECURITY,
    AuthMechanism,
    AuthMethod,
    Security,
    Server,
    SettingsChange,
    SmtpSettings,
)
from notifications.models.workers import (
    CachedToken,
    ConnectBackoff,
    RateHold,
    SendReservation,
    SendSlot,
    WorkerHeartbeat,
)

__all__ = [
    "MAX_BATCH",
    "MAX_MESSAGES_PER_CONNECTION",
    "MAX_RATE",
    "PORT_SECURITY",
    "UNCLAIMED",
    "AuthMechanism",
    "AuthMethod",
    "CachedToken",
    "ConnectBackoff",
    "Notification",
    "NotificationQuerySet",
    "RateHold",
    "Security",
    "SendReservation",
    "SendSlot",
    "Server",
    "SettingsChange",
    "SmtpSettings",
    "Status",
    "TestKind",
    "TestRun",
    "WorkerHeartbeat",
]
