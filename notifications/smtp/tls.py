"""The TLS client context (system CAs plus the extra trusted CA) and facts about a certificate."""

from __future__ import annotations

import ipaddress
import socket
import ssl
from datetime import UTC, datetime
from typing import Any

from cryptography import x509
from django.utils.translation import gettext as _

from ..exceptions import SmtpConfigurationError
from .config import SmtpConfig


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
                _("The custom CA is not a valid PEM certificate."),
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


def hostname_matches(cert: x509.Certificate, host: str) -> bool:
    try:
        names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return False
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        ip = None
    if ip is not None:
        return ip in names.get_values_for_type(x509.IPAddress)
    host = host.lower().rstrip(".")
    for name in names.get_values_for_type(x509.DNSName):
        name = name.lower().rstrip(".")
        if name == host:
            return True
        if name.startswith("*.") and "." in host and host.split(".", 1)[1] == name[2:]:
            return True
    return False


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


def speaks_tls(sockaddr: Any, family: int, host: str, timeout: float) -> bool:
    """Whether the port completes a TLS handshake (a probe after a missing greeting)."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    try:
        with socket.socket(family, socket.SOCK_STREAM) as raw:
            raw.settimeout(timeout)
            raw.connect(sockaddr)
            with context.wrap_socket(raw, server_hostname=host):
                return True
    except (OSError, ValueError):
        return False
