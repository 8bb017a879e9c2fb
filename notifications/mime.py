"""The bytes of the common notification (text, optional HTML, no extra headers), built directly.

``email.message.EmailMessage`` costs about 1 ms a message (its header policy parses every header
it sets); this writes the same RFC 5322 / 2045 / 2047 message in a few dozen microseconds:
addresses through the same cached parser as ``smtp.build_message``, non-ASCII display names and
subjects as RFC 2047 encoded words, bodies as 7bit when they are short-lined ASCII and
quoted-printable otherwise (7-bit clean for servers without 8BITMIME). Tests check the result
against the ``email`` parser and against ``build_message``. Rows with extra headers go through
``build_message``.
"""

from __future__ import annotations

import binascii
import secrets
from email.header import Header
from email.utils import formataddr, formatdate, make_msgid

from notifications.smtp import build_message
from notifications.smtp.message import parse_address

#: RFC 5322's limit for a line; longer ones must be encoded.
MAX_LINE = 998
#: What Python's email package (str.splitlines) takes for a line break in a header, and NUL.
LINE_BREAKS = frozenset("\r\n\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029\0")


def render(
    *,
    from_address: str,
    to: str,
    subject: str,
    body: str,
    html_body: str | None = None,
    reply_to: str | None = None,
    message_id: str | None = None,
    headers: dict[str, str] | None = None,
) -> tuple[str, bytes]:
    """(Message-ID, the message as bytes with CRLF line endings); ValueError for a bad value."""
    if headers:
        message = build_message(
            from_address=from_address,
            to=to,
            subject=subject,
            body=body,
            html_body=html_body,
            reply_to=reply_to,
            message_id=message_id,
            headers=headers,
        )
        data = message.as_bytes(policy=message.policy.clone(linesep="\r\n"))
        return message["Message-ID"], data
    sender = parse_address(from_address, "From")
    for name, value in (("Subject", subject), ("Message-ID", message_id or "")):
        if any(char in value for char in LINE_BREAKS):
            raise ValueError(f"{name} must not contain line breaks or NUL characters.")
    message_id = message_id or make_msgid(domain=sender.domain)
    lines = [
        "From: " + _address(sender),
        "To: " + _address(parse_address(to, "To")),
        "Subject: " + _subject(subject),
        "Date: " + formatdate(usegmt=True),
        "Message-ID: " + message_id,
    ]
    if reply_to:
        lines.append("Reply-To: " + _address(parse_address(reply_to, "Reply-To")))
    lines.append("MIME-Version: 1.0")
    if html_body is None:
        lines += _part("plain", body)
    else:
        boundary = "=_" + secrets.token_hex(16)
        lines += [f'Content-Type: multipart/alternative; boundary="{boundary}"', ""]
        lines += [f"--{boundary}", *_part("plain", body)]
        lines += [f"--{boundary}", *_part("html", html_body), f"--{boundary}--", ""]
    return message_id, "\r\n".join(lines).encode("ascii")


def _address(address) -> str:
    # One encoded word for a non-ASCII display name: longer than RFC 2047's 75 characters when
    # the name is long, but split words come back from Python's parser with a space inserted.
    return formataddr((address.display_name, address.addr_spec), charset="utf-8")


def _subject(subject: str) -> str:
    if subject.isascii() and len(subject) <= 900 and "=?" not in subject:
        return subject
    # Encoded words (and folding) for anything else, as RFC 2047 wants.
    return Header(subject, "utf-8", header_name="Subject").encode(linesep="\r\n")


def _part(subtype: str, text: str) -> list[str]:
    """The headers, blank line and body lines of one text part."""
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    if not text.endswith("\n"):
        text += "\n"
    lines = text[:-1].split("\n")
    if text.isascii() and all(len(line) <= MAX_LINE for line in lines):
        encoding = "7bit"
    else:
        encoded = binascii.b2a_qp(text.encode("utf-8"), istext=True).decode("ascii")
        lines, encoding = encoded[:-1].split("\n"), "quoted-printable"
    return [
        f'Content-Type: text/{subtype}; charset="utf-8"',
        f"Content-Transfer-Encoding: {encoding}",
        "",
        *lines,
        "",
    ]
