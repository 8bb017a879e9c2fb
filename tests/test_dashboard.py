"""The health panel: numbers from the outbox, test runs and heartbeats, warnings, the test list."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace

import pytest
from django.contrib.auth.models import Permission
from django.test import Client
from django.urls import reverse
from django.utils import timezone

import notifications
from notifications import dashboard, services
from notifications.models import (
    ConnectBackoff,
    Notification,
    SmtpSettings,
    Status,
    TestRun,
    WorkerHeartbeat,
)
from notifications.targets import Target
from tests.smtpserver import PASSWORD, USERNAME

pytestmark = pytest.mark.django_db

CHANGE_URL = reverse("admin:notifications_smtpsettings_change", args=[1])
HEALTH_URL = reverse("admin:notifications_smtpsettings_health", args=[1])
TEST_URL = reverse("admin:notifications_smtpsettings_test_email", args=[1])
NOW = datetime(2026, 3, 10, 12, 40, tzinfo=UTC)


def make_rows(count: int, **fields) -> list[Notification]:
    """``count`` rows stored through notify(), then moved to the given state."""
    rows = notifications.notify(
        recipients=[f"user{i}@example.com" for i in range(count)], subject="s", body="b"
    )
    Notification.objects.filter(pk__in=[row.pk for row in rows]).update(**fields)
    return rows


def stored_settings(**fields) -> SmtpSettings:
    record = SmtpSettings.load()
    values = {"host": "smtp.example.com", "port": 587, "security": "starttls"}
    values |= {"from_address": "Site <noreply@example.com>", **fields}
    for name, value in values.items():
        setattr(record, name, value)
    record.save()
    return record


def warning_texts(record: SmtpSettings, *, now: datetime = NOW, alive: int = 1) -> list[str]:
    workers = dashboard.Workers(alive=alive, last_seen=now)
    return [w.message for w in dashboard.warnings(settings=record, workers=workers, now=now)]


# --- the chart ------------------------------------------------------------------------------------


def test_chart_counts_sent_at_their_send_hour_and_failed_at_their_creation_hour():
    make_rows(3, status=Status.SENT, sent_at=NOW - timedelta(minutes=30))  # 12:10, this hour
    make_rows(1, status=Status.SENT, sent_at=NOW - timedelta(hours=2))  # 10:40
    make_rows(2, status=Status.FAILED, created_at=NOW - timedelta(hours=2, minutes=50))  # 09:50
    make_rows(4, status=Status.QUEUED, created_at=NOW)  # waiting: not in the chart

    chart = dashboard.hourly_chart(now=NOW)

    assert len(chart.hours) == 24
    assert chart.hours[-1].start == datetime(2026, 3, 10, 12, tzinfo=UTC)
    assert chart.hours[0].start == datetime(2026, 3, 9, 13, tzinfo=UTC)
    by_hour = {hour.start.hour: (hour.sent, hour.failed) for hour in chart.hours}
    assert by_hour[12] == (3, 0) and by_hour[10] == (1, 0) and by_hour[9] == (0, 2)
    assert (chart.sent, chart.failed) == (4, 2)


def test_chart_leaves_out_rows_older_than_24_hours():
    make_rows(1, status=Status.SENT, sent_at=NOW - timedelta(hours=23, minutes=30))  # 13:10
    make_rows(1, status=Status.SENT, sent_at=NOW - timedelta(hours=24, minutes=50))  # 11:50
    make_rows(1, status=Status.FAILED, created_at=NOW - timedelta(days=2))
    chart = dashboard.hourly_chart(now=NOW)
    assert (chart.sent, chart.failed) == (1, 0)
    assert chart.hours[0].sent == 1


def test_chart_hours_follow_the_active_time_zone_even_half_an_hour_off_utc():
    make_rows(1, status=Status.SENT, sent_at=datetime(2026, 3, 10, 12, 10, tzinfo=UTC))  # 17:40
    make_rows(1, status=Status.SENT, sent_at=datetime(2026, 3, 10, 12, 35, tzinfo=UTC))  # 18:05
    with timezone.override("Asia/Kolkata"):  # UTC+5:30
        chart = dashboard.hourly_chart(now=NOW)  # 18:10 in Kolkata
        local = [(timezone.localtime(h.start).strftime("%H:%M"), h.sent) for h in chart.hours]
    assert local[-2:] == [("17:00", 1), ("18:00", 1)]


def test_bars_scale_to_the_busiest_hour_and_a_lone_failure_stays_visible():
    hours = [dashboard.Hour(NOW, sent=300), dashboard.Hour(NOW, sent=0, failed=1)]
    busy, quiet = dashboard.Chart(tuple(hours)).bars()
    assert busy.sent_height == dashboard.BAR_AREA_HEIGHT and busy.sent_y == 0
    assert quiet.sent_height == 0 and quiet.failed_height == 2
    assert quiet.failed_y == dashboard.BAR_AREA_HEIGHT - 2
    assert quiet.x == dashboard.BAR_WIDTH + dashboard.BAR_GAP


# --- outbox, workers, tests -----------------------------------------------------------------------


def test_outbox_summary_counts_the_queue_its_oldest_row_the_last_send_and_the_last_error():
    make_rows(2, status=Status.QUEUED, created_at=NOW - timedelta(minutes=5))
    make_rows(1, status=Status.QUEUED, created_at=NOW - timedelta(minutes=40))
    make_rows(1, status=Status.SENDING, created_at=NOW - timedelta(hours=3))
    make_rows(1, status=Status.SENT, sent_at=NOW - timedelta(minutes=7))
    make_rows(1, status=Status.SENT, sent_at=NOW - timedelta(hours=1))
    make_rows(1, status=Status.FAILED, last_error="[rcpt] 550 old", created_at=NOW - timedelta(1))
    [latest] = make_rows(1, status=Status.FAILED, last_error="[rcpt] 550 no such user")

    outbox = dashboard.outbox_summary()

    assert outbox.waiting == 4
    assert outbox.oldest_queued_at == NOW - timedelta(minutes=40)  # "sending" is not queued
    assert outbox.last_sent_at == NOW - timedelta(minutes=7)
    assert outbox.last_error.pk == latest.pk


def test_worker_summary_counts_live_workers_and_the_latest_heartbeat():
    started = timezone.now() - timedelta(hours=1)
    services.record_heartbeat(name="celery@a", started_at=started, concurrency=4)
    services.record_heartbeat(name="celery@gone", started_at=started, concurrency=4)
    gone_at = timezone.now() - timedelta(hours=2)
    WorkerHeartbeat.objects.filter(name="celery@gone").update(last_seen=gone_at)
    workers = dashboard.worker_summary()
    assert workers.alive == 1
    assert workers.last_seen > gone_at


def test_health_needs_only_a_few_queries(django_assert_max_num_queries):
    make_rows(2, status=Status.SENT, sent_at=timezone.now())
    record = stored_settings()
    record_run(record, ok=True)
    record_run(record, ok=False, saved=False)
    ConnectBackoff.objects.create(
        pk=SmtpSettings.PRIMARY_PK, failures=1, retry_at=NOW, reason="[connect] refused"
    )
    with django_assert_max_num_queries(
        8
    ):  # the back-off read once, both tests in one query, the fallback
        health = dashboard.health(settings=record)
    assert health.chart.sent == 2 and health.last_test.ok and not health.scratch_test.ok
    assert health.state.tone == "warn" and "host" in [w.field for w in health.warnings]


def record_run(record: SmtpSettings, *, ok: bool, saved: bool = True, **fields) -> TestRun:
    """A run as diagnosis.run_test records it, of ``record`` (its values saved or not)."""
    target = Target.of(record.to_smtp_config(password=""), saved=saved)
    values = {"recipient": "a@example.com", "ok": ok, "summary": "Failed at Login (AUTH): x."}
    return TestRun.objects.create(**target.as_dict(), **(values | fields))


def test_the_last_test_is_the_saved_settings_and_a_later_scratch_test_is_kept_apart():
    record = stored_settings()
    earlier_scratch = record_run(record, ok=True, saved=False, created_at=NOW - timedelta(1))
    saved = record_run(record, ok=True, created_at=NOW - timedelta(hours=1))
    assert dashboard.latest_tests() == (saved, None)  # the scratch test came before: nothing new
    scratch = record_run(record, ok=False, saved=False, created_at=NOW)
    assert dashboard.latest_tests() == (saved, scratch)
    earlier_scratch.delete()
    saved.delete()
    assert dashboard.latest_tests() == (None, scratch)


def test_a_test_of_an_earlier_version_is_not_the_current_settings_state(configure_smtp):
    record = stored_settings()
    record_run(record, ok=True)
    assert dashboard.health(settings=record).last_test_is_current
    services.save_settings(SmtpSettings.load(), new_password=None, source="test")  # version + 1
    health = dashboard.health(settings=SmtpSettings.load())
    assert health.last_test.ok and not health.last_test_is_current


def test_the_settings_state_is_green_only_when_nothing_holds_sending_back():
    state = dashboard.sending_state
    assert state(SmtpSettings.load(), None).tone == "bad"  # not configured
    record = stored_settings()
    assert state(record, None) == dashboard.SendingState(
        "good", "Configured", "smtp.example.com:587"
    )
    unreachable = ConnectBackoff(failures=3, retry_at=NOW, reason="[connect] refused")
    assert state(record, unreachable).tone == "warn"
    assert state(record, unreachable).label == "Configured, server out of reach"
    throttled = ConnectBackoff(failures=1, retry_at=NOW, reason="421 4.7.0", throttled=True)
    assert state(record, throttled).label == "Configured, throttled by the provider"
    assert "sending waits until" in state(record, throttled).detail
    record.paused_reason, record.paused_at = "[auth] 535 bad login.", NOW
    paused = state(record, throttled)  # paused wins: nothing goes out until a save
    assert (paused.tone, paused.label) == ("bad", "Configured, sending paused")
    assert "until the settings are saved" in paused.detail
    assert state(stored_settings(host="::1"), None).detail == "[::1]:587"


# --- warnings -------------------------------------------------------------------------------------


def test_sound_settings_raise_no_warning():
    record = stored_settings(username="noreply@example.com", password_changed_at=NOW)
    assert warning_texts(record) == []


def test_no_live_worker_means_nothing_will_be_sent():
    record = stored_settings()
    workers = dashboard.Workers(alive=0, last_seen=NOW - timedelta(minutes=12, seconds=30))
    [warning] = dashboard.warnings(settings=record, workers=workers, now=NOW)
    assert warning.message == "No worker has reported in 12 minutes: nothing will be sent."
    never = dashboard.Workers(alive=0, last_seen=None)
    [warning] = dashboard.warnings(settings=record, workers=never, now=NOW)
    assert warning.message.startswith("No worker has reported yet: nothing will be sent")


def test_live_workers_with_fewer_task_slots_than_batch_cap_sending():
    record = stored_settings(batch=5)
    services.record_heartbeat(name="celery@a", started_at=NOW, concurrency=2)
    services.record_heartbeat(name="celery@b", started_at=NOW, concurrency=2)
    workers = dashboard.worker_summary()
    assert workers.concurrency == 4
    [warning] = dashboard.warnings(settings=record, workers=workers, now=NOW)
    assert warning.field == "batch" and "at most 4 of Batch 5 in flight" in warning.message
    services.record_heartbeat(name="celery@c", started_at=NOW, concurrency=1)
    assert dashboard.warnings(settings=record, workers=dashboard.worker_summary(), now=NOW) == []


def test_a_server_that_cannot_be_reached_is_said_while_sending_waits():
    record = stored_settings()
    ConnectBackoff.objects.create(
        pk=SmtpSettings.PRIMARY_PK, failures=2, retry_at=NOW, reason="[connect] refused"
    )
    workers = dashboard.Workers(alive=1, last_seen=NOW)
    [warning] = dashboard.warnings(settings=record, workers=workers, now=NOW)
    assert warning.field == "host"
    assert "could not be reached (2 failed attempts)" in warning.message
    assert "[connect] refused" in warning.message


def test_skip_verify_and_plaintext_login_are_insecure():
    record = stored_settings(skip_verify=True, allow_plaintext_login=True)
    skip, plaintext = dashboard.warnings(
        settings=record, workers=dashboard.Workers(1, NOW), now=NOW
    )
    assert skip.field == "skip_verify" and "Skip Verify is on (insecure)" in skip.message
    assert plaintext.field == "allow_plaintext_login" and "unencrypted" in plaintext.message


@pytest.mark.parametrize(("age_days", "warned"), [(179, False), (180, True), (400, True)])
def test_an_old_password_should_be_changed(age_days, warned):
    record = stored_settings(
        password_encrypted="x", password_changed_at=NOW - timedelta(days=age_days)
    )
    expected = [
        f"The SMTP password was set {age_days} days ago: change the SMTP password regularly."
    ]
    assert warning_texts(record) == (expected if warned else [])


@pytest.mark.parametrize(
    ("provider", "host"),
    [
        ("office365", "smtp.office365.com"),
        ("", "smtp.office365.com"),
        ("", "smtp-mail.outlook.com"),
    ],
)
def test_office365_basic_auth_retirement_is_announced(provider, host):
    record = stored_settings(provider=provider, host=host, port=587)
    [text] = warning_texts(record)
    assert "Microsoft is retiring basic authentication" in text


@pytest.mark.parametrize(
    ("username", "from_address", "warned"),
    [
        ("robot@163.com", "站点通知 <noreply@example.com>", True),
        ("robot@163.com", "站点通知 <robot@163.COM>", False),
        ("apikey", "Site <noreply@example.com>", False),  # not an address: nothing to compare
        ("", "Site <noreply@example.com>", False),
    ],
)
def test_from_domain_differing_from_the_login_domain_is_a_553_risk(username, from_address, warned):
    record = stored_settings(username=username, from_address=from_address)
    texts = warning_texts(record)
    if warned:
        assert texts == [
            "The From address's domain (example.com) differs from the login's (163.com): many "
            "servers refuse such mail with “553 sender rejected”. Send from an address the login "
            "may use."
        ]
    else:
        assert texts == []


# --- the page -------------------------------------------------------------------------------------


def panel_text(html: str) -> str:
    """The health panel's words, tags dropped and spaces collapsed."""
    panel = html[html.index('class="smtp-health"') : html.index('id="provider-note"')]
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", panel))


def test_panel_shows_real_numbers_from_the_outbox(admin_client, configure_smtp, plain_smtp_server):
    configure_smtp(plain_smtp_server)
    plain_smtp_server.queue_replies("RCPT", "250 ok", "250 ok", "550 5.1.1 no such user")
    notifications.notify(
        recipients=["a@example.com", "b@example.com", "gone@example.com"], subject="s", body="b"
    )
    services.deliver()
    notifications.notify(recipients=["c@example.com", "d@example.com"], subject="s", body="b")
    services.record_heartbeat(name="celery@web1", started_at=timezone.now(), concurrency=4)

    html = admin_client.get(CHANGE_URL).content.decode()
    panel = html[html.index('class="smtp-health"') : html.index('id="provider-note"')]
    text = re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", panel))

    assert "Configured 127.0.0.1" in text
    assert "1 alive" in text and "last heartbeat just now" in text
    assert "2 waiting oldest queued just now" in text
    assert "Last 24 hours: 2 sent 1 failed" in text
    assert "<desc" in panel and "2 sent, 1 failed." in panel  # the chart's text alternative
    assert "550 5.1.1 no such user" in text  # the last error
    assert "No worker has reported" not in text


def test_a_failed_test_shows_in_the_panel_and_its_report_in_the_test_list(
    admin_client, configure_smtp, smtp_server_factory, smtp_pki
):
    server = smtp_server_factory("starttls")
    configure_smtp(server, pki=smtp_pki, username=USERNAME, password=PASSWORD)
    values = {
        "host": "127.0.0.1",
        "port": str(server.port),
        "security": "starttls",
        "username": USERNAME,
        "password": "wrong-password",
        "from_address": "Site <noreply@example.com>",
        "ca_pem": smtp_pki.ca_pem,
        "timeout": "5",
        "batch": "4",
        "test-to": "admin@example.com",
    }
    admin_client.post(TEST_URL, values, headers={"X-Requested-With": "XMLHttpRequest"})
    run = TestRun.objects.get()

    html = admin_client.get(CHANGE_URL).content.decode()
    panel = panel_text(html)
    run_url = reverse("admin:notifications_testrun_change", args=[run.pk])
    # A typed password is not the saved settings: told as a test of unsaved values, not as
    # their state, which has not been tested.
    tested = f"127.0.0.1:{server.port} STARTTLS, password as {USERNAME}"
    assert (
        f"Tested unsaved values: {tested} — Failed at Login (AUTH): Check the username and "
        "password." in panel
    )
    assert "The saved settings have not been tested yet" in panel
    assert f'href="{run_url}"' in html

    listing = admin_client.get(reverse("admin:notifications_testrun_changelist")).content.decode()
    assert "admin@example.com" in listing
    assert "Login (AUTH)" in listing
    assert tested in listing and "unsaved values" in listing
    page = admin_client.get(run_url).content.decode()
    assert "Failed at Login (AUTH)" in page and "What to do:" in page
    assert f"Tested {tested} — unsaved values." in page
    assert 'class="test-step test-step-failed"' in page
    assert 'name="_save"' not in page  # a record, not a form
    assert "wrong-password" not in page


def test_a_test_of_the_saved_settings_is_their_state_and_a_newer_version_is_not(
    admin_client, configure_smtp, plain_smtp_server
):
    stored = configure_smtp(plain_smtp_server)
    values = {
        **{"host": "127.0.0.1", "port": str(plain_smtp_server.port), "security": "none"},
        **{"from_address": "Site <noreply@example.com>", "timeout": "30", "batch": "4"},
        "test-to": "admin@example.com",
    }
    admin_client.post(TEST_URL, values, headers={"X-Requested-With": "XMLHttpRequest"})
    assert TestRun.objects.get().saved
    panel = panel_text(admin_client.get(CHANGE_URL).content.decode())
    assert "✓ Delivered to the server" in panel
    assert f"Of the saved settings: 127.0.0.1:{plain_smtp_server.port} None (plaintext)" in panel
    assert "Tested unsaved values" not in panel

    configure_smtp(plain_smtp_server, batch=2)  # a new version, not tested yet
    panel = panel_text(admin_client.get(CHANGE_URL).content.decode())
    assert "Not tested since the settings were changed" in panel
    assert (
        f"The last test was of version {stored.version} of the settings (now "
        f"{stored.version + 1}), not of the current ones" in panel
    )
    assert "✓ Delivered" not in panel


def test_paused_sending_is_not_green(admin_client, configure_smtp, smtp_server_factory, smtp_pki):
    server = smtp_server_factory("starttls")
    configure_smtp(server, pki=smtp_pki, username=USERNAME, password="wrong-password")
    notifications.notify(recipients="a@example.com", subject="s", body="b")
    services.deliver()  # 535: a configuration failure pauses sending
    assert SmtpSettings.load().paused_reason

    html = admin_client.get(CHANGE_URL).content.decode()
    panel = panel_text(html)
    assert "Sending is paused:" in panel and "535" in panel  # the reason
    assert "✗ Configured, sending paused" in panel
    assert 'class="smtp-good"' not in html[: html.index("Workers")]


def test_a_server_out_of_reach_reads_amber_not_green(admin_client, configure_smtp, closed_port):
    configure_smtp(SimpleNamespace(port=closed_port, mode="none"))
    notifications.notify(recipients="a@example.com", subject="s", body="b")
    services.deliver()  # refused: the shared back-off holds every worker, nothing is charged
    html = admin_client.get(CHANGE_URL).content.decode()
    assert "⚠ Configured, server out of reach" in panel_text(html)
    assert f"127.0.0.1:{closed_port}; next try at" in panel_text(html)
    assert 'class="smtp-good"' not in html[: html.index("Workers")]


def test_the_panel_alone_is_served_for_the_page_to_refresh(admin_client, django_user_model):
    record_run(stored_settings(), ok=True)
    response = admin_client.get(HEALTH_URL)
    html = response.content.decode()
    assert response.status_code == 200 and html.lstrip().startswith("<section")
    assert "Delivered to the server" in html and f'data-refresh-url="{HEALTH_URL}"' in html
    assert "no-cache" in response["Cache-Control"]
    client = Client()
    assert client.get(HEALTH_URL).status_code == 302  # to the login page
    user = django_user_model.objects.create_user("nobody", "n@example.com", is_staff=True)
    client.force_login(user)
    assert client.get(HEALTH_URL).status_code == 403
    user.user_permissions.add(Permission.objects.get(codename="view_smtpsettings"))
    assert client.get(HEALTH_URL).status_code == 200
    assert (
        admin_client.get(reverse("admin:notifications_smtpsettings_health", args=[2])).status_code
        == 404
    )


def test_the_test_list_is_read_only(admin_client):
    run = TestRun.objects.create(recipient="a@example.com", ok=True, summary="Delivered.")
    assert admin_client.get(reverse("admin:notifications_testrun_add")).status_code == 403
    delete_url = reverse("admin:notifications_testrun_delete", args=[run.pk])
    assert admin_client.post(delete_url, {"post": "yes"}).status_code == 403
    assert TestRun.objects.filter(pk=run.pk).exists()


def test_a_fresh_site_says_it_is_not_configured_and_no_test_was_sent(admin_client):
    html = admin_client.get(CHANGE_URL).content.decode()
    assert "Not configured" in html
    assert "No test email yet:" in html
    assert "No worker has reported yet: nothing will be sent" in html


def test_warnings_link_to_their_field_and_open_the_advanced_section(admin_client):
    html = admin_client.get(CHANGE_URL).content.decode()
    assert 'class="module aligned collapse"' in html  # Advanced security starts closed
    stored_settings(skip_verify=True)
    html = admin_client.get(CHANGE_URL).content.decode()
    assert "Skip Verify is on (insecure)" in html
    assert 'href="#id_skip_verify"' in html
    assert 'class="module aligned collapse"' not in html
    assert 'id="id_skip_verify"' in html


def test_links_to_lists_the_user_may_not_see_are_left_out(client, django_user_model):
    user = django_user_model.objects.create_user("viewer", "viewer@example.com", is_staff=True)
    user.user_permissions.add(Permission.objects.get(codename="view_smtpsettings"))
    client.force_login(user)
    record_run(stored_settings(), ok=True)
    html = client.get(CHANGE_URL).content.decode()
    assert "Delivered to the server" in html
    assert reverse("admin:notifications_testrun_changelist") not in html
