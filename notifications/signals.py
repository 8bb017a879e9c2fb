"""Signal declarations: the way in (``notify``) and the observer signals this app sends."""

from __future__ import annotations

from django.dispatch import Signal

#: Sent by other apps to ask for a notification; this app's receiver stores one row per recipient
#: and enqueues them after the caller's transaction commits. Arguments: ``recipients`` (one
#: address or a list), ``subject``, ``body``, and optionally ``html_body``, ``reply_to``,
#: ``idempotency_key``. Invalid arguments raise InvalidNotification in the sender, storing nothing.
notify = Signal()

#: Sent (robustly) after the SMTP server accepted a notification. Arguments: ``notification``.
notification_sent = Signal()

#: Sent (robustly) when a notification has failed for good. Arguments: ``notification``,
#: ``error`` (the sanitised reason).
notification_failed = Signal()

#: Sent (robustly) when an administrator cancelled a notification before it was sent; cancelled
#: is not a failure, so ``notification_failed`` is not sent for it. Arguments: ``notification``,
#: ``by`` (the user, or None).
notification_cancelled = Signal()

#: Sent (robustly) after the SMTP settings were saved. Arguments: ``settings`` (the record: the
#: primary's or the fallback's, ``settings.server`` says which), ``changes`` (field name →
#: [old, new]; the password only as "changed").
smtp_settings_changed = Signal()
