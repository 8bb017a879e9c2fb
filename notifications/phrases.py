"""Messages kept as (msgid, parameters), so that a stored one is shown in the reader's language.

A diagnosis is written once (by a worker, or by a test an administrator ran in their language)
and read later by whoever opens the page, in theirs. So what is stored beside the text is a
phrase: the English msgid, as makemessages finds it, and its parameters, translated again when
shown. The server's own words, host names and numbers are parameters and stay as they are; a
parameter may itself be a phrase (a step's label).

In code a phrase reads like gettext: modules import ``phrase`` as ``_`` (which makemessages
extracts) and write ``_("Port %(port)s …") % {"port": 25}``. The result is a ``str`` in the active
language, as gettext's would be, that also remembers its msgid and parameters; ``join`` keeps the
structure of sentences put side by side. Stored (JSON), a phrase is
``{"msgid": ..., "params": {...}}``, sentences are ``{"join": [...]}`` and a plain string is
literal text; rows written before phrases existed hold only text, which renders as itself.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from django.utils import translation
from django.utils.functional import Promise
from django.utils.translation import gettext

Stored = str | dict[str, Any]


class Phrase(str):
    """A message in the active language that remembers its msgid and parameters."""

    msgid: str
    params: dict[str, Any]

    def __new__(cls, msgid: str, params: Mapping[str, Any] | None = None) -> Phrase:
        values = {key: _param(value) for key, value in (params or {}).items()}
        self = super().__new__(cls, _translate(msgid, values))
        self.msgid, self.params = msgid, values
        return self

    def __mod__(self, params: Mapping[str, Any]) -> Phrase:  # type: ignore[override]
        return Phrase(self.msgid, {**self.params, **params})

    def __reduce__(self) -> tuple[Any, ...]:  # a copy keeps its text, whatever the language now
        return (_rebuilt, (Phrase, str(self), {"msgid": self.msgid, "params": self.params}))


class Sentences(str):
    """Phrases (or text) one after the other, separated by a space."""

    parts: tuple[str, ...]

    def __new__(cls, parts: tuple[str, ...]) -> Sentences:
        parts = tuple(_param(part) for part in parts if part)
        self = super().__new__(cls, " ".join(parts))
        self.parts = parts
        return self

    def __reduce__(self) -> tuple[Any, ...]:
        return (_rebuilt, (Sentences, str(self), {"parts": self.parts}))


def phrase(msgid: str) -> Phrase:
    """A message translated now and remembered; give parameters with ``%`` as with gettext."""
    return Phrase(msgid)


def join(*parts: Any) -> Sentences:
    """Sentences: the parts that are not empty, each shown in the reader's language."""
    return Sentences(parts)


def from_lazy(text: Promise) -> Phrase:
    """A ``gettext_lazy`` string (a step label, a provider's hint) as a phrase of its msgid."""
    with translation.override(None):  # no catalogue: gettext gives the msgid back
        msgid = str(text)
    return Phrase(msgid)


def to_json(value: Any) -> Stored:
    """What to store: a phrase's structure, sentences as a list, anything else as its text."""
    value = _param(value)
    if isinstance(value, Phrase):
        params = {key: _json_param(item) for key, item in value.params.items()}
        return {"msgid": value.msgid, "params": params}
    if isinstance(value, Sentences):
        return {"join": [to_json(part) for part in value.parts]}
    if _is_stored(value):
        return value
    return "" if value is None else str(value)


def render(value: Any) -> str:
    """``value`` (a phrase, sentences, their stored JSON, or text) in the active language."""
    if isinstance(value, Phrase):
        return _translate(value.msgid, value.params)
    if isinstance(value, Sentences):
        return _joined(value.parts)
    if isinstance(value, dict) and "msgid" in value:
        return _translate(str(value["msgid"]), value.get("params") or {})
    if isinstance(value, dict) and "join" in value:
        return _joined(value["join"])
    return "" if value is None else str(value)


def english(value: Any) -> str:
    """The English rendering: what text columns, logs and signals carry."""
    with translation.override("en"):
        return render(value)


def localise(tree: Any) -> Any:
    """A stored tree (a report) with every phrase in it rendered in the active language."""
    if isinstance(tree, Phrase | Sentences) or _is_stored(tree):
        return render(tree)
    if isinstance(tree, dict):
        return {key: localise(item) for key, item in tree.items()}
    if isinstance(tree, list | tuple):
        return [localise(item) for item in tree]
    return tree


def stored_tree(tree: Any) -> Any:
    """A tree holding phrases (a report's details) as it is stored: each phrase as its JSON."""
    if isinstance(tree, Phrase | Sentences | Promise):
        return to_json(tree)
    if isinstance(tree, dict):
        return {key: stored_tree(item) for key, item in tree.items()}
    if isinstance(tree, list | tuple):
        return [stored_tree(item) for item in tree]
    return tree


def map_text(stored: Any, change: Callable[[str], str]) -> Any:
    """``stored`` with ``change`` applied to its literal text, never to a msgid."""
    if isinstance(stored, str):
        return change(stored)
    if isinstance(stored, dict):
        return {
            key: item if key == "msgid" else map_text(item, change) for key, item in stored.items()
        }
    if isinstance(stored, list):
        return [map_text(item, change) for item in stored]
    return stored


def shown(text: str, detail: Any) -> str:
    """What a page shows for a text column that has its stored phrase beside it.

    The phrase in the reader's language while it still says what the column says (the column is
    its English rendering); otherwise the column itself: a row written before phrases, or by code
    that wrote only the text (a success clearing the error).
    """
    if not text:
        return ""
    if detail and english(detail) == text:
        return render(detail)
    return text


def _rebuilt(cls: type, text: str, attributes: dict[str, Any]) -> str:
    rebuilt = str.__new__(cls, text)
    rebuilt.__dict__.update(attributes)
    return rebuilt


def _translate(msgid: str, params: Mapping[str, Any]) -> str:
    if not params:
        return gettext(msgid)
    values = {key: _rendered_param(value) for key, value in params.items()}
    for pattern in (gettext(msgid), msgid):
        try:
            return pattern % values
        except (KeyError, TypeError, ValueError):  # a broken translation, or an old parameter
            continue
    return msgid


def _joined(parts: Any) -> str:
    return " ".join(filter(None, (render(part) for part in parts)))


def _param(value: Any) -> Any:
    if isinstance(value, str | int | float) or value is None or _is_stored(value):
        return value
    if isinstance(value, Promise):
        return from_lazy(value)
    return str(value)


def _json_param(value: Any) -> Any:
    return value if isinstance(value, int | float) else to_json(value)


def _rendered_param(value: Any) -> Any:
    return value if isinstance(value, int | float) else render(value)


def _is_stored(value: Any) -> bool:
    return isinstance(value, dict) and (set(value) == {"msgid", "params"} or set(value) == {"join"})
