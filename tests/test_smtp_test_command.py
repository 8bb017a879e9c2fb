"""smtp_test: the stepwise diagnosis of the stored settings, readable or JSON; its exit status."""

from __future__ import annotations

import io
import json
import logging

import pytest
from django.core.management import CommandError, call_command
from django.test import override_settings

from notifications.models import SmtpSettings, TestKind, TestRun
from tests.smtpserver import PASSWORD, USERNAME

pytestmark = pytest.mark.django_db

TO = "ops@example.com"


def run(*args: str) -> tuple[str, str]:
    """Run the command; its stdout and stderr. CommandError (exit status 1) propagates."""
    out, err = io.StringIO(), io.StringIO()
    call_command("smtp_test", *args, stdout=out, stderr=err)
    return out.getvalue(), err.getvalue()


def run_failing(*args: str) -> tuple[str, CommandError]:
    out = io.StringIO()
    with pytest.raises(CommandError) as failure:
        call_command("smtp_test", *args, stdout=out, stderr=io.StringIO())
    return out.getvalue(), failure.value


@pytest.fixture
def login_server(smtp_server_factory, smtp_pki, configure_smtp):
    server = smtp_server_factory("starttls")
    configure_smtp(server, pki=smtp_pki, username=USERNAME, password=PASSWORD)
    return server


def test_success_prints_each_step_and_exits_0(plain_smtp_server, configure_smtp):
    stored = configure_smtp(plain_smtp_server)
    out, _err = run("--to", TO)
    lines = out.splitlines()
    # First what was tested: the stored settings, never anything else.
    assert lines[0] == (
        f"Tested 127.0.0.1:{plain_smtp_server.port} None (plaintext), no login — saved settings "
        f"(version {stored.version})."
    )
    assert lines[1].startswith("✓ DNS lookup")
    assert any(line.startswith("✓ Message (DATA)") and " ms " in line for line in lines)
    assert any(line.startswith("– TLS") and "not encrypted" in line for line in lines)
    assert any(line.startswith("– Login (AUTH)") for line in lines)
    assert lines[-1] == "Delivered to the server."
    [message] = plain_smtp_server.messages
    assert message.rcpt_tos == (TO,)


def test_failure_exits_non_zero_naming_the_step_and_its_hint(
    login_server, configure_smtp, smtp_pki, caplog
):
    configure_smtp(login_server, pki=smtp_pki, username=USERNAME, password="wrong-password")
    caplog.set_level(logging.INFO)
    out, failure = run_failing("--to", TO)
    assert failure.returncode == 1
    assert str(failure) == "Failed at Login (AUTH)."
    assert any(line.startswith("✗ Login (AUTH)") and "535" in line for line in out.splitlines())
    # The hint once, under its step; the exit message does not repeat it.
    assert out.count("Check the username and password.") == 1
    assert "Hint: Check the username and password." in out
    assert "– Sender (MAIL FROM)" in out
    assert not login_server.messages
    # No log line above the table saying what the table says.
    assert not [record for record in caplog.records if record.name == "notifications.smtp"]


def test_json_is_the_report_for_scripts(login_server):
    out, _err = run("--to", TO, "--json")
    report = json.loads(out)
    assert report["ok"] is True
    assert report["failed_step"] is None
    assert [step["name"] for step in report["steps"]][:3] == ["dns", "connect", "greeting"]
    assert all(step["status"] == "ok" for step in report["steps"])
    assert report["steps"][4]["detail"]["version"].startswith("TLSv1.")
    # What was tested, added beside the keys scripts already read.
    assert report["target"] == {
        "host": "127.0.0.1",
        "port": login_server.port,
        "security": "starttls",
        "auth_method": "password",
        "username": USERNAME,
        "saved": True,
        "settings_version": SmtpSettings.load().version,
    }
    assert any(line.startswith("C: AUTH PLAIN ********") for line in report["transcript"])


def test_readable_output_names_the_sign_in_and_a_connection_test_is_recorded_as_one(
    login_server,
):
    out, _err = run("--connect-only")
    assert out.splitlines()[0] == (
        f"Tested 127.0.0.1:{login_server.port} STARTTLS, password as {USERNAME} — saved "
        f"settings (version {SmtpSettings.load().version})."
    )
    run_ = TestRun.objects.get()
    assert (run_.kind, run_.saved, run_.username) == (TestKind.CONNECTION, True, USERNAME)
    assert json.loads(run("--connect-only", "--json")[0])["target"]["saved"] is True


def test_json_failure_still_prints_the_report_and_exits_non_zero(
    plain_smtp_server, configure_smtp, closed_port
):
    configure_smtp(plain_smtp_server, port=closed_port)
    out, failure = run_failing("--to", TO, "--json")
    report = json.loads(out)
    assert (report["ok"], report["failed_step"]) == (False, "connect")
    assert report["hint"]
    assert str(failure).startswith("Failed at TCP connection: ")


def test_password_never_appears_in_the_output(login_server, configure_smtp, smtp_pki):
    outputs = [run("--to", TO)[0], run("--to", TO, "--json")[0]]
    configure_smtp(login_server, pki=smtp_pki, username=USERNAME, password="cli-canary-password")
    for args in (("--to", TO), ("--to", TO, "--json")):
        out, failure = run_failing(*args)
        outputs += [out, str(failure)]
    outputs.append(json.dumps(list(TestRun.objects.values("summary", "report"))))
    for output in outputs:
        assert PASSWORD not in output
        assert "cli-canary-password" not in output


def test_records_a_test_run_without_a_user(plain_smtp_server, configure_smtp):
    stored = configure_smtp(plain_smtp_server)
    run("--to", TO)
    run_ = TestRun.objects.get()
    assert (run_.created_by, run_.recipient, run_.ok) == (None, TO, True)
    assert (run_.saved, run_.settings_version) == (True, stored.version)
    assert (run_.kind, run_.host, run_.port) == (TestKind.EMAIL, "127.0.0.1", stored.port)


@override_settings(NOTIFICATIONS={"TEST_EMAILS_PER_MINUTE": 1})
def test_is_not_rate_limited(plain_smtp_server, configure_smtp):
    configure_smtp(plain_smtp_server)
    for _ in range(3):
        run("--to", TO)
    assert len(plain_smtp_server.messages) == 3


def test_to_is_required():
    with pytest.raises(CommandError, match="--to"):
        call_command("smtp_test", stdout=io.StringIO(), stderr=io.StringIO())


def test_invalid_to_is_refused_before_connecting(plain_smtp_server, configure_smtp):
    configure_smtp(plain_smtp_server)
    _out, failure = run_failing("--to", "not an address")
    assert "--to: “not an address” is not an email address" in str(failure)
    assert plain_smtp_server.state.total_sessions == 0
    assert not TestRun.objects.exists()


def test_without_settings_it_says_to_configure_them_first():
    _out, failure = run_failing("--to", TO)
    assert "The SMTP settings are not configured yet" in str(failure)
    assert "smtp_settings" in str(failure)
    assert not TestRun.objects.exists()
