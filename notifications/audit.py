"""The settings audit trail in words: "Batch 4 → 2", not ``{"batch": [4, 2]}``."""

from __future__ import annotations

from django.core.exceptions import FieldDoesNotExist
from django.utils.text import capfirst
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy

from notifications.models import SmtpSettings

#: How SettingsChange records a secret or a long value: a word, not the value.
MARKERS = {"changed": gettext_lazy("changed"), "removed": gettext_lazy("removed")}


def describe(changes: dict) -> list[str]:
    """One line per changed field, in the reader's language: "Batch 4 → 2", "Password changed"."""
    return [_line(name, change) for name, change in changes.items()]


def _line(name: str, change) -> str:
    label = _label(name)
    if isinstance(change, str):  # "changed" / "removed": the value is not recorded
        return f"{label}: {MARKERS.get(change, change)}"
    old, new = change
    return f"{label}: {_value(name, old)} → {_value(name, new)}"


def _label(name: str) -> str:
    if name == "password":
        return str(_("Password"))
    if name == "fallback":  # the whole fallback server, removed
        return str(_("Fallback server"))
    try:
        return str(capfirst(SmtpSettings._meta.get_field(name).verbose_name))
    except FieldDoesNotExist:  # a field a later version dropped: its name is all there is
        return name


def _value(name: str, value) -> str:
    if value is None or value == "":
        return _("(empty)")
    if isinstance(value, bool):
        return _("on") if value else _("off")
    try:
        field = SmtpSettings._meta.get_field(name)
    except FieldDoesNotExist:
        return str(value)
    choices = dict(field.flatchoices)
    return str(choices.get(value, value))
