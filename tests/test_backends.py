"""Django's own mail goes through the outbox: send_mail, EmailMessage, password reset."""

from __future__ import annotations

import pytest
from django.contrib.auth.forms import PasswordResetForm
from django.core import mail
from django.core.management import call_command

from notifications.exceptions import InvalidNotification
from notifications.models import Notification, Status

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def outbox_backend(settings):
    """Django's test set-up swaps in the locmem backend; put the project's own back."""
    settings.EMAIL_BACKEND = "notifications.backends.OutboxEmailBackend"


def test_the_project_uses_the_outbox_backend():
    from config.settings import base

    assert base.EMAIL_BACKEND == "notifications.backends.OutboxEmailBackend"


def test_send_mail_makes_one_row_per_recipient():
    count = mail.send_mail("Subject", "Body", "app@example.com", ["a@example.com", "b@example.com"])
    assert count == 1
    rows = Notification.objects.order_by("recipient")
    assert [r.recipient for r in rows] == ["a@example.com", "b@example.com"]
    assert {(r.subject, r.body, r.status, r.source) for r in rows} == {
        ("Subject", "Body", Status.QUEUED, "email backend")
    }


def test_cc_and_bcc_get_their_own_rows_and_reply_to_is_kept():
    message = mail.EmailMessage(
        "S",
        "B",
        "app@example.com",
        ["to@example.com"],
        cc=["cc@example.com"],
        bcc=["bcc@example.com"],
        reply_to=["help@example.com"],
        headers={"X-Campaign": "7"},
    )
    message.send()
    rows = {r.recipient: r for r in Notification.objects.all()}
    assert set(rows) == {"to@example.com", "cc@example.com", "bcc@example.com"}
    assert rows["bcc@example.com"].reply_to == "help@example.com"
    assert rows["to@example.com"].headers == {"X-Campaign": "7"}


def test_html_alternative_is_kept():
    message = mail.EmailMultiAlternatives("S", "text", "app@example.com", ["a@example.com"])
    message.attach_alternative("<b>html</b>", "text/html")
    message.send()
    row = Notification.objects.get()
    assert (row.body, row.html_body) == ("text", "<b>html</b>")


def test_attachments_are_refused_with_a_clear_error_never_dropped():
    message = mail.EmailMessage("S", "B", "app@example.com", ["a@example.com"])
    message.attach("report.csv", "a,b\n", "text/csv")
    with pytest.raises(InvalidNotification, match="Attachments are not supported"):
        message.send()
    assert not Notification.objects.exists()


def test_fail_silently_skips_the_bad_message_and_counts_the_good_ones():
    connection = mail.get_connection(fail_silently=True)
    good = mail.EmailMessage("S", "B", "app@example.com", ["a@example.com"])
    bad = mail.EmailMessage("S\nBcc: x@example.com", "B", "app@example.com", ["b@example.com"])
    assert connection.send_messages([good, bad]) == 1
    assert Notification.objects.get().recipient == "a@example.com"


def test_password_reset_mail_goes_to_the_outbox(django_user_model):
    django_user_model.objects.create_user("alice", "alice@example.com", "old-password")
    form = PasswordResetForm(data={"email": "alice@example.com"})
    assert form.is_valid()
    form.save(domain_override="example.com")
    row = Notification.objects.get()
    assert row.recipient == "alice@example.com"
    assert "example.com" in row.subject
    assert "/reset/" in row.body


def test_sendtestemail_command_goes_to_the_outbox():
    call_command("sendtestemail", "ops@example.com")
    assert Notification.objects.get().recipient == "ops@example.com"
