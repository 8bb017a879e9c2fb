"""Setting up the fallback server: smtp_settings / smtp_test --server fallback, its admin page, the
audit trail, its secrets (encrypted, never shown), and which server the delivery log names."""

from __future__ import annotations

import io

import pytest
from cryptography.fernet import Fernet
from django.core.management import CommandError, call_command
from django.urls import reverse
from django.utils import timezone

from notifications import services
from notifications.models import Notification, SettingsChange, SmtpSettings, Status, TestRun
from tests.browser import screenshot

pytestmark = pytest.mark.django_db

PRIMARY_URL = reverse("admin:notifications_smtpsettings_change", args=[1])
FALLBACK_URL = reverse("admin:notifications_smtpsettings_change", args=[2])
REMOVE_URL = reverse("admin:notifications_smtpsettings_remove_fallback")
CANARY = "fallback-canary-secret"
FALLBACK_FORM = {
    "provider": "custom",
    "host": "smtp.backup.example",
    "port": "587",
    "security": "starttls",
    "auth_method": "password",
    "auth_mechanism": "auto",
    "username": "robot@backup.example",
    "password": CANARY,
    "from_address": "Backup <robot@backup.example>",
    "timeout": "20",
    "messages_per_connection": "50",
    "ca_pem": "",
}


def run(*args: str, stdin: str = "", monkeypatch=None) -> str:
    out = io.StringIO()
    if monkeypatch is not None:
        monkeypatch.setattr("sys.stdin", io.StringIO(stdin))
    call_command("smtp_settings", *args, stdout=out)
    return out.getvalue()


def refused(*args: str) -> str:
    with pytest.raises(CommandError) as error:
        run(*args)
    return str(error.value)


@pytest.fixture
def primary():
    run("--host", "smtp.example.com", "--from", "site@example.com", "--batch", "3")
    return SmtpSettings.load()


# --- the command line ---------------------------------------------------------------------------


def test_the_command_sets_shows_and_removes_the_fallback(primary, monkeypatch):
    assert "No fallback server is set." in run("--server", "fallback")
    output = run(
        *("--server", "fallback", "--host", "127.0.0.1", "--port", "2525", "--security", "none"),
        *("--username", "robot", "--allow-plaintext-login", "--password-stdin"),
        *("--from", "Backup <backup@example.org>"),
        stdin=CANARY + "\n",
        monkeypatch=monkeypatch,
    )
    assert "Saved the fallback SMTP server's settings as version 1." in output
    assert "Fallback server (Batch and the rate limits are the primary's):" in output
    assert "127.0.0.1" in output and "******** (stored)" in output
    assert "batch" not in output and CANARY not in output
    fallback = SmtpSettings.load_fallback()
    assert fallback.get_password() == CANARY and CANARY not in fallback.password_encrypted
    change = SettingsChange.objects.latest("id")
    assert (change.server, change.source, change.changes["password"]) == (
        "fallback",
        "command",
        "changed",
    )
    assert CANARY not in str(change.changes)
    assert "batch" not in change.changes and "rate_per_day" not in change.changes
    primary.refresh_from_db()
    assert primary.version == 1  # the primary is untouched
    assert "fallback: 127.0.0.1:2525, None (plaintext)" in run()

    assert "Removed the fallback SMTP server." in run("--server", "fallback", "--remove")
    assert SmtpSettings.load_fallback() is None
    removal = SettingsChange.objects.latest("id")
    assert (removal.server, removal.changes) == ("fallback", {"fallback": "removed"})
    assert "nothing to remove" in run("--server", "fallback", "--remove")
    # Set again, it goes on from its last version: the audit trail never repeats one.
    run("--server", "fallback", "--host", "smtp.b.example", "--from", "b@example.org")
    assert SmtpSettings.load_fallback().version == 2


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (("--remove",), "give --server fallback --remove"),
        (("--server", "primary", "--remove"), "give --server fallback --remove"),
        (("--server", "fallback", "--remove", "--host", "x.example"), "--host would be lost"),
        (("--server", "fallback", "--remove", "--password-stdin"), "--password-stdin would be"),
        (("--server", "fallback", "--batch", "3"), "--batch: Batch and the rate limits"),
        (
            ("--server", "fallback", "--host", "h.example", "--rate-per-day", "9"),
            "--rate-per-day: Batch and the rate limits are the primary server's",
        ),
        (("--server", "fallback", "--host", "h.example"), "--from: give the sender address"),
        (("--server", "fallback", "--port", "465", "--host", "h", "--from", "a@b.c"), "--security"),
        (
            (
                "--server",
                "backup",
            ),
            "invalid choice: 'backup'",
        ),
    ],
)
def test_bad_fallback_flags_are_refused_with_the_fix(primary, args, words):
    message = refused(*args)
    assert words in message
    assert SmtpSettings.load_fallback() is None
    assert SettingsChange.objects.filter(server="fallback").count() == 0


def test_a_preset_on_the_fallback_fills_the_server_not_the_limits(primary):
    run(
        *("--server", "fallback", "--preset", "office365", "--from", "a@example.com"),
        *("--auth-method", "password", "--username", ""),
    )
    fallback = SmtpSettings.load_fallback()
    assert (fallback.host, fallback.port) == ("smtp.office365.com", 587)
    assert (fallback.rate_per_minute, fallback.rate_per_day) == (0, 0)


def test_smtp_test_tests_the_fallback_and_only_it(smtp_server_factory, configure_smtp):
    primary_server, fallback_server = smtp_server_factory("none"), smtp_server_factory("none")
    configure_smtp(primary_server)
    out = io.StringIO()
    with pytest.raises(CommandError) as error:
        call_command("smtp_test", "--server", "fallback", "--to", "a@example.com", stdout=out)
    assert "No fallback server is set" in str(error.value)
    configure_smtp(fallback_server, fallback=True)
    call_command("smtp_test", "--server", "fallback", "--to", "ops@example.com", stdout=out)
    assert "Delivered to the server." in out.getvalue()
    assert len(fallback_server.messages) == 1 and primary_server.state.total_sessions == 0
    assert TestRun.objects.get().server == "fallback"
    call_command("smtp_test", "--server", "fallback", "--connect-only", stdout=out)
    assert fallback_server.state.total_sessions == 2 and primary_server.state.total_sessions == 0


def test_key_rotation_re_encrypts_the_fallbacks_secret_too(primary, monkeypatch, settings):
    old, new = Fernet.generate_key().decode(), Fernet.generate_key().decode()
    settings.NOTIFICATIONS_ENCRYPTION_KEYS = [old]
    run(
        *("--server", "fallback", "--host", "h.example", "--from", "b@example.org"),
        *("--username", "robot", "--password-stdin"),
        stdin=CANARY + "\n",
        monkeypatch=monkeypatch,
    )
    settings.NOTIFICATIONS_ENCRYPTION_KEYS = [new, old]
    call_command("rotate_encryption_key", stdout=io.StringIO())
    settings.NOTIFICATIONS_ENCRYPTION_KEYS = [new]
    assert SmtpSettings.load_fallback().get_password() == CANARY


# --- the admin ----------------------------------------------------------------------------------


def test_the_fallback_page_saves_audits_and_never_shows_its_password(admin_client, primary):
    page = admin_client.get(PRIMARY_URL).content.decode()
    assert "Set up a fallback server" in page and FALLBACK_URL in page
    page = admin_client.get(FALLBACK_URL)
    html = page.content.decode()
    assert page.status_code == 200 and "Fallback SMTP server" in html
    form = page.context["adminform"].form
    assert "batch" not in form.fields and "rate_per_day" not in form.fields
    assert "messages_per_connection" in form.fields
    assert "Remove the fallback server" not in html  # nothing to remove yet
    response = admin_client.post(FALLBACK_URL, FALLBACK_FORM)
    assert response.status_code == 302 and response["Location"].startswith(FALLBACK_URL)
    fallback = SmtpSettings.load_fallback()
    assert (fallback.host, fallback.messages_per_connection) == ("smtp.backup.example", 50)
    assert fallback.get_password() == CANARY
    change = SettingsChange.objects.latest("id")
    assert change.server == "fallback" and change.changes["password"] == "changed"
    primary.refresh_from_db()
    assert (primary.host, primary.version, primary.batch) == ("smtp.example.com", 1, 3)
    for url in (
        FALLBACK_URL,
        PRIMARY_URL,
        reverse("admin:notifications_settingschange_changelist"),
    ):
        html = admin_client.get(url).content.decode()
        assert CANARY not in html
    html = admin_client.get(FALLBACK_URL).content.decode()
    assert "Remove the fallback server" in html and "smtp.backup.example" in html
    assert "Using the primary server." in html and "No worker has reported" not in html
    assert "Fallback server: smtp.backup.example:587, STARTTLS." in (
        admin_client.get(PRIMARY_URL).content.decode()
    )


def test_the_panel_says_the_fallback_sends_for_a_paused_primary_rather_than_paused(
    admin_client, primary
):
    admin_client.post(FALLBACK_URL, FALLBACK_FORM)
    services.pause(primary.version, "[auth] 535 5.7.8 Authentication failed")
    html = admin_client.get(PRIMARY_URL).content.decode()
    assert "Using the fallback server since " in html
    assert "[auth] 535 5.7.8 Authentication failed" in html
    assert "Sending is paused" not in html
    services.pause(SmtpSettings.load_fallback().version, "[tls] untrusted", server=2)
    html = admin_client.get(PRIMARY_URL).content.decode()
    assert "Sending is paused" in html and "The fallback server cannot be used: [tls]" in html


def test_an_invalid_fallback_is_refused_and_nothing_is_stored(admin_client, primary):
    response = admin_client.post(FALLBACK_URL, {**FALLBACK_FORM, "port": "465"})
    assert response.status_code == 200
    assert "Port 465 expects implicit TLS" in response.content.decode()
    assert CANARY not in response.content.decode()
    assert SmtpSettings.load_fallback() is None


def test_remove_deletes_the_fallback_and_is_audited(admin_client, admin_user, primary):
    response = admin_client.post(FALLBACK_URL, FALLBACK_FORM, follow=True)
    assert "The fallback server was saved" in response.content.decode()
    asked = admin_client.get(REMOVE_URL)  # asks first, and removes nothing
    assert asked.status_code == 200 and "Yes, remove it" in asked.content.decode()
    assert "smtp.backup.example:587" in asked.content.decode()
    assert SmtpSettings.load_fallback() is not None
    response = admin_client.post(REMOVE_URL)
    assert response.status_code == 302 and response["Location"] == PRIMARY_URL
    assert SmtpSettings.load_fallback() is None
    removal = SettingsChange.objects.latest("id")
    assert (removal.server, removal.changed_by, removal.changes) == (
        "fallback",
        admin_user,
        {"fallback": "removed"},
    )
    log = admin_client.get(reverse("admin:notifications_settingschange_changelist"))
    assert "Fallback server: removed" in log.content.decode()


def test_test_connection_on_the_fallback_page_tests_the_fallback(
    admin_client, smtp_server_factory, configure_smtp
):
    primary_server, fallback_server = smtp_server_factory("none"), smtp_server_factory("none")
    configure_smtp(primary_server)
    url = reverse("admin:notifications_smtpsettings_test_connection", args=[2])
    form = {
        **FALLBACK_FORM,
        **{"host": "127.0.0.1", "port": str(fallback_server.port), "security": "none"},
        **{"username": "", "password": ""},
    }
    response = admin_client.post(url, form, headers={"X-Requested-With": "XMLHttpRequest"})
    assert response.status_code == 200
    assert "Connected and signed in" in response.content.decode()
    assert fallback_server.state.total_sessions == 1 and primary_server.state.total_sessions == 0
    assert SmtpSettings.load_fallback() is None  # tested, not saved
    assert TestRun.objects.get().server == "fallback"


def test_the_delivery_log_names_the_server(admin_client):
    sent = Notification.objects.create(
        recipient="a@example.com",
        subject="via backup",
        status=Status.SENT,
        sent_at=timezone.now(),
        server="fallback",
    )
    listing = admin_client.get(reverse("admin:notifications_notification_changelist"))
    html = listing.content.decode()
    assert "via fallback" in html
    filtered = admin_client.get(
        reverse("admin:notifications_notification_changelist") + "?server__exact=fallback"
    )
    assert "via backup" in filtered.content.decode()
    detail = admin_client.get(reverse("admin:notifications_notification_change", args=[sent.pk]))
    assert '<div class="form-row field-server">' in detail.content.decode()


@pytest.mark.browser
@pytest.mark.django_db(transaction=True)
def test_an_administrator_sets_up_and_removes_the_fallback_in_the_browser(admin_page, primary):
    from playwright.sync_api import expect

    page = admin_page
    page.goto(PRIMARY_URL)
    page.get_by_role("link", name="Set up a fallback server").click()
    expect(page.locator("h1")).to_have_text("Fallback SMTP server")
    expect(page.locator("#id_batch")).to_have_count(0)
    page.fill("#id_host", "smtp.backup.example")
    page.fill("#id_username", "robot@backup.example")
    page.fill("#id_password", CANARY)
    page.fill("#id_from_address", "Backup <robot@backup.example>")
    page.click("input[name=_save]")
    expect(page.locator(".messagelist")).to_be_visible()
    expect(page.locator(".smtp-fallback")).to_contain_text("Using the primary server.")
    assert CANARY not in page.content()
    screenshot(page, "fallback-settings.png")
    assert SmtpSettings.load_fallback().get_password() == CANARY
    page.get_by_role("link", name="Back to the primary server").click()
    expect(page.locator(".smtp-servers")).to_contain_text("smtp.backup.example:587")
    page.get_by_role("link", name="Change the fallback server").click()
    page.get_by_role("link", name="Remove the fallback server").click()
    expect(page.locator("#content")).to_contain_text("Its settings and stored secrets are deleted")
    page.get_by_role("link", name="No, take me back").click()
    expect(page.locator("h1")).to_have_text("Fallback SMTP server")
    assert SmtpSettings.load_fallback() is not None
    page.get_by_role("link", name="Remove the fallback server").click()
    screenshot(page, "remove-fallback.png")
    page.get_by_role("button", name="Yes, remove it").click()
    expect(page.locator(".messagelist")).to_contain_text("The fallback server was removed.")
    expect(page.get_by_role("link", name="Set up a fallback server")).to_be_visible()
    assert SmtpSettings.load_fallback() is None
