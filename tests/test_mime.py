"""The direct message builder against the ``email`` parser and against ``build_message``."""

from __future__ import annotations

import email
import email.policy
import re

import pytest
from django.core.exceptions import ValidationError
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from notifications.mime import render
from notifications.smtp import build_message
from notifications.smtp.message import PLAIN_ADDRESS, _parse_address, parse_address
from notifications.validators import validate_header_text

FUZZ = settings(
    max_examples=150,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)
BARE_CR_OR_LF = re.compile(rb"\r(?!\n)|(?<!\r)\n")


def is_header_text(text: str) -> bool:
    """What notify() accepts as a subject."""
    try:
        validate_header_text(text)
    except ValidationError:
        return False
    return bool(text.strip())


def parsed(raw: bytes):
    return email.message_from_bytes(raw, policy=email.policy.default)


def reference(**fields) -> bytes:
    message = build_message(**fields)
    return message.as_bytes(policy=message.policy.clone(linesep="\r\n"))


def same_message(fields: dict) -> None:
    """render() and build_message() say the same to a reader, and render()'s bytes are clean."""
    message_id, raw = render(**fields)
    ours, theirs = parsed(raw), parsed(reference(**{**fields, "message_id": message_id}))
    assert not BARE_CR_OR_LF.search(raw) and raw.isascii()
    assert max(len(line) for line in raw.split(b"\r\n")) <= 998
    assert ours.defects == [] and all(not part.defects for part in ours.walk())
    # A reader sees the subject as written, even one that looks like an encoded word (which
    # build_message would let a reader decode).
    assert str(ours["Subject"]).strip() == fields["subject"].strip()
    # Addresses as the shared parser reads them (build_message's own folding can insert spaces
    # into a long non-ASCII display name).
    for header, field in (("From", "from_address"), ("To", "to"), ("Reply-To", "reply_to")):
        if fields.get(field):
            [got] = ours[header].addresses
            expected = parse_address(fields[field], header)
            assert (got.display_name, got.addr_spec) == (expected.display_name, expected.addr_spec)
        else:
            assert ours[header] is None
    assert ours["Message-ID"] == theirs["Message-ID"] == message_id
    assert ours["Date"] and ours["MIME-Version"] == "1.0"
    for subtype in ("plain", "html"):
        mine, reference_part = ours.get_body((subtype,)), theirs.get_body((subtype,))
        assert (mine is None) == (reference_part is None)
        if mine is not None:
            assert mine.get_content() == reference_part.get_content()


BASE = {"from_address": "Site <noreply@example.com>", "to": "a@example.com", "subject": "Hi"}


@pytest.mark.parametrize(
    "fields",
    [
        {"body": "Plain ASCII"},
        {"body": "", "html_body": "<p>only HTML</p>"},
        {"body": "Ünïcode ✓ 中文 🎉", "html_body": "<p>Ünïcode</p>"},
        {"body": "windows\r\nmac\runix\nend"},
        {"body": "x" * 5000},  # a line too long for 7bit
        {"body": ".leading dot\n.\n..two", "html_body": "= equals =3D"},
        {"body": "b", "subject": "主题：您的发票"},
        {"body": "b", "subject": "=?utf-8?q?looks_encoded?="},
        {"body": "b", "subject": "long " * 190},
        {"body": "b", "from_address": '"Doe, Jane" <jane@example.com>'},
        {"body": "b", "from_address": "张三 <sender@bücher.example>"},
        {"body": "b", "reply_to": "Support Team <help@example.com>"},
        {"body": "b", "message_id": "<kept@example.com>"},
    ],
)
def test_render_reads_like_build_message(fields: dict) -> None:
    same_message({**BASE, **fields})


@FUZZ
@given(
    subject=st.text(min_size=1, max_size=200).filter(is_header_text),
    body=st.text(max_size=400),
    html=st.none() | st.text(max_size=200),
    # Display names as people write them (the email parser itself crashes on some punctuation).
    name=st.text(st.characters(categories=["L", "N", "Zs"], include_characters=",'-"), max_size=30),
)
def test_render_reads_like_build_message_for_any_text(subject, body, html, name) -> None:
    fields = {
        "from_address": f"{name} <n@example.com>" if name else "n@example.com",
        "to": "a@example.com",
        "subject": subject,
        "body": body.replace("\0", ""),
        "html_body": html.replace("\0", "") if html is not None else None,
    }
    try:
        build_message(**fields)
    except ValueError:  # a display name that makes no address: render must refuse it too
        with pytest.raises(ValueError):
            render(**fields)
        return
    same_message(fields)


def test_bad_values_are_refused_like_build_message() -> None:
    for fields in ({"to": "not an address"}, {"subject": "two\nlines"}):
        with pytest.raises(ValueError):
            render(**{**BASE, "body": "b", **fields})
        with pytest.raises(ValueError):
            build_message(**{**BASE, "body": "b", **fields})


def test_extra_headers_go_through_build_message() -> None:
    _message_id, raw = render(**BASE, body="b", headers={"X-Campaign": "spring ✓"})
    assert str(parsed(raw)["X-Campaign"]) == "spring ✓"


ATEXT = "abcXYZ019!#$%&'*+/=?^_`{|}~-"
LABEL = st.text("aZ09-", min_size=1, max_size=66)
PLAINISH = st.builds(
    "{}@{}".format,
    st.lists(st.text(ATEXT, min_size=0, max_size=4), min_size=1, max_size=3).map(".".join),
    st.lists(LABEL, min_size=1, max_size=3).map(".".join),
)


def described(value: str) -> tuple | str:
    try:
        address = _parse_address(value, "To")
    except ValueError:
        return "refused"
    return (address.display_name, address.username, address.domain, address.addr_spec)


@FUZZ
@given(PLAINISH)
def test_plain_address_shortcut_reads_like_the_header_parser(value: str) -> None:
    """An address the shortcut takes comes out as the full parser reads it."""
    if PLAIN_ADDRESS.fullmatch(value):
        address = parse_address(value, "To")
        seen = (address.display_name, address.username, address.domain, address.addr_spec)
        assert seen == described(value)


def test_plain_address_shortcut_leaves_the_rest_to_the_parser() -> None:
    assert PLAIN_ADDRESS.fullmatch("a@" + "b" * 63 + ".com")
    for value in ("a@" + "b" * 64 + ".com", "a..b@c.com", "a@b-.com", "Name <a@b.com>", "a@b"):
        assert not PLAIN_ADDRESS.fullmatch(value)
    with pytest.raises(ValueError):
        parse_address("a@" + "b" * 64 + ".com", "To")
    assert parse_address("Name <a@b.com>", "To").display_name == "Name"
