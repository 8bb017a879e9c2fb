"""What one SMTP connection needs to know, independent of the model it was read from."""

from __future__ import annotations

from dataclasses import dataclass, field

SECURITY_MODES = ("ssl", "starttls", "none")
AUTH_METHODS = ("password", "microsoft-oauth2", "google-oauth2")
AUTH_MECHANISMS = ("auto", "plain", "login")


@dataclass(frozen=True)
class OAuthCredentials:
    """How to get an access token for XOAUTH2: one provider's grant, its endpoint and secret.

    Microsoft (client credentials): ``client_id`` is the application ID and ``secret`` the
    client secret. Google (service account): ``client_id`` is the account's e-mail, ``secret``
    its private key (PEM) and ``key_id`` the key's ID; ``mailbox`` is the user it acts for.
    """

    method: str
    token_url: str
    scope: str
    mailbox: str
    client_id: str
    secret: str = field(repr=False)
    key_id: str = ""
    ca_pem: str = ""

    def __post_init__(self) -> None:
        if self.method not in AUTH_METHODS[1:]:
            raise ValueError(f"method must be one of {AUTH_METHODS[1:]}, not {self.method!r}")


@dataclass(frozen=True)
class SmtpConfig:
    """The settings one connection needs; the model layer converts its record to this."""

    host: str
    port: int
    security: str
    username: str
    password: str = field(repr=False)
    from_address: str
    skip_verify: bool = False
    ca_pem: str = ""
    timeout: float = 30.0
    allow_plaintext_login: bool = False
    version: int = 0
    auth_mechanism: str = "auto"
    oauth: OAuthCredentials | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if self.security not in SECURITY_MODES:
            raise ValueError(f"security must be one of {SECURITY_MODES}, not {self.security!r}")
        if self.timeout <= 0:
            raise ValueError("timeout must be positive")
        if self.auth_mechanism not in AUTH_MECHANISMS:
            raise ValueError(f"auth_mechanism must be one of {AUTH_MECHANISMS}")

    @property
    def auth_method(self) -> str:
        return "password" if self.oauth is None else self.oauth.method
