"""Slow, dripping and unreachable SMTP servers and a hanging broker, against real worker
processes: no duplicate, never above Batch, no row charged for a connection, no caller held up.
"""

from __future__ import annotations

import re
import threading
import time

import pytest
from django.db import transaction

import notifications
from notifications.models import ConnectBackoff, Notification, Status
from tests.faults import (
    duplicates,
    fault_figures_fixture,  # noqa: F401  (the fault_figures fixture)
    receipts,
)
from tests.hostile import drip
from tests.loopback import wait_for
from tests.outbox import all_sent, statuses
from tests.processes import publishing_to

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.redis]


class Raw:
    """What configure_smtp needs to know of a server that is not aiosmtpd."""

    mode = "none"

    def __init__(self, port: int) -> None:
        self.port = port


def send_to(recipients: list[str]) -> list[Notification]:
    with transaction.atomic():
        return notifications.notify(recipients=recipients, subject="Slow test", body="Body")


def attempt_durations_ms(log: str) -> list[int]:
    return [int(ms) for ms in re.findall(r"delivery attempt \d+: \S+ .*?, (\d+) ms,", log)]


def test_sessions_that_outlive_the_lease_send_each_row_once_and_never_above_batch(
    plain_smtp_server, configure_smtp, celery_worker_factory, fault_figures
):
    """A claimed group takes 10 x 0.5 s against a 3 s lease: the session renews what it holds,
    so the sweeper (every second) never hands those rows to another worker."""
    server = plain_smtp_server
    server.handler.data_delay = 0.5
    configure_smtp(server, batch=2)
    options = {"LEASE_SECONDS": 3, "CLAIM_BATCH": 10}
    for _ in range(2):
        celery_worker_factory(concurrency=2, beat=True, notifications=options)
    recipients = [f"slow{n}@example.com" for n in range(20)]
    send_to(recipients)
    wait_for(lambda: all_sent(20), timeout=120, what=f"20 sent, now {statuses()}")
    counts = receipts(server)
    fault_figures(
        "group slower than the lease",
        notifications=20,
        duplicates=duplicates(counts),
        peak_sessions=server.state.peak_sessions,
    )
    assert duplicates(counts) == 0 and set(counts) == set(recipients)
    assert server.state.peak_sessions <= 2
    assert set(Notification.objects.values_list("attempts", flat=True)) == {1}


def test_a_message_slower_than_the_lease_ends_at_its_deadline_and_is_never_doubled(
    plain_smtp_server, configure_smtp, celery_worker_factory, fault_figures
):
    """Each DATA takes 5 s against a 3 s lease: the send gives up at its 1 s deadline (a third of
    the lease), so no second worker ever sends the row while the first still does."""
    server = plain_smtp_server
    server.handler.data_delay = 5
    configure_smtp(server, batch=1)
    options = {
        "LEASE_SECONDS": 3,
        "MAX_ATTEMPTS": 2,
        "RETRY_BASE_SECONDS": 0.2,
        "RETRY_MAX_SECONDS": 0.5,
    }
    workers = [celery_worker_factory(concurrency=2, beat=True, notifications=options)]
    workers.append(celery_worker_factory(concurrency=2, beat=True, notifications=options))
    rows = send_to(["late1@example.com", "late2@example.com"])

    def all_failed() -> bool:
        return Notification.objects.filter(status=Status.FAILED).count() == len(rows)

    wait_for(all_failed, timeout=90, what=f"both to fail after 2 attempts, now {statuses()}")

    def durations() -> list[int]:
        return [ms for worker in workers for ms in attempt_durations_ms(worker.log.read_text())]

    # Each attempt's line is logged just after its outcome is written.
    wait_for(lambda: len(durations()) >= 4, timeout=10, what="the 4 attempts' log lines")
    durations = durations()
    fault_figures(
        "message slower than the lease",
        attempts=len(durations),
        longest_attempt_ms=max(durations),
        accepted=len(server.messages),
        peak_sessions=server.state.peak_sessions,
    )
    assert [row.attempts for row in Notification.objects.all()] == [2, 2]
    assert len(durations) == 4 and max(durations) < 1000 + 1500  # the deadline, and some slack
    assert server.messages == [] and server.state.peak_sessions <= 1
    assert all("[data]" in row.last_error for row in Notification.objects.all())


def test_a_dripping_reply_ends_the_message_at_its_deadline(
    hostile_server, configure_smtp, celery_worker_factory, fault_figures
):
    server = hostile_server(drip(0.3))
    configure_smtp(Raw(server.port), batch=1)
    worker = celery_worker_factory(
        concurrency=1, notifications={"SEND_SECONDS": 2, "RETRY_BASE_SECONDS": 60}
    )
    [row] = send_to(["drip@example.com"])
    wait_for(
        lambda: Notification.objects.get(pk=row.pk).last_error,
        timeout=30,
        what="the first attempt to end",
    )
    row.refresh_from_db()
    wait_for(lambda: attempt_durations_ms(worker.log.read_text()), timeout=10, what="its log line")
    [duration] = attempt_durations_ms(worker.log.read_text())
    fault_figures("reply dripping a line every 0.3 s", attempt_ms=duration, deadline_ms=2000)
    assert (row.status, row.attempts) == (Status.QUEUED, 1) and "[data]" in row.last_error
    assert 1000 <= duration <= 3000  # the 2 s deadline, give or take a second


def test_an_unreachable_server_is_dialled_once_per_back_off_and_charges_no_row(
    hostile_server, configure_smtp, celery_worker_factory, fault_figures
):
    # Accepts and hangs up at once: every session fails before the greeting.
    server = hostile_server(lambda sock, stop: None, at="greeting")
    configure_smtp(Raw(server.port), batch=2)
    options = {"CONNECT_BACKOFF_SECONDS": 1, "CONNECT_BACKOFF_MAX_SECONDS": 1}
    celery_worker_factory(concurrency=2, beat=True, notifications=options)
    send_to([f"down{n}@example.com" for n in range(25)])
    wait_for(lambda: server.connections >= 1, timeout=30, what="a first connection")
    first = time.monotonic()
    time.sleep(6)
    elapsed = time.monotonic() - first
    connections = server.connections
    fault_figures(
        "unreachable server",
        notifications=25,
        connections=connections,
        seconds=round(elapsed, 1),
        charged=Notification.objects.filter(attempts__gt=0).count(),
    )
    # Batch may race for the first one; after that one per back-off (at least 0.8 s each).
    assert connections <= 2 + elapsed / 0.8 + 1
    assert Notification.objects.filter(attempts__gt=0).count() == 0
    assert Notification.objects.filter(status=Status.QUEUED).count() == 25
    assert ConnectBackoff.objects.get().failures >= 2


def test_a_broker_that_never_answers_holds_notify_up_for_under_half_a_second(
    silent_port, fault_figures
):
    latencies = []
    with publishing_to(f"redis://127.0.0.1:{silent_port}/0"):
        for n in range(5):
            started = time.monotonic()
            with transaction.atomic():
                notifications.notify(recipients=f"hang{n}@example.com", subject="s", body="b")
            latencies.append(time.monotonic() - started)
        time.sleep(1)  # the publishing thread meets the silent broker, times out, backs off
        started = time.monotonic()
        with transaction.atomic():
            notifications.notify(recipients="after@example.com", subject="s", body="b")
        latencies.append(time.monotonic() - started)
    fault_figures(
        "broker that accepts and never answers",
        slowest_call_ms=round(max(latencies) * 1000),
        threads=threading.active_count(),
    )
    # Publishing happens on a thread of its own, with 0.25 s socket timeouts: never the caller.
    assert max(latencies) < 0.5
    assert Notification.objects.filter(status=Status.QUEUED).count() == 6
