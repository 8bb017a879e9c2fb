"""The SMTP transport and the stepwise diagnosis, against real aiosmtpd servers on loopback."""

from __future__ import annotations

import base64
import email
import email.policy
import json
import logging
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from notifications.exceptions import (
    SmtpConfigurationError,
    SmtpPermanentError,
    SmtpTemporaryError,
)
from notifications.smtp import (
    SmtpConfig,
    SmtpSession,
    auth_failure_hint,
    build_message,
    diagnose,
    envelope_address,
    make_tls_context,
    open_session,
)
from tests.smtpserver import PASSWORD, USERNAME, Pki, SmtpTestServer, read_events

FROM = "张三 <sender@example.com>"
TO = "rcpt@example.org"
ROOT = Path(__file__).resolve().parent.parent
SLOW_MACHINE_BOUND = 10.0  # seconds; generous for a noisy CI machine

ServerFactory = Callable[..., SmtpTestServer]


@pytest.fixture
def make_config(smtp_pki: Pki) -> Callable[..., SmtpConfig]:
    def make(server: SmtpTestServer | None = None, **overrides: Any) -> SmtpConfig:
        values: dict[str, Any] = {
            "host": "localhost",
            "port": server.port if server else 25,
            "security": server.mode if server else "starttls",
            "username": USERNAME,
            "password": PASSWORD,
            "from_address": FROM,
            "ca_pem": smtp_pki.ca_pem,
            "timeout": 5.0,
            "allow_plaintext_login": server is not None and server.mode == "none",
        }
        values.update(overrides)
        return SmtpConfig(**values)

    return make


def statuses(report) -> dict[str, str]:
    return {step.name: step.status for step in report.steps}


def message_to(address: str = TO, subject: str = "Hello"):
    return build_message(from_address=FROM, to=address, subject=subject, body="Body text.")


# --- success ---------------------------------------------------------------------------------


@pytest.mark.parametrize("mechanism", ["PLAIN", "LOGIN"])
@pytest.mark.parametrize("mode", ["ssl", "starttls", "none"])
def test_diagnosis_delivers_in_each_security_mode_with_each_login_method(
    smtp_server_factory: ServerFactory, make_config, mode: str, mechanism: str
) -> None:
    server = smtp_server_factory(mode, auth_mechanisms=(mechanism,))

    report = diagnose(make_config(server), to=TO)

    assert report.ok, report.as_dict()
    expected_tls = "skipped" if mode == "none" else "ok"
    assert statuses(report) == {
        **dict.fromkeys(["dns", "connect", "greeting", "ehlo", "auth"], "ok"),
        **dict.fromkeys(["mail", "rcpt", "data", "quit"], "ok"),
        "tls": expected_tls,
    }
    assert report.step("auth").detail["mechanism"] == mechanism
    assert server.state.auth_commands == [mechanism]
    assert server.state.credentials == [(USERNAME, PASSWORD)]
    [received] = server.messages
    assert received.mail_from == "sender@example.com"
    assert received.rcpt_tos == (TO,)
    assert received.auth_username == USERNAME


def test_implicit_tls_handshake_is_reported_before_the_greeting(
    ssl_smtp_server: SmtpTestServer, make_config
) -> None:
    report = diagnose(make_config(ssl_smtp_server), to=TO)

    names = [step.name for step in report.steps]
    assert names.index("tls") < names.index("greeting")
    assert report.transcript.index("S: 220 localhost Python SMTP 1.4.6") > next(
        i for i, line in enumerate(report.transcript) if line.startswith("* TLS established")
    )


def test_tls_step_reports_version_certificate_expiry_and_host_match(
    starttls_smtp_server: SmtpTestServer, make_config
) -> None:
    detail = diagnose(make_config(starttls_smtp_server), to=TO).step("tls").detail

    assert detail["version"] in {"TLSv1.2", "TLSv1.3"}
    assert detail["subject"] == "CN=localhost"
    assert detail["issuer"] == "CN=Throwaway Test CA"
    assert detail["days_left"] >= 28
    assert detail["hostname_match"] is True
    assert detail["verified"] is True
    assert "STARTTLS" not in detail["extensions"]  # the EHLO after the upgrade


def test_ehlo_step_records_the_extensions(starttls_smtp_server, make_config) -> None:
    detail = diagnose(make_config(starttls_smtp_server), to=TO).step("ehlo").detail

    assert "STARTTLS" in detail["extensions"]
    assert "8BITMIME" in detail["extensions"]


def test_received_message_has_encoded_from_date_message_id_and_crlf_only(
    starttls_smtp_server: SmtpTestServer, make_config
) -> None:
    with open_session(make_config(starttls_smtp_server)) as session:
        message = build_message(
            from_address=FROM,
            to=TO,
            subject="测试 notification",
            body="第一行\nsecond line\n.\nlast line\n",
            html_body="<p>第一行</p>",
        )
        session.send(message, envelope_from=envelope_address(FROM), recipient=TO)

    raw = starttls_smtp_server.messages[0].raw
    assert b"From: =?utf-8?b?5byg5LiJ?= <sender@example.com>\r\n" in raw
    assert raw.isascii()
    assert b"\n" not in raw.replace(b"\r\n", b"")
    assert b"\r" not in raw.replace(b"\r\n", b"")
    parsed = email.message_from_bytes(raw, policy=email.policy.default)
    assert parsed["From"].addresses[0].display_name == "张三"
    assert str(parsed["Subject"]) == "测试 notification"
    assert parsed["Date"].datetime is not None
    assert parsed["Message-ID"].endswith("@example.com>")
    assert parsed.get_content_type() == "multipart/alternative"
    text = parsed.get_body(("plain",)).get_content().replace("\r\n", "\n")
    assert text == "第一行\nsecond line\n.\nlast line\n"


def test_one_session_carries_several_messages(plain_smtp_server, make_config) -> None:
    with open_session(make_config(plain_smtp_server)) as session:
        replies = [
            session.send(message_to(), envelope_from="sender@example.com", recipient=TO)
            for _ in range(3)
        ]
        assert session.is_alive()

    assert replies == ["OK queued as 1", "OK queued as 2", "OK queued as 3"]
    assert plain_smtp_server.state.total_sessions == 1
    assert plain_smtp_server.state.credentials == [(USERNAME, PASSWORD)]


@pytest.mark.parametrize("pipelining", [True, False], ids=["pipelined", "one-by-one"])
def test_meanwhile_runs_while_mail_from_is_on_its_way_and_its_no_sends_nothing(
    smtp_server_factory: ServerFactory, make_config, pipelining: bool
) -> None:
    server = smtp_server_factory("none", pipelining=pipelining)
    session = SmtpSession(make_config(server), transcript=True)
    session.connect()
    seen: list[list[str]] = []

    def meanwhile(answer: bool) -> Callable[[], bool]:
        def look() -> bool:
            transcript = session.recorder.transcript
            mail_from = transcript.index("C: MAIL FROM:<sender@example.com>", -3)
            seen.append(transcript[mail_from:])  # what was sent since, no reply read yet
            return answer

        return look

    with session:
        refused = session.send(
            message_to(),
            envelope_from="sender@example.com",
            recipient=TO,
            meanwhile=meanwhile(False),
        )
        reply = session.send(
            message_to(),
            envelope_from="sender@example.com",
            recipient=TO,
            meanwhile=meanwhile(True),
        )

    # Pipelined, RCPT TO goes with MAIL FROM, and DATA only after meanwhile said yes.
    sent_with_mail = [f"C: RCPT TO:<{TO}>"] if pipelining else []
    assert seen == [["C: MAIL FROM:<sender@example.com>", *sent_with_mail]] * 2
    assert (refused, reply) == (None, "OK queued as 1")
    transcript = session.recorder.transcript
    assert transcript.count("C: DATA") == 1 and "C: RSET" in transcript
    assert len(server.messages) == 1 and server.state.total_sessions == 1


@pytest.mark.parametrize("pipelining", [True, False], ids=["pipelined", "one-by-one"])
def test_meanwhile_raising_sends_nothing_and_leaves_the_session_in_step(
    smtp_server_factory: ServerFactory, make_config, pipelining: bool
) -> None:
    server = smtp_server_factory("none", pipelining=pipelining)

    def broken() -> bool:
        raise RuntimeError("the outbox's write failed")

    with open_session(make_config(server)) as session:
        with pytest.raises(RuntimeError):
            session.send(
                message_to(), envelope_from="sender@example.com", recipient=TO, meanwhile=broken
            )
        reply = session.send(message_to(), envelope_from="sender@example.com", recipient=TO)

    assert reply == "OK queued as 1" and len(server.messages) == 1
    assert server.state.total_sessions == 1


def test_a_deadline_passing_with_replies_due_closes_the_connection(
    plain_smtp_server: SmtpTestServer, make_config, monkeypatch
) -> None:
    # MAIL FROM's reply read, the deadline passes before RCPT TO's: the replies to RCPT TO and
    # DATA (a 354) are still due, so the connection cannot carry another message.
    from notifications.smtp import pipelining
    from notifications.smtp import session as session_module

    late = {"by": 0.0}
    clock = SimpleNamespace(monotonic=lambda: time.monotonic() + late["by"])
    monkeypatch.setattr(session_module, "time", clock)
    read = pipelining.Group.read

    def read_then_run_late(group):
        reply = read(group)
        late["by"] = 3600.0
        return reply

    monkeypatch.setattr(pipelining.Group, "read", read_then_run_late)
    with open_session(make_config(plain_smtp_server)) as session:
        with pytest.raises(SmtpTemporaryError) as raised:
            session.send(
                message_to(),
                envelope_from="sender@example.com",
                recipient=TO,
                deadline=time.monotonic() + 60,
            )
        assert raised.value.step == "rcpt"
        assert not session.is_alive()
    assert plain_smtp_server.messages == []


def test_commands_are_not_held_back_by_nagles_algorithm(plain_smtp_server, make_config) -> None:
    # A pipelined DATA written while MAIL FROM and RCPT TO are unacknowledged would wait about
    # a round trip for their ACK.
    with open_session(make_config(plain_smtp_server)) as session:
        sock = session._client.sock
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)


def test_no_username_skips_login(smtp_server_factory: ServerFactory, make_config) -> None:
    server = smtp_server_factory("none")

    report = diagnose(make_config(server, username="", password=""), to=TO)

    assert report.ok
    assert report.step("auth").status == "skipped"
    assert server.state.auth_commands == []


# --- failures, one per hint ------------------------------------------------------------------


def test_unknown_host_fails_at_dns(make_config) -> None:
    started = time.monotonic()

    report = diagnose(make_config(host="no-such-host.invalid", port=587), to=TO)

    assert report.failed_step == "dns"
    assert "host name" in report.hint
    assert statuses(report)["connect"] == "not_run"
    assert time.monotonic() - started < SLOW_MACHINE_BOUND


def test_refused_connection_fails_at_connect(closed_port: int, make_config) -> None:
    report = diagnose(make_config(host="127.0.0.1", port=closed_port), to=TO)

    assert report.failed_step == "connect"
    assert "refused" in report.error
    assert "465 for SSL/TLS" in report.hint and "587 for STARTTLS" in report.hint


def test_connect_timeout_fails_at_connect_and_suggests_another_port(
    backlogged_port: int, make_config
) -> None:
    started = time.monotonic()

    report = diagnose(make_config(host="127.0.0.1", port=backlogged_port, timeout=1.0), to=TO)

    assert report.failed_step == "connect"
    assert "blocking outgoing port" in report.hint
    assert "try 587 (STARTTLS) or 465" in report.hint
    assert time.monotonic() - started < SLOW_MACHINE_BOUND


def test_implicit_tls_against_a_plaintext_port_fails_at_tls(plain_smtp_server, make_config) -> None:
    report = diagnose(make_config(plain_smtp_server, security="ssl"), to=TO)

    assert report.failed_step == "tls"
    assert "does not speak implicit TLS" in report.hint
    assert "STARTTLS" in report.hint


def test_plaintext_against_an_implicit_tls_port_says_the_port_expects_ssl_tls(
    ssl_smtp_server: SmtpTestServer, make_config
) -> None:
    started = time.monotonic()

    report = diagnose(make_config(ssl_smtp_server, security="starttls", timeout=1.0), to=TO)

    assert report.failed_step == "greeting"
    assert f"The server on port {ssl_smtp_server.port} speaks TLS from the start" in report.hint
    # Only port 465 suggests the other port; the random test port may itself contain "587".
    assert "use port 587" not in report.hint
    assert time.monotonic() - started < SLOW_MACHINE_BOUND


def test_server_hiding_starttls_fails_before_login_and_never_receives_credentials(
    smtp_server_factory: ServerFactory, make_config
) -> None:
    server = smtp_server_factory("starttls", offer_starttls=False)

    report = diagnose(make_config(server), to=TO)

    assert report.failed_step == "tls"
    assert "STARTTLS" in report.error
    assert statuses(report)["auth"] == "not_run"
    assert server.state.auth_commands == []
    assert server.state.credentials == []
    assert not any(line.startswith("C: AUTH") for line in report.transcript)


@pytest.mark.parametrize(
    ("cert", "ca", "hint"),
    [
        ("self_signed", "", "into Extra trusted CA (PEM) under Advanced security"),
        ("good", "", "smtp_settings --ca-file"),  # signed by a CA this machine does not trust
        ("expired", "pki", "expired"),
        ("wrong_host", "pki", "issued for wrong.example, not for localhost"),
    ],
)
def test_untrusted_certificates_are_refused_at_tls_with_a_hint(
    smtp_server_factory: ServerFactory, smtp_pki: Pki, make_config, cert: str, ca: str, hint: str
) -> None:
    server = smtp_server_factory("ssl", cert=cert)

    report = diagnose(make_config(server, ca_pem=smtp_pki.ca_pem if ca else ""), to=TO)

    assert report.failed_step == "tls"
    assert hint in report.hint
    assert "Skip certificate verification" in report.hint
    assert server.state.credentials == []


def test_self_signed_certificate_is_accepted_when_given_as_custom_ca(
    smtp_server_factory: ServerFactory, smtp_pki: Pki, make_config
) -> None:
    server = smtp_server_factory("starttls", cert="self_signed")
    self_signed_pem = smtp_pki.cert_files("self_signed")[0].read_text()

    report = diagnose(make_config(server, ca_pem=self_signed_pem), to=TO)

    assert report.ok, report.as_dict()


def test_self_signed_certificate_is_accepted_with_skip_verify(
    smtp_server_factory: ServerFactory, make_config
) -> None:
    server = smtp_server_factory("ssl", cert="self_signed")

    report = diagnose(make_config(server, ca_pem="", skip_verify=True), to=TO)

    assert report.ok, report.as_dict()
    assert report.step("tls").detail["verified"] is False
    assert report.step("tls").detail["hostname_match"] is True


def test_server_not_offering_auth_fails_at_auth(
    smtp_server_factory: ServerFactory, make_config
) -> None:
    server = smtp_server_factory("starttls", offer_auth=False)

    report = diagnose(make_config(server), to=TO)

    assert report.failed_step == "auth"
    assert "does not offer login" in report.error
    assert "clear the username" in report.hint
    assert server.state.auth_commands == []


def test_plaintext_login_is_refused_unless_allowed(plain_smtp_server, make_config) -> None:
    config = make_config(plain_smtp_server, allow_plaintext_login=False)

    report = diagnose(config, to=TO)
    with pytest.raises(SmtpConfigurationError) as raised:
        open_session(config)

    assert report.failed_step == "auth"
    assert raised.value.step == "auth"
    assert "unencrypted" in report.error
    assert plain_smtp_server.state.auth_commands == []
    assert plain_smtp_server.messages == []


def test_wrong_password_fails_at_auth_after_one_attempt(
    starttls_smtp_server: SmtpTestServer, make_config
) -> None:
    report = diagnose(make_config(starttls_smtp_server, password="wrong-password"), to=TO)

    assert report.failed_step == "auth"
    assert report.step("auth").code == 535
    assert "username and password" in report.hint
    assert starttls_smtp_server.state.auth_commands == ["PLAIN"]  # no second mechanism tried


def test_microsoft_basic_auth_disabled_reply_gets_its_hint(
    smtp_server_factory: ServerFactory, make_config
) -> None:
    reply = "535 5.7.139 Authentication unsuccessful, basic authentication is disabled."
    server = smtp_server_factory("starttls", auth_failure_reply=reply)

    with pytest.raises(SmtpConfigurationError) as raised:
        open_session(make_config(server, password="wrong-password"))

    assert raised.value.step == "auth"
    assert raised.value.code == 535
    assert "5.7.139" in raised.value.reply
    assert "disabled basic authentication" in raised.value.hint


@pytest.mark.parametrize(
    ("host", "expected"),
    [
        ("smtp.163.com", "authorization code"),
        ("smtp.126.com", "authorization code"),
        ("smtp.qq.com", "authorization code"),
        ("smtp.qiye.aliyun.com", "authorization code"),
        ("smtp.gmail.com", "app password"),
        ("smtp.office365.com", "5.7.139"),
    ],
)
def test_login_failure_hint_names_what_the_provider_needs(host: str, expected: str) -> None:
    assert expected in auth_failure_hint(host, "535 5.7.8 Authentication failed")


@pytest.mark.parametrize(
    ("command", "reply", "step", "hint"),
    [
        ("MAIL", "553 5.7.1 Sender address rejected: not owned by user", "mail", "From"),
        ("RCPT", "550 5.1.1 No such user here", "rcpt", "recipient"),
        ("DATA", "554 5.7.1 Message rejected as spam", "data", "message itself"),
    ],
)
def test_permanent_refusals_fail_at_their_step(
    plain_smtp_server: SmtpTestServer, make_config, command: str, reply: str, step: str, hint: str
) -> None:
    plain_smtp_server.queue_replies(command, reply, reply)

    report = diagnose(make_config(plain_smtp_server), to=TO)
    with open_session(make_config(plain_smtp_server)) as session:
        with pytest.raises(SmtpPermanentError) as raised:
            session.send(message_to(), envelope_from="sender@example.com", recipient=TO)

    assert report.failed_step == step
    assert hint in report.hint
    assert report.step(step).code == int(reply[:3])
    assert report.step(step).reply == reply[4:]
    assert (raised.value.step, raised.value.code) == (step, int(reply[:3]))
    assert plain_smtp_server.messages == []


def test_temporary_refusal_is_temporary_and_the_session_recovers(
    plain_smtp_server: SmtpTestServer, make_config
) -> None:
    plain_smtp_server.queue_replies("RCPT", "451 4.7.1 Greylisted, try later", "451 4.7.1 Again")

    with open_session(make_config(plain_smtp_server)) as session:
        for _ in range(2):
            with pytest.raises(SmtpTemporaryError) as raised:
                session.send(message_to(), envelope_from="sender@example.com", recipient=TO)
            assert (raised.value.step, raised.value.code) == ("rcpt", 451)
            assert "temporary" in raised.value.hint
        session.send(message_to(), envelope_from="sender@example.com", recipient=TO)

    assert len(plain_smtp_server.messages) == 1


@pytest.mark.parametrize("pipelining", [True, False], ids=["pipelined", "one-by-one"])
@pytest.mark.parametrize("command", ["MAIL", "RCPT", "DATA"])
def test_after_a_refusal_at_any_step_the_next_message_goes_through_the_same_session(
    smtp_server_factory: ServerFactory, make_config, command: str, pipelining: bool
) -> None:
    # Pipelined, the replies to RCPT and DATA are still due when MAIL is refused: each is read
    # before the RSET, or every later reply would answer the command before it.
    server = smtp_server_factory("none", pipelining=pipelining)
    server.queue_replies(command, "550 5.7.1 refused")

    with open_session(make_config(server)) as session:
        with pytest.raises(SmtpPermanentError) as raised:
            session.send(message_to(), envelope_from="sender@example.com", recipient=TO)
        reply = session.send(message_to(), envelope_from="sender@example.com", recipient=TO)

    assert (raised.value.step, raised.value.code) == (command.lower(), 550)
    assert reply == "OK queued as 1" and len(server.messages) == 1
    assert server.state.total_sessions == 1


def test_temporary_refusal_is_reported_in_the_diagnosis(plain_smtp_server, make_config) -> None:
    plain_smtp_server.queue_replies("MAIL", "421 4.3.2 Service not available, closing")

    report = diagnose(make_config(plain_smtp_server), to=TO)

    assert report.failed_step == "mail"
    assert "temporary" in report.hint


@pytest.mark.parametrize("command", ["EHLO", "MAIL", "DATA"])
def test_server_dropping_the_connection_fails_at_that_step(
    plain_smtp_server: SmtpTestServer, make_config, command: str
) -> None:
    plain_smtp_server.drop_at(command)

    report = diagnose(make_config(plain_smtp_server), to=TO)

    assert report.failed_step == command.lower()
    assert "closed the connection" in report.error
    assert "dropped the connection" in report.hint


def test_server_dropping_the_connection_is_a_temporary_error(plain_smtp_server, make_config):
    plain_smtp_server.drop_at("RCPT")

    with open_session(make_config(plain_smtp_server)) as session:
        with pytest.raises(SmtpTemporaryError) as raised:
            session.send(message_to(), envelope_from="sender@example.com", recipient=TO)
        assert not session.is_alive()

    assert raised.value.step == "rcpt"


def test_server_that_never_greets_fails_at_greeting_within_the_timeout(
    silent_port: int, make_config
) -> None:
    started = time.monotonic()

    report = diagnose(make_config(host="127.0.0.1", port=silent_port, timeout=1.0), to=TO)

    assert report.failed_step == "greeting"
    assert "did not greet" in report.hint
    assert time.monotonic() - started < SLOW_MACHINE_BOUND


def test_diagnosis_stops_at_its_overall_deadline(silent_port: int, make_config) -> None:
    started = time.monotonic()

    report = diagnose(
        make_config(host="127.0.0.1", port=silent_port, timeout=60), to=TO, deadline=1
    )

    assert report.failed_step == "greeting"
    assert time.monotonic() - started < SLOW_MACHINE_BOUND


def test_slow_data_reply_times_out_as_temporary(plain_smtp_server, make_config) -> None:
    plain_smtp_server.handler.data_delay = 3.0

    with open_session(make_config(plain_smtp_server, timeout=1.0)) as session:
        with pytest.raises(SmtpTemporaryError) as raised:
            session.send(message_to(), envelope_from="sender@example.com", recipient=TO)

    assert raised.value.step == "data"
    assert "within 1 s" in str(raised.value)


def test_bad_addresses_fail_before_connecting(make_config, closed_port: int) -> None:
    bad_from = diagnose(make_config(port=closed_port, from_address="not an address"), to=TO)
    bad_to = diagnose(make_config(port=closed_port), to="nobody")

    assert bad_from.failed_step == "mail"
    assert bad_to.failed_step == "rcpt"
    assert statuses(bad_to)["connect"] == "not_run"


@pytest.mark.parametrize("recipient", ["nobody", "a@exa mple.com", "ünïcode@example.com"])
def test_invalid_recipient_fails_only_its_own_message(
    plain_smtp_server: SmtpTestServer, make_config, recipient: str
) -> None:
    with open_session(make_config(plain_smtp_server)) as session:
        with pytest.raises(SmtpPermanentError) as raised:
            session.send(message_to(), envelope_from="sender@example.com", recipient=recipient)
        session.send(message_to(), envelope_from="sender@example.com", recipient=TO)

    assert raised.value.step == "rcpt"
    assert len(plain_smtp_server.messages) == 1


def test_close_tolerates_a_dead_connection(plain_smtp_server, make_config) -> None:
    session = open_session(make_config(plain_smtp_server, timeout=1.0))
    plain_smtp_server.stop()

    assert not session.is_alive()
    session.close()
    session.close()


# --- secrets ---------------------------------------------------------------------------------


def secret_forms(username: str, password: str) -> list[str]:
    def b64(text: str) -> str:
        return base64.b64encode(text.encode()).decode()

    return [password, b64(password), b64(f"\0{username}\0{password}")]


def test_password_appears_in_no_report_transcript_error_or_log(
    smtp_server_factory: ServerFactory, make_config, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    secret = "Sup3r-Secret-Value"
    outputs: list[str] = []
    scenarios = [
        ("starttls", {"auth_mechanisms": ("PLAIN",)}, {}),
        ("ssl", {"auth_mechanisms": ("LOGIN",)}, {}),
        ("starttls", {"users": {USERNAME: "other"}}, {}),  # rejected login
        ("starttls", {"offer_auth": False}, {}),
        ("none", {}, {"allow_plaintext_login": False}),
        ("none", {}, {}),  # plaintext login allowed
    ]
    for mode, server_options, config_options in scenarios:
        server = smtp_server_factory(mode, **{"users": {USERNAME: secret}, **server_options})
        config = make_config(server, password=secret, **config_options)
        outputs.append(json.dumps(diagnose(config, to=TO).as_dict(), ensure_ascii=False))
        try:
            with open_session(config) as session:
                session.send(message_to(), envelope_from="sender@example.com", recipient=TO)
        except Exception as exc:  # every error the caller could show or log
            outputs += [str(exc), exc.hint, exc.reply, repr(exc)]  # type: ignore[attr-defined]
        outputs.append(repr(config))

    outputs += [record.getMessage() for record in caplog.records]
    text = "\n".join(outputs)
    assert "C: AUTH PLAIN ********" in text
    assert "C: AUTH LOGIN ********" in text
    for form in secret_forms(USERNAME, secret):
        assert form not in text


def test_a_server_echoing_the_password_is_redacted(plain_smtp_server, make_config) -> None:
    plain_smtp_server.queue_replies("RCPT", *[f"550 5.1.1 user {PASSWORD} unknown"] * 2)
    config = make_config(plain_smtp_server)

    report = diagnose(config, to=TO)
    with open_session(config) as session:
        with pytest.raises(SmtpPermanentError) as raised:
            session.send(message_to(), envelope_from="sender@example.com", recipient=TO)

    text = json.dumps(report.as_dict()) + str(raised.value) + raised.value.reply
    assert "550 5.1.1 user ******** unknown" in text
    assert PASSWORD not in text


# --- building messages and contexts -----------------------------------------------------------


@pytest.mark.parametrize(
    "overrides",
    [
        {"subject": "Hi\r\nBcc: victim@example.com"},
        {"subject": "Hi\nthere"},
        {"to": "a@example.com\r\nBcc: victim@example.com"},
        {"from_address": "Name <a@example.com>\n"},
        {"reply_to": "a@example.com\rX: y"},
        {"headers": {"X-Tag": "a\0b"}},
        {"message_id": "<a@b>\r\nBcc: c@d"},
    ],
)
def test_header_injection_is_refused(overrides: dict[str, Any]) -> None:
    arguments: dict[str, Any] = {"from_address": FROM, "to": TO, "subject": "s", "body": "b"}
    with pytest.raises(ValueError):
        build_message(**{**arguments, **overrides})


def test_message_gets_date_message_id_and_custom_headers() -> None:
    message = build_message(
        from_address="Team <team@example.com>",
        to=TO,
        subject="s",
        body="b",
        reply_to="help@example.com",
        headers={"X-Notification-Id": "42"},
    )

    assert message["Date"]
    assert message["Message-ID"].endswith("@example.com>")
    assert message["Reply-To"] == "help@example.com"
    assert message["X-Notification-Id"] == "42"
    assert message.get_content_type() == "text/plain"


def test_given_message_id_is_kept() -> None:
    message = build_message(
        from_address=FROM, to=TO, subject="s", body="b", message_id="<fixed@example.com>"
    )

    assert message["Message-ID"] == "<fixed@example.com>"


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("a@example.com", "a@example.com"),
        ("张三 <sender@example.com>", "sender@example.com"),
        ('"Doe, John" <john@example.com>', "john@example.com"),
        ("Büro <info@bücher.example>", "info@xn--bcher-kva.example"),
    ],
)
def test_envelope_address_is_the_bare_address(value: str, expected: str) -> None:
    assert envelope_address(value) == expected


def test_tls_context_verifies_chain_and_host_name_with_tls_1_2_or_newer(make_config) -> None:
    context = make_tls_context(make_config(ca_pem=""))

    assert context.verify_mode == ssl.CERT_REQUIRED
    assert context.check_hostname is True
    assert context.minimum_version >= ssl.TLSVersion.TLSv1_2


def test_tls_context_with_skip_verify_verifies_nothing(make_config) -> None:
    context = make_tls_context(make_config(skip_verify=True))

    assert context.verify_mode == ssl.CERT_NONE
    assert context.check_hostname is False


def test_config_repr_hides_the_password(make_config) -> None:
    assert PASSWORD not in repr(make_config())


# --- the out-of-process server ---------------------------------------------------------------


def test_out_of_process_server_records_sessions_and_messages_as_json_lines(
    tmp_path, make_config
) -> None:
    events = tmp_path / "events.jsonl"
    command = [sys.executable, "-m", "tests.smtpserver", "--mode", "starttls"]
    command += ["--pki-dir", str(tmp_path / "pki"), "--events", str(events)]
    process = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        port = int(process.stdout.readline())
        ca_pem = (tmp_path / "pki" / "ca.pem").read_text()
        config = make_config(host="localhost", port=port, security="starttls", ca_pem=ca_pem)

        assert diagnose(config, to=TO).ok
    finally:
        process.terminate()
        process.wait(timeout=10)

    kinds = [event["event"] for event in read_events(events)]
    assert kinds.count("message") == 1
    assert "session_opened" in kinds
    [message] = [event for event in read_events(events) if event["event"] == "message"]
    assert message["rcpt_tos"] == [TO]
    assert message["auth_username"] == USERNAME


@pytest.mark.parametrize(
    "value", ["x <a@b.c>, y <d@e.f>", "a@exa mple.com", "nobody", "ünïcode@example.com", ""]
)
def test_from_must_be_exactly_one_valid_address(value: str) -> None:
    with pytest.raises(ValueError):
        envelope_address(value)
