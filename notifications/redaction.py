"""Keeping secrets out of what a server says back, and control characters out of terminals and logs.

A hostile or broken server can echo what it was sent: the password in an EHLO keyword, the AUTH
PLAIN blob without its ``=`` padding, a token cut to the first 48 characters. Exact-match masking
misses all of those, so ``Redactor`` masks any run of at least ``FRAGMENT`` characters taken from
a secret or from one of the encodings it travels in, wherever it stands in the text.
"""

from __future__ import annotations

import base64
import json
import unicodedata
from collections.abc import Iterable
from typing import Any
from urllib.parse import quote, quote_plus

MASK = "********"
# The shortest piece of a secret (or of its encoding) that is masked: long enough that ordinary
# words in server replies are rarely hit, short enough that what survives gives little away.
FRAGMENT = 6
_URL_SAFE = str.maketrans("+/", "-_")


def _base64_forms(data: bytes) -> set[str]:
    """``data`` in base64, whole, and at each of the three byte alignments it can have inside a
    longer blob (AUTH PLAIN's ``\\0user\\0password``): there only the characters fixed by ``data``
    alone are kept, since the first and last depend on the neighbouring bytes.
    """
    whole = base64.b64encode(data).decode("ascii")
    forms = {whole, whole.rstrip("=")}
    for shift in range(3):
        encoded = base64.b64encode(b"\0" * shift + data).decode("ascii").rstrip("=")
        start = (shift * 4 + 2) // 3
        end = len(encoded) - (1 if (shift + len(data)) % 3 else 0)
        forms.add(encoded[start:end])
    forms |= {form.translate(_URL_SAFE) for form in forms}
    return {form for form in forms if form}


def encodings(secret: str) -> set[str]:
    """The secret as written and as it may travel or be echoed: base64, hex, URL, JSON, and
    its UTF-8 bytes misread as Latin-1."""
    raw = secret.encode("utf-8")
    forms = {
        secret,
        raw.hex(),
        raw.hex().upper(),
        quote(secret, safe=""),
        quote_plus(secret, safe=""),
        json.dumps(secret)[1:-1],
        json.dumps(secret, ensure_ascii=False)[1:-1],
        raw.decode("latin-1"),  # UTF-8 read as Latin-1, as smtplib reads EHLO keywords
    }
    forms |= _base64_forms(raw)
    return {form for form in forms if form}


class Redactor:
    """Masks every fragment of the given secrets, in any of their encodings, in text."""

    def __init__(self, secrets: Iterable[str], *, extra_forms: Iterable[str] = ()) -> None:
        forms: set[str] = set(extra_forms)
        for secret in secrets:
            if secret:
                forms |= encodings(secret)
        self._whole = sorted((form for form in forms if len(form) < FRAGMENT), key=len)[::-1]
        self._pieces = {
            form[i : i + FRAGMENT]
            for form in forms
            if len(form) >= FRAGMENT
            for i in range(len(form) - FRAGMENT + 1)
        }

    def __bool__(self) -> bool:
        return bool(self._whole or self._pieces)

    def redact(self, text: str) -> str:
        """``text`` with every run covered by a secret's fragments replaced by one mask."""
        if not self or not text:
            return text
        for short in self._whole:  # a secret shorter than a fragment is masked only whole
            text = text.replace(short, MASK)
        covered = bytearray(len(text))
        for start in range(len(text) - FRAGMENT + 1):
            if text[start : start + FRAGMENT] in self._pieces:
                covered[start : start + FRAGMENT] = b"\1" * FRAGMENT
        if not any(covered):
            return text
        out: list[str] = []
        index = 0
        while index < len(text):
            if covered[index]:
                out.append(MASK)
                while index < len(text) and covered[index]:
                    index += 1
            else:
                out.append(text[index])
                index += 1
        return "".join(out)

    def redact_tree(self, value: Any) -> Any:
        """The same for every string inside nested dicts, lists and tuples (a report, say)."""
        if isinstance(value, str):
            return self.redact(value)
        if isinstance(value, dict):
            return {key: self.redact_tree(item) for key, item in value.items()}
        if isinstance(value, list | tuple):
            return type(value)(self.redact_tree(item) for item in value)
        return value


def printable(text: str) -> str:
    """``text`` safe for one line of a terminal or a plain-text log.

    Control characters (ANSI escapes, CR, backspace, line and paragraph separators) are shown as
    escapes, so a server reply can neither repaint a terminal nor forge a second log record.
    """
    if text.isprintable():  # no character of a C* or Z* category but the space: nothing to do
        return text
    return "".join(
        _escape(char) if unicodedata.category(char) in _UNPRINTABLE else char for char in text
    )


# Control, format (bidi overrides, zero-width), surrogate, unassigned, private use; line and
# paragraph separators. Ordinary and ideographic spaces stay as they are.
_UNPRINTABLE = frozenset({"Cc", "Cf", "Cs", "Cn", "Co", "Zl", "Zp"})


def _escape(char: str) -> str:
    if char == "\t":
        return "\\t"
    if char == "\n":
        return "\\n"
    if char == "\r":
        return "\\r"
    return f"\\x{ord(char):02x}" if ord(char) < 0x100 else f"\\u{ord(char):04x}"
