"""Baselines: plain smtplib against the same servers, no database, no broker.

Each measurement is time-boxed: every connection sends the same prebuilt message (the bytes the
project would send) as fast as the server answers, until the deadline.
"""

from __future__ import annotations

import smtplib
import threading
import time
from dataclasses import dataclass

from bench.infra import machine_cpu
from bench.servers import SmtpServerProcess

FROM = "noreply@example.com"
TO = "user@example.com"


@dataclass(frozen=True)
class Baseline:
    server: str
    connections: int
    messages: int
    seconds: float
    peak_sessions: int
    cpu_seconds: float  # the whole machine's, client and server included

    @property
    def rate(self) -> float:
        return self.messages / self.seconds

    @property
    def cpu_ms_per_message(self) -> float:
        return self.cpu_seconds * 1000 / max(1, self.messages)


def sample_message() -> bytes:
    """One message as the project builds it (needs Django set up, for the translations)."""
    from notifications.smtp import build_message

    message = build_message(
        from_address=f"Site <{FROM}>", to=TO, subject="Benchmark", body="Hello from the bench.\n"
    )
    return message.as_bytes(policy=message.policy.clone(linesep="\r\n"))


def measure(
    server: SmtpServerProcess, *, connections: int, seconds: float, message: bytes
) -> Baseline:
    """``connections`` smtplib connections in threads, each reused for every message."""
    counts = [0] * connections
    errors: list[BaseException] = []
    start = threading.Barrier(connections + 1, timeout=30)
    deadline = [time.monotonic() + 3600.0]  # the real one is set once every connection is ready

    def sender(index: int) -> None:
        try:
            with smtplib.SMTP(
                "127.0.0.1", server.port, local_hostname="localhost", timeout=30
            ) as client:
                client.ehlo()
                start.wait()
                while time.monotonic() < deadline[0]:
                    client.sendmail(FROM, [TO], message)
                    counts[index] += 1
        except BaseException as error:  # reported below; a broken barrier frees the others
            errors.append(error)
            start.abort()

    server.reset()
    threads = [threading.Thread(target=sender, args=(i,), daemon=True) for i in range(connections)]
    for thread in threads:
        thread.start()
    try:
        start.wait()
    except threading.BrokenBarrierError:
        pass
    began, cpu = time.monotonic(), machine_cpu()
    deadline[0] = began + seconds
    for thread in threads:
        thread.join(seconds + 60)
    elapsed, cpu = time.monotonic() - began, machine_cpu() - cpu
    if errors or any(thread.is_alive() for thread in threads):
        raise RuntimeError(f"baseline against {server.name} failed: {errors[:1]}")
    return Baseline(server.name, connections, sum(counts), elapsed, server.stats().peak, cpu)
