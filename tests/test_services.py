"""Dispatch in one process against real SMTP servers: storing, claiming, sending, retrying."""

from __future__ import annotations

import email
import email.policy
import time
from datetime import timedelta

import pytest
from django.db import transaction
from django.utils import timezone, translation

import notifications
from notifications import services
from notifications.exceptions import InvalidNotification
from notifications.models import ConnectBackoff, Notification, SendSlot, SmtpSettings, Status
from notifications.services import leases
from notifications.signals import notification_failed, notification_sent, notify
from tests.smtpserver import PASSWORD, USERNAME

pytestmark = pytest.mark.django_db


def make_due() -> None:
    Notification.objects.update(next_attempt_at=timezone.now())


# --- ways in -----------------------------------------------------------------------------------


def test_signal_stores_one_row_per_recipient(django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks() as callbacks:
        responses = notify.send(
            sender=SmtpSettings,
            recipients=["a@example.com", "b@example.com", "A@example.com"],
            subject="Welcome",
            body="Hello",
        )
    rows = responses[0][1]
    assert [r.recipient for r in rows] == ["a@example.com", "b@example.com"]
    assert {r.source for r in rows} == {"signal:SmtpSettings"}
    assert Notification.objects.filter(status=Status.QUEUED).count() == 2
    assert len(callbacks) == 1  # enqueue happens only after commit


def test_notify_function_returns_the_created_rows():
    rows = notifications.notify(recipients="x@example.com", subject="Hi", body="Body")
    assert rows[0].pk and rows[0].status == Status.QUEUED and rows[0].source == "notify()"


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"recipients": [], "subject": "s", "body": "b"}, "at least one recipient"),
        ({"recipients": "not-an-address", "subject": "s", "body": "b"}, "not an email address"),
        ({"recipients": ["ok@example.com", "bad"], "subject": "s", "body": "b"}, "not an email"),
        ({"recipients": 42, "subject": "s", "body": "b"}, "not int"),
        ({"recipients": [None], "subject": "s", "body": "b"}, "not NoneType"),
        ({"recipients": "a@example.com\r\nBcc: x@y.z", "subject": "s", "body": "b"}, "line break"),
        ({"recipients": "a@example.com", "subject": "", "body": "b"}, "subject must not be empty"),
        ({"recipients": "a@example.com", "subject": "Hi\nBcc: x@y.z", "body": "b"}, "line break"),
        ({"recipients": "a@example.com", "subject": "x" * 999, "body": "b"}, "at most 998"),
        ({"recipients": "a@example.com", "subject": b"bytes", "body": "b"}, "must be a string"),
        ({"recipients": "a@example.com", "subject": "s", "body": "b\0"}, "NUL"),
        (
            {"recipients": "a@example.com", "subject": "s", "body": ""},
            "Give the notification a body",
        ),
        (
            {"recipients": "a@example.com", "subject": "s", "body": "b", "reply_to": "nope"},
            "reply_to",
        ),
        (
            {"recipients": "a@example.com", "subject": "s", "body": "b", "idempotency_key": ""},
            "empty",
        ),
        (
            {"recipients": "a@example.com", "subject": "s", "body": "b", "priority": 1},
            "Unknown argument",
        ),
        ({"subject": "s", "body": "b"}, "Missing argument(s): recipients"),
    ],
)
def test_bad_arguments_raise_a_clear_error_and_store_nothing(arguments, message):
    with pytest.raises(InvalidNotification, match=message.replace("(", r"\(").replace(")", r"\)")):
        notify.send(sender=None, **arguments)
    assert not Notification.objects.exists()


def test_idempotency_key_returns_the_first_rows_instead_of_new_ones():
    first = notifications.notify(
        recipients=["a@example.com", "b@example.com"], subject="s", body="b", idempotency_key="k1"
    )
    again = notifications.notify(
        recipients=["a@example.com", "c@example.com"], subject="s", body="b", idempotency_key="k1"
    )
    assert again[0].pk == first[0].pk
    assert Notification.objects.count() == 3


def test_rollback_stores_and_enqueues_nothing(django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks() as callbacks, pytest.raises(RuntimeError):
        with transaction.atomic():
            notifications.notify(recipients="a@example.com", subject="s", body="b")
            raise RuntimeError("the caller's request failed")
    assert not Notification.objects.exists()
    assert callbacks == []


# --- sending -----------------------------------------------------------------------------------


def test_deliver_sends_due_rows_over_one_session(plain_smtp_server, configure_smtp):
    configure_smtp(plain_smtp_server, from_address="通知 <noreply@example.com>")
    notifications.notify(
        recipients=["a@example.com", "b@example.com"],
        subject="Ünïcode subject",
        body="Line one\nLine two",
        html_body="<p>Hello</p>",
        reply_to="Support <help@example.com>",
    )
    assert services.deliver() == 2
    assert plain_smtp_server.state.total_sessions == 1
    assert sorted(m.rcpt_tos[0] for m in plain_smtp_server.messages) == [
        "a@example.com",
        "b@example.com",
    ]
    parsed = email.message_from_bytes(
        plain_smtp_server.messages[0].raw, policy=email.policy.default
    )
    assert str(parsed["From"]) == "通知 <noreply@example.com>"
    assert str(parsed["Subject"]) == "Ünïcode subject"
    assert str(parsed["Reply-To"]) == "Support <help@example.com>"
    assert parsed.get_body(("html",)).get_content().strip() == "<p>Hello</p>"
    for row in Notification.objects.all():
        assert row.status == Status.SENT and row.attempts == 1
        assert row.sent_at and row.message_id.startswith("<") and row.settings_version == 1
        assert row.message_id in {
            str(email.message_from_bytes(m.raw)["Message-ID"]) for m in plain_smtp_server.messages
        }


def test_deliver_logs_in_over_starttls(smtp_server_factory, smtp_pki, configure_smtp):
    server = smtp_server_factory("starttls", require_auth=True)
    configure_smtp(server, pki=smtp_pki, username=USERNAME, password=PASSWORD)
    notifications.notify(recipients="a@example.com", subject="s", body="b")
    assert services.deliver() == 1
    assert server.messages[0].auth_username == USERNAME


def test_temporary_refusal_retries_with_backoff_then_sends(plain_smtp_server, configure_smtp):
    configure_smtp(plain_smtp_server)
    plain_smtp_server.queue_replies("RCPT", "451 4.3.0 try again later", "451 4.3.0 again")
    [row] = notifications.notify(recipients="a@example.com", subject="s", body="b")
    services.deliver()
    row.refresh_from_db()
    assert row.status == Status.QUEUED and row.attempts == 1
    assert "451" in row.last_error and "[rcpt]" in row.last_error
    assert row.next_attempt_at > timezone.now() + timedelta(seconds=40)
    assert services.deliver() == 0  # not due yet
    make_due()
    services.deliver()
    make_due()
    assert services.deliver() == 1
    row.refresh_from_db()
    assert (row.status, row.attempts, row.last_error) == (Status.SENT, 3, "")
    assert len(plain_smtp_server.messages) == 1


def test_permanent_refusal_fails_at_once_and_fires_the_signal(plain_smtp_server, configure_smtp):
    configure_smtp(plain_smtp_server)
    plain_smtp_server.queue_replies("RCPT", "550 5.1.1 no such user")
    failures = []

    def on_failed(sender, notification, error, **kwargs):
        failures.append((sender, notification.pk, error))

    notification_failed.connect(on_failed)
    try:
        [row] = notifications.notify(recipients="gone@example.com", subject="s", body="b")
        services.deliver()
    finally:
        notification_failed.disconnect(on_failed)
    row.refresh_from_db()
    assert (row.status, row.attempts) == (Status.FAILED, 1)
    assert failures == [(Notification, row.pk, row.last_error)]
    assert "550" in row.last_error


def test_one_bad_recipient_does_not_stop_the_others(plain_smtp_server, configure_smtp):
    configure_smtp(plain_smtp_server)
    plain_smtp_server.queue_replies("RCPT", "550 5.1.1 no such user")
    notifications.notify(recipients=["a@example.com", "b@example.com"], subject="s", body="b")
    services.deliver()
    assert sorted(Notification.objects.values_list("status", flat=True)) == ["failed", "sent"]


def test_bad_login_pauses_sending_until_the_settings_are_saved(
    smtp_server_factory, smtp_pki, configure_smtp
):
    server = smtp_server_factory("ssl")
    record = configure_smtp(server, pki=smtp_pki, username=USERNAME, password="wrong")
    rows = notifications.notify(
        recipients=["a@example.com", "b@example.com"], subject="s", body="b"
    )
    services.deliver()
    record.refresh_from_db()
    assert "535" in record.paused_reason or "[auth]" in record.paused_reason
    assert len(server.state.credentials) == 1  # no retry storm against the mailbox
    for row in rows:
        row.refresh_from_db()
        assert (row.status, row.attempts) == (Status.QUEUED, 0)
    assert services.deliver() == 0  # paused
    services.save_settings(record, new_password=PASSWORD, source="test")
    assert SmtpSettings.load().paused_reason == ""
    assert services.deliver() == 2


def test_unreachable_server_backs_off_and_charges_no_row(closed_port, configure_smtp):
    class Closed:
        port, mode = closed_port, "none"

    configure_smtp(Closed)
    rows = notifications.notify(
        recipients=["a@example.com", "b@example.com"], subject="s", body="b"
    )
    assert services.deliver() == 0
    backoff = ConnectBackoff.objects.get()
    assert backoff.failures == 1 and "[connect]" in backoff.reason
    assert backoff.retry_at > timezone.now()
    assert services.deliver() == 0  # backed off: no second connect
    assert ConnectBackoff.objects.get().failures == 1
    for row in rows:
        row.refresh_from_db()
        assert (row.status, row.attempts, row.last_error) == (Status.QUEUED, 0, "")


def test_a_session_that_opens_ends_the_back_off(plain_smtp_server, configure_smtp):
    configure_smtp(plain_smtp_server)
    ConnectBackoff.objects.create(
        pk=SmtpSettings.PRIMARY_PK, failures=3, retry_at=timezone.now(), reason="[connect] down"
    )
    notifications.notify(recipients="a@example.com", subject="s", body="b")
    assert services.deliver() == 1
    assert ConnectBackoff.objects.get().failures == 0


def test_attempts_are_bounded(plain_smtp_server, configure_smtp, settings):
    settings.NOTIFICATIONS = {"MAX_ATTEMPTS": 2}
    configure_smtp(plain_smtp_server)
    plain_smtp_server.queue_replies("DATA", "452 4.3.1 full", "452 4.3.1 full")
    [row] = notifications.notify(recipients="a@example.com", subject="s", body="b")
    services.deliver()
    make_due()
    services.deliver()
    row.refresh_from_db()
    assert (row.status, row.attempts) == (Status.FAILED, 2)


def test_retry_delay_doubles_from_a_minute_to_an_hour_with_jitter():
    delays = [services.retry_delay(n) for n in range(1, 10)]
    assert 48 <= delays[0] <= 72
    assert 96 <= delays[1] <= 144
    assert all(2880 <= d <= 4320 for d in delays[6:])


# --- claims and slots --------------------------------------------------------------------------


def test_only_one_of_two_racing_claims_wins():
    [row] = notifications.notify(recipients="a@example.com", subject="s", body="b")
    assert [r.pk for r in services.claim_batch("token-a", limit=5)] == [row.pk]
    assert services.claim_batch("token-b", limit=5) == []


def test_only_the_claim_owner_may_start_an_attempt():
    notifications.notify(recipients="a@example.com", subject="s", body="b")
    [claimed] = services.claim_batch("owner", limit=1)
    assert not services.start_attempt(claimed, "intruder")
    assert services.start_attempt(claimed, "owner")
    claimed.refresh_from_db()
    assert (claimed.status, claimed.attempts, claimed.claim_token) == (Status.SENDING, 1, "owner")


def test_a_lease_that_ran_out_may_not_start_an_attempt():
    notifications.notify(recipients="a@example.com", subject="s", body="b")
    [claimed] = services.claim_batch("slow-worker", limit=1)
    Notification.objects.update(claimed_until=timezone.now() - timedelta(seconds=1))
    assert not services.start_attempt(claimed, "slow-worker")


def test_a_lease_that_would_run_out_during_the_send_may_not_start_an_attempt():
    notifications.notify(recipients="a@example.com", subject="s", body="b")
    [claimed] = services.claim_batch("owner", limit=1)
    ends = timezone.now() + timedelta(seconds=leases.message_seconds() - 1)
    Notification.objects.update(claimed_until=ends)
    assert not services.start_attempt(claimed, "owner")
    Notification.objects.update(claimed_until=ends + timedelta(seconds=5))
    assert services.start_attempt(claimed, "owner")


def test_an_expired_claim_can_be_taken_over():
    [row] = notifications.notify(recipients="a@example.com", subject="s", body="b")
    services.claim_batch("dead-worker", limit=1)
    Notification.objects.update(claimed_until=timezone.now() - timedelta(seconds=1))
    [taken] = services.claim_batch("next-worker", limit=1)
    assert taken.pk == row.pk and taken.claim_token == "next-worker"


def test_a_claim_takes_the_oldest_due_rows_of_both_kinds_and_nothing_else():
    rows = notifications.notify(
        recipients=[f"r{n}@example.com" for n in range(6)], subject="s", body="b"
    )
    now = timezone.now()
    waiting_old, expired, waiting_new, future, leased, sent = rows
    Notification.objects.filter(pk=waiting_old.pk).update(next_attempt_at=now - timedelta(3))
    Notification.objects.filter(pk=expired.pk).update(
        status=Status.SENDING,
        claim_token="dead",
        claimed_until=now - timedelta(seconds=1),
        next_attempt_at=now - timedelta(2),
    )
    Notification.objects.filter(pk=waiting_new.pk).update(next_attempt_at=now - timedelta(1))
    Notification.objects.filter(pk=future.pk).update(next_attempt_at=now + timedelta(1))
    Notification.objects.filter(pk=leased.pk).update(
        status=Status.SENDING, claim_token="alive", claimed_until=now + timedelta(1)
    )
    Notification.objects.filter(pk=sent.pk).update(status=Status.SENT)

    first = services.claim_batch("a", limit=2)
    assert [row.pk for row in first] == [waiting_old.pk, expired.pk]
    assert [row.pk for row in services.claim_batch("b", limit=5)] == [waiting_new.pk]
    assert services.claim_batch("c", limit=5) == []
    assert {r.claim_token for r in Notification.objects.filter(status=Status.SENDING)} == {
        "a",
        "b",
        "alive",
    }


def test_a_row_that_kills_its_worker_every_time_fails_after_its_attempts(settings):
    settings.NOTIFICATIONS = {"MAX_ATTEMPTS": 3}
    [row] = notifications.notify(recipients="a@example.com", subject="s", body="b")
    for n in range(3):
        [claimed] = services.claim_batch(f"worker-{n}", limit=1)
        services.start_attempt(claimed, f"worker-{n}")  # ... and the worker dies mid-send
        Notification.objects.update(claimed_until=timezone.now() - timedelta(seconds=1))
    assert services.claim_batch("worker-4", limit=1) == []
    row.refresh_from_db()
    assert row.status == Status.FAILED and "Gave up after 3 attempts" in row.last_error
    with translation.override("zh-hans"):  # the delivery log shows it in the reader's language
        assert row.error_text.startswith("尝试 3 次后放弃")


def test_rows_claimed_alongside_a_crashing_one_are_not_charged_for_it(settings):
    settings.NOTIFICATIONS = {"MAX_ATTEMPTS": 2}
    notifications.notify(recipients=["a@example.com", "b@example.com"], subject="s", body="b")
    for n in range(2):
        first, _second = services.claim_batch(f"worker-{n}", limit=2)
        services.start_attempt(first, f"worker-{n}")  # the worker dies sending the first one
        Notification.objects.update(claimed_until=timezone.now() - timedelta(seconds=1))
    [survivor] = services.claim_batch("worker-3", limit=2)
    assert survivor.recipient == "b@example.com" and survivor.attempts == 0
    assert Notification.objects.get(recipient="a@example.com").status == Status.FAILED


def test_slots_are_capped_by_batch_and_freed_on_release_or_expiry():
    taken = [services.acquire_slot(f"t{n}", 3) for n in range(4)]
    assert sorted(taken[:3]) == [1, 2, 3] and taken[3] is None
    services.release_slot(taken[0], "t0")
    assert services.acquire_slot("t4", 3) == taken[0]
    SendSlot.objects.filter(number=taken[1]).update(
        expires_at=timezone.now() - timedelta(seconds=1)
    )
    assert services.acquire_slot("t5", 3) == taken[1]


def test_sent_signal_fires_and_a_broken_receiver_loses_nothing(plain_smtp_server, configure_smtp):
    configure_smtp(plain_smtp_server)
    seen = []

    def broken(sender, notification, **kwargs):
        seen.append(notification.pk)
        raise RuntimeError("a receiver in another app is broken")

    notification_sent.connect(broken)
    try:
        [row] = notifications.notify(recipients="a@example.com", subject="s", body="b")
        assert services.deliver() == 1
    finally:
        notification_sent.disconnect(broken)
    row.refresh_from_db()
    assert row.status == Status.SENT and seen == [row.pk]


def test_a_row_whose_claim_is_lost_before_its_send_is_not_sent_and_the_session_goes_on(
    plain_smtp_server, configure_smtp, caplog
):
    configure_smtp(plain_smtp_server)
    recipients = ["a@example.com", "b@example.com", "c@example.com", "d@example.com"]
    notifications.notify(recipients=recipients, subject="s", body="b")

    # a's outcome is written (and announced) with b's start: taking c away then means c's start,
    # made while its MAIL FROM is on the way, finds the row no longer the session's.
    def steal(sender, notification, **kwargs):
        if notification.recipient == "a@example.com":
            Notification.objects.filter(recipient="c@example.com").update(claim_token="thief")

    notification_sent.connect(steal)
    try:
        with caplog.at_level("WARNING", logger="notifications.services"):
            assert services.deliver() == 3
    finally:
        notification_sent.disconnect(steal)
    assert sorted(m.rcpt_tos[0] for m in plain_smtp_server.messages) == [
        "a@example.com",
        "b@example.com",
        "d@example.com",
    ]
    assert plain_smtp_server.state.total_sessions == 1  # RSET, and d went over the same session
    stolen = Notification.objects.get(recipient="c@example.com")
    assert (stolen.status, stolen.claim_token, stolen.attempts) == (Status.SENDING, "thief", 0)
    assert Notification.objects.filter(status=Status.SENT).count() == 3
    assert f"Notification {stolen.pk}: claim lost before sending; skipped" in caplog.text


def test_settings_change_ends_the_session_opened_with_the_old_version(
    plain_smtp_server, configure_smtp, settings
):
    settings.NOTIFICATIONS = {"SETTINGS_CHECK_SECONDS": 0}  # check before every message
    record = configure_smtp(plain_smtp_server)
    # a's outcome is written (and announced) with b's start, so the change applies from c on.
    recipients = ["a@example.com", "b@example.com", "c@example.com"]
    notifications.notify(recipients=recipients, subject="s", body="b")

    def bump(sender, notification, **kwargs):
        if notification.recipient == "a@example.com":
            SmtpSettings.objects.update(version=record.version + 1)

    notification_sent.connect(bump)
    try:
        services.deliver()
    finally:
        notification_sent.disconnect(bump)
    assert plain_smtp_server.state.total_sessions == 2


def test_each_attempt_logs_one_structured_line_without_the_recipient(
    plain_smtp_server, configure_smtp, caplog
):
    configure_smtp(plain_smtp_server)
    plain_smtp_server.queue_replies("RCPT", "451 4.3.0 later")
    [row] = notifications.notify(recipients="private-person@example.com", subject="s", body="b")
    with caplog.at_level("INFO", logger="notifications.services"):
        services.deliver()
        make_due()
        services.deliver()
    attempts = [r for r in caplog.records if hasattr(r, "outcome")]
    assert [(r.outcome, r.reply_code, r.attempt) for r in attempts] == [
        ("retry", 451, 1),
        ("sent", 250, 2),
    ]
    for record in attempts:
        assert record.notification_id == row.pk
        assert (record.host, record.port, record.security) == (
            "127.0.0.1",
            plain_smtp_server.port,
            "none",
        )
        assert record.duration_ms >= 0 and record.settings_version == 1
    info_text = " ".join(
        r.getMessage()
        for r in caplog.records
        if r.levelname == "INFO" and r.name.startswith("notifications")  # not the test server's
    )
    assert "private-person@example.com" not in info_text


@pytest.mark.postgres_database
@pytest.mark.django_db(transaction=True)
def test_postgres_notify_outside_a_transaction_is_one_round_trip(
    django_capture_on_commit_callbacks,
):
    """The INSERT is a transaction by itself: a BEGIN and a COMMIT around it were two more round
    trips, most of what one notify() costs its caller (libpq's trace counts the round trips)."""
    import tempfile

    import psycopg
    from django.db import connection

    connection.ensure_connection()
    pgconn = connection.connection.pgconn
    with tempfile.TemporaryFile() as trace:
        pgconn.trace(trace.fileno())
        pgconn.set_trace_flags(psycopg.pq.Trace.SUPPRESS_TIMESTAMPS)
        try:
            [row] = notifications.notify(recipients="a@example.com", subject="s", body="b")
        finally:
            pgconn.untrace()
        trace.seek(0)
        messages = trace.read().decode()
    assert messages.count("\tReadyForQuery\t") == 1, messages
    assert "BEGIN" not in messages
    assert Notification.objects.get(pk=row.pk).status == Status.QUEUED


@pytest.mark.postgres_database
def test_postgres_hot_path_records_sent_and_starts_the_next_only_for_the_owner():
    from notifications.services import hotpath

    notifications.notify(recipients=["a@example.com", "b@example.com"], subject="s", body="b")
    first, second = services.claim_batch("owner", limit=2)
    assert services.start_attempt(first, "owner")
    fields = {
        "sent_at": timezone.now(),
        "message_id": "<m@x>",
        "last_error": "",
        "settings_version": 1,
        "server": "fallback",
    }
    leased_until = second.claimed_until

    def write(token, send_ends):
        return hotpath.record_sent_and_start(
            token=token, row_id=first.pk, fields=fields, upcoming_id=second.pk, send_ends=send_ends
        )

    assert write("intruder", timezone.now()) == (False, False)
    # The owner's lease must outlast the send: one that would run out during it starts nothing.
    assert write("owner", leased_until + timedelta(seconds=1)) == (True, False)
    first.refresh_from_db()
    second.refresh_from_db()
    assert (first.status, first.message_id, first.claim_token) == (Status.SENT, "<m@x>", "")
    assert first.server == "fallback"
    assert second.attempts == 0
    first.status, first.claim_token = Status.SENDING, "owner"
    first.save()
    assert write("owner", timezone.now()) == (True, True)
    second.refresh_from_db()
    assert (second.status, second.attempts, second.claimed_until) == (
        Status.SENDING,
        1,
        leased_until,  # counting the attempt leaves the lease (and every index) as it was
    )


@pytest.mark.postgres_database
def test_postgres_counts_an_attempt_without_writing_an_index_entry():
    """Counting an attempt is a heap-only (HOT) update: it moves no indexed column."""
    from django.db import connection

    def hot_updates() -> int:
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT n_tup_hot_upd FROM pg_stat_xact_user_tables WHERE relname = %s",
                [Notification._meta.db_table],
            )
            return cursor.fetchone()[0]

    notifications.notify(recipients="a@example.com", subject="s", body="b")
    [claimed] = services.claim_batch("owner", limit=1)
    before = hot_updates()
    assert services.start_attempt(claimed, "owner")
    assert hot_updates() == before + 1


@pytest.mark.postgres_database
def test_postgres_claim_returns_rows_as_the_orm_reads_them():
    services.notify(
        recipients=["a@example.com", "b@example.com"],
        subject="s",
        body="b",
        headers={"X-Campaign": "spring"},
    )
    claimed = services.claim_batch("owner", limit=5)
    stored = list(Notification.objects.order_by("next_attempt_at", "id"))
    assert [row.pk for row in claimed] == [row.pk for row in stored]
    for row, reread in zip(claimed, stored, strict=True):
        assert row.headers == {"X-Campaign": "spring"} == reread.headers
        assert (row.status, row.claim_token) == (Status.SENDING, "owner")
        assert row.claimed_until == reread.claimed_until and row.claimed_until > timezone.now()
        assert row.created_at == reread.created_at and row.created_at.tzinfo is not None


@pytest.mark.postgres_database
@pytest.mark.django_db(transaction=True)
def test_postgres_claim_skips_rows_another_worker_has_locked():
    """SKIP LOCKED: a claim neither waits for rows another transaction holds nor takes them."""
    from django.db import connections

    rows = notifications.notify(
        recipients=[f"r{n}@example.com" for n in range(6)], subject="s", body="b"
    )
    oldest = sorted(rows, key=lambda row: (row.next_attempt_at, row.pk))[:2]
    other = connections.create_connection("default")
    try:
        other.set_autocommit(False)
        with other.cursor() as cursor:  # another worker in the middle of its claim
            cursor.execute(
                'SELECT id FROM "notifications_notification" WHERE id = ANY(%s) FOR UPDATE',
                [[row.pk for row in oldest]],
            )
        claimed = services.claim_batch("second", limit=10)
        assert {row.pk for row in claimed} == {row.pk for row in rows} - {r.pk for r in oldest}
        other.rollback()
    finally:
        other.close()
    assert {row.pk for row in services.claim_batch("third", limit=10)} == {r.pk for r in oldest}


@pytest.mark.postgres_database
@pytest.mark.django_db(transaction=True)
def test_postgres_racing_claims_never_take_a_row_twice():
    import threading
    import time

    from django.db import connection

    rows = notifications.notify(
        recipients=[f"r{n}@example.com" for n in range(200)], subject="s", body="b"
    )
    taken: dict[str, list[int]] = {}
    start = threading.Barrier(4)

    def worker(token: str) -> None:
        try:
            start.wait()
            mine = taken.setdefault(token, [])
            while claimed := services.claim_batch(token, limit=7):
                mine.extend(row.pk for row in claimed)
                time.sleep(0.005)  # as a session sends its rows: the others claim meanwhile
        finally:
            connection.close()

    threads = [threading.Thread(target=worker, args=(f"w{n}",)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    everything = [pk for pks in taken.values() for pk in pks]
    assert sorted(everything) == sorted(row.pk for row in rows)  # each exactly once
    owners = dict(Notification.objects.values_list("pk", "claim_token"))
    assert all(owners[pk] == token for token, pks in taken.items() for pk in pks)
    assert sum(1 for pks in taken.values() if pks) >= 2  # they did claim side by side


def test_sessions_of_a_process_share_one_settings_reading_per_interval(
    settings, django_assert_num_queries
):
    from notifications.services.drain import SettingsProbe

    settings.NOTIFICATIONS = {"SETTINGS_CHECK_SECONDS": 60}
    record = SmtpSettings.load()
    probe, opened = SettingsProbe(), time.monotonic()
    with django_assert_num_queries(1):  # five sessions' checks, one query
        assert all(probe.read(opened).servers[record.pk][0] == record.version for _ in range(5))
    SmtpSettings.objects.update(version=record.version + 1)
    with django_assert_num_queries(1):  # a session opened after that reading reads afresh
        assert probe.read(time.monotonic()).servers[record.pk][0] == record.version + 1
    settings.NOTIFICATIONS = {"SETTINGS_CHECK_SECONDS": 0}
    with django_assert_num_queries(1):
        probe.read(opened)


def test_with_a_fallback_the_shared_reading_also_says_whether_the_primary_is_backed_off(
    settings, django_assert_num_queries
):
    from notifications.services.drain import SettingsProbe

    settings.NOTIFICATIONS = {"SETTINGS_CHECK_SECONDS": 60}
    SmtpSettings.load()
    SmtpSettings.objects.create(pk=SmtpSettings.FALLBACK_PK, host="backup.example.com")
    ConnectBackoff.objects.create(
        pk=SmtpSettings.PRIMARY_PK, failures=1, retry_at=timezone.now(), reason="[connect] down"
    )
    probe, opened = SettingsProbe(), time.monotonic()
    with django_assert_num_queries(2):  # the settings and the back-off, for every session's checks
        assert all(probe.read(opened).primary_backed_off for _ in range(5))
    ConnectBackoff.objects.update(failures=0)
    assert not probe.read(time.monotonic()).primary_backed_off


def test_sessions_on_their_way_are_not_asked_for_twice():
    from notifications.services.dispatch import AskedSessions

    asked = AskedSessions()
    asked.SECONDS = 0.2
    assert asked.more(49) == 49  # the first session of a burst asks for the free slots
    assert asked.more(40) == 0  # the sessions it asked for, opening, ask for nothing more
    assert asked.more(55) == 6  # unless more are wanted than are on their way
    time.sleep(0.25)
    assert asked.more(10) == 10  # once they had time to start, what is still free is asked for
