"""Measure what OAuth2 sign-in costs: the first send with a token fetch vs a password, and what the
shared token cache saves when many sessions start. Loopback servers from the tests; not a test.

    .venv/bin/python scripts/measure_signin.py [--runs 20] [--sessions 100] [--latency-ms 150]

``--latency-ms`` delays every token response, standing in for a real endpoint's round trip.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--sessions", type=int, default=100)
    parser.add_argument("--latency-ms", type=int, default=150)
    args = parser.parse_args()

    scratch = Path(tempfile.mkdtemp(prefix="measure-signin-"))
    os.environ["DJANGO_SETTINGS_MODULE"] = "config.settings.test"
    os.environ["DATABASE_URL"] = f"sqlite:///{scratch / 'db.sqlite3'}"
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)

    from notifications import oauth, tokens
    from notifications.models import SmtpSettings
    from notifications.smtp import build_message, open_session
    from notifications.smtp.session import SmtpSession
    from tests.smtpserver import PASSWORD, USERNAME, SmtpTestServer, make_pki
    from tests.tokenserver import CLIENT_ID, CLIENT_SECRET, TENANT_ID, TokenServer

    pki = make_pki(scratch / "pki")
    token_server = TokenServer(pki)
    server = SmtpTestServer(
        "starttls", pki=pki, xoauth2=token_server.accepts, users={USERNAME: PASSWORD}
    )
    record = SmtpSettings.load()
    record.host, record.port, record.security = "127.0.0.1", server.port, "starttls"
    record.username, record.from_address, record.ca_pem = USERNAME, USERNAME, pki.ca_pem
    record.set_password(PASSWORD)
    password_config = record.to_smtp_config()
    record.auth_method, record.tenant_id, record.client_id = (
        "microsoft-oauth2",
        TENANT_ID,
        CLIENT_ID,
    )
    record.token_url = token_server.microsoft_url
    record.set_client_secret(CLIENT_SECRET)
    oauth_config = record.to_smtp_config()
    message = build_message(from_address=USERNAME, to="user@example.com", subject="s", body="b")

    def first_send(config, *, cold_cache: bool) -> float:
        if cold_cache:
            tokens.forget_all()
        started = time.perf_counter()
        with open_session(config) as session:
            session.send(message, envelope_from=USERNAME, recipient="user@example.com")
        return (time.perf_counter() - started) * 1000

    def median(values: list[float]) -> str:
        return f"{statistics.median(values):.1f} ms"

    for latency in (0, args.latency_ms):
        token_server.delay = latency / 1000
        rows = {
            "password": [first_send(password_config, cold_cache=False) for _ in range(args.runs)],
            "OAuth2, token fetched": [
                first_send(oauth_config, cold_cache=True) for _ in range(args.runs)
            ],
            "OAuth2, token cached": [
                first_send(oauth_config, cold_cache=False) for _ in range(args.runs)
            ],
        }
        print(f"\nFirst send on a new session (median of {args.runs}), token latency {latency} ms:")
        for name, values in rows.items():
            print(f"  {name:<24} {median(values)}")

        # Many sessions starting: the shared cache against asking the endpoint every time.
        for name, source in (("shared cache", tokens.SHARED), ("no cache", oauth.DIRECT)):
            tokens.forget_all()
            before = token_server.requests
            started = time.perf_counter()
            for _ in range(args.sessions):
                session = SmtpSession(oauth_config, tokens=source)
                session.connect()
                session.close()
            seconds = time.perf_counter() - started
            print(
                f"  {args.sessions} sessions, {name:<12}: {seconds:.2f} s, "
                f"{token_server.requests - before} token requests"
            )
    server.stop()
    token_server.stop()


if __name__ == "__main__":
    main()
