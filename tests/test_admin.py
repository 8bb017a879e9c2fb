"""The settings page: a single record, a write-only password, and an audit trail of every save."""

from __future__ import annotations

import pytest
from django.urls import reverse
from django.utils import translation

from notifications.models import SettingsChange, SmtpSettings

pytestmark = pytest.mark.django_db

CHANGE_URL = reverse("admin:notifications_smtpsettings_change", args=[1])
FORM = {
    "provider": "gmail",
    "host": "smtp.gmail.com",
    "port": "587",
    "security": "starttls",
    "username": "robot@gmail.com",
    "password": "page-canary-password",
    "from_address": "机器人 <robot@gmail.com>",
    "timeout": "30",
    "batch": "4",
    "ca_pem": "",
}


def test_list_of_one_redirects_to_the_record(admin_client):
    response = admin_client.get(reverse("admin:notifications_smtpsettings_changelist"))
    assert response.status_code == 302
    assert response["Location"] == CHANGE_URL


def test_saving_encrypts_the_password_and_no_page_shows_it(admin_client):
    response = admin_client.post(CHANGE_URL, FORM)
    assert response.status_code == 302, response.context["adminform"].form.errors
    record = SmtpSettings.load()
    assert record.get_password() == "page-canary-password"
    pages = [
        admin_client.get(CHANGE_URL),
        admin_client.get(reverse("admin:notifications_settingschange_changelist")),
        admin_client.get(
            reverse(
                "admin:notifications_settingschange_change", args=[SettingsChange.objects.get().pk]
            )
        ),
        admin_client.get(reverse("admin:index")),
    ]
    for page in pages:
        html = page.content.decode()
        assert page.status_code == 200
        assert "page-canary-password" not in html
        assert record.password_encrypted not in html


def test_reload_shows_who_stored_the_password_and_an_empty_field(admin_client, admin_user):
    admin_client.post(CHANGE_URL, FORM)
    html = admin_client.get(CHANGE_URL).content.decode()
    assert "A password is stored, set on" in html
    assert f"by {admin_user.username}" in html
    assert 'name="password"' in html
    assert 'value="page-canary' not in html


def test_blank_password_keeps_stored_one(admin_client):
    admin_client.post(CHANGE_URL, FORM)
    admin_client.post(CHANGE_URL, {**FORM, "password": "", "batch": "6"})
    record = SmtpSettings.load()
    assert record.batch == 6
    assert record.get_password() == "page-canary-password"


def test_remove_password_clears_it(admin_client):
    admin_client.post(CHANGE_URL, FORM)
    admin_client.post(CHANGE_URL, {**FORM, "username": "", "password": "", "remove_password": "on"})
    assert not SmtpSettings.load().has_password


def test_every_save_bumps_the_version_and_records_who_changed_what(admin_client, admin_user):
    admin_client.post(CHANGE_URL, FORM)
    admin_client.post(CHANGE_URL, {**FORM, "password": "", "batch": "8"})
    admin_client.post(CHANGE_URL, {**FORM, "password": "new-secret"})
    changes = list(SettingsChange.objects.order_by("version"))
    assert [c.version for c in changes] == [1, 2, 3]
    assert SmtpSettings.load().version == 3
    assert changes[0].changes["password"] == "changed"
    assert changes[0].changes["host"] == ["", "smtp.gmail.com"]
    assert changes[1].changes == {"batch": [4, 8]}
    assert changes[2].changes["password"] == "changed"
    assert all(c.changed_by == admin_user for c in changes)
    assert "new-secret" not in repr([c.changes for c in changes])


def test_invalid_post_shows_the_message_and_changes_nothing(admin_client):
    response = admin_client.post(CHANGE_URL, {**FORM, "port": "465"})
    assert response.status_code == 200
    assert "Port 465 expects implicit TLS" in response.content.decode()
    assert SmtpSettings.load().version == 0
    assert not SettingsChange.objects.exists()


def test_the_settings_page_has_one_save_button_and_stays_after_it(admin_client):
    html = admin_client.get(CHANGE_URL).content.decode()
    assert html.count('name="_save"') == 1
    assert 'name="_continue"' not in html  # "Save and continue editing" would do the same
    response = admin_client.post(CHANGE_URL, {**FORM, "_save": "Save"})
    assert response.status_code == 302 and response.url == CHANGE_URL


def test_audit_log_is_read_only(admin_client):
    admin_client.post(CHANGE_URL, FORM)
    change = SettingsChange.objects.get()
    url = reverse("admin:notifications_settingschange_change", args=[change.pk])
    assert 'name="_save"' not in admin_client.get(url).content.decode()
    admin_client.post(url, {"version": "99"})
    change.refresh_from_db()
    assert change.version == 1


def test_provider_notes_are_on_the_page_for_the_preset_picker(admin_client):
    html = admin_client.get(CHANGE_URL).content.decode()
    assert 'id="smtp-providers"' in html
    assert "smtp.office365.com" in html
    assert "authorization code" in html


def test_delivery_log_retry_now_and_cancel(admin_client, plain_smtp_server, configure_smtp):
    import notifications
    from notifications.models import Notification, Status

    configure_smtp(plain_smtp_server)
    failed, waiting = notifications.notify(
        recipients=["f@example.com", "w@example.com"], subject="s", body="b"
    )
    Notification.objects.filter(pk=failed.pk).update(status=Status.FAILED, attempts=12)
    url = reverse("admin:notifications_notification_changelist")
    response = admin_client.post(
        url, {"action": "retry_now", "_selected_action": [failed.pk]}, follow=True
    )
    assert "1 notification queued to retry now." in response.content.decode()
    failed.refresh_from_db()
    assert (failed.status, failed.attempts) == (Status.QUEUED, 0)
    response = admin_client.post(
        url, {"action": "cancel", "_selected_action": [waiting.pk]}, follow=True
    )
    waiting.refresh_from_db()
    assert waiting.status == Status.CANCELLED and waiting.last_error == "Cancelled by root."
    with translation.override("zh-hans"):  # the delivery log shows it in the reader's language
        assert waiting.error_text == "已由 root 取消。"


def test_delivery_log_filters_and_searches(admin_client):
    import notifications
    from notifications.models import Notification, Status

    notifications.notify(recipients="findme@example.com", subject="Invoice 42", body="b")
    notifications.notify(recipients="other@example.com", subject="Welcome", body="b")
    Notification.objects.filter(recipient="other@example.com").update(status=Status.SENT)
    url = reverse("admin:notifications_notification_changelist")
    html = admin_client.get(url, {"q": "Invoice"}).content.decode()
    assert "findme@example.com" in html and "other@example.com" not in html
    html = admin_client.get(url, {"status__exact": "sent"}).content.decode()
    assert "other@example.com" in html and "findme@example.com" not in html


def test_settings_page_says_why_sending_is_paused(admin_client):
    record = SmtpSettings.load()
    record.paused_reason = "[auth] 535 Authentication failed. Use an app password."
    record.save()
    html = admin_client.get(CHANGE_URL).content.decode()
    assert "Sending is paused" in html and "Use an app password." in html
