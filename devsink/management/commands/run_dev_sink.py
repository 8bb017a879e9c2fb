"""Run the development SMTP sink on loopback; every message it receives is stored for the admin."""

from __future__ import annotations

import asyncio
import signal

from aiosmtpd.controller import Controller
from asgiref.sync import sync_to_async
from django.core.management.base import BaseCommand

from devsink.models import ReceivedMessage


class SinkHandler:
    async def handle_DATA(self, server, session, envelope) -> str:
        message = ReceivedMessage.from_envelope(
            envelope.mail_from, envelope.rcpt_tos, envelope.original_content or envelope.content
        )
        await sync_to_async(message.save, thread_sensitive=False)()
        return "250 Message accepted for delivery"


class Command(BaseCommand):
    help = "Run a local SMTP server (no TLS, no login) that keeps what it receives for the admin."

    def add_arguments(self, parser) -> None:
        parser.add_argument("--host", default="127.0.0.1")
        parser.add_argument("--port", type=int, default=8025)

    def handle(self, *args, host: str, port: int, **options) -> None:
        controller = Controller(SinkHandler(), hostname=host, port=port)
        controller.start()
        self.stdout.write(f"Development SMTP sink listening on {host}:{port}")
        stopped = asyncio.Event()
        loop = asyncio.new_event_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stopped.set)
        try:
            loop.run_until_complete(stopped.wait())
        finally:
            controller.stop()
            loop.close()
