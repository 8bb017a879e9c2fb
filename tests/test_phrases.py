"""Phrases: text in the active language that remembers its msgid and parameters, stored as JSON
and rendered again in another language."""

from __future__ import annotations

import copy
import json
import pickle

from django.utils import translation
from django.utils.translation import gettext, gettext_lazy

from notifications import phrases

HINT = (
    "The certificate is issued for %(names)s, not for the IP address %(host)s: use one of those "
    "names as the host (or add the IP address to the certificate)."
)
WHERE = {"names": "mx.example", "host": "192.0.2.1"}
REPLY = "550 the server's own words"


def in_chinese(msgid: str, params: dict | None = None) -> str:
    with translation.override("zh-hans"):
        text = gettext(msgid)
    assert text != msgid
    return text % params if params else text


def test_a_phrase_is_text_now_and_renders_again_in_another_language_from_its_json() -> None:
    with translation.override("zh-hans"):
        sentences = phrases.join(phrases.phrase(HINT) % WHERE, REPLY)
    stored = json.loads(json.dumps(phrases.to_json(sentences)))

    assert sentences == in_chinese(HINT, WHERE) + " " + REPLY  # a str, in the active language
    assert phrases.english(stored) == HINT % WHERE + " " + REPLY
    with translation.override("zh-hans"):
        assert phrases.render(stored) == sentences
    assert REPLY in json.dumps(stored)  # the server's words are a parameter, as they are


def test_copies_and_pickles_keep_the_text_and_the_structure() -> None:
    with translation.override("zh-hans"):
        original = phrases.join(phrases.phrase(HINT) % WHERE, "x")
    pickled = pickle.loads(pickle.dumps(original))  # noqa: S301  (our own bytes)
    for copied in (copy.deepcopy(original), pickled):
        assert copied == original
        assert phrases.to_json(copied) == phrases.to_json(original)


def test_lazy_labels_are_stored_by_their_msgid() -> None:
    with translation.override("zh-hans"):
        label = phrases.phrase("Failed at %(step)s: %(hint)s") % {
            "step": gettext_lazy("Login (AUTH)"),
            "hint": "h",
        }

    assert phrases.to_json(label)["params"]["step"] == {"msgid": "Login (AUTH)", "params": {}}
    assert phrases.english(phrases.to_json(label)) == "Failed at Login (AUTH): h"


def test_text_stored_before_phrases_and_broken_translations_still_render() -> None:
    tree = {"hint": "plain text, as old rows hold", "steps": [{"error": {"join": ["a", "b"]}}]}

    assert phrases.localise(tree) == {
        "hint": "plain text, as old rows hold",
        "steps": [{"error": "a b"}],
    }
    assert phrases.render({"msgid": "%(a)s and %(b)s", "params": {"a": 1}}) == "%(a)s and %(b)s"


def test_a_column_shows_its_phrase_only_while_the_phrase_says_what_the_column_says() -> None:
    detail = phrases.to_json(phrases.phrase(HINT) % WHERE)

    with translation.override("zh-hans"):
        assert phrases.shown(HINT % WHERE, detail) == in_chinese(HINT, WHERE)
        assert phrases.shown("Cancelled by admin.", detail) == "Cancelled by admin."
        assert phrases.shown("", detail) == ""
        assert phrases.shown("old text", None) == "old text"


def test_masking_changes_the_parameters_never_the_msgid() -> None:
    detail = phrases.to_json(phrases.phrase(HINT) % {"names": "secret", "host": "h"})

    masked = phrases.map_text(detail, lambda text: text.replace("secret", "***").replace("IP", "?"))

    assert masked["msgid"] == HINT
    assert masked["params"] == {"names": "***", "host": "h"}
