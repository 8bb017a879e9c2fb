"""The delivery log's pages: a read-only record with Retry/Cancel, and actions that say why not."""

from __future__ import annotations

import pytest
from django.urls import reverse
from django.utils import timezone

import notifications
from notifications import audit, services
from notifications.models import Notification, SettingsChange, SmtpSettings, Status

pytestmark = pytest.mark.django_db

LOG_URL = reverse("admin:notifications_notification_changelist")


def row(status: str) -> Notification:
    [notification] = notifications.notify(recipients="a@example.com", subject="s", body="b")
    Notification.objects.filter(pk=notification.pk).update(
        status=status, sent_at=timezone.now() if status == Status.SENT else None
    )
    notification.refresh_from_db()
    return notification


def page(client, notification: Notification) -> str:
    url = reverse("admin:notifications_notification_change", args=[notification.pk])
    return client.get(url).content.decode()


def test_a_sent_row_page_has_no_save_no_next_attempt_and_nothing_to_do(admin_client):
    html = page(admin_client, row(Status.SENT))
    assert "<h1>View notification</h1>" in html
    assert 'name="_save"' not in html and 'name="_continue"' not in html
    assert "Next attempt" not in html
    assert "Retry now" not in html
    assert 'class="delivery-status delivery-status-sent"' in html


def test_a_queued_row_page_offers_retry_and_cancel_which_work(admin_client):
    notification = row(Status.QUEUED)
    html = page(admin_client, notification)
    assert 'name="_save"' not in html
    assert "Next attempt" in html
    assert "Retry now" in html and "Cancel (if not sent yet)" in html
    url = reverse("admin:notifications_notification_cancel", args=[notification.pk])
    response = admin_client.post(url, follow=True)
    assert "1 notification cancelled." in response.content.decode()
    notification.refresh_from_db()
    assert notification.status == Status.CANCELLED
    # Cancelled now: Retry, not Cancel.
    html = page(admin_client, notification)
    assert "Retry now" in html and "Cancel (if not sent yet)" not in html


def test_retry_and_cancel_are_post_only(admin_client):
    notification = row(Status.QUEUED)
    url = reverse("admin:notifications_notification_cancel", args=[notification.pk])
    assert admin_client.get(url).status_code == 405
    assert Notification.objects.get(pk=notification.pk).status == Status.QUEUED


def test_retry_now_on_a_sent_row_says_why_nothing_was_queued(admin_client):
    sent, failed = row(Status.SENT), row(Status.FAILED)
    response = admin_client.post(
        LOG_URL, {"action": "retry_now", "_selected_action": [sent.pk]}, follow=True
    )
    html = response.content.decode()
    assert "<h1>Delivery log</h1>" in html
    assert "was not queued: it was sent already, and is not sent twice." in html
    assert "0 notifications queued" not in html
    response = admin_client.post(
        LOG_URL, {"action": "retry_now", "_selected_action": [sent.pk, failed.pk]}, follow=True
    )
    html = response.content.decode()
    assert "1 notification queued to retry now." in html
    assert "1 notification was not queued: it was sent already" in html
    assert Notification.objects.get(pk=failed.pk).status == Status.QUEUED


def test_settings_changes_read_as_words(admin_client):
    record = SmtpSettings.load()
    record.host, record.from_address, record.batch = "smtp.example.com", "a@example.com", 4
    services.save_settings(record, source="test")
    record.batch, record.skip_verify, record.security = 2, True, "ssl"
    record.port = 465
    services.save_settings(record, new_password="pw", source="test")
    change = SettingsChange.objects.first()
    lines = audit.describe(change.changes)
    assert "Batch: 4 → 2" in lines
    assert "Security: STARTTLS → SSL/TLS" in lines
    assert "Skip certificate verification (insecure): off → on" in lines
    assert "Password: changed" in lines
    html = admin_client.get(reverse("admin:notifications_settingschange_changelist")).content
    assert "Batch: 4 → 2" in html.decode()
    assert "[4, 2]" not in html.decode()
