"""Building messages: RFC 5322 headers, RFC 2047 display names, the envelope addresses."""

from __future__ import annotations

import email.policy
import functools
import re
from email.headerregistry import Address
from email.message import EmailMessage
from email.utils import formatdate, make_msgid

from django.utils.translation import gettext as _

from ..validators import MALFORMED_HEADER_ERRORS


def _refuse_line_breaks(name: str, value: str) -> None:
    if any(char in value for char in "\r\n\0"):
        raise ValueError(
            _("%(name)s must not contain line breaks or NUL characters.") % {"name": name}
        )


#: A dot-atom address with an ASCII domain (labels of at most 63 characters): what the header
#: parser below returns unchanged, so the common case (every stored recipient, which the outbox
#: keeps in its envelope form) skips that parser, about 0.2 ms a message in a worker.
PLAIN_ADDRESS = re.compile(
    r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*"
    r"@[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)+"
)


def parse_address(value: str, name: str) -> Address:
    """Parse ``a@b.c`` or ``Display Name <a@b.c>`` into one Address with an ASCII addr-spec."""
    if PLAIN_ADDRESS.fullmatch(value):
        username, _at, domain = value.rpartition("@")
        return Address(username=username, domain=domain)
    return _parse_address(value, name)


@functools.lru_cache(maxsize=1024)  # the same From is parsed for every message
def _parse_address(value: str, name: str) -> Address:
    _refuse_line_breaks(name, value)
    invalid = _("%(name)s is not a valid email address: %(value)s") % {"name": name, "value": value}
    try:
        header = email.policy.default.header_factory(name, value)
    except MALFORMED_HEADER_ERRORS:
        raise ValueError(invalid) from None
    addresses = getattr(header, "addresses", ())
    if len(addresses) != 1 or not addresses[0].username or not addresses[0].domain:
        raise ValueError(invalid)
    address = addresses[0]
    if not address.username.isascii():
        raise ValueError(
            _("%(name)s has non-ASCII characters before the @, which SMTP servers rarely accept.")
            % {"name": name}
        )
    if header.defects:
        raise ValueError(invalid)
    try:
        domain = address.domain.encode("idna").decode("ascii")
        return Address(display_name=address.display_name, username=address.username, domain=domain)
    except (UnicodeError, ValueError) as exc:
        raise ValueError(invalid) from exc


def envelope_address(from_address: str) -> str:
    """The bare address (``a@b.c``) of a From value, for MAIL FROM."""
    return parse_address(from_address, "From").addr_spec


def build_message(
    *,
    from_address: str,
    to: str,
    subject: str,
    body: str,
    html_body: str | None = None,
    reply_to: str | None = None,
    message_id: str | None = None,
    headers: dict[str, str] | None = None,
) -> EmailMessage:
    """An RFC 5322 message with CRLF line endings, Date, Message-ID and RFC 2047 headers."""
    sender = parse_address(from_address, "From")
    message = EmailMessage(policy=email.policy.SMTP)
    message["From"] = sender
    message["To"] = parse_address(to, "To")
    _refuse_line_breaks("Subject", subject)
    message["Subject"] = subject
    message["Date"] = formatdate(usegmt=True)
    if message_id is not None:
        _refuse_line_breaks("Message-ID", message_id)
    message["Message-ID"] = message_id or make_msgid(domain=sender.domain)
    if reply_to:
        message["Reply-To"] = parse_address(reply_to, "Reply-To")
    for name, value in (headers or {}).items():
        _refuse_line_breaks(name, name)
        _refuse_line_breaks(name, value)
        message[name] = value
    # Quoted-printable keeps non-ASCII bodies 7-bit clean for servers without 8BITMIME.
    message.set_content(body, cte=None if body.isascii() else "quoted-printable")
    if html_body is not None:
        cte = None if html_body.isascii() else "quoted-printable"
        message.add_alternative(html_body, subtype="html", cte=cte)
    return message
