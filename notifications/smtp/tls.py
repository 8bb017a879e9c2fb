"""The TLS client context (system CAs plus the extra trusted CA), facts about a certificate, and
the second connections that only explain a failure (does the port speak TLS, which certificate
does the server present)."""

from __future__ import annotations

import ipaddress
import smtplib
import socket
import ssl
import time
from datetime import UTC, datetime
from typing import Any

from cryptography import x509

from ..exceptions import SmtpConfigurationError
from ..phrases import phrase as _
from .client import _Client
from .config import SmtpConfig

#: X509_V_ERR_HOSTNAME_MISMATCH, X509_V_ERR_IP_ADDRESS_MISMATCH: issued for other names.
NAME_MISMATCH_CODES = frozenset({62, 64})


def verifying_context(ca_pem: str, *, step: str) -> ssl.SSLContext:
    """A verifying client context (chain, host name, TLS >= 1.2) plus the extra CA if any.

    The SMTP connection and the OAuth2 token endpoint share it, and so the extra CA field.
    """
    context = ssl.create_default_context()
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    if ca_pem.strip():
        try:
            context.load_verify_locations(cadata=ca_pem)
        except (ssl.SSLError, ValueError) as exc:
            raise SmtpConfigurationError(
                _("Extra trusted CA (PEM) is not a valid PEM certificate."),
                step=step,
                hint=_("Paste the CA certificate in PEM form (-----BEGIN CERTIFICATE-----…)."),
            ) from exc
    return context


def make_tls_context(config: SmtpConfig) -> ssl.SSLContext:
    """The SMTP connection's context: verifying, unless Skip Verify is on."""
    context = verifying_context(config.ca_pem, step="tls")
    if config.skip_verify:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


def certificate_names(cert: x509.Certificate) -> list[str]:
    """The names a certificate is issued for: its subjectAltName DNS names and IP addresses,
    else (an old certificate without them) its common name."""
    try:
        alternative = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        common = cert.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)
        return [str(attribute.value) for attribute in common]
    names = alternative.get_values_for_type(x509.DNSName)
    return names + [str(ip) for ip in alternative.get_values_for_type(x509.IPAddress)]


def is_ip_address(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def names_match(names: list[str], host: str) -> bool:
    """Whether ``host`` is one of ``names`` (an IP exactly; a name also by a ``*.`` wildcard)."""
    if is_ip_address(host):
        ip = ipaddress.ip_address(host)
        return any(is_ip_address(name) and ipaddress.ip_address(name) == ip for name in names)
    host = host.lower().rstrip(".")
    for name in names:
        name = name.lower().rstrip(".")
        if name == host:
            return True
        if name.startswith("*.") and "." in host and host.split(".", 1)[1] == name[2:]:
            return True
    return False


def hostname_matches(cert: x509.Certificate, host: str) -> bool:
    return names_match(certificate_names(cert), host)


def tls_facts(sock: ssl.SSLSocket, host: str, verified: bool) -> dict[str, Any]:
    cipher = sock.cipher()
    facts: dict[str, Any] = {
        "version": sock.version(),
        "cipher": cipher[0] if cipher else "",
        "verified": verified,
    }
    der = sock.getpeercert(binary_form=True)
    if der:
        cert = x509.load_der_x509_certificate(der)
        not_after = cert.not_valid_after_utc
        facts.update(
            subject=cert.subject.rfc4514_string(),
            issuer=cert.issuer.rfc4514_string(),
            not_after=not_after.isoformat(),
            days_left=(not_after - datetime.now(UTC)).days,
            hostname_match=hostname_matches(cert, host),
        )
    return facts


def unverified_context() -> ssl.SSLContext:
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


def unverified_certificate(sock: socket.socket, host: str) -> x509.Certificate | None:
    """The certificate the server on ``sock`` (connected, ready for a TLS handshake) presents,
    read without verifying it; None if there is none or the handshake fails. Closes ``sock``.

    Python's ssl gives no certificate from a handshake that failed verification (the unverified
    chain is Python 3.13's), so naming what a refused certificate is issued for takes a second
    handshake, made only after a refusal and bounded by the timeout already set on ``sock``.
    """
    try:
        with unverified_context().wrap_socket(sock, server_hostname=host) as tls:
            der = tls.getpeercert(binary_form=True)
    except (OSError, ValueError):
        return None
    finally:
        sock.close()
    try:
        return x509.load_der_x509_certificate(der) if der else None
    except ValueError:
        return None


def speaks_tls(sockaddr: Any, family: int, host: str, timeout: float) -> bool:
    """Whether the port completes a TLS handshake (a probe after a missing greeting)."""
    context = unverified_context()
    try:
        with socket.socket(family, socket.SOCK_STREAM) as raw:
            raw.settimeout(timeout)
            raw.connect(sockaddr)
            with context.wrap_socket(raw, server_hostname=host):
                return True
    except (OSError, ValueError):
        return False


def presented_certificate(
    config: SmtpConfig, family: int, sockaddr: Any, timeout: float
) -> x509.Certificate | None:
    """After the certificate was refused: the one the server presents, read unverified over a
    second connection to ``sockaddr`` (STARTTLS replayed), the whole of it within ``timeout``.
    See ``unverified_certificate``."""
    end = time.monotonic() + timeout

    def time_left() -> float:
        left = end - time.monotonic()
        if left <= 0:
            raise TimeoutError("no time left to read the certificate")
        return left

    probe = _Client(timeout=timeout, transcript=None, secrets=())
    probe.deadline = end  # bounds every reply read
    try:
        probe.sock = socket.socket(family, socket.SOCK_STREAM)
        probe.sock.settimeout(time_left())
        probe.sock.connect(sockaddr)
        if config.security == "starttls":
            probe._host = config.host
            if probe.getreply()[0] != 220 or probe.ehlo()[0] != 250:
                return None
            if probe.docmd("STARTTLS")[0] != 220:
                return None
        left = time_left()
        sock, probe.sock = probe.sock, None
        sock.settimeout(left)  # the handshake's bound
        return unverified_certificate(sock, config.host)
    except (OSError, smtplib.SMTPException):
        return None
    finally:
        probe.close()
