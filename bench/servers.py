"""Local SMTP servers for the benchmark, each in its own process, counting concurrent sessions.

The server is the project's test server (``tests.smtpserver``: aiosmtpd, plaintext, on
127.0.0.1). Each runs in a child process so that it never shares a GIL with what it measures.
The parent talks to it over the child's stdin/stdout, one line each way:
``stats`` → a JSON line ``{"peak": .., "current": .., "sessions": .., "messages": ..}``;
``reset`` → forget the counts and the received messages, answer ``ok``.
"""

from __future__ import annotations

import argparse
import json
import os
import select
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import IO

ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class ServerStats:
    peak: int
    current: int
    sessions: int
    messages: int


class SmtpServerProcess:
    """``python -m bench.servers`` started in its own session; ``stop()`` always ends it."""

    def __init__(
        self, name: str, *, delay_ms: int, pipelining: bool = True, timeout: float = 20.0
    ) -> None:
        self.name = name
        self.delay_ms = delay_ms
        options = [] if pipelining else ["--no-pipelining"]
        self._process = subprocess.Popen(
            [sys.executable, "-m", "bench.servers", "--data-delay-ms", str(delay_ms), *options],
            cwd=ROOT,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )
        try:
            self.port = int(self._read_line(timeout))
        except BaseException:
            self.stop()
            raise

    @property
    def pid(self) -> int:
        return self._process.pid

    def _read_line(self, timeout: float) -> str:
        stdout = self._process.stdout
        assert stdout is not None
        ready, _, _ = select.select([stdout], [], [], timeout)
        if not ready:
            raise TimeoutError(f"SMTP server {self.name} did not answer within {timeout:.0f} s")
        line = stdout.readline()
        if not line:
            raise RuntimeError(f"SMTP server {self.name} exited ({self._process.poll()})")
        return line.strip()

    def _ask(self, command: str, timeout: float = 10.0) -> str:
        stdin = self._process.stdin
        assert stdin is not None
        stdin.write(command + "\n")
        stdin.flush()
        return self._read_line(timeout)

    def stats(self) -> ServerStats:
        return ServerStats(**json.loads(self._ask("stats")))

    def reset(self) -> None:
        self._ask("reset")

    def stop(self) -> None:
        if self._process.poll() is None:
            os.killpg(self._process.pid, signal.SIGTERM)
            try:
                self._process.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(self._process.pid, signal.SIGKILL)
                self._process.wait(10)
        for stream in (self._process.stdin, self._process.stdout):
            if stream is not None:
                stream.close()


def _serve(delay_ms: int, pipelining: bool, commands: IO[str], replies: IO[str]) -> None:
    from tests.smtpserver import SmtpTestServer

    server = SmtpTestServer("none", pipelining=pipelining)
    server.handler.data_delay = delay_ms / 1000
    state = server.state
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    try:
        print(server.port, file=replies, flush=True)
        for command in commands:  # ends when the parent closes stdin or is gone
            with state._lock:
                if command.strip() == "stats":
                    answer = json.dumps(
                        {
                            "peak": state.peak_sessions,
                            "current": state.current_sessions,
                            "sessions": state.total_sessions,
                            "messages": len(state.messages),
                        }
                    )
                else:  # reset
                    state.messages.clear()
                    state.peak_sessions = state.current_sessions
                    state.total_sessions = 0
                    answer = "ok"
            print(answer, file=replies, flush=True)
    finally:
        server.stop()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.servers")
    parser.add_argument("--data-delay-ms", type=int, default=0)
    parser.add_argument("--no-pipelining", dest="pipelining", action="store_false")
    args = parser.parse_args(argv)
    _serve(args.data_delay_ms, args.pipelining, sys.stdin, sys.stdout)


if __name__ == "__main__":
    main()
