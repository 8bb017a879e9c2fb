"""A real HTTPS OAuth2 token endpoint on loopback, standing in for Microsoft Entra and Google.

It issues JWT-shaped tokens (signed with its own secret, so the XOAUTH2 test server accepts only
tokens it issued), answers with the providers' documented errors on demand and counts requests.
The certificate comes from the test CA in ``tests.smtpserver``.
"""

from __future__ import annotations

import json
import secrets
import ssl
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from tests.smtpserver import HOST, Pki

CLIENT_ID = "11111111-2222-3333-4444-555555555555"
CLIENT_SECRET = "Qm8~client-secret-value-from-entra.xYz"
TENANT_ID = "contoso.onmicrosoft.com"
SERVICE_ACCOUNT_EMAIL = "notifier@project-id.iam.gserviceaccount.com"

#: The replies Microsoft Entra and Google give, by the name a test asks for.
ERRORS: dict[str, tuple[int, dict[str, Any]]] = {
    "AADSTS7000215": (
        401,
        {
            "error": "invalid_client",
            "error_description": "AADSTS7000215: Invalid client secret provided. Ensure the "
            "secret being sent in the request is the client secret value, not the client "
            "secret ID, for a secret added to app '11111111-2222-3333-4444-555555555555'.",
            "error_codes": [7000215],
        },
    ),
    "AADSTS7000222": (
        401,
        {
            "error": "invalid_client",
            "error_description": "AADSTS7000222: The provided client secret keys for app "
            "'11111111-2222-3333-4444-555555555555' are expired.",
            "error_codes": [7000222],
        },
    ),
    "AADSTS700016": (
        400,
        {
            "error": "unauthorized_client",
            "error_description": "AADSTS700016: Application with identifier "
            "'11111111-2222-3333-4444-555555555555' was not found in the directory 'Contoso'.",
            "error_codes": [700016],
        },
    ),
    "AADSTS90002": (
        400,
        {
            "error": "invalid_request",
            "error_description": "AADSTS90002: Tenant 'contoso.onmicrosoft.com' not found.",
            "error_codes": [90002],
        },
    ),
    "unauthorized_client": (
        401,
        {
            "error": "unauthorized_client",
            "error_description": "Client is unauthorized to retrieve access tokens using this "
            "method, or client not authorized for any of the scopes requested.",
        },
    ),
    "invalid_grant": (400, {"error": "invalid_grant", "error_description": "Invalid email."}),
    "server_error": (503, {"error": "temporarily_unavailable"}),
}


@dataclass(frozen=True)
class ServiceAccount:
    """A Google service-account key as Google Cloud downloads it, and its public half."""

    key_json: str
    public_pem: bytes


def make_service_account(token_uri: str) -> ServiceAccount:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode("ascii")
    key_json = json.dumps(
        {
            "type": "service_account",
            "project_id": "project-id",
            "private_key_id": secrets.token_hex(20),
            "private_key": private_pem,
            "client_email": SERVICE_ACCOUNT_EMAIL,
            "client_id": "109876543210987654321",
            "token_uri": token_uri,
        }
    )
    public_pem = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return ServiceAccount(key_json, public_pem)


class _TlsHttpServer(ThreadingHTTPServer):
    """HTTPS with the handshake in each request's own thread, so one slow client cannot hold
    up the others (wrapping the listening socket would shake hands inside accept())."""

    daemon_threads = True
    tls: ssl.SSLContext

    def finish_request(self, request: Any, client_address: Any) -> None:
        request.settimeout(30)
        try:
            tls = self.tls.wrap_socket(request, server_side=True)
        except (ssl.SSLError, OSError):
            return  # e.g. a client that does not trust the test CA: its own error
        try:
            super().finish_request(tls, client_address)
        finally:
            tls.close()


class TokenServer:
    """``/{tenant}/oauth2/v2.0/token`` (client credentials) and ``/token`` (JWT bearer)."""

    def __init__(self, pki: Pki, *, cert: str = "good") -> None:
        self.requests = 0
        self.error: str | None = None  # a key of ERRORS: every request fails so
        self.expires_in = 3600
        self.roles: list[str] = ["SMTP.SendAsApp"]
        self.delay = 0.0
        self.issued: list[str] = []
        self.revoked: set[str] = set()
        self._signing_key = secrets.token_bytes(32)
        self._lock = threading.Lock()
        self._httpd = _TlsHttpServer((HOST, 0), self._handler())
        self._httpd.tls = pki.server_context(cert)
        self.port = self._httpd.server_address[1]
        self.service_account = make_service_account(self.google_url)
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)
        self._thread.start()

    @property
    def microsoft_url(self) -> str:
        return f"https://localhost:{self.port}/{TENANT_ID}/oauth2/v2.0/token"

    @property
    def google_url(self) -> str:
        return f"https://localhost:{self.port}/token"

    def accepts(self, mailbox: str, token: str) -> bool:
        """Whether ``token`` is one this server issued for ``mailbox``, unexpired, not revoked."""
        try:
            claims = jwt.decode(token, self._signing_key, algorithms=["HS256"], audience="smtp")
        except jwt.PyJWTError:
            return False
        return token not in self.revoked and claims.get("mailbox") in (None, mailbox)

    def revoke_all(self) -> None:
        with self._lock:
            self.revoked.update(self.issued)

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()

    def _answer(self, path: str, form: dict[str, str]) -> tuple[int, dict[str, Any]]:
        with self._lock:
            self.requests += 1
        if self.delay:
            time.sleep(self.delay)
        if self.error is not None:
            return ERRORS[self.error]
        if path.endswith("/oauth2/v2.0/token"):
            if form.get("client_id") != CLIENT_ID:
                return ERRORS["AADSTS700016"]
            if form.get("client_secret") != CLIENT_SECRET:
                return ERRORS["AADSTS7000215"]
            mailbox, roles = None, self.roles
        elif path == "/token":
            try:
                claims = jwt.decode(
                    form.get("assertion", ""),
                    self.service_account.public_pem,
                    algorithms=["RS256"],
                    audience=self.google_url,
                )
            except jwt.PyJWTError:
                return ERRORS["invalid_grant"]
            if claims.get("scope") != "https://mail.google.com/":
                return ERRORS["unauthorized_client"]
            mailbox, roles = claims.get("sub"), []
        else:
            return 404, {"error": "not_found"}
        now = int(time.time())
        claims = {
            "aud": "smtp",
            "iat": now,
            "exp": now + self.expires_in,
            "jti": secrets.token_hex(8),
        }
        claims.update(roles=roles, mailbox=mailbox)  # Microsoft app tokens name no mailbox
        token = jwt.encode(claims, self._signing_key, algorithm="HS256")
        with self._lock:
            self.issued.append(token)
        return 200, {"token_type": "Bearer", "expires_in": self.expires_in, "access_token": token}

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length).decode()
                form = {name: values[0] for name, values in parse_qs(body).items()}
                status, payload = server._answer(self.path, form)
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format: str, *args: Any) -> None:
                pass  # quiet; the tests count requests instead

        return Handler


@pytest.fixture
def token_server(smtp_pki: Pki) -> Iterator[TokenServer]:
    server = TokenServer(smtp_pki)
    yield server
    server.stop()
