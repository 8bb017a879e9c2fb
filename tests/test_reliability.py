"""Faults with real processes: kill -9 in DATA, a flushed or restarted Redis, a dropped database
connection, and a message that kills its worker every time. Figures go to the terminal summary.
"""

from __future__ import annotations

import time

import pytest
from django.core.mail import send_mail
from django.db import transaction

import notifications
from notifications import services
from notifications.models import Notification, SendSlot, SmtpSettings, Status
from notifications.signals import notify
from tests.faults import (
    DataGate,
    duplicates,
    fault_figures_fixture,  # noqa: F401  (the fault_figures fixture)
    is_postgres,
    receipts,
    status_writes_blocked,
    terminate_other_connections,
)
from tests.loopback import wait_for
from tests.outbox import all_sent, statuses

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.redis]

#: Leases short enough that a killed worker's claims and send slot free up within seconds (the
#: product's default is LEASE_SECONDS=300); beat runs the sweeper every second (the fixture).
FAST = {"LEASE_SECONDS": 2, "RETRY_BASE_SECONDS": 0.2, "RETRY_MAX_SECONDS": 1}


def send_to(recipients: list[str]) -> list[Notification]:
    with transaction.atomic():
        return notifications.notify(recipients=recipients, subject="Fault test", body="Body")


def test_kill_9_in_data_20_times_sends_everything_with_at_most_one_duplicate_per_kill(
    plain_smtp_server, configure_smtp, celery_worker_factory, fault_figures
):
    """Half the kills land while the server holds DATA (nothing accepted); the other half land
    after the server's 250 but before the worker records it (the one window for a duplicate)."""
    kills_planned = 20
    server = plain_smtp_server
    gate = DataGate(server)
    configure_smtp(server, batch=2)
    recipients = [f"kill{n}@example.com" for n in range(25)]
    send_to(recipients)
    options = {**FAST, "MAX_ATTEMPTS": 50}  # the crash-loop guard is tested on its own below
    kills_in_data = kills_after_250 = 0
    for round_number in range(kills_planned):
        worker = celery_worker_factory(concurrency=1, beat=True, notifications=options)
        wait_for(gate.holding, timeout=30, what=f"round {round_number}: a session held in DATA")
        if round_number % 2:
            accepted = len(server.messages)
            with status_writes_blocked():
                gate.open()
                wait_for(
                    lambda accepted=accepted: len(server.messages) > accepted,
                    timeout=10,
                    what="the server to accept the released message",
                )
                worker.kill()
                if is_postgres():
                    # A backend waiting on a lock notices its dead client only when it writes;
                    # end it as the server would have, so the kill really loses the status write.
                    terminate_other_connections()
                gate.close()
            kills_after_250 += 1
        else:
            worker.kill()
            kills_in_data += 1
    gate.open()
    celery_worker_factory(concurrency=2, beat=True, notifications=options)
    wait_for(lambda: all_sent(25), timeout=90, what=f"25 sent, now {statuses()}")

    counts = receipts(server)
    lost = [r for r in recipients if counts[r] == 0]
    duplicate_count = duplicates(counts)
    kills = kills_in_data + kills_after_250
    fault_figures(
        "kill -9 during DATA",
        kills=kills,
        kills_in_data=kills_in_data,
        kills_after_250=kills_after_250,
        notifications=len(recipients),
        duplicates=duplicate_count,
        lost=len(lost),
    )
    assert kills == kills_planned
    assert lost == []
    assert set(counts) == set(recipients)
    # Only a kill after the 250 can cause a duplicate, and at most one each.
    assert duplicate_count <= kills_after_250
    assert Notification.objects.exclude(status=Status.SENT).count() == 0


def test_redis_flushall_with_500_queued_loses_nothing(
    plain_smtp_server, configure_smtp, celery_worker_factory, redis_server, fault_figures
):
    server = plain_smtp_server
    server.handler.data_delay = 0.005
    # Short drains and sessions: the tasks hand over often, so the flushed queue matters.
    configure_smtp(server, batch=4, messages_per_connection=10)
    celery_worker_factory(concurrency=4, beat=True, notifications={**FAST, "DRAIN_SECONDS": 1})
    recipients = [f"flush{n}@example.com" for n in range(500)]
    send_to(recipients)
    client = redis_server.client()
    wait_for(lambda: len(server.messages) >= 50, timeout=60, what="the first 50 messages")
    # Everything the broker holds goes: queued and unacknowledged task messages, bindings.
    broker_keys = client.dbsize()
    client.flushall()
    sent_at_flush = len(server.messages)
    assert broker_keys > 0, "the broker was already empty: the flush would prove nothing"
    wait_for(lambda: all_sent(500), timeout=150, what=f"500 sent after FLUSHALL, now {statuses()}")

    counts = receipts(server)
    lost = [r for r in recipients if counts[r] == 0]
    fault_figures(
        "Redis FLUSHALL mid-run",
        notifications=500,
        sent_before_flush=sent_at_flush,
        broker_keys_flushed=broker_keys,
        duplicates=duplicates(counts),
        lost=len(lost),
    )
    assert lost == []
    assert duplicates(counts) == 0  # nothing crashed: no excuse for sending twice


def test_redis_outage_never_reaches_callers_and_everything_is_sent_after_restart(
    plain_smtp_server, configure_smtp, celery_worker_factory, redis_server, fault_figures, settings
):
    settings.EMAIL_BACKEND = "notifications.backends.OutboxEmailBackend"  # pytest-django's locmem
    server = plain_smtp_server
    record = configure_smtp(server, batch=2)
    worker = celery_worker_factory(concurrency=2, beat=True, notifications=FAST)
    send_to(["before1@example.com", "before2@example.com", "before3@example.com"])
    wait_for(lambda: all_sent(3), timeout=30, what=f"3 sent before the outage, now {statuses()}")
    # Once no session is open, only the broker (tasks, the sweeper's kicks) can start one.
    wait_for(
        lambda: not SendSlot.objects.filter(expires_at__isnull=False).exists(),
        timeout=30,
        what="the sessions to close",
    )

    redis_server.stop()
    latencies: list[float] = []

    def timed(call) -> None:
        started = time.monotonic()
        with transaction.atomic():
            call()
        latencies.append(time.monotonic() - started)

    for n in range(5):
        timed(
            lambda n=n: notifications.notify(
                recipients=f"down{n}@example.com", subject="s", body="b"
            )
        )
    timed(lambda: send_mail("s", "b", None, ["mail1@example.com", "mail2@example.com"]))
    timed(
        lambda: notify.send(
            sender=SmtpSettings, recipients="signal@example.com", subject="s", body="b"
        )
    )
    # Saving the settings asks for drain tasks after commit: it must not fail either.
    timed(lambda: services.save_settings(SmtpSettings.load(), source="test"))
    calls_during_outage = len(latencies)
    assert Notification.objects.filter(status=Status.QUEUED).count() == 8
    assert worker.process.poll() is None, "the worker died with Redis"

    redis_server.start()
    wait_for(lambda: all_sent(11), timeout=90, what=f"11 sent after the restart, now {statuses()}")
    counts = receipts(server)
    fault_figures(
        "Redis stopped and restarted",
        calls_during_outage=calls_during_outage,
        slowest_call_seconds=round(max(latencies), 2),
        notifications=11,
        duplicates=duplicates(counts),
        lost=11 - len(counts),
    )
    assert max(latencies) < 5, latencies
    assert len(counts) == 11 and duplicates(counts) == 0
    record.refresh_from_db()
    assert not record.paused_reason


# SQLite is a file opened in the worker's own process: there is no server connection to drop.
@pytest.mark.postgres_database
def test_database_connection_dropped_during_a_send_leaves_no_row_lost_or_stuck(
    plain_smtp_server, configure_smtp, celery_worker_factory, fault_figures
):
    server = plain_smtp_server
    gate = DataGate(server)
    configure_smtp(server, batch=1)
    worker = celery_worker_factory(concurrency=1, beat=True, notifications=FAST)
    [row] = send_to(["victim@example.com"])
    wait_for(gate.holding, timeout=30, what="the send to be held in DATA")
    dropped = terminate_other_connections()
    gate.open()
    wait_for(
        lambda: Notification.objects.get(pk=row.pk).status == Status.SENT,
        timeout=60,
        what=f"the row to end sent, now {statuses()}",
    )
    [after] = send_to(["after@example.com"])
    wait_for(
        lambda: Notification.objects.get(pk=after.pk).status == Status.SENT,
        timeout=30,
        what="a send after the drop",
    )
    counts = receipts(server)
    fault_figures(
        "database connection dropped in DATA",
        connections_dropped=dropped,
        duplicates=duplicates(counts),
        lost=2 - len(counts),
    )
    assert dropped >= 1
    assert worker.process.poll() is None
    # The 250 came after the connection was gone, so the status write failed: the row was sent
    # again after its lease ran out (the documented at-least-once window), at most once more.
    assert counts["victim@example.com"] in (1, 2)
    assert counts["after@example.com"] == 1


def test_a_message_that_kills_its_worker_every_time_fails_after_max_attempts(
    plain_smtp_server, configure_smtp, celery_worker_factory, fault_figures
):
    max_attempts = 3
    server = plain_smtp_server
    poison = "poison@example.com"
    gate = DataGate(server, hold=lambda recipients: poison in recipients)
    configure_smtp(server, batch=2)
    options = {**FAST, "MAX_ATTEMPTS": max_attempts}
    [poisoned, *others] = send_to([poison, "ok1@example.com", "ok2@example.com"])

    def given_up() -> bool:
        return Notification.objects.get(pk=poisoned.pk).status == Status.FAILED

    kills = 0
    for _round in range(max_attempts + 2):
        worker = celery_worker_factory(concurrency=1, beat=True, notifications=options)
        wait_for(
            lambda: gate.holding() or given_up(),
            timeout=30,
            what="the poison message in DATA, or given up",
        )
        if given_up():
            break
        worker.kill()
        kills += 1
    wait_for(lambda: all_sent(len(others)), timeout=30, what=f"the others sent, now {statuses()}")

    poisoned.refresh_from_db()
    fault_figures(
        "message that kills its worker",
        kills=kills,
        attempts=poisoned.attempts,
        status=poisoned.status,
    )
    assert poisoned.status == Status.FAILED
    assert kills == max_attempts
    assert f"Gave up after {max_attempts} attempts" in poisoned.last_error
    assert "worker stopped" in poisoned.last_error
    assert receipts(server)[poison] == 0
