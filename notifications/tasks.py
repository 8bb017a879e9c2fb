"""Thin Celery tasks, and the one place that publishes to the broker.

Tasks: ids in, one service call; safe to run twice (claims make sends happen once). Publishing
(``publisher.request``) is what ``services.hooks.request_sessions`` calls: it must never hold up
a caller of notify(), so the caller only records the request and a thread publishes it, on a
broker connection with short socket timeouts of its own; it stops trying for a few seconds after
a failure (the rows wait for the sweeper meanwhile) and folds a stream of requests into one
publish per PUBLISH_INTERVAL_SECONDS (the last one always goes out).
"""

from __future__ import annotations

import atexit
import logging
import os
import threading
import time
from datetime import datetime

from celery import shared_task
from celery.signals import task_postrun
from django.db import connections

from notifications import conf, services
from notifications.services import hooks

logger = logging.getLogger(__name__)


@task_postrun.connect(dispatch_uid="notifications.drop_broken_db_connections")
def drop_broken_db_connections(**kwargs) -> None:
    """Close a database connection that failed during the task, so the next task reconnects.

    Workers keep their connections across tasks (CELERY_DB_REUSE_MAX), and a connection the
    server dropped would otherwise fail every later task on that thread.
    """
    for connection in connections.all(initialized_only=True):
        if connection.connection is not None and connection.errors_occurred:
            if not connection.is_usable():
                connection.close()
            else:
                connection.errors_occurred = False


@shared_task(name="notifications.send_notification", ignore_result=True)
def send_notification(notification_id: int) -> int:
    """Send this notification (and others due, over the same session) if a send slot is free.

    Kept for messages published before drain_outbox replaced it. No Celery retry: a failed send is
    rescheduled on the row itself (backoff with jitter, bounded attempts and age), and the sweeper
    asks for drains when rows are due.
    """
    return services.deliver(prefer=notification_id)


@shared_task(name="notifications.drain_outbox", ignore_result=True)
def drain_outbox() -> int:
    """Send due notifications while a send slot is free (one SMTP session at a time).

    No Celery retry, as for send_notification. With every slot taken it returns at once: a slot
    holder drains the rows.
    """
    return services.deliver()


@shared_task(name="notifications.sweep_outbox", ignore_result=True)
def sweep_outbox() -> int:
    """Periodic (beat): free expired claims and ask for drain tasks when due rows wait."""
    return services.sweep()


class _Publisher:
    """Publishes drain requests from a thread of its own (see the module docstring).

    A caller only records the request (no broker round trip, no thread start); the publishing
    thread sends the largest number of drain tasks asked for since its last publish, at most
    once per PUBLISH_INTERVAL_SECONDS, so the request made after the last publish always goes
    out.
    Started lazily in each process (after a fork too); a pending request is flushed at exit.
    """

    def __init__(self) -> None:
        self._wakeup = threading.Condition()
        self._local = threading.local()  # the publishing thread's broker connection
        self._wanted = 0  # drain tasks asked for and not yet published
        self._publishing = 0  # drain tasks the publishing thread is sending right now
        self._pid = 0
        self._url = None
        self._broker_down_until = 0.0

    def request(self, sessions: int, *, at: datetime | None = None) -> None:
        if at is not None:  # a drain for later (a rate-limit window opens then): one of a kind
            self.publish(1, eta=at)
            return
        with self._wakeup:
            if self._pid != os.getpid():
                self._start()
            self._wanted = max(self._wanted, sessions)
            self._wakeup.notify()

    def _start(self) -> None:
        self._pid, self._wanted, self._publishing = os.getpid(), 0, 0
        threading.Thread(target=self._run, name="notifications-publisher", daemon=True).start()

    def _run(self) -> None:
        while True:
            with self._wakeup:
                while not self._wanted:
                    self._wakeup.wait()
                wanted, self._wanted = self._wanted, 0
                self._publishing = wanted
            try:
                self.publish(wanted)
            finally:
                with self._wakeup:
                    self._publishing = 0
                    self._wakeup.notify_all()
            time.sleep(conf.get("PUBLISH_INTERVAL_SECONDS"))

    def flush(self) -> None:
        """At exit: publish what is still pending, and what the thread was still publishing.

        The publishing thread is a daemon, stopped wherever it is when the interpreter exits: a
        short-lived process (a management command, a script) would end while it connects, and
        its rows would wait for the sweeper. So the thread's publish in progress is waited for,
        within twice PUBLISH_TIMEOUT_SECONDS, and made here if it has not ended by then (one
        drain request too many at worst, which a full Batch turns away at once).
        """
        deadline = time.monotonic() + 2 * conf.get("PUBLISH_TIMEOUT_SECONDS")
        with self._wakeup:
            if self._pid != os.getpid():  # no thread here: nothing of ours in flight
                self._publishing = 0
            while self._publishing and (left := deadline - time.monotonic()) > 0:
                self._wakeup.wait(left)
            wanted = max(self._wanted, self._publishing)
            self._wanted = 0
        if wanted:
            self.publish(wanted)

    def publish(self, sessions: int, *, eta: datetime | None = None) -> None:
        """Publish ``sessions`` drain tasks now (to run at ``eta``, if given), unless the broker
        failed a moment ago."""
        url = drain_outbox.app.conf.broker_url
        if url != self._url:  # another broker (tests point the app elsewhere): start afresh
            self._url, self._broker_down_until = url, 0.0
        if time.monotonic() < self._broker_down_until:
            return
        try:
            connection = self._connection()
            for _ in range(sessions):
                drain_outbox.apply_async(retry=False, connection=connection, eta=eta)
        except Exception as error:
            self._drop_connection()
            pause = conf.get("BROKER_BACKOFF_SECONDS")
            self._broker_down_until = time.monotonic() + pause
            logger.warning(
                "Could not reach the broker (%s); not publishing for %s s, the sweeper will "
                "pick the notifications up.",
                type(error).__name__,
                pause,
            )

    def _connection(self):
        app = drain_outbox.app
        url = app.conf.broker_url
        connection = getattr(self._local, "connection", None)
        if connection is not None and getattr(self._local, "url", None) != url:
            self._drop_connection()  # the app was pointed at another broker (tests do)
            connection = None
        if connection is None:
            timeout = conf.get("PUBLISH_TIMEOUT_SECONDS")
            options = {
                **(app.conf.broker_transport_options or {}),
                "socket_timeout": timeout,
                "socket_connect_timeout": timeout,
                "max_retries": 0,
            }
            connection = app.connection_for_write(
                transport_options=options, connect_timeout=timeout
            )
            self._local.connection, self._local.url = connection, url
        return connection

    def _drop_connection(self) -> None:
        connection = getattr(self._local, "connection", None)
        self._local.connection = None
        if connection is not None:
            try:
                connection.release()
            except Exception:  # already broken; nothing more to free
                logger.debug("Dropping a broken broker connection failed", exc_info=True)


publisher = _Publisher()
hooks.set_publisher(publisher.request)
atexit.register(publisher.flush)
