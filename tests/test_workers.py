"""Real Celery worker processes on real Redis: Batch as a cluster-wide cap, retries, outages."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import time

import pytest
from django.db import transaction

import notifications
from notifications import services
from notifications.models import Notification, SmtpSettings, Status
from tests.loopback import wait_for
from tests.outbox import all_sent, statuses
from tests.processes import ROOT, current_database_url
from tests.smtpserver import PASSWORD, USERNAME

pytestmark = pytest.mark.django_db(transaction=True)


def test_two_workers_send_200_exactly_once_never_more_than_batch_at_once(
    smtp_server_factory, configure_smtp, celery_worker_factory
):
    server = smtp_server_factory("none")
    server.handler.data_delay = 0.01  # sessions overlap, so a cap that leaks would show
    configure_smtp(server, batch=3)
    celery_worker_factory(concurrency=4)
    celery_worker_factory(concurrency=4)
    recipients = [f"user{n}@example.com" for n in range(200)]
    with transaction.atomic():
        for recipient in recipients:
            notifications.notify(recipients=recipient, subject="Hello", body="Body")
    wait_for(lambda: all_sent(200), timeout=120, what=f"200 sent, now {statuses()}")
    received = sorted(m.rcpt_tos[0] for m in server.messages)
    assert received == sorted(recipients)  # every one, exactly once
    assert server.state.peak_sessions == 3
    print(f"\n200 sent by 2 workers; sessions opened: {server.state.total_sessions}, peak 3")


def test_raising_batch_takes_effect_without_restarting_workers(
    smtp_server_factory, configure_smtp, celery_worker_factory
):
    server = smtp_server_factory("none")
    server.handler.data_delay = 0.05
    record = configure_smtp(server, batch=2)
    celery_worker_factory(concurrency=4)
    celery_worker_factory(concurrency=4)
    with transaction.atomic():
        for n in range(300):
            notifications.notify(recipients=f"user{n}@example.com", subject="s", body="b")
    wait_for(lambda: len(server.messages) >= 20, timeout=60, what="the first 20 messages")
    assert server.state.peak_sessions == 2, f"peak before the raise: {server.state}"
    record.refresh_from_db()
    record.batch = 5
    services.save_settings(record, source="test")
    wait_for(lambda: all_sent(300), timeout=120, what=f"300 sent, now {statuses()}")
    assert server.state.peak_sessions == 5, f"peak after the raise: {server.state}"
    assert len(server.messages) == 300


def test_temporary_then_permanent_and_login_failures_through_workers(
    smtp_server_factory, smtp_pki, configure_smtp, celery_worker_factory
):
    server = smtp_server_factory("none")
    configure_smtp(server)
    celery_worker_factory(concurrency=2, notifications={"RETRY_BASE_SECONDS": 0.2})
    server.queue_replies("RCPT", "451 4.7.1 greylisted", "451 4.7.1 greylisted")
    with transaction.atomic():
        [retried] = notifications.notify(recipients="grey@example.com", subject="s", body="b")

    # The retries are due within a second; beat is not running, so ask like the sweeper does.
    def sent_after_retries() -> bool:
        retried.refresh_from_db()
        if retried.status == Status.QUEUED:
            services.sweep()
            time.sleep(0.2)
        return retried.status == Status.SENT

    wait_for(sent_after_retries, timeout=60, what="the greylisted message")
    assert retried.attempts == 3

    server.queue_replies("RCPT", "550 5.1.1 unknown user")
    with transaction.atomic():
        [failed] = notifications.notify(recipients="gone@example.com", subject="s", body="b")
    wait_for(
        lambda: Notification.objects.get(pk=failed.pk).status == Status.FAILED,
        timeout=30,
        what="the 550 to fail",
    )
    assert Notification.objects.get(pk=failed.pk).attempts == 1


def test_bad_login_pauses_sending_through_workers(
    smtp_server_factory, smtp_pki, configure_smtp, celery_worker_factory
):
    server = smtp_server_factory("starttls")
    configure_smtp(server, pki=smtp_pki, username=USERNAME, password="wrong-password", batch=2)
    celery_worker_factory(concurrency=4)
    with transaction.atomic():
        notifications.notify(
            recipients=[f"u{n}@example.com" for n in range(10)], subject="s", body="b"
        )
    wait_for(lambda: SmtpSettings.load().paused_reason != "", timeout=30, what="sending to pause")
    time.sleep(1)
    assert statuses() == {"queued": 10}
    # No retry storm: at most the Batch sessions already under way tried to log in.
    assert 1 <= len(server.state.credentials) <= 2
    record = SmtpSettings.load()
    services.save_settings(record, new_password=PASSWORD, source="test")
    wait_for(lambda: all_sent(10), timeout=30, what=f"10 sent after the fix, now {statuses()}")


def test_with_redis_down_notify_returns_and_the_sweeper_sends_after_it_is_back(
    plain_smtp_server, configure_smtp, celery_worker_factory, redis_server
):
    configure_smtp(plain_smtp_server)
    celery_worker_factory(concurrency=2, beat=True)
    redis_server.stop()
    started = time.monotonic()
    with transaction.atomic():
        [row] = notifications.notify(recipients="a@example.com", subject="s", body="b")
    assert time.monotonic() - started < 5
    assert Notification.objects.get(pk=row.pk).status == Status.QUEUED
    redis_server.start()
    wait_for(lambda: all_sent(1), timeout=90, what="the message after Redis came back")
    assert [m.rcpt_tos for m in plain_smtp_server.messages] == [("a@example.com",)]


def test_broker_messages_carry_only_ids_never_the_password(
    plain_smtp_server, configure_smtp, celery_worker_factory, redis_server
):
    # The factory points this process at the private Redis; no worker is started, so the
    # messages stay in the queue to be read.
    configure_smtp(plain_smtp_server, username="robot", password="broker-canary-pw")
    with transaction.atomic():
        rows = notifications.notify(
            recipients=["a@example.com", "b@example.com"], subject="s", body="b"
        )
    client = redis_server.client()
    wait_for(lambda: client.llen("celery") > 0, timeout=10, what="the drain request")
    time.sleep(0.2)  # anything else would be published by now
    raw_messages = client.lrange("celery", 0, -1)
    assert len(raw_messages) == 1  # one drain request per commit, not one per row
    envelope = json.loads(raw_messages[0])
    args, kwargs, _embed = json.loads(base64.b64decode(envelope["body"]))
    assert envelope["headers"]["task"] == "notifications.drain_outbox"
    assert (args, kwargs) == ([], {})  # the rows stay in the database
    assert {row.status for row in rows} == {Status.QUEUED}
    everything = b"".join(repr(client.dump(key)).encode() for key in client.scan_iter("*"))
    assert b"broker-canary-pw" not in everything
    assert base64.b64encode(b"broker-canary-pw") not in everything


def test_workers_record_a_heartbeat(celery_worker_factory):
    celery_worker_factory(concurrency=3, notifications={"HEARTBEAT_SECONDS": 0.5})
    wait_for(lambda: services.live_workers().exists(), timeout=30, what="a heartbeat")
    [beat] = services.live_workers()
    assert beat.concurrency == 3
    first = beat.last_seen
    wait_for(
        lambda: services.live_workers().get().last_seen > first, timeout=30, what="a second beat"
    )


def test_a_process_that_queues_mail_and_exits_at_once_still_asks_for_a_drain(
    plain_smtp_server, configure_smtp, celery_worker_factory, redis_server
):
    # No worker is started: the factory only points this process at the private Redis. A
    # management command ends right after notify(), while its publishing thread is connecting
    # to the broker; the request must go out before the process does, not wait for the sweeper.
    configure_smtp(plain_smtp_server, batch=2)
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "config.settings.test",
        "DATABASE_URL": current_database_url(),
        "CELERY_BROKER_URL": redis_server.url,
    }
    command = [sys.executable, "manage.py", "sendtestemail", "someone@example.com"]
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert Notification.objects.get().recipient == "someone@example.com"
    assert redis_server.client().llen("celery") >= 1, "no drain request: it waits for the sweeper"


def test_a_stream_of_notify_calls_publishes_one_request_per_interval_and_the_last_one(
    plain_smtp_server, configure_smtp, celery_worker_factory, redis_server, settings
):
    # No worker is started: the factory only points this process at the private Redis.
    settings.NOTIFICATIONS = {"PUBLISH_INTERVAL_SECONDS": 1.0}
    configure_smtp(plain_smtp_server, batch=2)
    queue = redis_server.client()
    with transaction.atomic():
        notifications.notify(
            recipients=[f"u{n}@example.com" for n in range(5)], subject="s", body="b"
        )
    wait_for(lambda: queue.llen("celery") == 1, timeout=10, what="the first drain request")
    for n in range(20):
        with transaction.atomic():
            notifications.notify(recipients=f"late{n}@example.com", subject="s", body="b")
    assert queue.llen("celery") == 1  # folded: the sessions already draining take them
    # ... but the request after the last publish still goes out, once the interval is over, so
    # a row committed just after a worker looked is never left for the sweeper.
    wait_for(lambda: queue.llen("celery") == 2, timeout=10, what="the trailing request")
    time.sleep(1.5)
    assert queue.llen("celery") == 2
