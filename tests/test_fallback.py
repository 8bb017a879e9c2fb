"""The fallback SMTP server in the send pipeline: when sessions fall over to it, when they do not,
and how they come back to the primary. Two real aiosmtpd servers each time; workers where cheap.
"""

from __future__ import annotations

import time
from datetime import timedelta

import pytest
from django.test import override_settings
from django.utils import timezone

from notifications import dashboard, health, services
from notifications.models import ConnectBackoff, Notification, Server, SmtpSettings, Status
from tests.loopback import wait_for
from tests.outbox import all_sent, statuses
from tests.smtpserver import PASSWORD, USERNAME
from tests.test_quota_dispatch import most_in_any_window, queue

PRIMARY, FALLBACK = SmtpSettings.PRIMARY_PK, SmtpSettings.FALLBACK_PK
FAST = {"SESSION_IDLE_SECONDS": 0.1}


def servers_of(rows: list[Notification]) -> list[str]:
    return [Notification.objects.get(pk=row.pk).server for row in rows]


@pytest.fixture
def two_servers(smtp_server_factory, configure_smtp):
    """(primary, fallback): plain aiosmtpd servers, the stored settings pointing at them."""
    primary, fallback = smtp_server_factory("none"), smtp_server_factory("none")
    configure_smtp(primary, batch=2)
    configure_smtp(fallback, fallback=True, from_address="Backup <backup@example.org>")
    return primary, fallback


pytestmark = pytest.mark.django_db


@override_settings(NOTIFICATIONS=FAST)
def test_without_trouble_everything_goes_through_the_primary(two_servers):
    primary, fallback = two_servers
    rows = queue(3)
    assert services.deliver() == 3
    assert len(primary.messages) == 3 and fallback.messages == []
    assert servers_of(rows) == [Server.PRIMARY] * 3


@override_settings(NOTIFICATIONS=FAST)
def test_a_primary_that_hangs_up_at_ehlo_falls_over_to_the_fallback_in_the_same_slot(two_servers):
    primary, fallback = two_servers
    primary.drop_at("EHLO")
    rows = queue(3)
    assert services.deliver() == 3
    assert len(fallback.messages) == 3 and primary.messages == []
    assert servers_of(rows) == [Server.FALLBACK] * 3
    # Sent with the fallback's own From, and no row charged for the primary's failure.
    assert {m.mail_from for m in fallback.messages} == {"backup@example.org"}
    assert set(Notification.objects.values_list("attempts", flat=True)) == {1}
    backoff = ConnectBackoff.objects.get(pk=PRIMARY)
    assert backoff.failures == 1 and backoff.since is not None
    assert not ConnectBackoff.objects.filter(pk=FALLBACK, failures__gt=0).exists()
    # While the primary is backed off, no session tries it: every one goes to the fallback.
    attempts = primary.state.total_sessions
    queue(2, prefix="later")
    assert services.deliver() == 2
    assert primary.state.total_sessions == attempts


@override_settings(NOTIFICATIONS=FAST)
def test_an_unreachable_primary_falls_over_and_the_panel_says_since_when(
    closed_port, plain_smtp_server, configure_smtp
):
    class Closed:
        port, mode = closed_port, "none"

    configure_smtp(Closed)
    configure_smtp(plain_smtp_server, fallback=True)
    rows = queue(2)
    assert services.deliver() == 2
    assert servers_of(rows) == [Server.FALLBACK] * 2
    state = dashboard.health(settings=SmtpSettings.load()).fallback
    assert state.active and "[connect]" in state.reason
    assert state.message.startswith("Using the fallback server since ")
    assert "[connect]" in state.message
    warnings = [w.message for w in dashboard.health(settings=SmtpSettings.load()).warnings]
    assert not any("could not be reached" in message for message in warnings)


@override_settings(NOTIFICATIONS=FAST)
def test_after_the_cool_down_one_probe_brings_sending_back_to_the_primary(two_servers):
    primary, fallback = two_servers
    primary.drop_at("EHLO")
    queue(2)
    services.deliver()
    primary.handler.drop_at.clear()  # the primary is back, but nobody knows yet
    back = queue(2, prefix="back")
    services.deliver()
    assert servers_of(back) == [Server.FALLBACK] * 2  # still cooling down
    ConnectBackoff.objects.filter(pk=PRIMARY).update(retry_at=timezone.now() - timedelta(seconds=1))
    sessions = primary.state.total_sessions
    again = queue(3, prefix="again")
    assert services.deliver() == 3
    assert servers_of(again) == [Server.PRIMARY] * 3
    assert primary.state.total_sessions == sessions + 1  # one probe, which carried them all
    assert len(fallback.messages) == 4
    assert not ConnectBackoff.objects.get(pk=PRIMARY).failures
    assert dashboard.health(settings=SmtpSettings.load()).fallback.message == (
        "Using the primary server."
    )


@override_settings(NOTIFICATIONS=FAST)
def test_a_drop_after_data_began_is_retried_on_the_primary_never_sent_by_the_fallback(
    two_servers,
):
    primary, fallback = two_servers
    primary.drop_at("DATA")  # the whole message was sent; no reply: the primary may have it
    [row] = queue(1)
    assert services.deliver() == 0
    row.refresh_from_db()
    assert (row.status, row.attempts) == (Status.QUEUED, 1) and "[data]" in row.last_error
    assert fallback.messages == [] and fallback.state.total_sessions == 0
    assert not ConnectBackoff.objects.filter(failures__gt=0).exists()
    primary.handler.drop_at.clear()
    Notification.objects.update(next_attempt_at=timezone.now())
    assert services.deliver() == 1
    row.refresh_from_db()
    assert (row.status, row.server) == (Status.SENT, Server.PRIMARY)
    assert fallback.state.total_sessions == 0


@override_settings(NOTIFICATIONS=FAST)
def test_a_5xx_refusal_of_the_message_fails_it_without_trying_the_fallback(two_servers):
    primary, fallback = two_servers
    primary.queue_replies("RCPT", "550 5.1.1 no such user")
    refused, fine = queue(2)
    assert services.deliver() == 1
    refused.refresh_from_db()
    fine.refresh_from_db()
    assert (refused.status, refused.server) == (Status.FAILED, "")
    assert (fine.status, fine.server) == (Status.SENT, Server.PRIMARY)
    assert fallback.state.total_sessions == 0


@override_settings(NOTIFICATIONS=FAST)
def test_a_throttling_reply_before_data_sends_the_message_through_the_fallback(two_servers):
    primary, fallback = two_servers
    primary.queue_replies("MAIL", "451 4.7.500 Server busy. Please try again later")
    [row] = queue(1)
    assert services.deliver() == 1
    row.refresh_from_db()
    assert (row.status, row.server, row.attempts) == (Status.SENT, Server.FALLBACK, 1)
    assert len(fallback.messages) == 1 and primary.messages == []
    backoff = ConnectBackoff.objects.get(pk=PRIMARY)
    assert backoff.throttled and "Server busy" in backoff.reason
    state = dashboard.health(settings=SmtpSettings.load()).fallback
    assert state.active and "Server busy" in state.message


@override_settings(NOTIFICATIONS=FAST)
def test_a_refused_login_on_the_primary_pauses_only_it_and_the_fallback_sends(
    smtp_server_factory, configure_smtp
):
    primary, fallback = smtp_server_factory("none"), smtp_server_factory("none")
    record = configure_smtp(primary, username=USERNAME, password="wrong")
    configure_smtp(fallback, fallback=True)
    rows = queue(2)
    assert services.deliver() == 2
    assert servers_of(rows) == [Server.FALLBACK] * 2
    record.refresh_from_db()
    assert "[auth]" in record.paused_reason
    assert len(primary.state.credentials) == 1  # no retry storm against the mailbox
    panel = dashboard.health(settings=record)
    assert not panel.paused and panel.fallback.active and panel.fallback.primary_paused
    assert "save them to return" in panel.fallback.message
    assert health.report()["sending_paused"] is False
    queue(1, prefix="more")
    assert services.deliver() == 1
    assert len(primary.state.credentials) == 1  # paused: not even a probe
    services.save_settings(record, new_password=PASSWORD, source="test")
    last = queue(1, prefix="fixed")
    assert services.deliver() == 1
    assert servers_of(last) == [Server.PRIMARY]


@override_settings(NOTIFICATIONS=FAST)
def test_a_refused_login_on_the_fallback_pauses_only_the_fallback(
    smtp_server_factory, configure_smtp
):
    primary, fallback = smtp_server_factory("none"), smtp_server_factory("none")
    configure_smtp(primary)
    configure_smtp(fallback, fallback=True, username=USERNAME, password="wrong")
    primary.drop_at("EHLO")
    [row] = queue(1)
    assert services.deliver() == 0
    assert "[auth]" in SmtpSettings.load_fallback().paused_reason
    assert SmtpSettings.load().paused_reason == ""  # the primary is only backed off
    panel = dashboard.health(settings=SmtpSettings.load())
    assert not panel.fallback.active and "[auth]" in panel.fallback.problem
    assert panel.fallback.message.startswith("The primary server fails (")
    primary.handler.drop_at.clear()
    ConnectBackoff.objects.filter(pk=PRIMARY).update(retry_at=timezone.now())
    assert services.deliver() == 1
    assert servers_of([row]) == [Server.PRIMARY]


@override_settings(
    NOTIFICATIONS={
        **FAST,
        "RATE_WINDOW_SECONDS": {"minute": 1, "hour": 3600, "day": 86400},
        "RATE_WAIT_IN_SESSION_SECONDS": 5,
    }
)
def test_the_primarys_rate_limit_caps_the_fallback_too(two_servers, configure_smtp):
    primary, fallback = two_servers
    configure_smtp(primary, batch=2, rate_per_minute=3)
    primary.drop_at("EHLO")
    queue(7)
    while Notification.objects.filter(status=Status.QUEUED).exists():
        services.deliver()
        ConnectBackoff.objects.filter(pk=PRIMARY).update(retry_at=timezone.now() + timedelta(1))
    times = [message.received_at for message in fallback.messages]
    assert len(times) == 7
    assert most_in_any_window(times, 0.9) == 3


@pytest.mark.django_db(transaction=True)
def test_two_workers_fall_over_with_one_probe_per_cool_down_and_come_back(
    smtp_server_factory, configure_smtp, celery_worker_factory
):
    """Primary down: the fallback carries a burst, the primary is dialled once per back-off, not
    once per session; primary back: the next probe returns every worker to it."""
    primary, fallback = smtp_server_factory("none"), smtp_server_factory("none")
    configure_smtp(primary, batch=3, messages_per_connection=2)
    configure_smtp(fallback, fallback=True, messages_per_connection=2)
    primary.drop_at("EHLO")
    knobs = {**FAST, "CONNECT_BACKOFF_SECONDS": 1, "CONNECT_BACKOFF_MAX_SECONDS": 1}
    celery_worker_factory(concurrency=3, notifications=knobs)
    celery_worker_factory(concurrency=3, notifications=knobs)
    started = time.monotonic()
    queue(30, prefix="down")
    wait_for(lambda: all_sent(30), timeout=60, what=f"30 sent by the fallback, now {statuses()}")
    elapsed = time.monotonic() - started
    assert set(Notification.objects.values_list("server", flat=True)) == {Server.FALLBACK}
    # 15 sessions at the least (2 messages each): the primary saw a probe per back-off (>= 0.8 s
    # each) and the first race of Batch, not one attempt per session.
    assert fallback.state.total_sessions >= 15
    assert fallback.state.peak_sessions <= 3  # the primary's Batch caps the fallback too
    print(
        f"\nprimary down: 30 sent by the fallback in {elapsed:.1f} s over "
        f"{fallback.state.total_sessions} sessions; {primary.state.total_sessions} attempts at "
        "the primary"
    )
    assert primary.state.total_sessions <= 3 + elapsed / 0.8
    primary.handler.drop_at.clear()
    time.sleep(1.5)  # the cool-down ends; the next session to start is the probe
    queue(30, prefix="up")
    wait_for(lambda: all_sent(60), timeout=60, what=f"30 more sent, now {statuses()}")
    up = Notification.objects.filter(recipient__startswith="up")
    on_primary = up.filter(server=Server.PRIMARY).count()
    print(f"\nafter the primary came back: {on_primary} of 30 sent by the primary")
    assert on_primary >= 26  # at most the sessions already open on the fallback finish there
    assert not ConnectBackoff.objects.get(pk=PRIMARY).failures


@override_settings(NOTIFICATIONS=FAST)
def test_a_session_on_the_fallback_ends_once_the_primary_is_usable_again(two_servers):
    from notifications.services import drain, leases
    from notifications.smtp import open_session

    primary, fallback = two_servers
    leases.connect_failed("[connect] refused")
    record, main = SmtpSettings.load_fallback(), SmtpSettings.load()
    config = record.to_smtp_config()
    with open_session(config) as session:
        session_drain = drain.Drain(session, config, record, main, 1, "token", time.monotonic() + 9)

        def current() -> bool:  # a check that takes a new reading of the settings
            return session_drain._settings_current(time.monotonic())

        assert current()  # the primary is backed off: stay
        leases.connect_succeeded()  # a probe got through
        assert not current()
        services.pause(main.version, "[auth] 535")
        assert current()  # paused: the fallback goes on
        services.pause(record.version, "[auth] 535", server=FALLBACK)
        assert not current()  # its own pause ends it
    assert fallback.state.total_sessions == 1 and primary.state.total_sessions == 0
