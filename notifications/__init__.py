"""Notification email through SMTP settings an administrator manages in the admin.

``notifications.notify(...)`` stores one notification per recipient and returns them; the
``notify`` signal in ``notifications.signals`` is the decoupled way in.
"""

from __future__ import annotations


def notify(**kwargs):
    """Store one notification per recipient and return them; see ``services.notify``."""
    from notifications.services import notify_from

    return notify_from("notify()", kwargs)
