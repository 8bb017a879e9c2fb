"""Provider quotas in the send pipeline: rate limits, throttling replies, messages per connection.

Rates are measured at the server, by the time each message arrived. Windows are shortened here
(RATE_WINDOW_SECONDS) so the suite stays fast; production counts real minutes, hours and days.
"""

from __future__ import annotations

import io
import time
from datetime import timedelta

import pytest
from django.core.management import CommandError, call_command
from django.db import transaction
from django.test import override_settings
from django.urls import reverse
from django.utils import timezone

import notifications
from notifications import dashboard, quotas, services
from notifications.models import (
    ConnectBackoff,
    Notification,
    RateHold,
    SendReservation,
    SettingsChange,
    SmtpSettings,
    Status,
)
from notifications.services import leases
from tests.loopback import wait_for
from tests.outbox import all_sent, statuses

CHANGE_URL = reverse("admin:notifications_smtpsettings_change", args=[1])
FAST = {
    "SESSION_IDLE_SECONDS": 0.1,
    "RATE_WINDOW_SECONDS": {"minute": 1, "hour": 3600, "day": 86400},
}


def most_in_any_window(times: list[float], window: float) -> int:
    """The most arrivals inside any half-open interval of ``window`` seconds."""
    times = sorted(times)
    most, start = 0, 0
    for end, arrived in enumerate(times):
        while arrived - times[start] >= window:
            start += 1
        most = max(most, end - start + 1)
    return most


def queue(count: int, prefix: str = "user") -> list[Notification]:
    with transaction.atomic():
        return [
            row
            for n in range(count)
            for row in notifications.notify(
                recipients=f"{prefix}{n}@example.com", subject="s", body="b"
            )
        ]


@pytest.mark.django_db
@override_settings(NOTIFICATIONS=FAST)
def test_a_session_closes_after_messages_per_connection(plain_smtp_server, configure_smtp):
    configure_smtp(plain_smtp_server, batch=1, messages_per_connection=10)
    queue(25)
    while services.deliver():
        pass
    assert len(plain_smtp_server.messages) == 25
    assert plain_smtp_server.state.total_sessions == 3


@pytest.mark.django_db
@override_settings(NOTIFICATIONS={**FAST, "RATE_WAIT_IN_SESSION_SECONDS": 5})
def test_the_rate_limit_holds_at_the_server_and_charges_nothing(plain_smtp_server, configure_smtp):
    configure_smtp(plain_smtp_server, batch=1, rate_per_minute=3)
    rows = queue(8)
    started = time.monotonic()
    while Notification.objects.filter(status=Status.QUEUED).exists():
        services.deliver()
    times = [message.received_at for message in plain_smtp_server.messages]
    assert len(times) == 8
    # At most 3 in any window (a little shorter than 1 s: arrival trails the reservation).
    assert most_in_any_window(times, 0.9) == 3
    assert time.monotonic() - started >= 2  # 8 messages at 3 a second need two windows more
    assert {row.attempts for row in Notification.objects.filter(pk__in=[r.pk for r in rows])} == {1}


@pytest.mark.django_db
@override_settings(
    NOTIFICATIONS={
        **FAST,
        "LEASE_SECONDS": 3,  # a send may take 1 s; the leases are renewed every 0.75 s
        "RATE_WAIT_IN_SESSION_SECONDS": 5,
        "RATE_WINDOW_SECONDS": {"minute": 2.5, "hour": 3600, "day": 86400},
    }
)
def test_a_wait_for_the_rate_window_renews_the_leases_before_the_next_start(
    plain_smtp_server, configure_smtp, caplog
):
    # Each row waits 2.5 s for the window, longer than its lease leaves for a send after it.
    configure_smtp(plain_smtp_server, batch=1, rate_per_minute=1)
    queue(3)
    assert services.deliver() == 3  # one session, every row sent in it
    assert "claim lost" not in caplog.text
    assert set(Notification.objects.values_list("attempts", flat=True)) == {1}


@pytest.mark.django_db
@override_settings(NOTIFICATIONS={**FAST, "RATE_WAIT_IN_SESSION_SECONDS": 0})
def test_a_full_window_ends_the_session_and_notes_when_to_drain_again(
    plain_smtp_server, configure_smtp
):
    configure_smtp(plain_smtp_server, batch=1, rate_per_minute=2)
    queue(3)
    assert services.deliver() == 2
    hold = RateHold.objects.get()
    assert hold.wake_at is not None and hold.wake_at > timezone.now()
    assert Notification.objects.filter(status=Status.QUEUED, attempts=0).count() == 1
    # Until the window opens, a drain opens no connection at all.
    sessions = plain_smtp_server.state.total_sessions
    assert services.deliver() == 0
    assert plain_smtp_server.state.total_sessions == sessions
    time.sleep((hold.wake_at - timezone.now()).total_seconds() + 0.05)
    assert services.deliver() == 1


@pytest.mark.django_db
@override_settings(NOTIFICATIONS=FAST)
def test_a_refusal_before_data_gives_its_place_in_the_window_back(
    plain_smtp_server, configure_smtp
):
    configure_smtp(plain_smtp_server, batch=1, rate_per_minute=1)
    plain_smtp_server.queue_replies("RCPT", "550 5.1.1 no such user")
    rejected, delivered = queue(2)
    assert services.deliver() == 1
    rejected.refresh_from_db()
    delivered.refresh_from_db()
    assert (rejected.status, delivered.status) == (Status.FAILED, Status.SENT)
    assert SendReservation.objects.count() == 1


@pytest.mark.django_db
@override_settings(NOTIFICATIONS=FAST)
@pytest.mark.parametrize(
    ("command", "reply"),
    [
        ("MAIL", "451 4.7.500 Server busy. Please try again later from [127.0.0.1]"),
        ("RCPT", "421 4.7.0 Try again later, closing connection."),
        ("DATA", "554 5.2.0 STOREDRV.Submission.Exception:SubmissionQuotaExceededException"),
    ],
)
def test_a_throttling_reply_backs_every_worker_off_and_charges_no_message(
    plain_smtp_server, configure_smtp, command, reply
):
    configure_smtp(plain_smtp_server, batch=2)
    plain_smtp_server.queue_replies(command, reply)
    [row] = queue(1)
    assert services.deliver() == 0
    row.refresh_from_db()
    assert (row.status, row.attempts) == (Status.QUEUED, 0)
    backoff = ConnectBackoff.objects.get()
    assert backoff.throttled and backoff.failures == 1
    assert backoff.retry_at > timezone.now()
    assert reply.split(" ", 1)[1] in backoff.reason  # the server's own words
    # One back-off: no worker connects again before it ends.
    sessions = plain_smtp_server.state.total_sessions
    assert services.deliver() == 0
    assert plain_smtp_server.state.total_sessions == sessions
    ConnectBackoff.objects.update(retry_at=timezone.now() - timedelta(seconds=1))
    assert services.deliver() == 1
    row.refresh_from_db()
    assert (row.status, row.attempts) == (Status.SENT, 1)
    assert not ConnectBackoff.objects.get().failures  # a success ends the back-off


@pytest.mark.django_db
@override_settings(NOTIFICATIONS={**FAST, "THROTTLE_DAILY_SECONDS": 600})
def test_a_daily_quota_reply_waits_instead_of_failing(plain_smtp_server, configure_smtp):
    configure_smtp(plain_smtp_server, batch=1)
    plain_smtp_server.queue_replies("MAIL", "550 5.4.5 Daily sending quota exceeded.")
    rows = queue(3)
    assert services.deliver() == 0
    assert not Notification.objects.filter(status=Status.FAILED).exists()
    assert {r.attempts for r in Notification.objects.filter(pk__in=[r.pk for r in rows])} == {0}
    wait = (ConnectBackoff.objects.get().retry_at - timezone.now()).total_seconds()
    assert 590 <= wait <= 601


@pytest.mark.django_db(transaction=True)
def test_two_workers_keep_to_the_rate_and_wake_when_the_window_opens(
    smtp_server_factory, configure_smtp, celery_worker_factory
):
    """No beat, and sessions never wait in place: only the drain requested for the moment the
    window opens can carry the burst on."""
    server = smtp_server_factory("none")
    configure_smtp(server, batch=3, rate_per_minute=5)
    knobs = {**FAST, "RATE_WINDOW_SECONDS": {"minute": 2, "hour": 3600, "day": 86400}}
    knobs["RATE_WAIT_IN_SESSION_SECONDS"] = 0
    celery_worker_factory(concurrency=3, notifications=knobs)
    celery_worker_factory(concurrency=3, notifications=knobs)
    started = time.monotonic()
    queue(20, prefix="rate")
    wait_for(lambda: all_sent(20), timeout=90, what=f"20 sent at 5 per 2 s, now {statuses()}")
    elapsed = time.monotonic() - started
    times = [message.received_at for message in server.messages]
    assert len(times) == 20
    assert most_in_any_window(times, 1.8) <= 5
    assert elapsed >= 6  # four windows of 2 s at the least
    assert set(Notification.objects.values_list("attempts", flat=True)) == {1}
    # A session per window or so, not a connection per worker per poll.
    assert server.state.total_sessions <= 20
    rate = 20 / elapsed
    print(f"\n20 messages at most 5 per 2 s by 2 workers: {rate:.2f} msg/s, limit 2.5 msg/s")


# --- where an administrator sets the limits and sees them work ----------------------------------


def run_settings(*args: str) -> str:
    out = io.StringIO()
    call_command("smtp_settings", *args, stdout=out)
    return out.getvalue()


@pytest.mark.django_db
def test_presets_fill_the_published_limits_and_flags_override_them():
    output = run_settings(
        "--preset",
        "office365",
        "--from",
        "a@example.com",
        "--auth-method",
        "password",
        "--username",
        "",
    )
    record = SmtpSettings.load()
    assert (record.rate_per_minute, record.rate_per_hour, record.rate_per_day) == (30, 0, 10_000)
    assert "30/minute, 10000/day" in output
    run_settings(
        "--rate-per-minute", "0", "--rate-per-hour", "500", "--messages-per-connection", "20"
    )
    record.refresh_from_db()
    assert (record.rate_per_minute, record.rate_per_hour, record.rate_per_day) == (0, 500, 10_000)
    assert record.messages_per_connection == 20
    change = SettingsChange.objects.latest("version")
    assert change.changes["rate_per_hour"] == [0, 500]


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("flag", "value"),
    [
        ("--rate-per-minute", "-1"),
        ("--rate-per-day", "99999999999"),
        ("--messages-per-connection", "0"),
        ("--messages-per-connection", "-5"),
        ("--rate-per-hour", "10000001"),
    ],
)
def test_negative_zero_and_absurd_limits_are_refused_by_their_flag(flag, value):
    run_settings("--host", "smtp.example.com", "--from", "a@example.com")
    with pytest.raises(CommandError) as refused:
        run_settings(flag, value)
    assert flag in str(refused.value)
    assert SmtpSettings.load().version == 1  # nothing saved


@pytest.mark.django_db
def test_the_form_refuses_a_negative_limit(admin_client):
    page = admin_client.get(CHANGE_URL)
    assert page.status_code == 200
    assert "Provider limits" in page.content.decode()
    form = page.context["adminform"].form
    data = {name: value for name, value in form.initial.items() if value is not None}
    data.update({"host": "smtp.example.com", "from_address": "a@example.com", "rate_per_day": -3})
    response = admin_client.post(CHANGE_URL, data)
    assert response.status_code == 200
    assert response.context["adminform"].form.errors["rate_per_day"]
    assert SmtpSettings.load().rate_per_day == 0


@pytest.mark.django_db
@override_settings(NOTIFICATIONS=FAST)
def test_the_health_panel_shows_the_day_count_the_rate_wait_and_a_throttle(
    configure_smtp, plain_smtp_server
):
    record = configure_smtp(plain_smtp_server, rate_per_minute=2, rate_per_day=2_000)
    quotas.reserve(quotas.limits_of(record))
    quotas.reserve(quotas.limits_of(record))
    panel = dashboard.health(settings=SmtpSettings.load())
    assert panel.daily_quota == dashboard.DailyQuota(used=2, limit=2_000)
    messages = [warning.message for warning in panel.warnings]
    assert any(message.startswith("Rate limited: the next send is at ") for message in messages)

    leases.connect_failed("451 4.7.500 Server busy", throttled=True)
    messages = [warning.message for warning in dashboard.health(settings=record).warnings]
    assert any(
        message.startswith("Throttled by the provider until ")
        and "“451 4.7.500 Server busy”" in message
        for message in messages
    )


@pytest.mark.browser
@pytest.mark.django_db(transaction=True)
def test_a_preset_fills_its_published_limits_in_the_browser_and_they_are_saved(admin_page):
    from playwright.sync_api import expect

    page = admin_page
    page.goto(CHANGE_URL)
    page.select_option("#id_provider", "gmail")
    expect(page.locator("#id_rate_per_day")).to_have_value("2000")
    expect(page.locator("#id_rate_per_minute")).to_have_value("0")
    expect(page.locator("#provider-note")).to_contain_text("2,000 messages a day per user")
    page.select_option("#id_provider", "office365")
    expect(page.locator("#id_rate_per_minute")).to_have_value("30")
    expect(page.locator("#id_rate_per_day")).to_have_value("10000")
    page.select_option("#id_auth_method", "password")
    page.fill("#id_username", "")
    page.fill("#id_from_address", "Site <noreply@example.com>")
    page.fill("#id_rate_per_day", "500")  # the administrator's own figure wins
    page.click("input[name=_save]")
    expect(page.locator(".messagelist")).to_be_visible()
    record = SmtpSettings.load()
    assert (record.rate_per_minute, record.rate_per_day) == (30, 500)
