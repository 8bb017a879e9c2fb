"""A Celery worker bootstep that records, every HEARTBEAT_SECONDS, that the worker is alive.

The settings page and /healthz read these rows to say whether anything is sending at all.
"""

from __future__ import annotations

import logging

from celery import bootsteps
from django.utils import timezone

logger = logging.getLogger(__name__)


class Heartbeat(bootsteps.StartStopStep):
    requires = {"celery.worker.components:Timer"}

    def __init__(self, worker, **kwargs) -> None:
        super().__init__(worker, **kwargs)
        self.timer_ref = None
        self.started_at = timezone.now()

    def start(self, worker) -> None:
        from notifications import conf

        self.beat(worker)
        self.timer_ref = worker.timer.call_repeatedly(
            conf.get("HEARTBEAT_SECONDS"), self.beat, (worker,), priority=10
        )

    def stop(self, worker) -> None:
        if self.timer_ref is not None:
            self.timer_ref.cancel()
            self.timer_ref = None

    def beat(self, worker) -> None:
        from django.db import close_old_connections

        from notifications import services

        try:
            services.record_heartbeat(
                name=worker.hostname,
                started_at=self.started_at,
                concurrency=worker.concurrency or 0,
            )
        except Exception:  # the database may be away for a moment; the next beat will tell
            logger.warning("Could not record the worker heartbeat", exc_info=True)
        finally:
            close_old_connections()
