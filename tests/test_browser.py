"""The administrator's flows in a real browser: presets, the write-only password, Send test email,
the delivery log, the keyboard, and the page in Chinese.
Screenshots: see tests.browser.SCREENSHOTS."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
from django.utils import timezone
from playwright.sync_api import expect

import notifications
from notifications import services
from notifications.models import Notification, SmtpSettings, Status
from tests.browser import login, screenshot
from tests.smtpserver import PASSWORD, USERNAME

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

SETTINGS_URL = "/admin/notifications/smtpsettings/1/change/"
LOG_URL = "/admin/notifications/notification/"


def send_test_email(page) -> None:
    page.get_by_role("button", name="Send test email").click()


def result_heading(page):
    return page.locator("#test-email-result-heading")


def fill_server(page, server, smtp_pki) -> None:
    """Point the form at the loopback STARTTLS server, trusting the test CA."""
    page.fill("#id_host", "127.0.0.1")
    page.fill("#id_port", str(server.port))
    page.select_option("#id_security", "starttls")
    page.locator("summary", has_text="Advanced security").click()
    page.fill("#id_ca_pem", smtp_pki.ca_pem)


def seed_a_day_of_sending() -> None:
    """A day of outbox history for the chart: real rows, backdated across the last hours."""
    now = timezone.now()
    for hours_ago, sent, failed in [(20, 3, 0), (15, 6, 1), (9, 4, 0), (5, 8, 2), (2, 5, 0)]:
        rows = notifications.notify(
            recipients=[f"member{i}@example.com" for i in range(sent + failed)],
            subject="Weekly digest",
            body="…",
        )
        moment = now - timedelta(hours=hours_ago)
        ids = [row.pk for row in rows]
        Notification.objects.filter(pk__in=ids[:sent]).update(
            status=Status.SENT, sent_at=moment, created_at=moment, attempts=1
        )
        Notification.objects.filter(pk__in=ids[sent:]).update(
            status=Status.FAILED,
            created_at=moment,
            attempts=1,
            last_error="[rcpt] 550 5.1.1 Mailbox unavailable. Correct the address.",
        )


def test_preset_password_and_test_email_as_an_administrator_does_them(
    page_factory, admin_user, smtp_server_factory, smtp_pki
):
    server = smtp_server_factory("starttls")
    page = page_factory()
    login(page, admin_user.username, "pw-for-tests")
    page.get_by_role("link", name="SMTP settings").first.click()
    expect(page).to_have_url(re.compile(r"/smtpsettings/1/change/$"))
    expect(page.locator(".smtp-health")).to_contain_text("Not configured")

    # A preset fills the server and shows the provider's note right under the select.
    page.select_option("#id_provider", "netease163")
    expect(page.locator("#id_host")).to_have_value("smtp.163.com")
    expect(page.locator("#id_port")).to_have_value("465")
    expect(page.locator("#id_security")).to_have_value("ssl")
    note = page.locator(".field-provider #provider-note")
    expect(note).to_be_visible()
    expect(note).to_contain_text("authorization code")
    expect(page.locator("#id_provider")).to_have_attribute("aria-describedby", "provider-note")

    # The real provider is out of reach from a test: switch to Custom and the loopback server.
    page.select_option("#id_provider", "custom")
    expect(note).to_be_hidden()
    fill_server(page, server, smtp_pki)
    page.fill("#id_username", USERNAME)
    page.fill("#id_password", PASSWORD)
    page.fill("#id_from_address", "站点通知 <sender@example.com>")
    page.click("input[name=_save]")
    expect(page.locator(".messagelist")).to_contain_text("The SMTP settings were saved")

    page.reload()
    expect(page.locator("#id_password")).to_have_value("")
    expect(page.locator(".field-password_status")).to_contain_text(
        re.compile(r"A password is stored, set on .+ by root")
    )
    assert PASSWORD not in page.content()
    assert SmtpSettings.load().get_password() == PASSWORD

    # Send test email: the progress shows while the server holds DATA, then every step passes.
    server.hold_data()
    send_test_email(page)
    expect(page.locator("#test-email-status")).to_contain_text("Testing…")
    expect(page.locator("#test-email-button")).to_be_disabled()
    server.release_data()
    expect(result_heading(page)).to_contain_text("Delivered to the server, for root@example.com")
    expect(result_heading(page)).to_be_focused()
    steps = page.locator(".test-step")
    expect(page.locator(".test-step-ok .test-step-icon").first).to_have_text("✓")
    expect(page.locator(".test-step-ok")).to_have_count(steps.count())
    assert len(server.messages) == 1

    # A wrong password, typed and tested (not saved): the failing step and what to do.
    page.fill("#id_password", "not-the-password")
    send_test_email(page)
    expect(result_heading(page)).to_contain_text("Failed at Login (AUTH)")
    expect(page.locator(".test-email-hint")).to_contain_text("Check the username and password.")
    expect(page.locator(".test-step-failed")).to_contain_text("535")
    screenshot(page, "test-failed.png", element=".test-email-area")
    assert SmtpSettings.load().get_password() == PASSWORD

    # The panel now reports the last test, linking to its stored report: the saved settings
    # delivered; the typed password is a test of unsaved values, told apart.
    page.reload()
    last_test = page.locator(".smtp-fact", has_text="Last test")
    expect(last_test.locator(".smtp-last-test")).to_contain_text("Delivered to the server")
    scratch = last_test.locator(".smtp-scratch-test")
    expect(scratch).to_contain_text("Tested unsaved values")
    expect(scratch).to_contain_text("Failed at Login (AUTH)")
    scratch.get_by_role("link", name="View the report").click()
    expect(page.locator("#test-email-result-heading")).to_contain_text("Failed at Login (AUTH)")
    expect(page.locator(".test-email-target")).to_contain_text("unsaved values")


def test_delivery_log_shows_sent_and_failed_rows_and_retry_now_resends(
    admin_page, configure_smtp, plain_smtp_server
):
    configure_smtp(plain_smtp_server)
    notifications.notify(recipients="member@example.com", subject="Welcome", body="Hello")
    services.deliver()
    plain_smtp_server.queue_replies("RCPT", "550 5.1.1 <gone@example.com>: no such user")
    notifications.notify(recipients="gone@example.com", subject="Welcome", body="Hello")
    services.deliver()

    page = admin_page
    # A common laptop screen, the admin's sidebar open: every column is on screen.
    page.set_viewport_size({"width": 1366, "height": 640})
    page.goto("/admin/")
    page.get_by_role("link", name="Delivery log").click()
    rows = page.locator("#result_list tbody tr")
    expect(rows).to_have_count(2)
    # Neither the page nor the admin's own scroll box around the table scrolls sideways.
    assert page.evaluate("document.documentElement.scrollWidth") <= 1366
    results = page.locator("#changelist-form .results")
    assert results.evaluate("el => el.scrollWidth <= el.clientWidth")
    expect(page.locator("#result_list thead th").last).to_contain_text("Last error")
    expect(page.locator("#result_list thead th").last).to_be_in_viewport(ratio=1)
    sent = rows.filter(has_text="member@example.com")
    failed = rows.filter(has_text="gone@example.com")
    expect(sent.locator(".field-status_label")).to_have_text("sent")
    expect(failed.locator(".field-status_label")).to_have_text("failed")
    expect(failed.locator(".field-error")).to_contain_text("550 5.1.1")
    # In colour, and not the same colour.
    colours = {
        status: rows.locator(f".delivery-status-{status}").evaluate(
            "el => getComputedStyle(el).backgroundColor"
        )
        for status in ("sent", "failed")
    }
    assert colours["sent"] != colours["failed"]
    assert "rgba(0, 0, 0, 0)" not in colours.values()
    screenshot(page, "delivery-log.png")

    # "Retry now" on a sent row: nothing queued, and it says why.
    sent.locator("input.action-select").check()
    page.select_option("select[name=action]", "retry_now")
    page.get_by_role("button", name="Go").click()
    expect(page.locator(".messagelist")).to_contain_text(
        "1 notification was not queued: it was sent already, and is not sent twice."
    )
    expect(page.locator(".messagelist")).not_to_contain_text("0 notifications queued")

    # A sent row's page is a record: no Save, no Next attempt, nothing to do.
    rows.filter(has_text="member@example.com").locator("th a").click()
    expect(page.locator(".field-status_label")).to_contain_text("sent")
    expect(page.locator("input[name=_save]")).to_have_count(0)
    expect(page.locator(".field-next_attempt_at")).to_have_count(0)
    expect(page.get_by_role("button", name="Retry now")).to_have_count(0)
    page.go_back()

    failed.locator("input.action-select").check()
    page.select_option("select[name=action]", "retry_now")
    page.get_by_role("button", name="Go").click()
    expect(page.locator(".messagelist")).to_contain_text("1 notification queued to retry now.")
    expect(failed.locator(".field-status_label")).to_have_text("queued")

    services.deliver()  # the worker's part; the server now accepts the address
    page.reload()
    expect(rows.filter(has_text="gone@example.com").locator(".field-status_label")).to_have_text(
        "sent"
    )
    assert sorted(m.rcpt_tos[0] for m in plain_smtp_server.messages) == [
        "gone@example.com",
        "member@example.com",
    ]


def test_health_panel_reads_the_outbox_and_warns(admin_page, configure_smtp, plain_smtp_server):
    configure_smtp(plain_smtp_server, username="robot@163.com", password="code", provider="")
    seed_a_day_of_sending()
    notifications.notify(recipients=["late@example.com"], subject="Queued", body="b")
    services.record_heartbeat(name="celery@web1", started_at=timezone.now(), concurrency=4)

    page = admin_page
    page.goto(SETTINGS_URL)
    panel = page.locator(".smtp-health")
    expect(panel.locator(".smtp-chart-caption")).to_contain_text("26 sent")
    expect(panel.locator(".smtp-chart-caption")).to_contain_text("3 failed")
    expect(panel.locator(".smtp-fact", has_text="Queue")).to_contain_text("1 waiting")
    expect(panel.locator(".smtp-fact", has_text="Workers")).to_contain_text("1 alive")
    expect(panel.locator(".smtp-chart-svg")).to_have_attribute("role", "img")
    # Plaintext login on a 163 login sending as example.com: two warnings, each linked to its field.
    warnings = panel.locator(".smtp-warning")
    expect(warnings).to_have_count(2)
    expect(warnings.first).to_contain_text("Plaintext login is allowed")
    expect(warnings.nth(1)).to_contain_text("553 sender rejected")
    warnings.nth(1).get_by_role("link", name="Go to the setting").click()
    expect(page).to_have_url(re.compile(r"#id_from_address$"))
    page.goto(SETTINGS_URL)
    screenshot(page, "settings.png")


def tab_to(page, selector: str, *, limit: int = 80) -> None:
    """Press Tab until ``selector`` has the focus: proves it is reachable by keyboard."""
    for _ in range(limit):
        if page.evaluate("(s) => document.activeElement.matches(s)", selector):
            return
        page.keyboard.press("Tab")
    raise AssertionError(f"{selector} was not reached with {limit} presses of Tab")


def focus_is_visible(page) -> bool:
    return page.evaluate(
        """() => {
            const el = document.activeElement, style = getComputedStyle(el);
            return el.matches(':focus-visible')
                && (style.outlineStyle !== 'none' || style.boxShadow !== 'none');
        }"""
    )


def test_keyboard_alone_fills_the_form_saves_and_runs_the_test(
    admin_page, smtp_server_factory, smtp_pki
):
    server = smtp_server_factory("none")
    page = admin_page
    page.goto(SETTINGS_URL)

    tab_to(page, "#id_provider")
    assert focus_is_visible(page)
    page.keyboard.press("End")  # the last preset: Custom
    expect(page.locator("#id_provider")).to_have_value("custom")
    page.keyboard.press("Tab")
    page.keyboard.type("127.0.0.1")
    page.keyboard.press("Tab")
    page.keyboard.press("Control+A")
    page.keyboard.type(str(server.port))
    tab_to(page, "#id_security")
    page.keyboard.press("End")  # None (plaintext)
    expect(page.locator("#id_security")).to_have_value("none")
    tab_to(page, "#id_from_address")
    page.keyboard.type("Site <noreply@example.com>")
    page.keyboard.press("Enter")  # Enter in a field saves the settings
    expect(page.locator(".messagelist")).to_contain_text("The SMTP settings were saved")

    tab_to(page, "#test-email-button")
    assert focus_is_visible(page)
    page.keyboard.press("Space")
    expect(result_heading(page)).to_contain_text("Delivered to the server")
    expect(result_heading(page)).to_be_focused()

    # Enter in the recipient field runs the test too, rather than saving the form.
    page.focus("#id_test-to")
    page.keyboard.press("Control+A")
    page.keyboard.type("someone@example.com")
    page.keyboard.press("Enter")
    expect(result_heading(page)).to_contain_text("someone@example.com")
    expect(result_heading(page)).to_be_focused()
    assert [m.rcpt_tos for m in server.messages] == [
        ("root@example.com",),
        ("someone@example.com",),
    ]


def test_a_chinese_browser_gets_the_page_and_the_failure_hint_in_chinese(
    page_factory, admin_user, configure_smtp, smtp_server_factory, smtp_pki
):
    server = smtp_server_factory("starttls")
    configure_smtp(server, pki=smtp_pki, username=USERNAME, password=PASSWORD, provider="qq")
    page = page_factory(locale="zh-CN")
    login(page, admin_user.username, "pw-for-tests")
    page.goto(SETTINGS_URL)

    expect(page.locator("html")).to_have_attribute("lang", "zh-hans")
    expect(page.locator(".smtp-health-heading")).to_have_text("运行状况")
    expect(page.locator("label[for=id_host]")).to_contain_text("服务器地址")
    expect(page.locator("#provider-note")).to_contain_text("授权码")
    expect(page.locator(".field-password_status")).to_contain_text("已保存密码")

    page.fill("#id_password", "not-the-password")
    page.get_by_role("button", name="发送测试邮件").click()
    expect(result_heading(page)).to_contain_text("登录（AUTH）")
    expect(page.locator(".test-email-hint")).to_contain_text("请检查用户名和密码")
    screenshot(page, "settings-zh.png")


def test_microsoft_365_oauth2_set_up_and_tested_in_the_browser(
    admin_page, smtp_server_factory, smtp_pki, token_server
):
    from tests.tokenserver import CLIENT_ID, CLIENT_SECRET, TENANT_ID

    server = smtp_server_factory("starttls", xoauth2=token_server.accepts, auth_mechanisms=())
    page = admin_page
    page.goto(SETTINGS_URL)
    # The password method shows only its fields; a provider's own name for the password.
    expect(page.locator("#id_password")).to_be_visible()
    expect(page.locator("#id_tenant_id")).to_be_hidden()
    page.select_option("#id_provider", "qq")
    expect(page.locator("label[for=id_password]")).to_contain_text("授权码")

    # Office 365 selects OAuth2 and shows the tenant setup checklist.
    page.select_option("#id_provider", "office365")
    expect(page.locator("#id_auth_method")).to_have_value("microsoft-oauth2")
    checklist = page.locator("#provider-note ol.provider-checklist li")
    expect(checklist).to_have_count(6)
    expect(checklist.nth(3)).to_contain_text("New-ServicePrincipal")
    expect(page.locator("#id_password")).to_be_hidden()
    expect(page.locator("#id_service_account")).to_be_hidden()
    expect(page.locator("#id_client_secret")).to_be_visible()

    fill_server(page, server, smtp_pki)
    page.fill("#id_username", USERNAME)
    page.fill("#id_tenant_id", TENANT_ID)
    page.fill("#id_client_id", CLIENT_ID)
    page.fill("#id_client_secret", CLIENT_SECRET)
    page.fill("#id_token_url", token_server.microsoft_url)
    page.fill("#id_from_address", f"Site <{USERNAME}>")
    page.get_by_role("button", name="Test connection").click()
    expect(result_heading(page)).to_contain_text("Connected and signed in")
    expect(page.locator("#test-email-result")).to_contain_text("Access token (OAuth2)")
    assert server.messages == [] and token_server.requests == 1

    page.fill("#id_client_secret", CLIENT_SECRET)  # the test does not save; Save does
    page.click("input[name=_save]")
    expect(page.locator(".field-client_secret_status")).to_contain_text("A client secret is stored")
    expect(page.locator("#id_client_secret")).to_have_value("")
    assert CLIENT_SECRET not in page.content()
    record = SmtpSettings.load()
    assert record.auth_method == "microsoft-oauth2" and record.has_client_secret

    # Google shows the key instead of the Microsoft fields.
    page.select_option("#id_auth_method", "google-oauth2")
    expect(page.locator("#id_service_account")).to_be_visible()
    expect(page.locator("#id_client_secret")).to_be_hidden()
    expect(page.locator("#id_tenant_id")).to_be_hidden()
    screenshot(page, "oauth2-settings.png")


def test_a_failed_rows_page_retries_it_and_the_audit_trail_reads_as_words(
    admin_page, configure_smtp, plain_smtp_server
):
    configure_smtp(plain_smtp_server, batch=4)
    configure_smtp(plain_smtp_server, batch=2)
    plain_smtp_server.queue_replies("RCPT", "550 5.1.1 <gone@example.com>: no such user")
    [row] = notifications.notify(recipients="gone@example.com", subject="Welcome", body="Hello")
    services.deliver()

    page = admin_page
    page.goto(f"{LOG_URL}{row.pk}/change/")
    expect(page.locator(".field-status_label")).to_contain_text("failed")
    expect(page.locator("input[name=_save]")).to_have_count(0)
    expect(page.get_by_role("button", name="Cancel (if not sent yet)")).to_have_count(0)
    page.get_by_role("button", name="Retry now").click()
    expect(page.locator(".messagelist")).to_contain_text("1 notification queued to retry now.")
    expect(page.locator(".field-status_label")).to_contain_text("queued")
    expect(page.locator(".field-next_attempt_at")).to_be_visible()
    expect(page.get_by_role("button", name="Cancel (if not sent yet)")).to_be_visible()

    page.goto("/admin/notifications/settingschange/")
    latest = page.locator("#result_list tbody tr").first
    expect(latest.locator(".field-summary")).to_have_text("Batch: 4 → 2")
    expect(page.locator("#result_list")).not_to_contain_text("[4, 2]")


def in_view(page, selector: str) -> bool:
    """Whether the top of ``selector`` is inside the browser window."""
    return page.evaluate(
        """(s) => { const r = document.querySelector(s).getBoundingClientRect();
                    return r.top >= 0 && r.top < window.innerHeight; }""",
        selector,
    )


def test_the_test_result_comes_into_view_offers_to_save_and_counts_down_at_the_limit(
    admin_page, configure_smtp, plain_smtp_server, settings
):
    settings.NOTIFICATIONS = {**settings.NOTIFICATIONS, "TEST_EMAILS_PER_MINUTE": 2}
    configure_smtp(plain_smtp_server, batch=4)
    page = admin_page
    page.goto(SETTINGS_URL)
    # The test button sits in the Save row, beside Save.
    row = page.locator(".submit-row").last
    expect(row.locator("input[name=_save]")).to_be_visible()
    expect(row.locator("#test-email-button")).to_be_visible()

    # Unsaved values that pass: the result is scrolled into view, with "Save these settings".
    page.fill("#id_batch", "6")
    page.evaluate("window.scrollTo(0, 0)")
    send_test_email(page)
    expect(result_heading(page)).to_contain_text("Delivered to the server")
    assert in_view(page, "#test-email-result-heading")
    screenshot(page, "test-passed.png", element=".test-email-area")
    page.get_by_role("button", name="Save these settings").click()
    expect(page.locator(".messagelist")).to_contain_text("The SMTP settings were saved")
    assert SmtpSettings.load().batch == 6
    # The test was of exactly the values now saved: it is their state, not "unsaved values".
    expect(page.locator(".smtp-scratch-test")).to_have_count(0)

    # The second test of the minute passes; the third would not: a countdown, not a failure.
    send_test_email(page)
    expect(result_heading(page)).to_contain_text("Delivered to the server")
    expect(page.get_by_role("button", name="Save these settings")).to_have_count(0)  # saved
    send_test_email(page)
    button, status = page.locator("#test-email-button"), page.locator("#test-email-status")
    expect(button).to_be_disabled()
    expect(status).to_contain_text(re.compile(r"next test in \d+ s"))
    first = int(re.search(r"in (\d+) s", status.inner_text()).group(1))
    expect(status).not_to_contain_text(f"in {first} s", timeout=5_000)  # it counts
    # A reload does not give back a button that would fail.
    page.reload()
    expect(page.locator("#test-email-button")).to_be_disabled()
    expect(page.locator("#test-email-status")).to_contain_text("next test in")
    assert len(plain_smtp_server.messages) == 2


def test_the_dev_sink_in_auth_mode_shows_a_newcomer_the_bad_password_diagnosis(admin_page):
    from devsink import sink
    from devsink.models import ReceivedMessage
    from tests.loopback import free_port

    server = sink.controller(host="127.0.0.1", port=free_port(), auth=True)
    server.start()
    try:
        page = admin_page
        page.goto(SETTINGS_URL)
        page.select_option("#id_provider", "devsink")
        page.fill("#id_port", str(server.port))
        page.fill("#id_username", sink.USERNAME)
        page.fill("#id_password", "a-wrong-password")
        page.fill("#id_from_address", "Site <noreply@example.com>")
        page.locator("summary", has_text="Advanced security").click()
        page.check("#id_allow_plaintext_login")
        send_test_email(page)
        expect(result_heading(page)).to_contain_text("Failed at Login (AUTH)")
        expect(page.locator(".test-step-failed")).to_contain_text("535")
        expect(page.locator(".test-email-hint")).to_contain_text("Check the username and password.")
        assert not ReceivedMessage.objects.exists()

        page.fill("#id_password", sink.PASSWORD)
        send_test_email(page)
        expect(result_heading(page)).to_contain_text("Delivered to the server")
        [received] = ReceivedMessage.objects.all()
        assert received.rcpt_to == ["root@example.com"]
    finally:
        server.stop()


def test_a_host_typed_by_hand_turns_the_preset_to_custom_and_the_title_stays_the_saved_one(
    admin_page, configure_smtp, plain_smtp_server
):
    configure_smtp(plain_smtp_server)
    page = admin_page
    page.goto(SETTINGS_URL)
    title = f"127.0.0.1:{plain_smtp_server.port}, None (plaintext)"
    expect(page.locator("#content h2").first).to_have_text(title)
    page.select_option("#id_provider", "office365")
    expect(page.locator("#provider-note")).to_contain_text("Exchange Online")
    page.fill("#id_host", "mail.example.org")
    expect(page.locator("#id_provider")).to_have_value("custom")
    expect(page.locator("#provider-note")).to_be_hidden()
    # A failed save does not put the typed, invalid values into the page's title.
    page.fill("#id_batch", "0")
    page.click("input[name=_save]")
    expect(page.locator(".errornote").first).to_be_visible()
    expect(page.locator("#content h2").first).to_have_text(title)


def test_an_in_page_test_refreshes_the_panel_and_unsaved_values_are_told_apart(
    admin_page, configure_smtp, plain_smtp_server, closed_port
):
    stored = configure_smtp(plain_smtp_server)
    page = admin_page
    page.goto(SETTINGS_URL)
    page.evaluate("window.notReloaded = true")  # gone if the page reloads
    last_test = page.locator(".smtp-fact", has_text="Last test")
    expect(last_test).to_contain_text("No test email yet")
    server = f"127.0.0.1:{plain_smtp_server.port} None (plaintext), no login"

    # The saved settings, tested: the result names them, and the panel takes it as their state.
    send_test_email(page)
    expect(result_heading(page)).to_contain_text("Delivered to the server")
    expect(page.locator(".test-email-target")).to_have_text(
        f"Tested {server} — saved settings (version {stored.version})."
    )
    expect(last_test.locator(".smtp-last-test .smtp-good")).to_contain_text(
        "Delivered to the server"
    )
    expect(last_test).to_contain_text(f"Of the saved settings: {server}")

    # A port typed and tested, not saved: told as unsaved values, the saved state unchanged.
    page.fill("#id_port", str(closed_port))
    send_test_email(page)
    expect(result_heading(page)).to_contain_text("Failed at TCP connection")
    expect(page.locator(".test-email-target")).to_contain_text("— unsaved values.")
    scratch = last_test.locator(".smtp-scratch-test")
    expect(scratch).to_contain_text(
        f"Tested unsaved values: 127.0.0.1:{closed_port} None (plaintext), no login"
    )
    expect(scratch).to_contain_text("Failed at TCP connection")
    expect(scratch.locator(".smtp-bad")).to_be_visible()
    expect(last_test.locator(".smtp-last-test .smtp-good")).to_contain_text(
        "Delivered to the server"
    )
    # No reload: the typed value is still in the form, the page's state still there.
    expect(page.locator("#id_port")).to_have_value(str(closed_port))
    assert page.evaluate("window.notReloaded") is True


def test_paused_sending_is_not_shown_green(
    admin_page, configure_smtp, smtp_server_factory, smtp_pki
):
    server = smtp_server_factory("starttls")
    configure_smtp(server, pki=smtp_pki, username=USERNAME, password="wrong-password")
    notifications.notify(recipients="member@example.com", subject="Welcome", body="Hello")
    services.deliver()  # 535: a configuration failure pauses sending until a save
    assert SmtpSettings.load().paused_reason

    page = admin_page
    page.goto(SETTINGS_URL)
    panel = page.locator(".smtp-health")
    expect(panel.locator(".smtp-paused")).to_contain_text("Sending is paused:")
    expect(panel.locator(".smtp-paused")).to_contain_text("535")
    state = panel.locator(".smtp-fact", has_text="Settings").locator("dd > span").first
    expect(state).to_contain_text("Configured, sending paused")
    expect(state).to_have_class("smtp-bad")
    colour = state.evaluate("el => getComputedStyle(el).color")
    green = page.evaluate(
        """() => { const probe = document.createElement("span"); probe.className = "smtp-good";
                   document.querySelector(".smtp-health").append(probe);
                   return getComputedStyle(probe).color; }"""
    )
    assert colour != green
    expect(panel.locator(".smtp-fact", has_text="Settings")).not_to_contain_text("✓")
