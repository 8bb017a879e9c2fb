"""Send test email on the settings page: the form's values tested, guarded, limited and reported."""

from __future__ import annotations

import base64
import json
from datetime import timedelta

import pytest
from django.contrib.auth.models import Permission
from django.test import Client, override_settings
from django.urls import reverse

from notifications.models import SmtpSettings, TestKind, TestRun
from tests.smtpserver import PASSWORD, USERNAME

pytestmark = pytest.mark.django_db

CHANGE_URL = reverse("admin:notifications_smtpsettings_change", args=[1])
TEST_URL = reverse("admin:notifications_smtpsettings_test_email", args=[1])
FETCH = {"X-Requested-With": "XMLHttpRequest"}
TO = "admin@example.com"


def form_values(server, *, pki=None, username="", password="", **overrides) -> dict[str, str]:
    """What the settings page posts: every settings field plus the recipient."""
    values = {
        "provider": "",
        "host": "127.0.0.1",
        "port": str(server.port),
        "security": server.mode,
        "username": username,
        "password": password,
        "from_address": "Site <noreply@example.com>",
        "ca_pem": pki.ca_pem.strip() if pki else "",
        "timeout": "5",
        "batch": "4",
        "test-to": TO,
    }
    if server.mode == "none" and username:
        values["allow_plaintext_login"] = "on"
    values.update(overrides)
    return values


def secret_forms(password: str) -> list[str]:
    """The password as typed and as AUTH PLAIN / LOGIN carry it."""

    def b64(text: str) -> str:
        return base64.b64encode(text.encode()).decode()

    return [password, b64(password), b64(f"\0{USERNAME}\0{password}")]


def stored_runs_text() -> str:
    return json.dumps(
        list(TestRun.objects.values("recipient", "failed_step", "summary", "report")),
        ensure_ascii=False,
    )


@pytest.fixture
def tls_server(smtp_server_factory):
    return smtp_server_factory("starttls")


# --- the page -----------------------------------------------------------------------------------


def test_page_has_the_button_inside_the_form_and_defaults_the_recipient_to_the_admin(admin_client):
    html = admin_client.get(CHANGE_URL).content.decode()
    assert 'id="test-email-button"' in html
    assert f'formaction="{TEST_URL}#test-email-result"' in html
    assert f'value="{TO.replace("admin", "root")}"' in html  # the superuser's own address
    form_start = html.index('id="smtpsettings_form"')
    form_end = html.index("</form>", form_start)
    assert form_start < html.index('name="_save"') < html.index('id="test-email-button"') < form_end
    assert 'role="status"' in html
    assert "notifications/test_email.js" in html


def test_view_only_staff_sees_no_button(client, django_user_model):
    user = django_user_model.objects.create_user("viewer", "viewer@example.com", is_staff=True)
    user.user_permissions.add(Permission.objects.get(codename="view_smtpsettings"))
    client.force_login(user)
    response = client.get(CHANGE_URL)
    assert response.status_code == 200
    assert "test-email-button" not in response.content.decode()


# --- testing what the form holds ----------------------------------------------------------------


def test_tests_the_unsaved_form_values_not_the_stored_ones(
    admin_client, configure_smtp, plain_smtp_server
):
    stored = configure_smtp(plain_smtp_server, host="smtp.invalid")
    response = admin_client.post(TEST_URL, form_values(plain_smtp_server), headers=FETCH)
    html = response.content.decode()
    assert response.status_code == 200
    assert "Delivered to the server, for admin@example.com" in html
    [message] = plain_smtp_server.messages
    assert message.rcpt_tos == (TO,)
    record = SmtpSettings.load()
    assert (record.host, record.version) == ("smtp.invalid", stored.version)


def test_blank_password_uses_the_stored_one(admin_client, configure_smtp, tls_server, smtp_pki):
    configure_smtp(tls_server, pki=smtp_pki, username=USERNAME, password=PASSWORD)
    values = form_values(tls_server, pki=smtp_pki, username=USERNAME, password="")
    response = admin_client.post(TEST_URL, values, headers=FETCH)
    assert "Delivered to the server" in response.content.decode()
    assert tls_server.state.credentials == [(USERNAME, PASSWORD)]
    assert len(tls_server.messages) == 1


def test_typed_password_is_tested_and_not_saved(admin_client, configure_smtp, tls_server, smtp_pki):
    configure_smtp(tls_server, pki=smtp_pki, username=USERNAME, password="old-stored-password")
    values = form_values(tls_server, pki=smtp_pki, username=USERNAME, password=PASSWORD)
    response = admin_client.post(TEST_URL, values, headers=FETCH)
    assert "Delivered to the server" in response.content.decode()
    assert tls_server.state.credentials == [(USERNAME, PASSWORD)]
    assert SmtpSettings.load().get_password() == "old-stored-password"


def test_failing_login_shows_the_failed_step_and_its_hint(
    admin_client, configure_smtp, tls_server, smtp_pki
):
    configure_smtp(tls_server, pki=smtp_pki, username=USERNAME, password=PASSWORD)
    values = form_values(tls_server, pki=smtp_pki, username=USERNAME, password="wrong-password")
    response = admin_client.post(TEST_URL, values, headers=FETCH)
    html = response.content.decode()
    assert response.status_code == 200
    assert "Failed at Login (AUTH)" in html
    assert "What to do:" in html
    assert "Check the username and password." in html
    assert "535" in html
    assert 'class="test-step test-step-failed"' in html
    assert html.count('class="test-step test-step-not_run"') == 4  # MAIL, RCPT, DATA, QUIT
    assert not tls_server.messages


def test_report_shows_every_step_tls_details_and_the_transcript(
    admin_client, configure_smtp, tls_server, smtp_pki
):
    configure_smtp(tls_server, pki=smtp_pki, username=USERNAME, password=PASSWORD)
    values = form_values(tls_server, pki=smtp_pki, username=USERNAME)
    html = admin_client.post(TEST_URL, values, headers=FETCH).content.decode()
    for label in ("DNS lookup", "TCP connection", "Server greeting", "EHLO", "TLS"):
        assert label in html
    assert html.count('class="test-step test-step-ok"') == 10
    assert " ms</span>" in html
    assert "TLSv1." in html
    assert "Throwaway Test CA" in html
    assert "matches the certificate" in html
    assert "<details" in html and 'id="test-email-transcript"' in html
    assert "AUTH PLAIN ********" in html
    assert "Copy transcript" in html
    assert 'id="test-email-result-heading"' in html and 'tabindex="-1"' in html


def test_password_appears_nowhere_in_the_page_the_fragment_or_the_test_runs(
    admin_client, configure_smtp, tls_server, smtp_pki
):
    configure_smtp(tls_server, pki=smtp_pki, username=USERNAME, password=PASSWORD)
    tested = form_values(tls_server, pki=smtp_pki, username=USERNAME)
    wrong = {**tested, "password": "typed-canary-password"}
    responses = [
        admin_client.post(TEST_URL, tested, headers=FETCH),
        admin_client.post(TEST_URL, tested),
        admin_client.post(TEST_URL, wrong, headers=FETCH),
        admin_client.post(TEST_URL, wrong),
    ]
    assert [r.status_code for r in responses] == [200] * 4
    texts = [r.content.decode() for r in responses] + [stored_runs_text()]
    assert TestRun.objects.count() == 4
    for text in texts:
        for secret in secret_forms(PASSWORD) + secret_forms("typed-canary-password"):
            assert secret not in text
        assert SmtpSettings.load().password_encrypted not in text


def test_recorded_run_says_who_tested_what_and_the_outcome(
    admin_client, admin_user, configure_smtp, plain_smtp_server, closed_port
):
    stored = configure_smtp(plain_smtp_server, timeout=5)  # exactly what the form posts
    admin_client.post(TEST_URL, form_values(plain_smtp_server), headers=FETCH)
    admin_client.post(TEST_URL, form_values(plain_smtp_server, port=str(closed_port)))
    failed, delivered = TestRun.objects.order_by("-id")
    assert delivered.created_by == admin_user
    assert (delivered.recipient, delivered.ok, delivered.failed_step) == (TO, True, "")
    assert delivered.summary == "Delivered to the server."
    assert (delivered.saved, delivered.settings_version) == (True, stored.version)  # as stored
    assert delivered.report["steps"][-1]["name"] == "quit"
    assert (failed.ok, failed.failed_step) == (False, "connect")
    assert failed.summary.startswith("Failed at TCP connection: ")
    # Unsaved values: recorded as such, with the version they were typed over.
    assert (failed.saved, failed.settings_version) == (False, stored.version)
    # What each tested, in the columns and in the stored report.
    tested = ("127.0.0.1", "none", "password", "", TestKind.EMAIL)
    assert (delivered.host, delivered.security, delivered.auth_method) == tested[:3]
    assert (delivered.username, delivered.kind) == tested[3:]
    assert (delivered.port, failed.port) == (plain_smtp_server.port, closed_port)
    assert failed.report["target"] == {
        "host": "127.0.0.1",
        "port": closed_port,
        "security": "none",
        "auth_method": "password",
        "username": "",
        "saved": False,
        "settings_version": stored.version,
    }


# --- guards -------------------------------------------------------------------------------------


def test_anonymous_is_redirected_to_login_and_nothing_is_sent(client, plain_smtp_server):
    response = client.post(TEST_URL, form_values(plain_smtp_server))
    assert response.status_code == 302
    assert response["Location"].startswith(reverse("admin:login"))
    assert plain_smtp_server.state.total_sessions == 0


def test_staff_without_change_permission_gets_403(client, django_user_model, plain_smtp_server):
    user = django_user_model.objects.create_user("viewer", "viewer@example.com", is_staff=True)
    user.user_permissions.add(Permission.objects.get(codename="view_smtpsettings"))
    client.force_login(user)
    response = client.post(TEST_URL, form_values(plain_smtp_server), headers=FETCH)
    assert response.status_code == 403
    assert plain_smtp_server.state.total_sessions == 0
    assert not TestRun.objects.exists()


def test_post_without_csrf_token_is_refused(admin_user, plain_smtp_server):
    client = Client(enforce_csrf_checks=True)
    client.force_login(admin_user)
    response = client.post(TEST_URL, form_values(plain_smtp_server), headers=FETCH)
    assert response.status_code == 403
    assert plain_smtp_server.state.total_sessions == 0


def test_post_with_the_pages_csrf_token_is_accepted(admin_user, plain_smtp_server):
    client = Client(enforce_csrf_checks=True)
    client.force_login(admin_user)
    token = client.get(CHANGE_URL).context["csrf_token"]
    values = {**form_values(plain_smtp_server), "csrfmiddlewaretoken": str(token)}
    response = client.post(TEST_URL, values, headers=FETCH)
    assert response.status_code == 200
    assert len(plain_smtp_server.messages) == 1


def test_get_is_not_allowed(admin_client):
    assert admin_client.get(TEST_URL).status_code == 405


@override_settings(NOTIFICATIONS={"TEST_EMAILS_PER_MINUTE": 2})
def test_rate_limit_stops_an_administrator_after_n_runs_a_minute_and_says_how_long_to_wait(
    admin_client, configure_smtp, plain_smtp_server, django_user_model
):
    configure_smtp(plain_smtp_server)
    values = form_values(plain_smtp_server)
    first, second = (admin_client.post(TEST_URL, values, headers=FETCH) for _ in range(2))
    limited = admin_client.post(TEST_URL, values, headers=FETCH)
    assert (first.status_code, second.status_code, limited.status_code) == (200, 200, 429)
    html = limited.content.decode()
    assert "Too many test emails: at most 2 a minute. Try again in" in html
    assert " seconds." in html
    assert 0 < int(limited["Retry-After"]) <= 60  # the page's script counts down from it
    page = admin_client.get(CHANGE_URL).content.decode()
    assert 'data-retry-after="0"' not in page and "data-retry-after=" in page
    assert len(plain_smtp_server.messages) == 2

    other = Client()
    other.force_login(django_user_model.objects.create_superuser("other", "o@example.com", "pw"))
    assert other.post(TEST_URL, values, headers=FETCH).status_code == 200

    TestRun.objects.update(created_at=TestRun.objects.first().created_at - timedelta(minutes=2))
    assert admin_client.post(TEST_URL, values, headers=FETCH).status_code == 200


@override_settings(NOTIFICATIONS={"TEST_EMAILS_PER_MINUTE": 1})
def test_rate_limit_message_is_shown_on_the_page_without_javascript(
    admin_client, configure_smtp, plain_smtp_server
):
    configure_smtp(plain_smtp_server)
    admin_client.post(TEST_URL, form_values(plain_smtp_server))
    response = admin_client.post(TEST_URL, form_values(plain_smtp_server))
    assert response.status_code == 429
    assert "Try again in" in response.content.decode()
    assert 'name="host"' in response.content.decode()


def test_invalid_values_show_field_errors_and_run_nothing(admin_client, plain_smtp_server):
    values = form_values(plain_smtp_server, port="465", security="starttls", **{"test-to": "x"})
    response = admin_client.post(TEST_URL, values, headers=FETCH)
    html = response.content.decode()
    assert response.status_code == 400
    assert "Not tested: correct these values first" in html
    assert "Port 465 expects implicit TLS" in html
    assert "“x” is not an email address" in html
    assert plain_smtp_server.state.total_sessions == 0
    assert not TestRun.objects.exists()


def test_invalid_values_without_javascript_show_the_errors_next_to_the_fields(
    admin_client, plain_smtp_server
):
    values = form_values(plain_smtp_server, host="smtp://bad host")
    response = admin_client.post(TEST_URL, values)
    html = response.content.decode()
    assert response.status_code == 400
    assert "Please correct the error below." in html
    assert "without spaces" in html
    assert plain_smtp_server.state.total_sessions == 0


# --- without JavaScript -------------------------------------------------------------------------


def test_without_javascript_the_page_comes_back_with_the_typed_values_and_the_report(
    admin_client, configure_smtp, plain_smtp_server
):
    configure_smtp(plain_smtp_server, host="smtp.invalid")
    values = form_values(plain_smtp_server, **{"test-to": "someone@example.com"})
    response = admin_client.post(TEST_URL, values)
    html = response.content.decode()
    assert response.status_code == 200
    assert "<html" in html
    assert f'action="{CHANGE_URL}"' in html  # Save still saves, from this URL too
    assert 'value="127.0.0.1"' in html  # the typed host, not the stored one
    assert 'value="someone@example.com"' in html
    assert "Delivered to the server, for someone@example.com" in html
    assert 'id="test-email-transcript"' in html
    assert "type it again before you save" not in html


def test_without_javascript_a_typed_password_is_not_echoed_and_the_page_says_so(
    admin_client, configure_smtp, tls_server, smtp_pki
):
    configure_smtp(tls_server, pki=smtp_pki, username=USERNAME, password="old-stored-password")
    values = form_values(tls_server, pki=smtp_pki, username=USERNAME, password=PASSWORD)
    html = admin_client.post(TEST_URL, values).content.decode()
    assert "Delivered to the server" in html
    assert "type it again before you save" in html
    assert PASSWORD not in html


def test_with_javascript_only_the_result_comes_back(
    admin_client, configure_smtp, plain_smtp_server
):
    configure_smtp(plain_smtp_server)
    html = admin_client.post(TEST_URL, form_values(plain_smtp_server), headers=FETCH)
    html = html.content.decode()
    assert "<html" not in html
    assert 'name="host"' not in html
    assert html.lstrip().startswith("<h3")


def test_a_passing_test_of_unsaved_values_offers_to_save_them(
    admin_client, configure_smtp, plain_smtp_server
):
    configure_smtp(plain_smtp_server)
    stored = form_values(plain_smtp_server, timeout=str(SmtpSettings.load().timeout))
    saved = admin_client.post(TEST_URL, stored, headers=FETCH)
    assert "Delivered to the server" in saved.content.decode()
    assert "Save these settings" not in saved.content.decode()  # nothing to save
    changed = {**stored, "batch": "7"}
    unsaved = admin_client.post(TEST_URL, changed, headers=FETCH).content.decode()
    assert 'name="_continue"' in unsaved and "Save these settings" in unsaved
    # The button saves the form it is in: the same values, posted to the page.
    assert admin_client.post(CHANGE_URL, {**changed, "_continue": "1"}).status_code == 302
    assert SmtpSettings.load().batch == 7


def unsaved_values_of_another_server_tested(admin_client, smtp_server_factory) -> dict[str, str]:
    """Test, without saving them, the stored values but for another server; the form's values."""
    typed = form_values(smtp_server_factory("none"), timeout=str(SmtpSettings.load().timeout))
    admin_client.post(TEST_URL, typed, headers=FETCH)
    assert "Tested unsaved values" in admin_client.get(CHANGE_URL).content.decode()
    return typed


def test_saving_the_tested_values_makes_the_test_the_saved_settings_state(
    admin_client, configure_smtp, plain_smtp_server, smtp_server_factory
):
    configure_smtp(plain_smtp_server)
    typed = unsaved_values_of_another_server_tested(admin_client, smtp_server_factory)
    admin_client.post(CHANGE_URL, {**typed, "_continue": "1"})  # "Save these settings"
    run = TestRun.objects.get()
    assert (run.saved, run.settings_version) == (True, SmtpSettings.load().version)
    page = admin_client.get(CHANGE_URL).content.decode()
    assert "Tested unsaved values" not in page
    assert "Delivered to the server" in page


def test_saving_other_values_than_the_tested_ones_keeps_the_test_apart(
    admin_client, configure_smtp, plain_smtp_server, smtp_server_factory
):
    configure_smtp(plain_smtp_server)
    typed = unsaved_values_of_another_server_tested(admin_client, smtp_server_factory)
    admin_client.post(CHANGE_URL, {**typed, "timeout": "12", "_save": "Save"})  # not what ran
    assert not TestRun.objects.get().saved
    assert "Tested unsaved values" in admin_client.get(CHANGE_URL).content.decode()


def test_a_failing_test_offers_no_save(admin_client, configure_smtp, plain_smtp_server):
    configure_smtp(plain_smtp_server)
    plain_smtp_server.queue_replies("MAIL", "550 5.7.1 sender rejected")
    values = form_values(plain_smtp_server, batch="7")
    html = admin_client.post(TEST_URL, values, headers=FETCH).content.decode()
    assert "Failed at" in html and "Save these settings" not in html
