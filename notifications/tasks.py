"""Thin Celery tasks: ids in, one service call. Safe to run twice: claims make sends happen once."""

from __future__ import annotations

from celery import shared_task
from celery.signals import task_postrun
from django.db import connections

from notifications import services


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

    No Celery retry: a failed send is rescheduled on the row itself (backoff with jitter, bounded
    attempts and age), and the sweeper re-enqueues it when due. With every slot taken it returns at
    once; a slot holder drains the row.
    """
    return services.deliver(prefer=notification_id)


@shared_task(name="notifications.drain_outbox", ignore_result=True)
def drain_outbox() -> int:
    """Send due notifications while a send slot is free. Same policy as send_notification."""
    return services.deliver()


@shared_task(name="notifications.sweep_outbox", ignore_result=True)
def sweep_outbox() -> int:
    """Periodic (beat): free expired claims and ask for drain tasks when due rows wait."""
    return services.sweep()
