"""Rate limits over rolling windows, shared by concurrent senders, and the throttling replies."""

from __future__ import annotations

import threading
from datetime import timedelta

import pytest
from django.db import connection
from django.utils import timezone

from notifications import quotas
from notifications.models import SendReservation
from notifications.quotas import RateLimitReached, RateLimits, throttling


@pytest.mark.django_db
def test_no_limits_reserve_nothing():
    assert quotas.reserve(RateLimits()) is None
    assert not SendReservation.objects.exists()


@pytest.mark.django_db
def test_a_full_window_refuses_until_its_oldest_send_ages_out():
    start = timezone.now()
    limits = RateLimits(per_minute=3)
    for second in range(3):
        assert quotas.reserve(limits, now=start + timedelta(seconds=second * 10))
    with pytest.raises(RateLimitReached) as refused:
        quotas.reserve(limits, now=start + timedelta(seconds=30))
    assert refused.value.window == "minute"
    # The window counts 2 s longer than a minute: arrivals trail their reservations.
    assert refused.value.retry_at == start + timedelta(seconds=62)
    assert SendReservation.objects.count() == 3  # the refusal took nothing
    assert quotas.reserve(limits, now=start + timedelta(seconds=62, microseconds=1))


@pytest.mark.django_db
def test_the_strictest_window_decides():
    start = timezone.now()
    limits = RateLimits(per_minute=10, per_hour=4)
    for minute in range(4):
        quotas.reserve(limits, now=start + timedelta(minutes=minute * 2))
    with pytest.raises(RateLimitReached) as refused:
        quotas.reserve(limits, now=start + timedelta(minutes=10))
    assert refused.value.window == "hour"
    assert refused.value.retry_at == start + timedelta(hours=1, seconds=2)


@pytest.mark.django_db
def test_a_refund_gives_the_send_back():
    limits = RateLimits(per_day=1)
    reservation = quotas.reserve(limits)
    quotas.refund(reservation)
    assert quotas.reserve(limits)


@pytest.mark.django_db
def test_used_counts_the_window_and_prune_forgets_what_no_window_sees():
    now = timezone.now()
    SendReservation.objects.bulk_create(
        [SendReservation(reserved_at=now - timedelta(hours=hours)) for hours in (0, 2, 23, 25)]
    )
    assert quotas.used("hour", now=now) == 1
    assert quotas.used("day", now=now) == 3
    assert quotas.prune(now=now) == 1
    assert SendReservation.objects.count() == 3


@pytest.mark.django_db(transaction=True)
def test_concurrent_senders_never_exceed_the_window():
    """Threads with their own database connections race for 5 sends a minute: 5 win."""
    limits = RateLimits(per_minute=5)
    granted: list[int] = []
    refused: list[RateLimitReached] = []
    barrier = threading.Barrier(8)

    def sender() -> None:
        try:
            barrier.wait()
            for _ in range(3):
                try:
                    granted.append(quotas.reserve(limits))
                except RateLimitReached as error:
                    refused.append(error)
        finally:
            connection.close()

    threads = [threading.Thread(target=sender) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert len(granted) == 5
    assert len(refused) == 19
    assert SendReservation.objects.count() == 5


@pytest.mark.parametrize(
    ("code", "reply", "daily"),
    [
        (421, "4.7.0 Try again later, closing connection.", False),
        (451, "4.7.500 Server busy. Please try again later from [1.2.3.4]", False),
        (554, "5.2.0 STOREDRV.Submission.Exception:SubmissionQuotaExceededException", False),
        (550, "5.4.5 Daily sending quota exceeded.", True),
        (550, "5.4.5 Daily user sending limit exceeded.", True),
        (454, "Throttling failure: Maximum sending rate exceeded.", False),
        (454, "Throttling failure: Daily message quota exceeded.", True),
        (451, "MI:SFQ Too many mails in a period of time", False),
        (550, "Connection frequency limited", False),
        (421, "4.7.28 Our system has detected an unusual rate of unsolicited mail", False),
    ],
)
def test_provider_throttling_replies_limit_the_sender(code, reply, daily):
    throttle = throttling(code, reply)
    assert throttle is not None
    assert throttle.daily is daily
    assert throttle.reply == reply


@pytest.mark.parametrize(
    ("code", "reply"),
    [
        (250, "2.0.0 OK queued"),
        (550, "5.1.1 The email account that you tried to reach does not exist."),
        (450, "4.2.1 The user you are trying to contact is receiving mail at a rate that prevents"),
        (421, "Service not available, closing transmission channel"),
        (451, "4.3.0 Temporary local problem"),
        (451, "4.7.1 Greylisted, please try again later"),
        (None, ""),
    ],
)
def test_replies_about_the_message_or_the_recipient_are_not_throttling(code, reply):
    assert throttling(code, reply) is None
