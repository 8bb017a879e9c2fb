"""Django's ``sendtestemail``, saying what it did: the mail goes to the outbox, not to a server."""

from __future__ import annotations

from django.conf import settings
from django.core.management.base import CommandError
from django.core.management.commands import sendtestemail
from django.utils.translation import ngettext

from notifications.exceptions import InvalidNotification


class Command(sendtestemail.Command):
    def handle(self, *args, **kwargs) -> None:
        try:
            super().handle(*args, **kwargs)
        except InvalidNotification as error:  # a bad address: one line, not a traceback
            raise CommandError(str(error)) from None
        # The outbox stores one message per recipient.
        count = len(kwargs["email"])
        if kwargs["managers"]:
            count += len(settings.MANAGERS)
        if kwargs["admins"]:
            count += len(settings.ADMINS)
        self.stdout.write(
            ngettext(
                "Queued %(count)d message; see the delivery log.",
                "Queued %(count)d messages; see the delivery log.",
                count,
            )
            % {"count": count}
        )
