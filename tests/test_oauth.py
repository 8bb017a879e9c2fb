"""OAuth2 sign-in end to end: a real HTTPS token endpoint, aiosmtpd speaking XOAUTH2, workers."""

from __future__ import annotations

import pytest
from django.db import transaction

import notifications
from notifications import services
from notifications.models import Notification, SmtpSettings, Status
from notifications.smtp import check_connection, diagnose, open_session
from tests.loopback import wait_for
from tests.outbox import all_sent, statuses
from tests.smtpserver import PASSWORD, USERNAME
from tests.tokenserver import CLIENT_ID, CLIENT_SECRET, TENANT_ID, TokenServer

pytestmark = pytest.mark.django_db

MAILBOX = USERNAME


@pytest.fixture
def oauth_smtp(smtp_server_factory, token_server):
    """An SMTP server (STARTTLS) that takes only the token server's tokens over XOAUTH2."""
    return smtp_server_factory("starttls", xoauth2=token_server.accepts, auth_mechanisms=("LOGIN",))


def configure(server, token_server, smtp_pki, method="microsoft-oauth2", **fields):
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
    oauth_smtp,
    token_server,
    smtp_pki,
    method,
):
    config = configure(oauth_smtp, token_server, smtp_pki, method).to_smtp_config()
    report = diagnose(config, to="someone@example.com")
    assert report.ok, report.as_dict()
    assert [s.name for s in report.steps][:2] == ["token", "dns"]
    assert report.step("auth").detail["mechanism"] == "XOAUTH2"
    assert token_server.requests == 1
    assert oauth_smtp.messages[0].auth_username == MAILBOX
    assert oauth_smtp.state.auth_commands == ["XOAUTH2"]


def test_the_token_server_refuses_a_token_it_did_not_issue(token_server):
    assert not token_server.accepts(MAILBOX, "eyJhbGciOiJIUzI1NiJ9.e30.forged")


def test_a_session_uses_the_cached_token_across_sessions(oauth_smtp, token_server, smtp_pki):
    config = configure(oauth_smtp, token_server, smtp_pki).to_smtp_config()
    for _ in range(3):
        with open_session(config) as session:
            assert session.is_alive()
    assert token_server.requests == 1


def test_connect_only_lists_capabilities_and_sends_nothing(oauth_smtp, token_server, smtp_pki):
    config = configure(oauth_smtp, token_server, smtp_pki).to_smtp_config()
    report = check_connection(config)
    assert report.ok, report.as_dict()
    assert "data" not in [s.name for s in report.steps]
    assert oauth_smtp.messages == []
    before, after = report.capabilities["before_tls"], report.capabilities["after_tls"]
    assert "STARTTLS" in before
    assert not any(line.startswith("AUTH") for line in before)  # aiosmtpd: AUTH only over TLS
    assert any(line.startswith("AUTH") and "XOAUTH2" in line for line in after)


def test_password_login_can_be_forced_to_login_mechanism(
    smtp_server_factory, configure_smtp, smtp_pki
):
    server = smtp_server_factory("ssl")
    record = configure_smtp(
        server, pki=smtp_pki, username=USERNAME, password=PASSWORD, auth_mechanism="login"
    )
    report = diagnose(record.to_smtp_config(), to="someone@example.com")
    assert report.ok, report.as_dict()
    assert server.state.auth_commands == ["LOGIN"]


@pytest.mark.parametrize(
    ("method", "error", "hint"),
    [
        ("microsoft-oauth2", "AADSTS7000215", "not its Secret ID"),
        ("microsoft-oauth2", "AADSTS7000222", "has expired"),
        ("microsoft-oauth2", "AADSTS700016", "Application (client) ID"),
        ("microsoft-oauth2", "AADSTS90002", "tenant was not found"),
        ("google-oauth2", "unauthorized_client", "domain-wide delegation"),
        ("google-oauth2", "invalid_grant", "existing user of the Workspace domain"),
    ],
)
def test_each_token_endpoint_error_fails_the_token_step_with_its_hint(
    oauth_smtp,
    token_server,
    smtp_pki,
    method,
    error,
    hint,
):
    config = configure(oauth_smtp, token_server, smtp_pki, method).to_smtp_config()
    token_server.error = error
    report = diagnose(config, to="someone@example.com")
    assert report.failed_step == "token"
    assert hint in report.hint
    assert report.step("dns").status == "not_run"  # no SMTP connection without a token
    assert oauth_smtp.state.total_sessions == 0


def test_a_wrong_secret_is_found_by_the_endpoint_not_guessed(oauth_smtp, token_server, smtp_pki):
    config = configure(
        oauth_smtp, token_server, smtp_pki, client_secret="7f0e7c2a-0000-4000-8000-secret-id"
    ).to_smtp_config()
    report = diagnose(config, to="someone@example.com")
    assert report.failed_step == "token"
    assert "AADSTS7000215" in report.error


def test_a_token_without_the_send_as_app_role_says_which_permission(
    oauth_smtp,
    token_server,
    smtp_pki,
):
    token_server.roles = []
    report = diagnose(
        configure(oauth_smtp, token_server, smtp_pki).to_smtp_config(), to="someone@example.com"
    )
    assert report.failed_step == "token"
    assert "SMTP.SendAsApp" in report.hint and "admin consent" in report.hint


def test_a_token_endpoint_certificate_for_other_names_names_them(oauth_smtp, smtp_pki):
    endpoint = TokenServer(smtp_pki, cert="wrong_host")
    try:
        record = configure(oauth_smtp, endpoint, smtp_pki)
        report = diagnose(record.to_smtp_config(), to="someone@example.com")
    finally:
        endpoint.stop()
    assert report.failed_step == "token"
    assert report.hint == (
        "The token endpoint's certificate is issued for wrong.example, not for localhost: use "
        "one of those names in the token URL."
    )
    assert endpoint.requests == 0


def test_an_untrusted_token_endpoint_certificate_points_at_the_extra_ca(
    oauth_smtp,
    token_server,
    smtp_pki,
):
    record = configure(oauth_smtp, token_server, smtp_pki)
    record.ca_pem = ""
    report = diagnose(record.to_smtp_config(), to="someone@example.com")
    assert report.failed_step == "token"
    assert "Extra trusted CA (PEM)" in report.hint
    assert token_server.requests == 0  # refused at the handshake: nothing was posted


def test_an_unreachable_token_endpoint_is_temporary(
    oauth_smtp,
    token_server,
    smtp_pki,
    closed_port,
):
    record = configure(oauth_smtp, token_server, smtp_pki)
    record.token_url = f"https://localhost:{closed_port}/tenant/oauth2/v2.0/token"
    report = diagnose(record.to_smtp_config(), to="someone@example.com")
    assert report.failed_step == "token"
    assert "cannot reach" in report.error


@pytest.mark.parametrize(
    ("reply", "refetched"),
    [
        ("535 5.7.3 Authentication unsuccessful [SN4PR0201CA0045.namprd02.prod.outlook.com]", True),
        ("430 4.2.0 STOREDRV.Submission.Exception:SendAsDeniedException", False),
    ],
)
def test_exchange_refusing_the_token_names_the_service_principal_fixes(
    oauth_smtp,
    token_server,
    smtp_pki,
    reply,
    refetched,
):
    oauth_smtp.handler.accepts = lambda mailbox, token: False
    oauth_smtp.handler.failure_reply = reply
    report = diagnose(
        configure(oauth_smtp, token_server, smtp_pki).to_smtp_config(), to="someone@example.com"
    )
    assert report.failed_step == "auth"
    for fix in ("New-ServicePrincipal", "Add-MailboxPermission", "SMTP AUTH is enabled"):
        assert fix in report.hint
    assert token_server.requests == (2 if refetched else 1)


def test_gmail_refusing_the_token_answers_the_error_challenge_and_hints(
    oauth_smtp,
    token_server,
    smtp_pki,
):
    oauth_smtp.handler.accepts = lambda mailbox, token: False
    oauth_smtp.handler.failure_reply = "535 5.7.8 Username and Password not accepted."
    config = configure(oauth_smtp, token_server, smtp_pki, "google-oauth2").to_smtp_config()
    report = diagnose(config, to="someone@example.com")
    assert report.failed_step == "auth"
    assert "https://mail.google.com/" in report.step("auth").detail["server_error"]
    assert "domain-wide delegation" in report.hint


def test_oauth2_never_falls_back_to_a_password(smtp_server_factory, token_server, smtp_pki):
    server = smtp_server_factory("starttls")  # PLAIN and LOGIN only
    report = diagnose(
        configure(server, token_server, smtp_pki).to_smtp_config(), to="someone@example.com"
    )
    assert report.failed_step == "auth"
    assert "XOAUTH2" in report.error
    assert server.state.auth_commands == []


def test_a_token_expiring_within_minutes_is_refreshed_before_use(
    oauth_smtp,
    token_server,
    smtp_pki,
):
    token_server.expires_in = 120  # inside the refresh margin from the start
    config = configure(oauth_smtp, token_server, smtp_pki).to_smtp_config()
    for _ in range(2):
        with open_session(config):
            pass
    assert token_server.requests == 2
    token_server.expires_in = 3600
    for _ in range(2):
        with open_session(config):
            pass
    assert token_server.requests == 3


def test_a_revoked_cached_token_is_dropped_and_fetched_once_more(
    oauth_smtp,
    token_server,
    smtp_pki,
):
    configure(oauth_smtp, token_server, smtp_pki)
    notifications.notify(recipients="a@example.com", subject="s", body="b")
    services.deliver()
    token_server.revoke_all()
    notifications.notify(recipients="b@example.com", subject="s", body="b")
    services.deliver()
    assert [m.rcpt_tos[0] for m in oauth_smtp.messages] == ["a@example.com", "b@example.com"]
    assert token_server.requests == 2
    assert not SmtpSettings.load().paused_reason


def test_a_token_refused_twice_pauses_sending_after_one_refetch(
    oauth_smtp,
    token_server,
    smtp_pki,
):
    configure(oauth_smtp, token_server, smtp_pki)
    oauth_smtp.handler.accepts = lambda mailbox, token: False
    notifications.notify(recipients=["a@example.com", "b@example.com"], subject="s", body="b")
    services.deliver()
    reason = SmtpSettings.load().paused_reason
    assert reason.startswith("[auth] 535") and "New-ServicePrincipal" in reason
    assert token_server.requests == 2
    assert len(oauth_smtp.state.credentials) == 2  # one try, one retry: no storm
    assert set(Notification.objects.values_list("status", flat=True)) == {Status.QUEUED}


@pytest.mark.django_db(transaction=True)
def test_two_worker_processes_sending_30_messages_make_one_token_request(
    oauth_smtp,
    token_server,
    smtp_pki,
    celery_worker_factory,
):
    token_server.delay = 0.3  # a slow endpoint: every worker asks at about the same time
    configure(oauth_smtp, token_server, smtp_pki, batch=4)
    workers = [celery_worker_factory(concurrency=4), celery_worker_factory(concurrency=4)]
    with transaction.atomic():
        for n in range(30):
            notifications.notify(recipients=f"user{n}@example.com", subject="s", body="b")
    wait_for(lambda: all_sent(30), timeout=120, what=f"30 sent, now {statuses()}")
    assert len(oauth_smtp.messages) == 30
    assert oauth_smtp.state.total_sessions > 1  # several sessions, in both workers
    assert token_server.requests == 1
    logs = [worker.log.read_text() for worker in workers]
    assert all("notifications.send" in log for log in logs), "both workers took part"
    assert sum(log.count("Fetched a new OAuth2 access token") for log in logs) == 1
