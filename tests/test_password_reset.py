"""Anonymous password-reset mail: throttled per address and per client, skipped while pending."""

from __future__ import annotations

import pytest
from django.test import Client, override_settings

from notifications.models import Notification, Status

pytestmark = pytest.mark.django_db

URL = "/admin/password_reset/"


@pytest.fixture(autouse=True)
def outbox_backend(settings):
    settings.EMAIL_BACKEND = "notifications.backends.OutboxEmailBackend"  # pytest-django's locmem


@pytest.fixture
def member(django_user_model):
    return django_user_model.objects.create_user("member", "member@example.com", "pw-for-tests")


def ask(email: str, *, client_ip: str = "203.0.113.7") -> int:
    return Client(REMOTE_ADDR=client_ip).post(URL, {"email": email}).status_code


def test_fifty_requests_for_one_address_make_one_row_while_it_is_pending(member):
    statuses = {ask("member@example.com", client_ip=f"198.51.100.{i}") for i in range(50)}
    assert statuses == {302}  # every visitor sees the usual "check your mail" page
    [row] = Notification.objects.all()
    assert row.recipient == "member@example.com"
    assert "/reset/" in row.body
    assert row.source == "password reset from 198.51.100.0"


@override_settings(NOTIFICATIONS={"PASSWORD_RESETS_PER_ADDRESS": 2})
def test_once_sent_another_may_follow_up_to_the_hourly_limit_per_address(member):
    for _ in range(4):
        ask("member@example.com", client_ip="198.51.100.1")
        Notification.objects.update(status=Status.SENT)
    assert Notification.objects.count() == 2


@override_settings(NOTIFICATIONS={"PASSWORD_RESETS_PER_CLIENT": 3})
def test_one_client_gets_a_few_an_hour_then_429(django_user_model):
    for i in range(5):
        django_user_model.objects.create_user(f"u{i}", f"u{i}@example.com", "pw-for-tests")
    assert [ask(f"u{i}@example.com") for i in range(3)] == [302, 302, 302]
    response = Client(REMOTE_ADDR="203.0.113.7").post(URL, {"email": "u3@example.com"})
    assert response.status_code == 429
    assert "Too many password-reset requests" in response.content.decode()
    assert ask("u4@example.com", client_ip="192.0.2.1") == 302  # another client is not held up
    assert sorted(Notification.objects.values_list("recipient", flat=True)) == [
        "u0@example.com",
        "u1@example.com",
        "u2@example.com",
        "u4@example.com",
    ]


def test_an_unknown_address_makes_nothing_and_looks_the_same(member):
    assert ask("nobody@example.com") == 302
    assert not Notification.objects.exists()


@override_settings(
    NOTIFICATIONS={"PASSWORD_RESETS_PER_CLIENT": 1, "CLIENT_IP_META_KEY": "HTTP_X_REAL_IP"}
)
def test_behind_a_proxy_the_client_is_the_address_the_proxy_names(django_user_model):
    for i in range(3):
        django_user_model.objects.create_user(f"u{i}", f"u{i}@example.com", "pw-for-tests")
    proxy = Client(REMOTE_ADDR="10.0.0.1")
    assert (
        proxy.post(URL, {"email": "u0@example.com"}, HTTP_X_REAL_IP="198.51.100.1").status_code
        == 302
    )
    assert (
        proxy.post(URL, {"email": "u1@example.com"}, HTTP_X_REAL_IP="198.51.100.2").status_code
        == 302
    )
    assert (
        proxy.post(URL, {"email": "u2@example.com"}, HTTP_X_REAL_IP="198.51.100.1").status_code
        == 429
    )
