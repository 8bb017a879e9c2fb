"""The send pipeline: a worker takes a Batch slot, opens one SMTP session, then streams due rows
through it: claim a few, and for each attempt, send, record.

The session goes to the primary server, or to the fallback while the primary cannot take one
(paused, backed off, or it failed to open just now: DNS, connect, TLS, login) or throttled the
sender; never because of what happened to a message once handed over. Batch and the rate limits
are the primary's, for both servers together.

Shape (Django's ``EmailBackend.send_messages`` is the model)::

    with open_session(config) as session:
        for row in claimed rows:
            attempt(session, row)

The session opens before any row is claimed, so an unreachable server charges no row; a failed
connection backs every worker off (``leases.may_connect``). On the hot path each message costs
one durable write: its outcome, written in the same transaction as the next row's attempt
(``drain``). What an attempt is made of and leaves behind is in ``attempts``.
"""

from __future__ import annotations

import logging
import math
import threading
import time
import uuid

from notifications import conf, quotas
from notifications.exceptions import NotificationsError, SmtpConfigurationError, SmtpError
from notifications.models import Notification, SmtpSettings
from notifications.services import leases
from notifications.services.attempts import as_configuration_error, describe
from notifications.services.drain import Drain, drain_again_at
from notifications.services.hooks import request_sessions
from notifications.services.settings import pause

logger = logging.getLogger("notifications.services")


def deliver(*, prefer: int | None = None) -> int:
    """Send due notifications while a send slot is free; returns how many were sent.

    Holds at most one slot at a time, so at most Batch of these run SMTP sessions at once. After
    giving its slot back it looks again, so a row whose own task found every slot taken is never
    left waiting for the sweeper. ``prefer`` is a row a task was enqueued for: when it is no
    longer due, another worker took it and there is nothing to do.
    """
    if prefer is not None and not Notification.objects.due().filter(pk=prefer).exists():
        return 0
    sent = 0
    budget_end = time.monotonic() + conf.get("DRAIN_SECONDS")
    while time.monotonic() < budget_end:
        primary, servers = SmtpSettings.load_senders()
        if not servers:
            break
        if not Notification.objects.due().exists():
            break
        if (wait := quotas.next_send_at(quotas.limits_of(primary))) is not None:
            drain_again_at(wait)
            break
        token = uuid.uuid4().hex
        slot = leases.acquire_slot(token, primary.batch)
        if slot is None:
            break
        try:
            drained = _one_session(primary, servers, slot, token, budget_end)
        finally:
            leases.release_slot(slot, token)
        if drained is None:  # could not connect: backed off, or paused
            break
        sent += drained
    return sent


def _one_session(
    primary: SmtpSettings, servers: list[SmtpSettings], slot: int, token: str, budget_end: float
) -> int | None:
    """Open a session to the first of ``servers`` that may be tried and opens (or return None:
    each backed off, paused or failing) and drain due rows through it.

    A primary that fails to open is recorded (backed off, or paused by a setup problem) and the
    fallback is tried within the same slot. While the primary is backed off, the one worker
    whose ``may_connect`` moves its back-off on probes it; that success brings every new session
    back to the primary, and ends the fallback's (``Drain._settings_current``).
    """
    for settings in servers:
        if not leases.may_connect(settings.pk):
            continue
        opened = _open(settings)
        if opened is None:
            continue
        session, config = opened
        _ask_for_more_sessions(primary.batch)
        with session:
            return Drain(session, config, settings, primary, slot, token, budget_end).run()
    return None


def _open(settings: SmtpSettings):
    """(session, config) to ``settings``' server, or None after recording why it failed."""
    from notifications.smtp import open_session

    config = None
    started = time.monotonic()
    try:
        config = settings.to_smtp_config()
        session = open_session(config)
    except SmtpConfigurationError as error:
        pause(settings.version, describe(error, config), server=settings.pk)
        return None
    except SmtpError as error:
        reason = describe(error, config)
        delay = leases.connect_failed(reason, server=settings.pk)
        logger.warning(
            "Could not open an SMTP session to the %s server %s:%s after %s ms: %s; trying it "
            "again in %.0f s (no notification is charged for it)",
            settings.server,
            settings.host,
            settings.port,
            round((time.monotonic() - started) * 1000),
            reason,
            delay,
        )
        return None
    except NotificationsError as error:  # e.g. the password cannot be decrypted
        pause(settings.version, describe(as_configuration_error(error), config), server=settings.pk)
        return None
    leases.connect_succeeded(settings.pk)
    return session, config


def _ask_for_more_sessions(batch: int) -> None:
    """A burst wants more than this session: ask for drain tasks for the other free slots.

    Not again for the sessions this process asked for within the last ASKED_SECONDS (they are
    on their way): otherwise each of them, opening, asks for the slots still free, and a burst
    at Batch 50 made hundreds of drain tasks that found every slot taken.
    """
    if batch <= 1:
        return
    claim = conf.get("CLAIM_BATCH")
    due = len(Notification.objects.due().order_by().values_list("pk", flat=True)[: batch * claim])
    wanted = min(leases.free_slots(batch), math.ceil(due / claim) - 1)
    request_sessions(_asked.more(wanted))


class AskedSessions:
    """The drain tasks this process asked for lately, still counted as on their way."""

    SECONDS = 1.0

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._sessions, self._until = 0, 0.0

    def more(self, wanted: int) -> int:
        """How many of ``wanted`` sessions to ask for now (the rest were asked for lately)."""
        now = time.monotonic()
        with self._lock:
            pending = self._sessions if now < self._until else 0
            extra = wanted - pending
            if extra <= 0:
                return 0
            self._sessions, self._until = pending + extra, now + self.SECONDS
            return extra


_asked = AskedSessions()
