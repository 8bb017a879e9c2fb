"""What the diagnosis says about a refused certificate and a missing greeting: real TLS servers
with certificates of chosen names, and the greeting hints by port and by what the port speaks."""

from __future__ import annotations

import datetime as dt
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from notifications.smtp import SmtpConfig, check_connection, diagnose
from notifications.smtp.errors import Context, greeting_hint
from notifications.smtp.tls import certificate_names, names_match
from tests.smtpserver import PASSWORD, USERNAME, Pki

TO = "rcpt@example.org"
SLOW_MACHINE_BOUND = 10.0  # seconds


def config(**values: Any) -> SmtpConfig:
    defaults: dict[str, Any] = {
        "host": "localhost",
        "port": 25,
        "security": "starttls",
        "username": USERNAME,
        "password": PASSWORD,
        "from_address": "sender@example.com",
        "timeout": 5.0,
    }
    return SmtpConfig(**{**defaults, **values})


# --- certificates issued for other names -------------------------------------------------------


@pytest.mark.parametrize("mode", ["ssl", "starttls"])
def test_ip_host_with_a_certificate_for_other_names_names_them(
    smtp_server_factory, smtp_pki: Pki, mode: str
) -> None:
    server = smtp_server_factory(mode, cert="wrong_host")

    report = diagnose(
        config(host="127.0.0.1", port=server.port, security=mode, ca_pem=smtp_pki.ca_pem), to=TO
    )

    assert report.failed_step == "tls"
    assert report.hint.startswith(
        "The certificate is issued for wrong.example, not for the IP address 127.0.0.1: use one "
        "of those names as the host (or add the IP address to the certificate)."
    )
    assert "does not trust" not in report.hint  # the CA is trusted: only the names are wrong
    assert "self-signed" not in report.hint
    assert server.state.credentials == []


def test_host_name_with_a_certificate_for_an_ip_address_names_the_address(
    smtp_server_factory, smtp_pki: Pki
) -> None:
    server = smtp_server_factory("ssl", cert="ip_only")

    report = check_connection(config(port=server.port, security="ssl", ca_pem=smtp_pki.ca_pem))

    assert report.failed_step == "tls"
    assert "The certificate is issued for 127.0.0.1, not for localhost" in report.hint
    assert "IP address to the certificate" not in report.hint


def test_untrusted_certificate_for_other_names_says_both(smtp_server_factory) -> None:
    """OpenSSL reports only the untrusted issuer; the names come from reading the certificate."""
    server = smtp_server_factory("starttls", cert="wrong_host")

    report = diagnose(config(port=server.port, ca_pem=""), to=TO)

    assert report.failed_step == "tls"
    assert "issued for wrong.example, not for localhost" in report.hint
    assert "signed by an authority this machine does not trust" in report.hint
    assert "Extra trusted CA (PEM)" in report.hint


def test_untrusted_certificate_with_the_right_names_says_only_the_trust(
    smtp_server_factory,
) -> None:
    server = smtp_server_factory("ssl", cert="self_signed")

    report = diagnose(config(port=server.port, security="ssl", ca_pem=""), to=TO)

    assert "self-signed or signed by an authority" in report.hint
    assert "issued for" not in report.hint


def test_reading_the_refused_certificate_costs_one_more_connection_only_on_failure(
    smtp_server_factory, smtp_pki: Pki
) -> None:
    refused = smtp_server_factory("starttls", cert="wrong_host")
    trusted = smtp_server_factory("starttls", cert="good")

    check_connection(config(port=refused.port, ca_pem=smtp_pki.ca_pem))
    report = check_connection(config(port=trusted.port, ca_pem=smtp_pki.ca_pem))

    assert report.ok, report.as_dict()
    deadline = time.monotonic() + 5
    while refused.state.total_sessions < 2 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert refused.state.total_sessions == 2  # the refused session, and the one reading the names
    assert trusted.state.total_sessions == 1


def _certificate(subject: str, names: list[x509.GeneralName] | None) -> x509.Certificate:
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)])
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(now)
        .not_valid_after(now + dt.timedelta(days=1))
    )
    if names is not None:
        builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
    return builder.sign(key, hashes.SHA256())


def test_certificate_names_are_its_alternative_names_else_its_common_name() -> None:
    import ipaddress

    both = _certificate(
        "ignored.example",
        [x509.DNSName("*.example.com"), x509.IPAddress(ipaddress.ip_address("192.0.2.7"))],
    )
    assert certificate_names(both) == ["*.example.com", "192.0.2.7"]
    assert certificate_names(_certificate("old.example", None)) == ["old.example"]
    assert names_match(["*.example.com"], "smtp.example.com")
    assert not names_match(["*.example.com"], "a.b.example.com")
    assert names_match(["192.0.2.7"], "192.0.2.7")
    assert not names_match(["192.0.2.7"], "192.0.2.8")


# --- no greeting --------------------------------------------------------------------------------


def _never_probed() -> bool:
    raise AssertionError("the answer is known: no probe connection")


@pytest.mark.parametrize(
    ("port", "security"),
    [(465, "starttls"), (465, "none")],
)
def test_port_465_suggests_implicit_tls_without_probing(port: int, security: str) -> None:
    hint = greeting_hint(
        Context(config(port=port, security=security), 5.0, speaks_tls=_never_probed)
    )

    assert hint.startswith("Port 465 expects SSL/TLS (implicit TLS): set Security to SSL/TLS")


def test_implicit_tls_that_does_not_greet_is_not_probed() -> None:
    hint = greeting_hint(Context(config(port=2465, security="ssl"), 5.0, speaks_tls=_never_probed))

    assert "SSL/TLS" not in hint
    assert "firewall" in hint


@pytest.mark.parametrize(("port", "extra"), [(587, ""), (25, "port 25"), (2525, "")])
def test_silent_ports_that_do_not_speak_tls_blame_what_holds_the_connection(
    port: int, extra: str
) -> None:
    hint = greeting_hint(Context(config(port=port), 5.0, speaks_tls=lambda: False))

    assert "set Security to SSL/TLS" not in hint
    assert "use port 587 with STARTTLS" not in hint
    for cause in ("firewall", "antivirus", "internet provider", "tarpit"):
        assert cause in hint
    assert (extra in hint) if extra else "port 25" not in hint


def test_port_587_found_speaking_tls_says_so_without_suggesting_587() -> None:
    hint = greeting_hint(Context(config(port=587), 5.0, speaks_tls=lambda: True))

    assert hint == (
        "The server on port 587 speaks TLS from the start (implicit TLS) instead of greeting: "
        "set Security to SSL/TLS."
    )


def test_a_silent_port_is_probed_once_and_blames_the_path(silent_port: int) -> None:
    started = time.monotonic()

    report = diagnose(config(host="127.0.0.1", port=silent_port, timeout=1.0), to=TO)

    assert report.failed_step == "greeting"
    assert "tarpit" in report.hint
    assert "SSL/TLS" not in report.hint
    assert time.monotonic() - started < SLOW_MACHINE_BOUND


SSH_BANNER = b"SSH-2.0-OpenSSH_9.2p1 Debian-2\r\n"


@contextmanager
def raw_server(
    on_connection: Callable[[socket.socket, int], None],
) -> Iterator[tuple[int, list[socket.socket]]]:
    """A loopback listener calling ``on_connection(connection, how_many_so_far)`` for each
    connection it accepts; yields its port and the connections, closed at the end."""
    listener = socket.create_server(("127.0.0.1", 0))
    accepted: list[socket.socket] = []

    def serve() -> None:
        while True:
            try:
                connection, _address = listener.accept()
            except OSError:
                return
            accepted.append(connection)
            on_connection(connection, len(accepted))

    threading.Thread(target=serve, daemon=True).start()
    try:
        yield listener.getsockname()[1], accepted
    finally:
        listener.close()
        for connection in accepted:
            connection.close()


@pytest.fixture
def ssh_port() -> Iterator[tuple[int, list[socket.socket]]]:
    """A port where an SSH server speaks first; the connections it accepted."""
    with raw_server(lambda connection, _n: connection.sendall(SSH_BANNER)) as served:
        yield served


def test_a_service_speaking_first_is_not_probed_for_tls(ssh_port) -> None:
    port, accepted = ssh_port

    report = diagnose(config(host="127.0.0.1", port=port, timeout=2.0), to=TO)

    assert report.failed_step == "greeting"
    assert report.hint.startswith("Another kind of service")
    assert "SSL/TLS" not in report.hint
    assert len(accepted) == 1


@pytest.fixture
def stalls_the_second_handshake(smtp_pki: Pki) -> Iterator[int]:
    """Implicit TLS with the wrong_host certificate on the first connection; every later one is
    accepted and then left silent, as a server might treat a second, unverified handshake."""
    context = smtp_pki.server_context("wrong_host")

    def handshake_the_first(connection: socket.socket, count: int) -> None:
        if count == 1:
            try:
                context.wrap_socket(connection, server_side=True)
            except OSError:
                pass  # the client refuses the certificate mid-handshake

    with raw_server(handshake_the_first) as (port, _accepted):
        yield port


def test_reading_the_refused_certificate_is_bounded_by_the_steps_timeout(
    stalls_the_second_handshake: int, smtp_pki: Pki
) -> None:
    started = time.monotonic()

    report = check_connection(
        config(
            host="127.0.0.1",
            port=stalls_the_second_handshake,
            security="ssl",
            ca_pem=smtp_pki.ca_pem,
            timeout=1.0,
        )
    )

    elapsed = time.monotonic() - started
    assert report.failed_step == "tls"
    # Without the names, the hint still says what the verify code says.
    assert report.hint.startswith("The certificate is not issued for 127.0.0.1")
    assert elapsed < 1.0 + 1.5  # the first handshake, then at most one timeout for the second
