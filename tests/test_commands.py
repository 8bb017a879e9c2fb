"""smtp_settings: shows the settings with the password masked, sets them, refuses bad values."""

from __future__ import annotations

import io

import pytest
from django.core.management import CommandError, call_command

from notifications.models import Notification, SettingsChange, SmtpSettings

pytestmark = pytest.mark.django_db


def run(*args, stdin: str = "", monkeypatch=None) -> str:
    out = io.StringIO()
    if monkeypatch is not None:
        monkeypatch.setattr("sys.stdin", io.StringIO(stdin))
    call_command("smtp_settings", *args, stdout=out)
    return out.getvalue()


def test_sets_from_a_preset_with_the_password_from_stdin_and_masks_it(monkeypatch):
    output = run(
        "--preset",
        "netease163",
        "--username",
        "robot@163.com",
        "--from",
        "robot@163.com",
        "--password-stdin",
        stdin="auth-code-canary\n",
        monkeypatch=monkeypatch,
    )
    record = SmtpSettings.load()
    assert (record.host, record.port, record.security) == ("smtp.163.com", 465, "ssl")
    assert record.get_password() == "auth-code-canary"
    assert "auth-code-canary" not in output
    assert "******** (stored)" in output
    assert SettingsChange.objects.get().source == "command"


def test_flags_not_given_keep_their_values(monkeypatch):
    run("--host", "mail.example.com", "--port", "587", "--from", "a@example.com", "--batch", "7")
    run("--timeout", "12")
    record = SmtpSettings.load()
    assert (record.host, record.batch, record.timeout) == ("mail.example.com", 7, 12)


def test_empty_username_means_no_login():
    run(
        "--host",
        "relay.example.com",
        "--port",
        "25",
        "--security",
        "none",
        "--from",
        "a@example.com",
    )
    output = run("--username", "")
    assert SmtpSettings.load().username == ""
    assert "(no login)" in output


def test_invalid_values_exit_non_zero_with_the_reason_and_save_nothing():
    with pytest.raises(CommandError) as raised:
        run(
            "--host",
            "smtp.example.com",
            "--port",
            "465",
            "--security",
            "starttls",
            "--from",
            "a@example.com",
        )
    assert "Port 465 expects implicit TLS" in str(raised.value)
    assert SmtpSettings.load().version == 0


def test_skip_verify_and_verify_toggle():
    run("--host", "smtp.example.com", "--from", "a@example.com", "--skip-verify")
    assert SmtpSettings.load().skip_verify
    assert "INSECURE" in run()
    run("--verify")
    assert not SmtpSettings.load().skip_verify


def test_unreadable_ca_file_is_reported(tmp_path):
    with pytest.raises(CommandError, match="Cannot read the CA file"):
        run("--ca-file", str(tmp_path / "missing.pem"))


def test_ca_from_a_file_is_stored_so_an_unchanged_admin_save_records_no_change(tmp_path, smtp_pki):
    from notifications import services

    ca_file = tmp_path / "ca.pem"
    ca_file.write_text(smtp_pki.ca_pem.strip() + "\n\n")
    run("--host", "smtp.example.com", "--from", "a@example.com", "--ca-file", str(ca_file))
    record = SmtpSettings.load()
    record.ca_pem = smtp_pki.ca_pem.strip()  # what the admin form's stripped field gives back
    change = services.save_settings(record, source="admin")
    assert "ca_pem" not in change.changes


def test_refuses_a_login_without_a_password_naming_the_flag():
    with pytest.raises(CommandError) as raised:
        run("--host", "smtp.example.com", "--from", "a@example.com", "--username", "me")
    assert "--password-stdin: a login needs its password" in str(raised.value)
    assert SmtpSettings.load().version == 0


def test_a_login_keeps_a_stored_password_when_none_is_given(monkeypatch):
    run(
        "--host",
        "smtp.example.com",
        "--from",
        "a@example.com",
        "--username",
        "me",
        "--password-stdin",
        stdin="secret\n",
        monkeypatch=monkeypatch,
    )
    run("--username", "someone-else")
    assert SmtpSettings.load().username == "someone-else"


def test_an_empty_host_is_refused_rather_than_silently_stopping_sending():
    run("--host", "smtp.example.com", "--from", "a@example.com")
    with pytest.raises(CommandError) as raised:
        run("--host", "")
    assert "--host: give the SMTP server's name or IP address" in str(raised.value)
    assert SmtpSettings.load().host == "smtp.example.com"


def test_plaintext_login_refusal_names_the_flags_not_the_form():
    with pytest.raises(CommandError) as raised:
        run(
            *("--host", "relay.example.com", "--port", "25", "--security", "none"),
            *("--from", "a@example.com", "--username", "me"),
        )
    message = str(raised.value)
    assert "--allow-plaintext-login" in message
    assert "tick" not in message


def test_skip_verify_and_verify_together_are_refused():
    with pytest.raises(CommandError, match="not allowed with argument"):
        run("--host", "smtp.example.com", "--from", "a@example.com", "--skip-verify", "--verify")
    assert SmtpSettings.load().version == 0


@pytest.fixture
def outbox_backend(settings):
    settings.EMAIL_BACKEND = "notifications.backends.OutboxEmailBackend"  # pytest-django's locmem


def test_sendtestemail_says_what_it_queued(outbox_backend):
    out = io.StringIO()
    call_command("sendtestemail", "a@example.com", "b@example.com", stdout=out)
    assert out.getvalue() == "Queued 2 messages; see the delivery log.\n"
    assert Notification.objects.count() == 2


def test_sendtestemail_refuses_a_bad_address_in_one_line(outbox_backend):
    with pytest.raises(CommandError) as raised:
        call_command("sendtestemail", "bad", stdout=io.StringIO())
    assert str(raised.value) == "recipients: “bad” is not an email address: use name@example.com."
    assert Notification.objects.count() == 0
