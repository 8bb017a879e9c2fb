"""Validators for values that end up in SMTP commands or mail headers, with actionable errors."""

from __future__ import annotations

import ipaddress
import re
from email.headerregistry import Address
from email.policy import default as default_policy

from django.core.exceptions import ValidationError
from django.core.validators import validate_email
from django.utils.translation import gettext_lazy as _

#: What CPython's header parser (email._header_value_parser) raises on some malformed address
#: lists instead of recording a defect, e.g. for ". <a@b.c>" or "é \\@": a bad address, not a bug.
MALFORMED_HEADER_ERRORS = (AttributeError, IndexError, TypeError, UnboundLocalError)

_HOSTNAME_LABEL = re.compile(r"^(?!-)[A-Za-z0-9-]{1,63}(?<!-)$")
_FORBIDDEN = {"\r": "CR", "\n": "LF", "\0": "NUL"}


def validate_no_control_characters(value: str) -> None:
    """Refuse CR, LF and NUL: in a header or SMTP command they let a value smuggle in another."""
    found = [name for char, name in _FORBIDDEN.items() if char in str(value)]
    if found:
        raise ValidationError(
            _("Remove the line break or NUL character (%(found)s): it is not allowed here."),
            code="control_characters",
            params={"found": ", ".join(found)},
        )


#: Besides CR and LF, what Python's email package treats as line breaks (str.splitlines) when it
#: writes a header: it refuses to build a message holding one, so refuse them on the way in.
_HEADER_BREAKS = {
    "\x0b": "VT",
    "\x0c": "FF",
    "\x1c": "FS",
    "\x1d": "GS",
    "\x1e": "RS",
    "\x85": "NEL",
    "\u2028": "LS",
    "\u2029": "PS",
}


def validate_header_text(value: str) -> None:
    """Text for a mail header: no line break of any kind and no other control character."""
    validate_no_control_characters(value)
    text = str(value)
    found = [name for char, name in _HEADER_BREAKS.items() if char in text]
    if found or any((ord(char) < 32 and char != "\t") or ord(char) == 127 for char in text):
        raise ValidationError(
            _("Remove the line break or control character (%(found)s): it is not allowed here."),
            code="control_characters",
            params={"found": ", ".join(found) or _("control character")},
        )


def validate_host(value: str) -> None:
    """A host name (letters, digits, hyphens, dots) or an IPv4/IPv6 address."""
    validate_no_control_characters(value)
    if not value or any(char.isspace() for char in value):
        raise ValidationError(
            _(
                "Enter the SMTP server's host name or IP address without spaces, "
                "e.g. smtp.example.com."
            ),
            code="host_spaces",
        )
    try:
        ipaddress.ip_address(value.strip("[]"))
        return
    except ValueError:
        pass
    try:
        ascii_host = value.rstrip(".").encode("idna").decode("ascii")
    except UnicodeError:
        ascii_host = ""
    labels = ascii_host.split(".") if ascii_host else []
    if (
        not labels
        or len(ascii_host) > 253
        or not all(_HOSTNAME_LABEL.match(label) for label in labels)
    ):
        raise ValidationError(
            _(
                "“%(value)s” is not a valid host name or IP address. Use the server name your "
                "provider gives, e.g. smtp.example.com, without “smtp://” or a port."
            ),
            code="host_invalid",
            params={"value": value},
        )


def parse_from_address(value: str) -> Address:
    """Parse ``name@example.com`` or ``Display Name <name@example.com>`` into an Address.

    Raises ValidationError with the fix when the value is neither.
    """
    validate_header_text(value)
    error = ValidationError(
        _(
            "Enter the sender as name@example.com or Display Name <name@example.com>; "
            "“%(value)s” is neither."
        ),
        code="from_invalid",
        params={"value": value},
    )
    try:
        header = default_policy.header_factory("From", value)
    except MALFORMED_HEADER_ERRORS:
        raise error from None
    if header.defects or len(header.addresses) != 1:
        raise error
    address = header.addresses[0]
    try:
        validate_email(address.addr_spec)
    except ValidationError:
        raise error from None
    return address


def validate_from_address(value: str) -> None:
    parse_from_address(value)


def validate_recipient(value: str) -> None:
    """A single bare address for one notification's recipient."""
    validate_no_control_characters(value)
    try:
        validate_email(value)
    except ValidationError:
        raise ValidationError(
            _("“%(value)s” is not an email address: use name@example.com."),
            code="recipient_invalid",
            params={"value": value},
        ) from None


def validate_ca_pem(value: str) -> None:
    """One or more PEM certificates, as the extra trusted CA field expects."""
    from cryptography import x509

    if not value.strip():
        return
    try:
        certificates = x509.load_pem_x509_certificates(value.strip().encode())
    except ValueError:
        certificates = []
    if not certificates:
        raise ValidationError(
            _(
                "Paste the CA certificate in PEM form: the text from “-----BEGIN "
                "CERTIFICATE-----” to “-----END CERTIFICATE-----”."
            ),
            code="ca_invalid",
        )
