"""The development SMTP sink keeps what it receives, readable in the admin."""

from __future__ import annotations

import smtplib
from email.message import EmailMessage

import pytest
from aiosmtpd.controller import Controller
from django.urls import reverse

from devsink.models import ReceivedMessage
from devsink.sink import SinkHandler
from tests.loopback import free_port

pytestmark = pytest.mark.django_db(transaction=True)


def test_sink_stores_messages_the_admin_shows(admin_client):
    controller = Controller(SinkHandler(), hostname="127.0.0.1", port=free_port())
    controller.start()
    try:
        message = EmailMessage()
        message["From"], message["To"], message["Subject"] = (
            "site@localhost",
            "you@example.com",
            "Sink check",
        )
        message.set_content("Visible in the admin")
        with smtplib.SMTP("127.0.0.1", controller.port, timeout=10) as client:
            client.send_message(message)
    finally:
        controller.stop()
    stored = ReceivedMessage.objects.get()
    assert (stored.mail_from, stored.rcpt_to, stored.subject) == (
        "site@localhost",
        ["you@example.com"],
        "Sink check",
    )
    page = admin_client.get(reverse("admin:devsink_receivedmessage_change", args=[stored.pk]))
    assert "Visible in the admin" in page.content.decode()
