"""The redactor masks a secret in every encoding and fragment; printable() defuses control bytes."""

from __future__ import annotations

import base64
import json
from urllib.parse import quote

import pytest

from notifications.redaction import MASK, Redactor, printable

CANARY = "Canary-Pässwörd-7f3Q!x"
USER = "mailer@example.com"


def _plain_blob(user: str, password: str) -> str:
    return base64.b64encode(f"\0{user}\0{password}".encode()).decode()


ECHOES = {
    "as written": CANARY,
    "base64": base64.b64encode(CANARY.encode()).decode(),
    "base64 without padding": base64.b64encode(CANARY.encode()).decode().rstrip("="),
    "url-safe base64": base64.urlsafe_b64encode(CANARY.encode()).decode(),
    "AUTH PLAIN blob": _plain_blob(USER, CANARY),
    "AUTH PLAIN blob without padding": _plain_blob(USER, CANARY).rstrip("="),
    "AUTH PLAIN blob cut to 48": _plain_blob(USER, CANARY)[:48],
    "AUTH PLAIN blob, authzid form": base64.b64encode(
        f"{USER}\0{USER}\0{CANARY}".encode()
    ).decode(),
    "hex": CANARY.encode().hex(),
    "percent-encoded": quote(CANARY, safe=""),
    "JSON-escaped": json.dumps(CANARY)[1:-1],
    "first two thirds": CANARY[: len(CANARY) * 2 // 3],
    "last half": CANARY[len(CANARY) // 2 :],
}


def _decodings(piece: str) -> list[bytes]:
    """What a left-over run could decode to: base64 (either alphabet) at any offset, or hex."""
    found = []
    for alphabet in (piece, piece.translate(str.maketrans("-_", "+/"))):
        for start in range(4):
            body = alphabet[start:].rstrip("=")
            body = body[: len(body) - len(body) % 4]
            try:
                found.append(base64.b64decode(body, validate=True))
            except ValueError:
                pass
    try:
        found.append(bytes.fromhex(piece[: len(piece) - len(piece) % 2]))
    except ValueError:
        pass
    return found


def _leaks(text: str) -> bool:
    """Whether four consecutive bytes of the canary can be read from what the mask left."""
    secret = CANARY.encode()
    runs = {secret[i : i + 4] for i in range(len(secret) - 3)}
    for piece in text.replace(MASK, " ").split():
        for decoded in [piece.encode(), *_decodings(piece)]:
            if any(run in decoded for run in runs):
                return True
    return False


def test_the_leak_oracle_sees_what_it_should():
    assert _leaks(f"x {ECHOES['AUTH PLAIN blob cut to 48']} y")
    assert _leaks(f"x {ECHOES['hex']} y")
    assert not _leaks("250 2.0.0 Ok: queued as 4F3A2B1C9D")


@pytest.mark.parametrize("encoding", sorted(ECHOES))
def test_every_encoding_and_fragment_is_masked(encoding):
    reply = f"535 5.7.8 X-ECHO {ECHOES[encoding]} rejected"
    masked = Redactor([CANARY]).redact(reply)
    assert MASK in masked
    assert masked.startswith("535 5.7.8 X-ECHO ")
    assert masked.endswith(" rejected")
    assert not _leaks(masked)


def test_a_known_blob_is_masked_whole_username_included():
    blob = _plain_blob(USER, CANARY)
    masked = Redactor([CANARY], extra_forms=[blob]).redact(f"500 unknown command {blob[:40]}")
    assert masked == f"500 unknown command {MASK}"


def test_text_without_secrets_is_unchanged():
    reply = "250-smtp.example.com Hello [127.0.0.1] SIZE 35882577 8BITMIME AUTH PLAIN LOGIN"
    assert Redactor([CANARY]).redact(reply) == reply


def test_secret_shorter_than_a_fragment_is_masked_whole_only():
    redactor = Redactor(["abc1"])
    assert redactor.redact("x abc1 y abc") == f"x {MASK} y abc"


def test_nested_report_is_redacted_everywhere():
    report = {"steps": [{"detail": {"extensions": ["x-echo " + CANARY]}, "code": 250}]}
    masked = Redactor([CANARY]).redact_tree(report)
    assert masked == {"steps": [{"detail": {"extensions": [f"x-echo {MASK}"]}, "code": 250}]}


def test_no_secrets_means_no_work():
    redactor = Redactor(["", ""])
    assert not redactor
    assert redactor.redact("anything") == "anything"


@pytest.mark.parametrize(
    ("hostile", "shown"),
    [
        ("\x1b[32mDelivered\x1b[0m", "\\x1b[32mDelivered\\x1b[0m"),
        ("250 ok\r\nINFO forged record", "250 ok\\r\\nINFO forged record"),
        ("a\u2028b\u2029c\x85d", "a\\u2028b\\u2029c\\x85d"),
        ("\u202egnp.exe", "\\u202egnp.exe"),
        ("tab\there", "tab\\there"),
    ],
)
def test_printable_escapes_what_could_repaint_a_terminal_or_forge_a_log_line(hostile, shown):
    assert printable(hostile) == shown


def test_printable_keeps_ordinary_text_and_chinese():
    text = "发送失败：服务器拒绝了登录（535）　请检查授权码 — naïve café"
    assert printable(text) == text
