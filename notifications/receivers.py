"""Receivers connected in AppConfig.ready(): the ``notify`` signal stores notifications."""

from __future__ import annotations

from django.dispatch import receiver

from notifications import services
from notifications.signals import notify


@receiver(notify, dispatch_uid="notifications.store_notification")
def store_notification(sender, signal=None, **kwargs):
    """Validate and store; invalid arguments raise InvalidNotification in the sender's call."""
    label = getattr(sender, "__name__", None) or str(sender)
    return services.notify_from(f"signal:{label}", kwargs)
