"""Fetching OAuth2 access tokens for XOAUTH2: Microsoft client credentials, Google service accounts.

Tokens come over HTTPS verified against the system CAs plus the settings' extra trusted CA (the
field the SMTP connection uses), with the SMTP timeout. Every failure becomes an SmtpError at the
``token`` step with a hint a person can act on. Nothing here caches: ``tokens`` shares them.
"""

from __future__ import annotations

import json
import re
import socket
import ssl
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import httpx
import jwt

from notifications.exceptions import SmtpConfigurationError, SmtpError, SmtpTemporaryError
from notifications.phrases import join
from notifications.phrases import phrase as _
from notifications.smtp.config import OAuthCredentials
from notifications.smtp.tls import (
    NAME_MISMATCH_CODES,
    certificate_names,
    names_match,
    unverified_certificate,
    verifying_context,
)

MICROSOFT_TOKEN_URL = "https://login.microsoftonline.com/{tenant}/oauth2/v2.0/token"  # noqa: S105 (a URL)
MICROSOFT_SCOPE = "https://outlook.office365.com/.default"
GOOGLE_SCOPE = "https://mail.google.com/"
GOOGLE_TOKEN_URL = "https://oauth2.googleapis.com/token"  # noqa: S105 (a URL)
MICROSOFT_ROLE = "SMTP.SendAsApp"
#: How long a Google assertion is valid; Google accepts at most an hour.
ASSERTION_SECONDS = 3600
_MAX_ERROR_TEXT = 300
_AADSTS = re.compile(r"AADSTS(\d+)")


@dataclass(frozen=True)
class AccessToken:
    """A bearer token and when it expires (epoch seconds). ``handle`` identifies a cached copy."""

    value: str = field(repr=False)
    expires_at: float
    cached: bool = False
    handle: str = field(default="", repr=False)

    def facts(self) -> dict[str, Any]:
        """What the report may show: never the token itself."""
        facts: dict[str, Any] = {
            "expires_in": max(0, round(self.expires_at - time.time())),
            "cached": self.cached,
        }
        claims = token_claims(self.value)
        if claims is not None:
            facts["roles"] = list(claims.get("roles") or [])
        return facts


def token_claims(token: str) -> dict[str, Any] | None:
    """A JWT's claims, unverified (the SMTP server verifies it); None for an opaque token."""
    try:
        claims = jwt.decode(token, options={"verify_signature": False})
    except jwt.PyJWTError:
        return None
    return claims if isinstance(claims, dict) else None


def parse_service_account(text: str) -> dict[str, str]:
    """The fields of a Google service-account JSON key that signing needs; ValueError if not one."""
    try:
        key = json.loads(text)
    except (ValueError, TypeError):
        raise ValueError(_("The service-account key is not valid JSON.")) from None
    if not isinstance(key, dict) or key.get("type") != "service_account":
        raise ValueError(
            _("This is not a service-account key: its JSON has no “type”: “service_account”.")
        )
    missing = [name for name in ("client_email", "private_key") if not key.get(name)]
    if missing:
        raise ValueError(
            _("The service-account key lacks %(fields)s.") % {"fields": ", ".join(missing)}
        )
    return {
        "client_email": str(key["client_email"]),
        "private_key": str(key["private_key"]),
        "private_key_id": str(key.get("private_key_id") or ""),
        "token_uri": str(key.get("token_uri") or GOOGLE_TOKEN_URL),
    }


def fetch(credentials: OAuthCredentials, *, timeout: float) -> AccessToken:
    """Ask the token endpoint for a new access token (one HTTPS request)."""
    if credentials.method == "microsoft-oauth2":
        form = {
            "grant_type": "client_credentials",
            "client_id": credentials.client_id,
            "client_secret": credentials.secret,
            "scope": credentials.scope,
        }
    else:
        form = {
            "grant_type": "urn:ietf:params:oauth:grant-type:jwt-bearer",
            "assertion": _google_assertion(credentials),
        }
    payload, status = _post(credentials, form, timeout=timeout)
    if status != 200 or not isinstance(payload.get("access_token"), str):
        raise _refusal(credentials, status, payload)
    token = AccessToken(
        value=payload["access_token"],
        expires_at=time.time() + _seconds(payload.get("expires_in")),
    )
    if credentials.method == "microsoft-oauth2":
        _check_role(token)
    return token


class _Direct:
    """Fetch a new token every time: the diagnosis tests the credentials, not the cache."""

    def get(self, credentials: OAuthCredentials, *, timeout: float) -> AccessToken:
        return fetch(credentials, timeout=timeout)

    def refresh(
        self, credentials: OAuthCredentials, rejected: AccessToken, *, timeout: float
    ) -> AccessToken:
        return fetch(credentials, timeout=timeout)


DIRECT = _Direct()


def _google_assertion(credentials: OAuthCredentials) -> str:
    """The RS256-signed JWT a service account presents, acting for the mailbox (``sub``)."""
    now = int(time.time())
    claims = {
        "iss": credentials.client_id,
        "sub": credentials.mailbox,
        "scope": credentials.scope,
        "aud": credentials.token_url,
        "iat": now,
        "exp": now + ASSERTION_SECONDS,
    }
    headers = {"kid": credentials.key_id} if credentials.key_id else None
    try:
        return jwt.encode(claims, credentials.secret, algorithm="RS256", headers=headers)
    except (ValueError, TypeError, jwt.PyJWTError):
        raise SmtpConfigurationError(
            _("The service-account key's private key cannot be used to sign."),
            step="token",
            hint=_("Upload the JSON key file exactly as Google Cloud downloaded it."),
        ) from None


def _post(
    credentials: OAuthCredentials, form: dict[str, str], *, timeout: float
) -> tuple[dict[str, Any], int]:
    context = verifying_context(credentials.ca_pem, step="token")
    where = {"url": credentials.token_url, "timeout": f"{timeout:g}"}
    try:
        with httpx.Client(verify=context, timeout=timeout, follow_redirects=False) as client:
            response = client.post(
                credentials.token_url, data=form, headers={"Accept": "application/json"}
            )
    except httpx.TimeoutException:
        raise SmtpTemporaryError(
            _("Access token: no answer from %(url)s within %(timeout)s s.") % where,
            step="token",
            hint=_("The token endpoint is slow or unreachable; sending is retried automatically."),
        ) from None
    except httpx.HTTPError as exc:
        raise _connection_error(exc, where, url=credentials.token_url, timeout=timeout) from None
    try:
        payload = response.json()
    except ValueError:
        payload = {}
    return (payload if isinstance(payload, dict) else {}), response.status_code


def _connection_error(
    exc: httpx.HTTPError, where: dict[str, str], *, url: str, timeout: float
) -> SmtpError:
    cause: BaseException | None = exc
    while cause is not None and not isinstance(cause, ssl.SSLCertVerificationError):
        cause = cause.__cause__ or cause.__context__
    if isinstance(cause, ssl.SSLCertVerificationError):
        return SmtpConfigurationError(
            _("Access token: the certificate of %(url)s was rejected: %(reason)s")
            % {**where, "reason": cause.verify_message},
            step="token",
            hint=_certificate_hint(url, cause, timeout),
        )
    if isinstance(exc, httpx.UnsupportedProtocol | httpx.InvalidURL):
        return SmtpConfigurationError(
            _("Access token: the token URL %(url)s is not a valid https:// address.") % where,
            step="token",
            hint=_("Check the token URL, or clear it to use the provider's default."),
        )
    return SmtpTemporaryError(
        _("Access token: cannot reach %(url)s.") % where,
        step="token",
        hint=_(
            "Check the token URL and that this machine may make outgoing HTTPS connections "
            "(a firewall or a missing proxy); sending is retried automatically."
        ),
    )


def _certificate_hint(url: str, refused: ssl.SSLCertVerificationError, timeout: float) -> str:
    """Which names the endpoint's certificate is issued for when not the URL's host, and where
    to put the CA that signed it when it is not trusted.

    The names are read over one more unverified handshake, only after a refusal and within
    ``timeout`` (see ``tls.unverified_certificate``).
    """
    parts = urlsplit(url)
    host = parts.hostname or ""
    try:
        certificate = unverified_certificate(
            socket.create_connection((host, parts.port or 443), timeout=timeout), host
        )
    except (OSError, ValueError):
        certificate = None
    names = certificate_names(certificate) if certificate is not None else []
    hints = []
    where = {"names": ", ".join(names), "host": host}
    if names and not names_match(names, host):
        hints.append(
            _(
                "The token endpoint's certificate is issued for %(names)s, not for %(host)s: "
                "use one of those names in the token URL."
            )
            % where
        )
    elif refused.verify_code in NAME_MISMATCH_CODES:
        hints.append(
            _(
                "The token endpoint's certificate is not issued for %(host)s: check the host in "
                "the token URL."
            )
            % where
        )
    if refused.verify_code not in NAME_MISMATCH_CODES:
        hints.append(
            _(
                "A proxy or a private endpoint uses a certificate this machine does not trust: "
                "paste the CA certificate (PEM) that signed it into Extra trusted CA (PEM) under "
                "Advanced security (on the command line: smtp_settings --ca-file), which "
                "verifies the token endpoint as well as the SMTP server."
            )
        )
    return join(*hints)


def _seconds(value: Any) -> float:
    try:
        return max(60.0, float(value))
    except (TypeError, ValueError):
        return 3600.0


def _check_role(token: AccessToken) -> None:
    """A Microsoft app token without SMTP.SendAsApp is refused by Exchange: say so here."""
    claims = token_claims(token.value)
    if claims is None or MICROSOFT_ROLE in (claims.get("roles") or []):
        return
    raise SmtpConfigurationError(
        _("Access token: the token has no %(role)s permission.") % {"role": MICROSOFT_ROLE},
        step="token",
        hint=_(
            "In Microsoft Entra, open the app registration → API permissions → Add a permission "
            "→ APIs my organization uses → Office 365 Exchange Online → Application permissions "
            "→ SMTP.SendAsApp, then “Grant admin consent”."
        ),
    )


def _refusal(credentials: OAuthCredentials, status: int, payload: dict[str, Any]) -> SmtpError:
    """The endpoint refused: which setting is wrong, from the AADSTS code or Google's error."""
    code = str(payload.get("error") or "")
    description = str(payload.get("error_description") or "")
    description = description.replace(credentials.secret, "********")[:_MAX_ERROR_TEXT]
    message = _("Access token: the endpoint answered %(status)s %(error)s %(description)s") % {
        "status": status,
        "error": code,
        "description": description,
    }
    if status >= 500 or status == 429:
        hint = _("The token endpoint is having trouble; sending is retried automatically.")
        return SmtpTemporaryError(_stripped(message), step="token", code=status, hint=hint)
    aadsts = _AADSTS.search(description)
    hint = _hint(credentials.method, code, aadsts.group(1) if aadsts else "")
    return SmtpConfigurationError(_stripped(message), step="token", code=status, hint=hint)


def _stripped(message: str) -> str:
    """Without the spaces an empty error or description leaves (the phrase kept when none)."""
    return message if message == message.strip() else message.strip()


def _hint(method: str, error: str, aadsts: str) -> str:
    microsoft = {
        "7000215": _(
            "The client secret is wrong. In Entra, Certificates & secrets shows two columns: "
            "paste the secret's Value (shown only once, right after creating it), not its "
            "Secret ID. If the Value is lost, create a new client secret."
        ),
        "7000222": _(
            "The client secret has expired: in Entra, Certificates & secrets, create a new "
            "client secret, enter its Value here, and set its expiry date so this page can "
            "warn you next time."
        ),
        "700016": _(
            "No app with this client ID exists in this tenant: copy the Application (client) "
            "ID from the app registration's Overview page, and check that the tenant ID is "
            "the tenant the app is registered in."
        ),
        "90002": _(
            "The tenant was not found: copy the Directory (tenant) ID from the app "
            "registration's Overview page (or use your domain, e.g. contoso.onmicrosoft.com). "
            "For a sovereign cloud, set its token URL."
        ),
    }
    if method == "microsoft-oauth2" and aadsts in microsoft:
        return microsoft[aadsts]
    if error == "unauthorized_client" and method == "google-oauth2":
        return _(
            "Domain-wide delegation is not granted: in the Google Admin console, Security → "
            "Access and data control → API controls → Manage domain-wide delegation, add the "
            "service account's client ID with the scope https://mail.google.com/."
        )
    if error == "invalid_grant" and method == "google-oauth2":
        return _(
            "Google refused the signed request: the username must be an existing user of the "
            "Workspace domain, the key must still exist (not deleted or disabled in Google "
            "Cloud), and this machine's clock must be right."
        )
    if method == "microsoft-oauth2":
        return _(
            "Check the tenant ID, client ID and client secret against the app registration in "
            "Microsoft Entra; the AADSTS code in the reply names the problem."
        )
    return _("Check the service-account key and that domain-wide delegation is granted.")
