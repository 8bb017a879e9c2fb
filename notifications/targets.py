"""What a test ran against: the server, its security, the sign-in method and mailbox, and whether
those were the saved settings. Recorded with each TestRun and named in every report of a test
(the page's result, the panel, the test list, ``smtp_test``); never a password or secret."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from django.utils.translation import gettext as _

from notifications.models import AuthMethod, Security

if TYPE_CHECKING:
    from notifications.models import TestRun
    from notifications.smtp import SmtpConfig


def server_name(host: str, port: int | None) -> str:
    """host:port, an IPv6 address in brackets."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


@dataclass(frozen=True)
class Target:
    """The tested values. Its fields are TestRun's columns of the same names and the keys of
    the report's ``target`` (``smtp_test --json``)."""

    host: str
    port: int | None
    security: str
    auth_method: str
    username: str
    saved: bool
    settings_version: int | None

    @classmethod
    def of(cls, config: SmtpConfig, *, saved: bool) -> Target:
        """What ``config`` tests; ``saved``: it is the stored settings of ``config.version``,
        with nothing typed over them."""
        return cls(
            host=config.host,
            port=config.port,
            security=config.security,
            auth_method=config.auth_method,
            username=config.username,
            saved=saved,
            settings_version=config.version,
        )

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None) -> Target | None:
        """The target of a stored report or run; None when it names none (older runs)."""
        if not data or not data.get("host"):
            return None
        return cls(**{name: data.get(name) for name in cls.__dataclass_fields__})

    @classmethod
    def of_run(cls, run: TestRun) -> Target | None:
        return cls.from_dict({name: getattr(run, name) for name in cls.__dataclass_fields__})

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def server(self) -> str:
        return server_name(self.host, self.port)

    @property
    def security_label(self) -> str:
        return str(Security(self.security).label) if self.security in Security else self.security

    @property
    def sign_in(self) -> str:
        """ "password as robot@example.com", "Microsoft OAuth2 as …", or "no login"."""
        if self.auth_method == AuthMethod.PASSWORD and not self.username:
            return _("no login")
        names = {
            AuthMethod.PASSWORD: _("password"),
            AuthMethod.MICROSOFT: _("Microsoft OAuth2"),
            AuthMethod.GOOGLE: _("Google OAuth2"),
        }
        method = names.get(self.auth_method, self.auth_method)
        return _("%(method)s as %(username)s") % {"method": method, "username": self.username}

    @property
    def values(self) -> str:
        """Whether these were the saved settings, as the reports say it."""
        if not self.saved:
            return _("unsaved values")
        return _("saved settings (version %(version)s)") % {"version": self.settings_version}

    def __str__(self) -> str:
        """ "smtp.example.com:587 STARTTLS, password as robot@example.com"."""
        return _("%(server)s %(security)s, %(sign_in)s") % {
            "server": self.server,
            "security": self.security_label,
            "sign_in": self.sign_in,
        }
