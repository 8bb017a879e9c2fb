"""Hostile replies: an endless one costs bounded memory; a dripping one ends in time."""

from __future__ import annotations

import contextlib
import time
import tracemalloc
from collections.abc import Iterator

import pytest

from notifications.exceptions import (
    SmtpConfigurationError,
    SmtpError,
    SmtpPermanentError,
    SmtpTemporaryError,
)
from notifications.smtp import SmtpConfig, build_message, diagnose, open_session
from tests.hostile import drip, flood
from tests.test_hostile_servers import RESET, ScriptedServer, smtp

TO = "rcpt@example.org"
#: Far more than bounded reading needs; an unbounded one grows by hundreds of MB a second.
MEMORY_BOUND = 5 * 1024 * 1024


def config_for(port: int, *, timeout: float = 5.0) -> SmtpConfig:
    return SmtpConfig(
        host="127.0.0.1",
        port=port,
        security="none",
        username="",
        password="",
        from_address="sender@example.com",
        timeout=timeout,
    )


def message():
    return build_message(from_address="sender@example.com", to=TO, subject="Hi", body="Body")


def peak_memory_of(action) -> int:
    tracemalloc.start()
    try:
        action()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_endless_greeting_fails_the_greeting_with_bounded_memory(hostile_server) -> None:
    server = hostile_server(flood, at="greeting")
    reports = []
    peak = peak_memory_of(lambda: reports.append(diagnose(config_for(server.port), to=TO)))
    [report] = reports
    assert report.failed_step == "greeting"
    assert "100 lines" in report.error
    assert peak < MEMORY_BOUND


@pytest.mark.parametrize("pipelining", [False, True], ids=["one-by-one", "pipelined"])
def test_endless_data_reply_fails_the_message_with_bounded_memory(
    hostile_server, pipelining: bool
) -> None:
    server = hostile_server(
        lambda sock, stop: flood(sock, stop, code=b"250"), pipelining=pipelining
    )
    session = open_session(config_for(server.port))

    def send() -> None:
        with pytest.raises(SmtpTemporaryError) as raised:
            session.send(message(), envelope_from="sender@example.com", recipient=TO)
        assert raised.value.step == "data"

    assert peak_memory_of(send) < MEMORY_BOUND
    session.close()


def test_dripping_greeting_ends_at_the_diagnosis_deadline(hostile_server) -> None:
    server = hostile_server(drip(0.2, code=b"220"), at="greeting")
    started = time.monotonic()
    report = diagnose(config_for(server.port, timeout=30), to=TO, deadline=3)
    assert report.failed_step == "greeting"
    assert 2.0 <= time.monotonic() - started <= 4.0


@pytest.mark.parametrize("pipelining", [False, True], ids=["one-by-one", "pipelined"])
def test_dripping_data_reply_ends_at_the_send_deadline(hostile_server, pipelining: bool) -> None:
    server = hostile_server(drip(0.2), pipelining=pipelining)
    session = open_session(config_for(server.port, timeout=30))
    started = time.monotonic()
    with pytest.raises(SmtpTemporaryError) as raised:
        session.send(
            message(), envelope_from="sender@example.com", recipient=TO, deadline=started + 2
        )
    assert raised.value.step == "data"
    assert 1.0 <= time.monotonic() - started <= 3.0
    session.close()


def test_a_pipelining_server_taking_data_after_refusing_the_recipient_gets_only_the_dot(
    hostile_server,
) -> None:
    # RFC 2920: DATA goes with RCPT TO unanswered; a server that refuses the recipient and then
    # says 354 anyway gets the lone dot, not the message, and the refusal is what is reported.
    server = hostile_server(
        lambda sock, stop: sock.sendall(b"554 5.5.1 no valid recipients\r\n"),
        pipelining=True,
        rcpt_reply=b"550 5.1.1 no such user",
    )
    session = open_session(config_for(server.port))
    with pytest.raises(SmtpPermanentError) as raised:
        session.send(message(), envelope_from="sender@example.com", recipient=TO)
    assert (raised.value.step, raised.value.code) == ("rcpt", 550)
    assert server.message_lines == [b".\r\n"]
    assert session.is_alive()  # the replies were all read: the connection is still in step
    session.close()


@contextlib.contextmanager
def scripted_server(script) -> Iterator[ScriptedServer]:
    server = ScriptedServer(script)
    try:
        yield server
    finally:
        server.stop()


def test_a_pipelining_session_writes_the_whole_group_before_reading_a_reply() -> None:
    # This server answers nothing until DATA has arrived: a client that waited for the reply
    # to MAIL FROM before writing RCPT TO and DATA would wait until its timeout.
    def script(line: bytes) -> bytes | None:
        verb = line[:4].upper()
        if verb in (b"MAIL", b"RCPT"):
            return b""
        if verb == b"DATA":
            return b"250 2.1.0 sender ok\r\n250 2.1.5 recipient ok\r\n354 go ahead\r\n"
        return smtp(["PIPELINING"])(line)

    with scripted_server(script) as server:
        session = open_session(config_for(server.port, timeout=3))
        assert session.send(message(), envelope_from="sender@example.com", recipient=TO)
        session.close()


@pytest.mark.parametrize("ending", [None, RESET], ids=["closes", "resets"])
def test_a_pipelining_server_ending_the_connection_after_its_421_is_reported_by_the_421(
    ending: bytes | None,
) -> None:
    # The replies to RCPT and DATA never come, and the end lands before DATA is written, so that
    # write fails: the 421 already received is still what is reported (a throttle, which backs
    # every worker off), not "connection closed".
    def script(line: bytes) -> bytes | None:
        if line.upper().startswith(b"MAIL"):
            return b"421 4.7.0 Too many messages, closing\r\n"
        if line.upper().startswith(b"RCPT"):
            return ending
        return smtp(["PIPELINING"])(line)

    def slow_write() -> bool:
        time.sleep(0.2)  # the outbox's write, while the server ends the connection
        return True

    with scripted_server(script) as server:
        session = open_session(config_for(server.port))
        with pytest.raises(SmtpTemporaryError) as raised:
            session.send(
                message(), envelope_from="sender@example.com", recipient=TO, meanwhile=slow_write
            )
        assert (raised.value.step, raised.value.code) == ("mail", 421)
        assert not session.is_alive()


@pytest.mark.parametrize("rcpt_reply", [b"252 2.1.5 cannot verify, will try", b"not smtp"])
def test_data_taken_after_an_unclear_reply_to_rcpt_is_not_ended_with_the_dot(
    hostile_server, rcpt_reply: bytes
) -> None:
    # The server may hold the recipient: the lone dot could deliver an empty message, so the
    # connection is closed instead, which discards the transaction.
    server = hostile_server(lambda sock, stop: None, pipelining=True, rcpt_reply=rcpt_reply)
    session = open_session(config_for(server.port))
    with pytest.raises(SmtpError) as raised:
        session.send(message(), envelope_from="sender@example.com", recipient=TO)
    assert raised.value.step == "rcpt"
    assert server.message_lines == []
    assert not session.is_alive()


@pytest.mark.parametrize("pipelining", [False, True], ids=["one-by-one", "pipelined"])
@pytest.mark.parametrize(
    ("data_reply", "error", "code"),
    [
        (b"554 5.5.1 No valid recipients\r\n", SmtpPermanentError, 554),
        (b"SSH-2.0-OpenSSH_9.6\r\n", SmtpConfigurationError, None),
    ],
    ids=["refused", "not-smtp"],
)
def test_a_reply_to_data_other_than_354_is_reported_alike_pipelined_or_not(
    pipelining: bool, data_reply: bytes, error: type, code: int | None
) -> None:
    def script(line: bytes) -> bytes | None:
        if line.upper().startswith(b"DATA"):
            return data_reply
        return smtp(["PIPELINING"] if pipelining else [])(line)

    with scripted_server(script) as server:
        session = open_session(config_for(server.port))
        with pytest.raises(SmtpError) as raised:
            session.send(message(), envelope_from="sender@example.com", recipient=TO)
        session.close()
    assert type(raised.value) is error
    assert (raised.value.step, raised.value.code) == ("data", code)
    assert b"Subject: Hi\r\n" not in b"".join(server.received)


def test_dripping_reply_without_a_deadline_ends_at_the_timeout(hostile_server) -> None:
    server = hostile_server(drip(0.2))
    session = open_session(config_for(server.port, timeout=2))
    started = time.monotonic()
    with pytest.raises(SmtpTemporaryError, match="no reply"):
        session.send(message(), envelope_from="sender@example.com", recipient=TO)
    assert 1.0 <= time.monotonic() - started <= 3.0
    session.close()
