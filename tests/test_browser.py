"""The administrator's flows in a real browser: presets, the write-only password, the log."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from playwright.sync_api import expect

from notifications.models import SmtpSettings

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

SCREENSHOTS = Path(__file__).resolve().parent.parent / "docs" / "screenshots"
SETTINGS_URL = "/admin/notifications/smtpsettings/1/change/"


def test_preset_fills_the_server_and_shows_the_provider_note_then_password_stays_hidden(
    admin_page,
):
    page = admin_page
    page.goto("/admin/")
    page.get_by_role("link", name="SMTP settings").first.click()
    expect(page).to_have_url(re.compile(r"/smtpsettings/1/change/$"))

    page.select_option("#id_provider", "netease163")
    expect(page.locator("#id_host")).to_have_value("smtp.163.com")
    expect(page.locator("#id_port")).to_have_value("465")
    expect(page.locator("#id_security")).to_have_value("ssl")
    expect(page.locator("#provider-note")).to_contain_text("authorization code")

    page.fill("#id_username", "robot@163.com")
    page.fill("#id_password", "browser-canary-secret")
    page.fill("#id_from_address", "站点通知 <robot@163.com>")
    page.click("input[name=_save]")
    expect(page.locator(".messagelist")).to_contain_text("was changed successfully")

    page.reload()
    expect(page.locator("#id_password")).to_have_value("")
    expect(page.locator(".field-password_status")).to_contain_text(
        re.compile(r"A password is stored, set on .+ by root")
    )
    assert "browser-canary-secret" not in page.content()
    assert SmtpSettings.load().get_password() == "browser-canary-secret"
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / "settings.png"), full_page=True)


def test_a_bad_value_is_explained_next_to_its_field(admin_page):
    page = admin_page
    page.goto(SETTINGS_URL)
    page.fill("#id_host", "smtp.example.com")
    page.fill("#id_port", "465")
    page.select_option("#id_security", "starttls")
    page.fill("#id_from_address", "robot@example.com")
    page.click("input[name=_save]")
    expect(page.locator(".errorlist")).to_contain_text("Port 465 expects implicit TLS")
