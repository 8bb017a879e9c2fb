"""Fault injection for the reliability tests: a DATA gate, database locks, and reported figures."""

from __future__ import annotations

import asyncio
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import pytest
from django.db import connection, transaction

from notifications.models import Notification, Status
from tests.smtpserver import SmtpTestServer


class DataGate:
    """Holds chosen messages inside DATA (their bytes received, no reply yet) until opened.

    aiosmtpd cancels a session's handler when its client disappears, so a message held here whose
    worker is killed is never accepted; one let through gets its 250 like any other.
    ``held`` lists the recipients of the sessions waiting at the gate.
    """

    def __init__(
        self, server: SmtpTestServer, *, hold: Callable[[tuple[str, ...]], bool] | None = None
    ) -> None:
        self.hold = hold or (lambda recipients: True)
        self.held: list[tuple[str, ...]] = []
        self._open = threading.Event()
        self._lock = threading.Lock()
        through = server.handler.handle_DATA

        async def handle_DATA(smtp, session, envelope):
            recipients = tuple(envelope.rcpt_tos)
            if not self._open.is_set() and self.hold(recipients):
                with self._lock:
                    self.held.append(recipients)
                try:
                    while not self._open.is_set():
                        await asyncio.sleep(0.02)
                finally:
                    with self._lock:
                        self.held.remove(recipients)
            return await through(smtp, session, envelope)

        # aiosmtpd looks the hooks up on the handler for each new connection.
        server.handler.handle_DATA = handle_DATA

    def holding(self) -> bool:
        return bool(self.held)

    def open(self) -> None:
        self._open.set()

    def close(self) -> None:
        self._open.clear()


@contextmanager
def status_writes_blocked() -> Iterator[None]:
    """Block every worker's write of a ``sending`` row's outcome until the block ends.

    SQLite: this connection takes the database's write lock (BEGIN IMMEDIATE). PostgreSQL: it
    locks the rows being sent. Either way a worker that got its 250 waits in its status UPDATE.
    """
    with transaction.atomic():
        list(Notification.objects.select_for_update().filter(status=Status.SENDING))
        yield


def is_postgres() -> bool:
    return connection.vendor == "postgresql"


def terminate_other_connections() -> int:
    """PostgreSQL: end every other session on this database (the workers'); returns how many."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )
        return cursor.fetchone()[0]


def receipts(server: SmtpTestServer) -> Counter[str]:
    """How many times the server accepted a message for each recipient."""
    return Counter(rcpt for message in server.messages for rcpt in message.rcpt_tos)


def duplicates(counts: Counter[str]) -> int:
    return sum(count - 1 for count in counts.values() if count > 1)


class FigureReport:
    """Collects the fault figures and prints them in pytest's terminal summary."""

    def __init__(self) -> None:
        self.lines: list[str] = []

    def add(self, line: str) -> None:
        self.lines.append(line)

    def pytest_terminal_summary(self, terminalreporter) -> None:
        if self.lines:
            terminalreporter.section("fault injection figures")
            for line in self.lines:
                terminalreporter.write_line(line)


@pytest.fixture(name="fault_figures")
def fault_figures_fixture(request, record_property) -> Callable[..., None]:
    """``fault_figures("kill -9 in DATA", kills=20, duplicates=3, lost=0)``: into the terminal
    summary, the JUnit XML properties and the test's captured output."""
    manager = request.config.pluginmanager
    report = manager.get_plugin("fault-figures")
    if report is None:
        report = FigureReport()
        manager.register(report, "fault-figures")

    def record(what: str, **figures: int | float | str) -> None:
        text = ", ".join(f"{name}={value}" for name, value in figures.items())
        line = f"{request.node.name}: {what}: {text}"
        report.add(line)
        print(line)
        for name, value in figures.items():
            record_property(name, value)

    return record
