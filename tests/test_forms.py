"""Every validation rule of the settings form, with the bad input and the message a person sees."""

from __future__ import annotations

import pytest

from notifications.forms import SmtpSettingsForm
from notifications.models import SmtpSettings

pytestmark = pytest.mark.django_db

VALID = {
    "provider": "",
    "host": "smtp.example.com",
    "port": 587,
    "security": "starttls",
    "username": "robot@example.com",
    "password": "app-password",
    "from_address": "Robot <robot@example.com>",
    "timeout": 30,
    "batch": 4,
    "ca_pem": "",
}


def form_errors(**changes) -> dict[str, list[str]]:
    form = SmtpSettingsForm(data={**VALID, **changes}, instance=SmtpSettings.load())
    form.is_valid()
    return form.errors


def test_valid_settings_have_no_errors():
    assert form_errors() == {}


@pytest.mark.parametrize(
    "host",
    [
        "smtp example.com",
        "smtp.example.com\r\nRCPT TO:<x@y>",
        "-bad-.com",
        "smtp://smtp.example.com",
    ],
)
def test_bad_host_is_refused_with_the_fix(host):
    errors = form_errors(host=host)
    assert "host" in errors
    assert any(("smtp.example.com" in m) or ("line break" in m) for m in errors["host"])


@pytest.mark.parametrize(
    "host", ["smtp.example.com", "192.0.2.10", "::1", "localhost", "邮件.例子.中国"]
)
def test_host_names_and_ip_addresses_are_accepted(host):
    assert "host" not in form_errors(host=host)


@pytest.mark.parametrize("port", [0, 65536, -1])
def test_port_outside_1_to_65535_is_refused(port):
    assert "port" in form_errors(port=port)


def test_port_465_with_starttls_says_which_to_pick():
    errors = form_errors(port=465, security="starttls")
    assert errors["security"] == [
        "Port 465 expects implicit TLS, but Security is set to STARTTLS: choose SSL/TLS, or use "
        "port 587 for STARTTLS."
    ]


def test_port_587_with_ssl_says_which_to_pick():
    errors = form_errors(port=587, security="ssl")
    assert "Port 587 expects STARTTLS" in errors["security"][0]
    assert "port 465 for SSL/TLS" in errors["security"][0]


@pytest.mark.parametrize(
    "from_address",
    [
        "robot",
        "Robot <robot@>",
        "a@example.com, b@example.com",
        "Robot <robot@example.com",
        "Bad\nName <a@example.com>",
    ],
)
def test_bad_from_is_refused_with_the_expected_forms(from_address):
    errors = form_errors(from_address=from_address)
    assert "from_address" in errors
    assert any(
        "Display Name <name@example.com>" in m or "line break" in m for m in errors["from_address"]
    )


@pytest.mark.parametrize(
    "from_address",
    ["robot@example.com", "Robot <robot@example.com>", "通知中心 <robot@example.com>"],
)
def test_from_accepts_bare_address_and_display_names_including_non_ascii(from_address):
    assert "from_address" not in form_errors(from_address=from_address)


@pytest.mark.parametrize("batch", [0, 101])
def test_batch_outside_1_to_100_is_refused(batch):
    assert "batch" in form_errors(batch=batch)


@pytest.mark.parametrize("field", ["username", "password"])
@pytest.mark.parametrize("char", ["\r", "\n", "\0"])
def test_control_characters_are_refused(field, char):
    errors = form_errors(**{field: f"robot{char}x@example.com"})
    # Django's own check answers first for NUL ("Null characters are not allowed.").
    assert any(("line break or NUL" in m) or ("Null characters" in m) for m in errors[field])


def test_login_over_plaintext_is_refused_unless_allowed():
    errors = form_errors(port=25, security="none")
    assert "allow plaintext login" in errors["security"][0]
    assert "security" not in form_errors(port=25, security="none", allow_plaintext_login="on")


def test_username_without_any_password_asks_for_it():
    errors = form_errors(password="")
    assert errors["password"] == [
        "Enter the password (or authorization code) for robot@example.com."
    ]


def test_new_password_and_remove_together_are_refused():
    errors = form_errors(remove_password="on")
    assert "not both" in errors["remove_password"][0]


def test_invalid_ca_pem_says_what_to_paste():
    errors = form_errors(ca_pem="not a certificate")
    assert "BEGIN CERTIFICATE" in errors["ca_pem"][0]


def test_blank_password_keeps_stored_one_and_remove_clears_it():
    record = SmtpSettings.load()
    record.set_password("stored")
    record.save()
    keep = SmtpSettingsForm(data={**VALID, "password": ""}, instance=record)
    assert keep.is_valid(), keep.errors
    assert keep.new_password is None
    remove = SmtpSettingsForm(
        data={**VALID, "username": "", "password": "", "remove_password": "on"}, instance=record
    )
    assert remove.is_valid(), remove.errors
    assert remove.new_password == ""
