"""``python -m bench``: baselines and end-to-end points, written to docs/benchmarks.md.

Everything it starts (SMTP servers, redis-server, Celery workers, a PostgreSQL database of its
own) is stopped or dropped on the way out, also on Ctrl-C, SIGTERM or failure.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path

from bench import peers, report
from bench.infra import ROOT, CpuMeter, Database, Redis, Worker, child_environment, migrate
from bench.report import Run
from bench.servers import SmtpServerProcess


def _arguments(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--batches", default="1,4,10,20,50", help="comma-separated Batch values")
    parser.add_argument("--delay-ms", type=int, default=50, help="the slow server's DATA delay")
    parser.add_argument("--seconds", type=float, default=5.0, help="target length of a point")
    parser.add_argument("--baseline-seconds", type=float, default=3.0)
    parser.add_argument("--workers", type=int, default=2, help="Celery worker processes")
    parser.add_argument("--producers", type=int, default=1, help="threads calling notify()")
    parser.add_argument("--runs", type=int, default=1, help="whole runs, one section each")
    parser.add_argument("--peer-threads", type=int, default=10, help="post_office's threads")
    parser.add_argument("--servers", default="slow,fast", help="which end-to-end servers")
    parser.add_argument(
        "--no-pipelining",
        dest="pipelining",
        action="store_false",
        help="servers that do not offer PIPELINING (most real ones do; smtplib never uses it)",
    )
    parser.add_argument("--output", type=Path, default=ROOT / "docs" / "benchmarks.md")
    parser.add_argument("--logs", type=Path, help="keep worker logs here (default: temporary)")
    return parser.parse_args(argv)


def _interrupt(signum: int, _frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def _say(text: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True)


def _slow_messages(batch: int, delay_ms: int, seconds: float) -> int:
    return max(20, round(batch / (delay_ms / 1000) * seconds))


def _fast_messages(baseline_rate: float, seconds: float) -> int:
    # At most the baseline's rate × seconds; the producers also stop after ``seconds``.
    return min(10000, max(200, round(baseline_rate * seconds)))


def _run_once(
    args: argparse.Namespace,
    servers: dict[str, SmtpServerProcess],
    environment: dict[str, str],
    logs: Path,
    redis_pid: int,
    database: Database,
) -> Run:
    from bench import baselines, endtoend

    batches = [int(b) for b in args.batches.split(",")]
    run = Run(
        started=time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        delay_ms=args.delay_ms,
        workers=args.workers,
        producers=args.producers,
        pipelining=args.pipelining,
    )
    start_load = os.getloadavg()[0]
    message = baselines.sample_message()

    def baseline(server: SmtpServerProcess, connections: int) -> baselines.Baseline:
        measured = baselines.measure(
            server, connections=connections, seconds=args.baseline_seconds, message=message
        )
        _say(f"baseline {server.name} ×{connections}: {measured.rate:.0f} msg/s")
        run.baselines.append(measured)
        return measured

    for server in servers.values():
        baseline(server, 1)

    for batch in batches:
        with ExitStack() as workers:
            started = []
            for index in range(args.workers):
                worker = Worker(
                    f"bench{index}-b{batch}",
                    concurrency=concurrency(batch, args.workers),
                    environment=environment,
                    log=logs / f"worker{index}-b{batch}.log",
                )
                workers.callback(worker.stop)
                started.append(worker)
            for worker in started:
                worker.wait_ready()
            endtoend.configure(servers["fast"], batch)
            endtoend.run_point(  # warm-up: imports, connections, first sessions
                servers["fast"], batch=batch, messages=max(40, 4 * batch), prequeued=True
            )
            # The paced producer: notify() as a caller sees it while workers send, 100 calls a
            # second, one recipient each, in turn in autocommit, in a transaction of the
            # caller's, and the bare INSERT that is their baseline.
            paced = endtoend.run_point(
                servers["fast"], batch=batch, messages=300, producers=1, pace=0.01
            )
            run.paced_notify_ms[batch] = paced.notify_ms
            run.paced_notify_in_transaction_ms[batch] = paced.notify_in_transaction_ms
            run.paced_bare_insert_ms[batch] = paced.bare_insert_ms
            for name in args.servers.split(","):
                server = servers[name]
                # The baseline right before its end-to-end point, so both see the same noise.
                pool = run.baseline(name, batch) if batch == 1 else baseline(server, batch)
                if name == "slow":
                    messages = _slow_messages(batch, args.delay_ms, args.seconds)
                else:
                    messages = _fast_messages(pool.rate if pool else 1000, args.seconds)
                endtoend.configure(server, batch)
                meter = CpuMeter(
                    {
                        "bench": [os.getpid()],
                        "workers": [worker.process.pid for worker in started],
                        "smtp": [server.pid],
                        "redis": [redis_pid],
                        "postgres": database.backend_pids,
                    }
                )
                # Dispatch apart from the producer: the rows are committed at once, then sent.
                point = endtoend.run_point(
                    server, batch=batch, messages=messages, meter=meter, prequeued=True
                )
                _say(
                    f"{name} Batch {batch}: {point.messages} in {point.seconds:.2f} s = "
                    f"{point.rate:.0f} msg/s, peak {point.peak_sessions}, "
                    f"notify() p50 {endtoend.median(point.notify_ms):.2f} ms"
                )
                run.points.append(point)
            memories = [worker.memory() for worker in started]
            run.memory[batch] = max(memories, key=lambda m: m.peak_mb)
    fast_b10 = next((p for p in run.points if p.server == "fast" and p.batch == 10), None)
    for name in args.servers.split(","):
        messages = fast_b10.messages if name == "fast" and fast_b10 else 1000
        if name == "slow":
            messages = _slow_messages(args.peer_threads, args.delay_ms, args.seconds)
        peer = peers.post_office(servers[name], messages=messages, threads=args.peer_threads)
        _say(f"post_office {name} ×{args.peer_threads}: {peer.rate:.0f} msg/s")
        run.peers.append(peer)
    run.load = (start_load, os.getloadavg()[0])
    return run


def concurrency(batch: int, workers: int) -> int:
    """Threads per worker: together a little more than Batch (each session is one task)."""
    return max(2, -(-batch // workers) + 2)


def main(argv: list[str] | None = None) -> None:
    args = _arguments(argv)
    # Explicitly, also SIGINT: a shell starting us in the background may have ignored it.
    signal.signal(signal.SIGTERM, _interrupt)
    signal.signal(signal.SIGINT, _interrupt)
    with ExitStack() as stack:
        scratch = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-")))
        logs = args.logs or scratch
        logs.mkdir(parents=True, exist_ok=True)
        _say("creating the database, starting redis-server and the SMTP servers")
        database = Database()
        stack.callback(database.drop)
        redis_server = Redis(scratch)
        stack.callback(redis_server.stop)
        environment = child_environment(database.url, redis_server.url)
        os.environ.update(
            {k: environment[k] for k in ("DJANGO_SETTINGS_MODULE", "DATABASE_URL")},
            CELERY_BROKER_URL=redis_server.url,
        )
        migrate(environment)
        _say("preparing the peers' own venv (var/bench-peers)")
        peers.ensure_venv()

        import django

        django.setup()
        from django.db import connections

        import config  # noqa: F401  (the Celery app that notify() publishes with)

        stack.callback(connections.close_all)  # before the database is dropped
        servers: dict[str, SmtpServerProcess] = {}
        for name, delay in (("fast", 0), ("slow", args.delay_ms)):
            servers[name] = SmtpServerProcess(name, delay_ms=delay, pipelining=args.pipelining)
            stack.callback(servers[name].stop)

        runs: list[Run] = []
        for number in range(args.runs):
            _say(f"run {number + 1} of {args.runs}")
            runs.append(
                _run_once(args, servers, environment, logs, redis_server.process.pid, database)
            )
            args.output.parent.mkdir(parents=True, exist_ok=True)
            args.output.write_text(report.render(runs))
            _say(f"wrote {args.output}")
        for run in runs:
            for target, met, measured in run.targets():
                _say(f"{'met    ' if met else 'NOT MET'} {target}: {measured}")


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:
        print("bench: interrupted; everything it started has been stopped.", file=sys.stderr)
        sys.exit(130)
