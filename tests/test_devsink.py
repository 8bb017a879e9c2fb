"""The development SMTP sink keeps what it receives, readable in the admin."""

from __future__ import annotations

import logging
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


def test_auth_mode_accepts_the_known_account_refuses_a_wrong_password_and_logs_quietly(caplog):
    from devsink import sink

    caplog.set_level(logging.INFO)
    server = sink.controller(host="127.0.0.1", port=free_port(), auth=True)
    server.start()
    try:
        with smtplib.SMTP("127.0.0.1", server.port, timeout=10) as client:
            with pytest.raises(smtplib.SMTPAuthenticationError) as refused:
                client.login(sink.USERNAME, "wrong")
            assert refused.value.smtp_code == 535
        with smtplib.SMTP("127.0.0.1", server.port, timeout=10) as client:
            client.login(sink.USERNAME, sink.PASSWORD)
            client.sendmail("site@localhost", ["you@example.com"], b"Subject: Signed in\r\n\r\nHi")
    finally:
        server.stop()
    assert ReceivedMessage.objects.get().subject == "Signed in"
    # aiosmtpd logs every SMTP command at INFO; the sink keeps only its warnings.
    assert not [record for record in caplog.records if record.name == "mail.log"]
