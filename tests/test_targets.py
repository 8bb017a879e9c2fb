"""What a test ran against, as every report names it: server, security, sign-in, saved or not."""

from __future__ import annotations

import pytest
from django.utils import translation

from notifications.models import SmtpSettings, TestRun
from notifications.targets import Target

pytestmark = pytest.mark.django_db


def settings_record(**fields) -> SmtpSettings:
    values = {"host": "smtp.example.com", "port": 587, "security": "starttls", "version": 3}
    return SmtpSettings(**(values | fields))


def test_a_password_login_names_the_server_security_login_and_the_saved_version():
    record = settings_record(username="robot@example.com")
    target = Target.of(record.to_smtp_config(password="s3cret-pw"), saved=True)
    assert str(target) == "smtp.example.com:587 STARTTLS, password as robot@example.com"
    assert target.values == "saved settings (version 3)"
    assert "s3cret-pw" not in repr(target) + str(target.as_dict())


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ({}, "smtp.example.com:587 STARTTLS, no login"),
        (
            {"auth_method": "microsoft-oauth2", "username": "box@contoso.com", "tenant_id": "t"},
            "smtp.example.com:587 STARTTLS, Microsoft OAuth2 as box@contoso.com",
        ),
        (
            {"auth_method": "google-oauth2", "username": "box@example.com"},
            "smtp.example.com:587 STARTTLS, Google OAuth2 as box@example.com",
        ),
        (
            {"host": "2001:db8::25", "port": 25, "security": "none"},
            "[2001:db8::25]:25 None (plaintext), no login",
        ),
        ({"port": 465, "security": "ssl"}, "smtp.example.com:465 SSL/TLS, no login"),
    ],
)
def test_each_sign_in_method_and_security_reads_as_words(fields, expected):
    config = settings_record(**fields).to_smtp_config(password="")
    assert str(Target.of(config, saved=False)) == expected


def test_unsaved_values_say_so_and_in_chinese_too():
    target = Target.of(settings_record(username="robot@163.com").to_smtp_config(), saved=False)
    assert target.values == "unsaved values"
    with translation.override("zh-hans"):
        assert target.values == "未保存的值"
        assert str(target) == "smtp.example.com:587 STARTTLS，密码登录，账号 robot@163.com"


def test_a_stored_run_gives_back_its_target_and_an_older_run_none():
    record = settings_record(username="robot@example.com")
    target = Target.of(record.to_smtp_config(password=""), saved=True)
    run = TestRun.objects.create(recipient="a@example.com", ok=True, **target.as_dict())
    assert TestRun.objects.get(pk=run.pk).target == target
    assert Target.from_dict(run.report) is None
    older = TestRun.objects.create(recipient="a@example.com", ok=True)  # before targets
    assert older.target is None
