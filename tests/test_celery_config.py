"""The Celery settings that make delivery reliable, asserted where they are configured."""

from __future__ import annotations

from config.celery_app import app


def test_tasks_are_acknowledged_late_and_requeued_when_a_worker_dies():
    assert app.conf.task_acks_late is True
    assert app.conf.task_reject_on_worker_lost is True


def test_workers_prefetch_one_task_per_slot_and_speak_only_json():
    assert app.conf.worker_prefetch_multiplier == 1
    assert app.conf.task_serializer == "json"
    assert app.conf.accept_content == ["json"]


def test_time_limits_are_below_the_broker_visibility_timeout():
    visibility = app.conf.broker_transport_options["visibility_timeout"]
    assert app.conf.task_soft_time_limit < app.conf.task_time_limit < visibility


def test_beat_runs_the_sweeper():
    entry = app.conf.beat_schedule["sweep-outbox"]
    assert entry["task"] == "notifications.sweep_outbox"
    assert entry["schedule"] <= 60


def test_tasks_have_stable_explicit_names():
    from notifications import tasks

    assert tasks.send_notification.name == "notifications.send_notification"
    assert tasks.drain_outbox.name == "notifications.drain_outbox"
    assert tasks.sweep_outbox.name == "notifications.sweep_outbox"


def test_a_plain_worker_command_gets_a_pool_that_can_hold_batch_sessions():
    # Each SMTP session is one running task: prefork's one process per core could not reach
    # Batch 5 on two cores. The settings page warns when live concurrency is below Batch.
    assert app.conf.worker_pool == "threads"
    assert app.conf.worker_concurrency >= 20
