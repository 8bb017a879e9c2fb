"""Setting up OAuth2 sign-in without a password: the command line, the settings page, rotation."""

from __future__ import annotations

import datetime
import io
import json

import pytest
from cryptography.fernet import Fernet
from django.core.management import CommandError, call_command
from django.urls import reverse

from notifications.dashboard import warnings, worker_summary
from notifications.models import SettingsChange, SmtpSettings
from tests.smtpserver import PASSWORD, USERNAME
from tests.tokenserver import CLIENT_ID, CLIENT_SECRET, TENANT_ID

pytestmark = pytest.mark.django_db

CHANGE_URL = reverse("admin:notifications_smtpsettings_change", args=[1])
CONNECTION_URL = reverse("admin:notifications_smtpsettings_test_connection", args=[1])
FETCH = {"X-Requested-With": "XMLHttpRequest"}


def settings_command(*args: str, stdin: str = "", monkeypatch=None) -> str:
    out = io.StringIO()
    if monkeypatch is not None:
        monkeypatch.setattr("sys.stdin", io.StringIO(stdin))
    call_command("smtp_settings", *args, stdout=out)
    return out.getvalue()


def smtp_test(*args: str) -> str:
    out = io.StringIO()
    call_command("smtp_test", *args, stdout=out, stderr=io.StringIO())
    return out.getvalue()


@pytest.fixture
def oauth_smtp(smtp_server_factory, token_server):
    return smtp_server_factory("starttls", xoauth2=token_server.accepts, auth_mechanisms=())


def microsoft_by_command(server, token_server, smtp_pki, tmp_path, monkeypatch) -> str:
    ca = tmp_path / "ca.pem"
    ca.write_text(smtp_pki.ca_pem)
    return settings_command(
        *("--host", "127.0.0.1", "--port", str(server.port), "--security", "starttls"),
        *("--auth-method", "microsoft-oauth2", "--tenant-id", TENANT_ID, "--client-id", CLIENT_ID),
        *("--token-url", token_server.microsoft_url, "--secret-expires", "2027-06-30"),
        *("--username", USERNAME, "--from", USERNAME, "--ca-file", str(ca)),
        "--client-secret-stdin",
        stdin=CLIENT_SECRET + "\n",
        monkeypatch=monkeypatch,
    )


def test_microsoft_365_is_set_up_tested_and_used_from_the_command_line(
    oauth_smtp, token_server, smtp_pki, tmp_path, monkeypatch
):
    shown = microsoft_by_command(oauth_smtp, token_server, smtp_pki, tmp_path, monkeypatch)
    assert CLIENT_SECRET not in shown and "client secret: ******** (stored)" in shown
    record = SmtpSettings.load()
    assert record.client_secret_expires == datetime.date(2027, 6, 30)
    assert SettingsChange.objects.get().changes["client_secret"] == "changed"
    report = json.loads(smtp_test("--to", "ops@example.com", "--json"))
    assert report["ok"], report
    assert report["steps"][0]["name"] == "token" and report["steps"][0]["status"] == "ok"
    assert [m.auth_username for m in oauth_smtp.messages] == [USERNAME]


def test_google_workspace_is_set_up_from_a_key_file(
    oauth_smtp, token_server, smtp_pki, tmp_path, monkeypatch
):
    key = tmp_path / "key.json"
    key.write_text(token_server.service_account.key_json)
    ca = tmp_path / "ca.pem"
    ca.write_text(smtp_pki.ca_pem)
    shown = settings_command(
        *("--host", "127.0.0.1", "--port", str(oauth_smtp.port), "--security", "starttls"),
        *("--auth-method", "google-oauth2", "--service-account-file", str(key)),
        *("--username", USERNAME, "--from", USERNAME, "--ca-file", str(ca)),
    )
    assert "PRIVATE KEY" not in shown and "notifier@" in shown
    report = json.loads(smtp_test("--to", "ops@example.com", "--json"))
    assert report["ok"], report
    assert token_server.requests == 1


def test_connect_only_signs_in_sends_nothing_and_lists_capabilities(
    oauth_smtp, token_server, smtp_pki, tmp_path, monkeypatch
):
    microsoft_by_command(oauth_smtp, token_server, smtp_pki, tmp_path, monkeypatch)
    report = json.loads(smtp_test("--connect-only", "--json"))
    assert report["ok"] and report["connect_only"]
    assert [s["name"] for s in report["steps"]] == [
        *("token", "dns", "connect", "greeting", "ehlo", "tls", "auth", "quit")
    ]
    assert any("XOAUTH2" in line for line in report["capabilities"]["after_tls"])
    assert oauth_smtp.messages == []
    readable = smtp_test("--connect-only")
    assert "Server offers after TLS:" in readable
    assert readable.rstrip().endswith("Connected and signed in; no message was sent.")


def test_an_oauth2_method_without_its_client_id_is_refused_with_the_reason(monkeypatch):
    with pytest.raises(CommandError, match="--client-id: Enter the Application"):
        settings_command(
            *("--host", "smtp.office365.com", "--port", "587", "--from", "a@example.com"),
            *("--auth-method", "microsoft-oauth2", "--tenant-id", TENANT_ID),
            *("--username", "a@example.com", "--client-secret-stdin"),
            stdin="secret\n",
            monkeypatch=monkeypatch,
        )
    assert not SmtpSettings.load().has_client_secret


def test_a_file_that_is_not_a_service_account_key_is_refused(tmp_path):
    key = tmp_path / "key.json"
    key.write_text(json.dumps({"type": "authorized_user"}))
    with pytest.raises(CommandError, match="not a service-account key"):
        settings_command("--auth-method", "google-oauth2", "--service-account-file", str(key))


def test_rotation_re_encrypts_the_client_secret_and_the_key(settings, token_server):
    old, new = Fernet.generate_key().decode(), Fernet.generate_key().decode()
    settings.NOTIFICATIONS_ENCRYPTION_KEYS = [old]
    record = SmtpSettings.load()
    record.set_client_secret("rotate-this-secret")
    record.set_service_account(token_server.service_account.key_json)
    record.save()
    settings.NOTIFICATIONS_ENCRYPTION_KEYS = [new, old]
    call_command("rotate_encryption_key", stdout=io.StringIO())
    settings.NOTIFICATIONS_ENCRYPTION_KEYS = [new]
    record = SmtpSettings.load()
    assert record.oauth_credentials(service_account=None) is None  # still the password method
    record.auth_method = "microsoft-oauth2"
    assert record.oauth_credentials().secret == "rotate-this-secret"
    record.auth_method = "google-oauth2"
    assert "PRIVATE KEY" in record.oauth_credentials().secret


# --- the settings page ---------------------------------------------------------------------------


def page_values(server, token_server, smtp_pki, **changes) -> dict[str, str]:
    values = {
        "provider": "office365",
        "host": "127.0.0.1",
        "port": str(server.port),
        "security": "starttls",
        "timeout": "10",
        "auth_method": "microsoft-oauth2",
        "auth_mechanism": "auto",
        "username": USERNAME,
        "tenant_id": TENANT_ID,
        "client_id": CLIENT_ID,
        "client_secret": CLIENT_SECRET,
        "token_url": token_server.microsoft_url,
        "from_address": f"Site <{USERNAME}>",
        "batch": "4",
        "ca_pem": smtp_pki.ca_pem,
        "test-to": "",
    }
    return {**values, **changes}


def test_the_page_sets_up_microsoft_365_and_tests_the_connection_without_a_password(
    admin_client, oauth_smtp, token_server, smtp_pki
):
    values = page_values(oauth_smtp, token_server, smtp_pki)
    response = admin_client.post(CONNECTION_URL, values, headers=FETCH)
    assert response.status_code == 200
    html = response.content.decode()
    assert "Connected and signed in; no message was sent" in html
    assert CLIENT_SECRET not in html
    assert not SmtpSettings.load().has_client_secret  # tested, not saved
    response = admin_client.post(CHANGE_URL, {**values, "_continue": "1"})
    assert response.status_code == 302, response.content.decode()[:3000]
    record = SmtpSettings.load()
    assert record.auth_method == "microsoft-oauth2" and record.has_client_secret
    page = admin_client.get(CHANGE_URL).content.decode()
    assert CLIENT_SECRET not in page and record.client_secret_encrypted not in page
    assert "A client secret is stored." in page


def test_a_typed_secret_after_a_validation_error_must_be_typed_again(
    admin_client, oauth_smtp, token_server, smtp_pki
):
    values = page_values(oauth_smtp, token_server, smtp_pki)
    admin_client.post(CHANGE_URL, {**values, "_continue": "1"})
    response = admin_client.post(
        CHANGE_URL, {**values, "client_secret": "a-new-secret", "from_address": "not an address"}
    )
    assert response.status_code == 200
    html = response.content.decode()
    assert "a-new-secret" not in html
    assert 'name="retype" value="client_secret"' in html
    # Fixing the other error but leaving the (emptied) secret blank would keep the old secret.
    response = admin_client.post(
        CHANGE_URL, {**values, "client_secret": "", "retype": "client_secret", "_continue": "1"}
    )
    assert response.status_code == 200
    assert "Type it again" in response.content.decode()
    assert SmtpSettings.load().version == 1


def test_a_changed_username_asks_whether_the_stored_password_still_applies(
    admin_client, smtp_server_factory, configure_smtp, smtp_pki
):
    server = smtp_server_factory("ssl")
    configure_smtp(server, pki=smtp_pki, username=USERNAME, password=PASSWORD)
    values = {
        "host": "127.0.0.1",
        "port": str(server.port),
        "security": "ssl",
        "timeout": "10",
        "username": "other@example.com",
        "from_address": "other@example.com",
        "batch": "4",
        "ca_pem": smtp_pki.ca_pem,
        "_continue": "1",
    }
    response = admin_client.post(CHANGE_URL, values)
    assert response.status_code == 200
    assert "The stored password still applies" in response.content.decode()
    assert admin_client.post(CHANGE_URL, {**values, "keep_password": "on"}).status_code == 302
    assert SmtpSettings.load().username == "other@example.com"


def test_the_office365_preset_carries_the_oauth2_checklist(admin_client):
    html = admin_client.get(CHANGE_URL).content.decode()
    start = html.index(">", html.index('id="smtp-providers"')) + 1
    providers = {p["key"]: p for p in json.loads(html[start : html.index("</script>", start)])}
    office365 = providers["office365"]
    assert office365["auth_method"] == "microsoft-oauth2"
    assert any("New-ServicePrincipal" in step for step in office365["checklist"])
    assert any("SMTP.SendAsApp" in step for step in office365["checklist"])
    assert "delegated OAuth" in providers["outlook_personal"]["note"]
    assert "授权码" in providers["qq"]["password_label"]
    assert "应用专用密码" in providers["gmail"]["password_label"]


@pytest.mark.parametrize(
    ("days", "expected"),
    [(40, None), (20, "expires in 20 days"), (-1, "expired on")],
)
def test_the_client_secret_expiry_is_warned_30_days_ahead(days, expected):
    from django.utils import timezone

    now = timezone.now()
    record = SmtpSettings(
        auth_method="microsoft-oauth2",
        client_secret_expires=timezone.localdate(now) + datetime.timedelta(days=days),
    )
    texts = [w.message for w in warnings(settings=record, workers=worker_summary(), now=now)]
    secret = [text for text in texts if "client secret" in text]
    if expected is None:
        assert secret == []
    else:
        assert len(secret) == 1 and expected in secret[0]
