"""The diagnosis report: each step's outcome, timing, reply and hint, and the transcript."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from django.utils.translation import gettext_lazy

from ..phrases import stored_tree, to_json

STEP_LABELS: dict[str, Any] = {
    "token": gettext_lazy("Access token (OAuth2)"),
    "dns": gettext_lazy("DNS lookup"),
    "connect": gettext_lazy("TCP connection"),
    "greeting": gettext_lazy("Server greeting"),
    "ehlo": gettext_lazy("EHLO"),
    "tls": gettext_lazy("TLS"),
    "auth": gettext_lazy("Login (AUTH)"),
    "mail": gettext_lazy("Sender (MAIL FROM)"),
    "rcpt": gettext_lazy("Recipient (RCPT TO)"),
    "data": gettext_lazy("Message (DATA)"),
    "quit": gettext_lazy("QUIT"),
}


@dataclass
class DiagnosticStep:
    name: str
    label: Any
    status: str = "not_run"  # "ok" | "failed" | "skipped" | "not_run"
    duration_ms: int | None = None
    code: int | None = None
    reply: str = ""
    detail: dict[str, Any] = field(default_factory=dict)
    hint: str = ""
    error: str = ""

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "label": str(self.label),
            "status": self.status,
            "duration_ms": self.duration_ms,
            "code": self.code,
            "reply": self.reply,
            "detail": self.detail,
            "hint": str(self.hint),
            "error": str(self.error),
        }

    def as_stored(self) -> dict[str, Any]:
        """``as_dict`` with this app's words as phrases, to be shown in the reader's language."""
        words = {"label": self.label, "hint": self.hint, "error": self.error}
        return {
            **self.as_dict(),
            **{key: to_json(value) for key, value in words.items()},
            "detail": stored_tree(self.detail),
        }


@dataclass
class DiagnosticReport:
    steps: list[DiagnosticStep]
    transcript: list[str]
    duration_ms: int = 0
    #: What was tested (server, security, sign-in, saved or not), set by whoever ran it.
    target: dict[str, Any] = field(default_factory=dict)

    @property
    def failed_step(self) -> str | None:
        return next((step.name for step in self.steps if step.status == "failed"), None)

    @property
    def connect_only(self) -> bool:
        """A connection test: signed in and quit, no message."""
        return all(step.name != "data" for step in self.steps)

    @property
    def ok(self) -> bool:
        """No step failed and the last one that matters ran: DATA, or QUIT for a connection test."""
        final = "quit" if self.connect_only else "data"
        return self.failed_step is None and self.step(final).status == "ok"

    @property
    def capabilities(self) -> dict[str, list[str]]:
        """What the server offered in EHLO before TLS and, once encrypted, after it."""
        offered = {}
        for name, key in (("ehlo", "before_tls"), ("tls", "after_tls")):
            extensions = self.step(name).detail.get("extensions")
            if extensions is not None:
                offered[key] = list(extensions)
        return offered

    @property
    def error(self) -> str:
        return next((step.error for step in self.steps if step.status == "failed"), "")

    @property
    def hint(self) -> str:
        return next((step.hint for step in self.steps if step.status == "failed"), "")

    def step(self, name: str) -> DiagnosticStep:
        return next(step for step in self.steps if step.name == name)

    def as_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "connect_only": self.connect_only,
            "failed_step": self.failed_step,
            "error": str(self.error),
            "hint": str(self.hint),
            "duration_ms": self.duration_ms,
            "capabilities": self.capabilities,
            "steps": [step.as_dict() for step in self.steps],
            "transcript": list(self.transcript),
            "target": dict(self.target),
        }

    def as_stored(self) -> dict[str, Any]:
        """What a TestRun keeps: ``as_dict`` with the words as phrases (see ``phrases``)."""
        return {
            **self.as_dict(),
            "error": to_json(self.error),
            "hint": to_json(self.hint),
            "steps": [step.as_stored() for step in self.steps],
        }


def step_order(security: str, *, token: bool = False, message: bool = True) -> tuple[str, ...]:
    """The steps of one connection: the OAuth2 token first, and the message unless only testing
    the connection."""
    # With implicit TLS the handshake happens before the server can greet.
    if security == "ssl":
        connection = ("dns", "connect", "tls", "greeting", "ehlo", "auth")
    else:
        connection = ("dns", "connect", "greeting", "ehlo", "tls", "auth")
    return ("token",) * token + connection + ("mail", "rcpt", "data") * message + ("quit",)


class Recorder:
    """The per-step results and the transcript of one connection."""

    def __init__(self, steps: tuple[str, ...], *, transcript: bool) -> None:
        self.steps = {name: DiagnosticStep(name, STEP_LABELS[name]) for name in steps}
        self.transcript: list[str] | None = [] if transcript else None

    def skip(self, name: str, reason: str) -> None:
        step = self.steps[name]
        step.status, step.detail = "skipped", {"reason": reason}

    def fail_pending(self, error: str) -> None:
        """Fail the first step that never finished (the one running when something broke)."""
        step = next((step for step in self.steps.values() if step.status == "not_run"), None)
        if step is not None:
            step.status, step.error = "failed", error

    def report(self, duration_ms: int) -> DiagnosticReport:
        return DiagnosticReport(list(self.steps.values()), list(self.transcript or []), duration_ms)
