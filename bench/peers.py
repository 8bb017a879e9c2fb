"""Peers measured in the same run: django-post-office's send phase, in the bench's own venv.

The peer is not a requirement of the app: ``var/bench-peers`` is a venv of its own, created on
first use with the pinned versions below, so the app's environment never sees post_office.
"""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import dataclass

from bench.infra import ROOT, Database
from bench.servers import SmtpServerProcess

VENV = ROOT / "var" / "bench-peers"
REQUIREMENTS = ("django-post-office==3.12.0", "Django==5.2.19", "psycopg[binary]==3.3.9")


@dataclass(frozen=True)
class PeerResult:
    name: str
    server: str
    connections: int
    messages: int
    seconds: float
    peak_sessions: int
    own_cpu: float  # the peer process's CPU seconds over the send phase
    machine_cpu: float  # the whole machine's (SMTP server, PostgreSQL included)

    @property
    def rate(self) -> float:
        return self.messages / self.seconds

    @property
    def cpu_ms_per_message(self) -> float:
        return self.machine_cpu * 1000 / max(1, self.messages)


def ensure_venv() -> None:
    python = VENV / "bin" / "python"
    if not python.exists():
        subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True, timeout=300)
    subprocess.run(
        [str(python), "-m", "pip", "install", "--quiet", *REQUIREMENTS], check=True, timeout=600
    )


def post_office(server: SmtpServerProcess, *, messages: int, threads: int) -> PeerResult:
    """Queue ``messages`` in post_office's own database, then time its send phase."""
    database = Database(name=f"postoffice_bench_{server.name}_{threads}")
    try:
        server.reset()
        output = subprocess.run(
            [
                str(VENV / "bin" / "python"),
                str(ROOT / "bench" / "peer_post_office.py"),
                *("--database-url", database.url, "--port", str(server.port)),
                *("--messages", str(messages), "--threads", str(threads)),
            ],
            check=True,
            capture_output=True,
            text=True,
            timeout=900,
        ).stdout
    finally:
        database.drop()
    figures = json.loads(output.strip().splitlines()[-1])
    stats = server.stats()
    if stats.messages != messages:
        raise RuntimeError(f"post_office sent {stats.messages} of {messages}")
    return PeerResult(
        "django-post-office",
        server.name,
        threads,
        messages,
        figures["seconds"],
        stats.peak,
        figures["own_cpu"],
        figures["machine_cpu"],
    )
