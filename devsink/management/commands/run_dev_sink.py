"""Run the development SMTP sink on loopback; every message it receives is stored for the admin."""

from __future__ import annotations

import asyncio
import signal

from django.core.management.base import BaseCommand, CommandError

from devsink import sink


class Command(BaseCommand):
    help = "Run a local SMTP server (no TLS; no login unless --auth) that keeps what it receives."

    def add_arguments(self, parser) -> None:
        parser.add_argument("--host", default="127.0.0.1")
        parser.add_argument("--port", type=int, default=8025)
        parser.add_argument(
            "--auth",
            action="store_true",
            help=f"Also offer a login: {sink.USERNAME} / {sink.PASSWORD} is accepted, any other "
            "password gets 535 (to see how the settings page explains a bad password).",
        )

    def handle(self, *args, host: str, port: int, auth: bool, **options) -> None:
        server = sink.controller(host=host, port=port, auth=auth)
        try:
            server.start()
        except OSError as error:  # e.g. the port is taken: say so in one line, exit non-zero
            raise CommandError(f"The SMTP sink cannot listen on {host}:{port}: {error}") from None
        login = f"; login {sink.USERNAME} / {sink.PASSWORD}" if auth else ""
        self.stdout.write(f"Development SMTP sink listening on {host}:{port}{login}")
        stopped = asyncio.Event()
        loop = asyncio.new_event_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stopped.set)
        try:
            loop.run_until_complete(stopped.wait())
        finally:
            server.stop()
            loop.close()
