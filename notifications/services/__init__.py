"""The logic: saving the settings; storing, claiming, sending and recording notifications.

Admin views, tasks, signal receivers and management commands call in here:

- ``settings``: save a server's SMTP settings as an audited version, remove the fallback; pause
  a server on a setup problem.
- ``outbox``: the ways in (``notify``), validation, the admin's "retry now" and "cancel".
- ``dispatch``: the pipeline: one session per Batch slot, to the primary or the fallback.
- ``drain``: the rows of one open session: claimed, attempted, sent and recorded.
- ``attempts``: the message a row becomes, an error described, the attempt's log line, retries.
- ``leases``: claims on rows, send slots, the shared permit to reconnect after a failure.
- ``upkeep``: the sweeper, worker heartbeats and their capacity.
- ``hooks``: observer signals and the request for draining sessions (tasks publishes it).
- ``hotpath``: PostgreSQL statements for the two writes that dominate the cost.

The names other modules use are re-exported here.
"""

from __future__ import annotations

from notifications.services.attempts import describe, message_for, retry_delay
from notifications.services.dispatch import deliver
from notifications.services.hooks import send_robust
from notifications.services.leases import (
    acquire_slot,
    backed_off,
    claim_batch,
    free_slots,
    release_slot,
    renew_slot,
    start_attempt,
)
from notifications.services.outbox import (
    MAX_SUBJECT_LENGTH,
    NOTIFY_ARGUMENTS,
    RESERVED_HEADERS,
    cancel,
    notify,
    notify_from,
    retry_now,
)
from notifications.services.settings import (
    AUDITED_FIELDS,
    pause,
    remove_fallback,
    save_settings,
)
from notifications.services.upkeep import (
    kick_workers,
    live_concurrency,
    live_workers,
    record_heartbeat,
    sweep,
)

__all__ = [
    "AUDITED_FIELDS",
    "MAX_SUBJECT_LENGTH",
    "NOTIFY_ARGUMENTS",
    "RESERVED_HEADERS",
    "acquire_slot",
    "backed_off",
    "cancel",
    "claim_batch",
    "deliver",
    "describe",
    "free_slots",
    "kick_workers",
    "live_concurrency",
    "live_workers",
    "message_for",
    "notify",
    "notify_from",
    "pause",
    "record_heartbeat",
    "release_slot",
    "remove_fallback",
    "renew_slot",
    "retry_delay",
    "retry_now",
    "save_settings",
    "send_robust",
    "start_attempt",
    "sweep",
]
