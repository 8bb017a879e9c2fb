"""The project end to end: notify() in the caller → outbox → Celery workers → SMTP → ``sent``.

Needs Django set up on the bench database, with workers running. One point: configure the stored
settings (server, Batch), call ``notify()`` N times from producer threads (in turn in
autocommit, as a Django view runs by default, and inside the caller's own transaction, as with
ATOMIC_REQUESTS; each timed with its commit, so the broker publish is part of its cost), wait
until every row is ``sent``, then read the timings back from the rows themselves. A paced
producer's third call of each turn is a bare INSERT of the same text into a table of the bench's
(``BARE_TABLE``: a primary key, no other index), the floor of any outbox that stores first, under
the same load: notify()'s median is judged against it.
"""

from __future__ import annotations

import contextlib
import statistics
import threading
import time
from dataclasses import dataclass, field

from django.db import connection, transaction

from bench.infra import CpuMeter
from bench.servers import SmtpServerProcess

FROM = "Site <noreply@example.com>"
BARE_TABLE = "bench_bare_insert"


@dataclass(frozen=True)
class Point:
    server: str
    batch: int
    messages: int
    seconds: float  # first created_at → last sent_at
    produce_seconds: float  # the producers' wall time for all notify() calls
    notify_ms: list[float]  # in autocommit (for a pre-queued point: the bulk calls)
    latency_ms: list[float]  # created_at → sent_at, per message
    peak_sessions: int
    sessions: int  # sessions opened
    received: int  # messages the server accepted (more than ``messages`` = duplicates)
    cpu: dict[str, float]  # CPU seconds per process group over the point (see CpuMeter)
    notify_in_transaction_ms: list[float] = field(default_factory=list)  # timed with the commit
    bare_insert_ms: list[float] = field(default_factory=list)  # the baseline of the paced calls

    @property
    def rate(self) -> float:
        return self.messages / self.seconds


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


def configure(server: SmtpServerProcess, batch: int) -> None:
    from notifications import services
    from notifications.models import SmtpSettings

    record = SmtpSettings.load()
    record.host, record.port, record.security = "127.0.0.1", server.port, "none"
    record.username, record.from_address, record.batch = "", FROM, batch
    services.save_settings(record, new_password="", source="bench")


def _clear_outbox() -> None:
    from notifications.models import Notification

    with connection.cursor() as cursor:
        cursor.execute(f'TRUNCATE "{Notification._meta.db_table}"')


def _wait_idle(server: SmtpServerProcess, timeout: float = 60) -> None:
    """No session open and no send slot leased: the previous point is over."""
    from notifications.models import SendSlot

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.stats().current == 0 and not SendSlot.objects.exclude(token="").exists():
            return
        time.sleep(0.1)
    raise TimeoutError(f"{server.name}: sessions or send slots still held after {timeout:.0f} s")


def _produce(
    calls: int, producers: int, tag: str, *, pace: float, seconds: float
) -> tuple[list[float], list[float], list[float], float]:
    """Up to ``calls`` timed calls from ``producers`` threads, for at most ``seconds``, each
    followed by ``pace`` seconds of sleep, in turn: notify() in autocommit, notify() inside a
    transaction of the caller's (timed with its commit), and, when paced, the bare INSERT
    (``BARE_TABLE``). Returns the ms of each kind, and the wall time."""
    import notifications

    kinds = 3 if pace else 2
    durations: tuple[list[float], list[float], list[float]] = ([], [], [])
    errors: list[BaseException] = []
    deadline = time.monotonic() + seconds
    if pace:
        with connection.cursor() as cursor:
            cursor.execute(
                f"CREATE TABLE IF NOT EXISTS {BARE_TABLE} (id bigserial PRIMARY KEY, "
                "recipient text NOT NULL, subject text NOT NULL, body text NOT NULL, "
                "created_at timestamptz NOT NULL DEFAULT now())"
            )

    def call(index: int, kind: int) -> None:
        recipient, subject = f"user{index}@example.com", f"Benchmark {tag} #{index}"
        if kind == 2:
            with connection.cursor() as cursor:
                cursor.execute(
                    f"INSERT INTO {BARE_TABLE} (recipient, subject, body) "  # noqa: S608
                    "VALUES (%s, %s, %s)",
                    [recipient, subject, "Hello from the bench.\n"],
                )
            return
        with transaction.atomic() if kind == 1 else contextlib.nullcontext():
            notifications.notify(
                recipients=recipient, subject=subject, body="Hello from the bench.\n"
            )

    def produce(first: int) -> None:
        try:
            for index in range(first, calls, producers):
                if time.monotonic() > deadline:
                    break
                kind = index % kinds
                started = time.perf_counter()
                call(index, kind)
                durations[kind].append((time.perf_counter() - started) * 1000)
                if pace:
                    time.sleep(pace)
        except BaseException as error:
            errors.append(error)
        finally:
            connection.close()

    threads = [threading.Thread(target=produce, args=(i,), daemon=True) for i in range(producers)]
    started = time.monotonic()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(seconds + 60)
    if errors or any(thread.is_alive() for thread in threads):
        raise RuntimeError(f"notify() failed: {errors[:1]}")
    return *durations, time.monotonic() - started


def _wait_sent(messages: int, *, stall: float = 30.0, limit: float = 180.0) -> None:
    """Until every row is sent; fails on a failed row, on no progress for ``stall`` seconds."""
    from notifications.models import Status

    deadline = time.monotonic() + limit
    last, last_change = -1, time.monotonic()
    while time.monotonic() < deadline:
        counts = _status_counts()
        sent = counts.get(Status.SENT, 0)
        if sent == messages:
            return
        if counts.get(Status.FAILED):
            raise RuntimeError(f"some notifications failed: {counts}")
        if sent != last:
            last, last_change = sent, time.monotonic()
        elif time.monotonic() - last_change > stall:
            raise TimeoutError(f"no progress for {stall:.0f} s: {counts}")
        time.sleep(0.2)
    raise TimeoutError(f"not all sent within {limit:.0f} s: {_status_counts()}")


def _status_counts() -> dict[str, int]:
    from django.db.models import Count

    from notifications.models import Notification

    rows = Notification.objects.order_by().values("status").annotate(n=Count("id"))
    return {row["status"]: row["n"] for row in rows}


def _prequeue(messages: int, tag: str, meter: CpuMeter) -> tuple[list[float], float, object]:
    """Store ``messages`` rows with bulk notify() calls in one transaction; the meter starts just
    before its commit, so it measures dispatch only. Returns (per-call ms, seconds, commit time).
    """
    from django.utils import timezone

    import notifications

    durations: list[float] = []
    started = time.monotonic()
    with transaction.atomic():
        for first in range(0, messages, 1000):
            call = time.perf_counter()
            notifications.notify(
                recipients=[
                    f"user{n}@example.com" for n in range(first, min(messages, first + 1000))
                ],
                subject=f"Benchmark {tag}",
                body="Hello from the bench.\n",
            )
            durations.append((time.perf_counter() - call) * 1000)
        meter.start()
    return durations, time.monotonic() - started, timezone.now()


def run_point(
    server: SmtpServerProcess,
    *,
    batch: int,
    messages: int,
    producers: int = 1,
    meter: CpuMeter | None = None,
    pace: float = 0.0,
    seconds: float = 60.0,
    prequeued: bool = False,
) -> Point:
    """Up to ``messages`` calls (see ``_produce``) for at most ``seconds`` (``pace`` seconds
    apart per producer, 0 = a burst), then wait until every notification is sent.
    ``prequeued``: all ``messages`` rows committed at once instead (dispatch measured apart from
    the producer); msg/s then counts from that commit, and ``notify_ms`` holds the bulk calls
    (1,000 recipients each)."""
    from notifications.models import Notification

    _wait_idle(server)
    _clear_outbox()
    server.reset()
    meter = meter or CpuMeter({})
    committed = None
    in_transaction_ms: list[float] = []
    bare_insert_ms: list[float] = []
    if prequeued:
        notify_ms, produce_seconds, committed = _prequeue(messages, server.name, meter)
    else:
        meter.start()
        notify_ms, in_transaction_ms, bare_insert_ms, produce_seconds = _produce(
            messages, producers, server.name, pace=pace, seconds=seconds
        )
        messages = len(notify_ms) + len(in_transaction_ms)
    _wait_sent(messages)
    cpu = meter.stop()
    _wait_idle(server)
    stats = server.stats()
    rows = list(Notification.objects.values_list("created_at", "sent_at"))
    first = committed or min(created for created, _ in rows)
    last = max(sent for _, sent in rows)
    return Point(
        server=server.name,
        batch=batch,
        messages=messages,
        seconds=(last - first).total_seconds(),
        produce_seconds=produce_seconds,
        notify_ms=notify_ms,
        latency_ms=[(sent - created).total_seconds() * 1000 for created, sent in rows],
        peak_sessions=stats.peak,
        sessions=stats.sessions,
        received=stats.messages,
        cpu=cpu,
        notify_in_transaction_ms=in_transaction_ms,
        bare_insert_ms=bare_insert_ms,
    )


def median(values: list[float]) -> float:
    return statistics.median(values)
