"""Provider presets: the facts each one states, lookup by key and recognition by host name."""

from __future__ import annotations

import pytest

from notifications.providers import PROVIDERS, get_provider, provider_for_host


@pytest.mark.parametrize(
    ("key", "host", "port", "security"),
    [
        ("netease163", "smtp.163.com", 465, "ssl"),
        ("netease126", "smtp.126.com", 465, "ssl"),
        ("qq", "smtp.qq.com", 465, "ssl"),
        ("exmail", "smtp.exmail.qq.com", 465, "ssl"),
        ("aliyun", "smtp.qiye.aliyun.com", 465, "ssl"),
        ("office365", "smtp.office365.com", 587, "starttls"),
        ("gmail", "smtp.gmail.com", 587, "starttls"),
        ("ses", "email-smtp.us-east-1.amazonaws.com", 587, "starttls"),
        ("sendgrid", "smtp.sendgrid.net", 587, "starttls"),
        ("mailgun", "smtp.mailgun.org", 587, "starttls"),
        ("zoho", "smtp.zoho.com", 465, "ssl"),
        ("yahoo", "smtp.mail.yahoo.com", 465, "ssl"),
        ("devsink", "127.0.0.1", 8025, "none"),
        ("custom", "", 587, "starttls"),
    ],
)
def test_preset_has_the_documented_host_port_and_security(
    key: str, host: str, port: int, security: str
) -> None:
    provider = get_provider(key)

    assert provider is not None
    assert (provider.host, provider.port, provider.security) == (host, port, security)


def test_keys_are_unique_and_every_preset_is_well_formed() -> None:
    assert len({provider.key for provider in PROVIDERS}) == len(PROVIDERS)
    for provider in PROVIDERS:
        assert provider.security in {"ssl", "starttls", "none"}
        assert 1 <= provider.port <= 65535
        assert str(provider.name)


def test_every_real_provider_says_what_it_demands() -> None:
    for provider in PROVIDERS:
        if provider.key != "custom":
            assert str(provider.note), provider.key
    assert get_provider("custom").note == ""


@pytest.mark.parametrize(
    ("key", "phrase"),
    [
        ("netease163", "authorization code"),
        ("qq", "authorization code"),
        ("gmail", "app password"),
        ("office365", "OAuth2"),
        ("ses", "IAM access key"),
        ("sendgrid", '"apikey"'),
        ("mailgun", "smtp.eu.mailgun.org"),
        ("zoho", "application-specific password"),
        ("yahoo", "app password"),
        ("devsink", "admin"),
    ],
)
def test_note_names_the_providers_requirement(key: str, phrase: str) -> None:
    assert phrase in str(get_provider(key).note)


def test_unknown_key_has_no_preset() -> None:
    assert get_provider("no-such-provider") is None


@pytest.mark.parametrize(
    ("host", "key"),
    [
        ("smtp.163.com", "netease163"),
        ("SMTP.126.COM.", "netease126"),
        ("smtp.qq.com", "qq"),
        ("smtp.exmail.qq.com", "exmail"),  # the longer suffix wins over qq.com
        ("smtp.qiye.aliyun.com", "aliyun"),
        ("smtp-mail.outlook.com", "office365"),
        ("email-smtp.eu-west-1.amazonaws.com", "ses"),
        ("smtp.eu.mailgun.org", "mailgun"),
        ("smtp.zoho.eu", "zoho"),
    ],
)
def test_provider_is_recognised_from_its_host_name(host: str, key: str) -> None:
    provider = provider_for_host(host)

    assert provider is not None
    assert provider.key == key


@pytest.mark.parametrize("host", ["", "mail.example.com", "evil163.com", "127.0.0.1"])
def test_unrelated_hosts_match_no_provider(host: str) -> None:
    assert provider_for_host(host) is None
