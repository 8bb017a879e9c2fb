"""OAuth2 sign-in end to end: a real HTTPS token endpoint and an aiosmtpd server speaking XOAUTH2."""

from __future__ import annotations

import pytest

from notifications import services
from notifications.models import SmtpSettings
from notifications.smtp import check_connection, diagnose, open_session
from tests.smtpserver import PASSWORD, USERNAME
from tests.tokenserver import CLIENT_ID, CLIENT_SECRET, TENANT_ID, token_server  # noqa: F401

pytestmark = pytest.mark.django_db

MAILBOX = USERNAME


@pytest.fixture
def oauth_smtp(smtp_server_factory, token_server):  # noqa: F811
    """An SMTP server (STARTTLS) that takes only the token server's tokens over XOAUTH2."""
    return smtp_server_factory("starttls", xoauth2=token_server.accepts, auth_mechanisms=("LOGIN",))


def configure(server, token_server, smtp_pki, method="microsoft-oauth2", **fields):  # noqa: F811
    record = SmtpSettings.load()
    record.host, record.port, record.security = "127.0.0.1", server.port, server.mode
    record.username = MAILBOX
    record.from_address = f"Site <{MAILBOX}>"
    record.ca_pem = smtp_pki.ca_pem
    record.auth_method = method
    if method == "microsoft-oauth2":
        record.tenant_id, record.client_id = TENANT_ID, CLIENT_ID
        record.token_url = token_server.microsoft_url
        record.set_client_secret(fields.pop("client_secret", CLIENT_SECRET))
    else:
        record.set_service_account(token_server.service_account.key_json)
    for name, value in fields.items():
        setattr(record, name, value)
    services.save_settings(record, source="test")
    return record


@pytest.mark.parametrize("method", ["microsoft-oauth2", "google-oauth2"])
def test_diagnosis_signs_in_with_a_token_and_delivers(
    oauth_smtp, token_server, smtp_pki, method  # noqa: F811
):
    config = configure(oauth_smtp, token_server, smtp_pki, method).to_smtp_config()
    report = diagnose(config, to="someone@example.com")
    assert report.ok, report.as_dict()
    assert [s.name for s in report.steps][:2] == ["token", "dns"]
    assert report.step("auth").detail["mechanism"] == "XOAUTH2"
    assert token_server.requests == 1
    assert oauth_smtp.messages[0].auth_username == MAILBOX
    assert oauth_smtp.state.auth_commands == ["XOAUTH2"]


def test_the_token_server_refuses_a_token_it_did_not_issue(token_server):  # noqa: F811
    assert not token_server.accepts(MAILBOX, "eyJhbGciOiJIUzI1NiJ9.e30.forged")


def test_a_session_uses_the_cached_token_across_sessions(oauth_smtp, token_server, smtp_pki):  # noqa: F811
    config = configure(oauth_smtp, token_server, smtp_pki).to_smtp_config()
    for _ in range(3):
        with open_session(config) as session:
            assert session.is_alive()
    assert token_server.requests == 1


def test_connect_only_lists_capabilities_and_sends_nothing(oauth_smtp, token_server, smtp_pki):  # noqa: F811
    config = configure(oauth_smtp, token_server, smtp_pki).to_smtp_config()
    report = check_connection(config)
    assert report.ok, report.as_dict()
    assert "data" not in [s.name for s in report.steps]
    assert oauth_smtp.messages == []
    before, after = report.capabilities["before_tls"], report.capabilities["after_tls"]
    assert "STARTTLS" in before
    assert not any(line.startswith("AUTH") for line in before)  # aiosmtpd: AUTH only over TLS
    assert any(line.startswith("AUTH") and "XOAUTH2" in line for line in after)


def test_password_login_can_be_forced_to_login_mechanism(smtp_server_factory, configure_smtp, smtp_pki):
    server = smtp_server_factory("ssl")
    record = configure_smtp(
        server, pki=smtp_pki, username=USERNAME, password=PASSWORD, auth_mechanism="login"
    )
    report = diagnose(record.to_smtp_config(), to="someone@example.com")
    assert report.ok, report.as_dict()
    assert server.state.auth_commands == ["LOGIN"]
