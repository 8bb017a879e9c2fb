"""The one accessor for ``settings.NOTIFICATIONS`` and the encryption keys, with defaults.

Values an administrator edits at runtime (host, Batch, ...) live in the SmtpSettings model; these
are deployment knobs. Read them as ``conf.get("LEASE_SECONDS")``: the lookup is cheap and always
current, including under ``override_settings`` in tests.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings

DEFAULTS: dict[str, Any] = {
    # How long a claim on a notification or a send slot lasts before another worker may take it.
    # Longer than the slowest single send (every SMTP step may take the full timeout).
    "LEASE_SECONDS": 300,
    # How many due rows a worker claims in one round trip (it sends them over its session).
    "CLAIM_BATCH": 10,
    # The most one message's whole SMTP exchange (MAIL, RCPT, DATA) may take, however slowly
    # the server answers; never more than a third of LEASE_SECONDS, whatever is set here.
    "SEND_SECONDS": 60,
    # How often a sending worker re-reads the settings (version, Batch, pause): a change applies
    # to sends starting after at most this long. (Leases are renewed every quarter lease.)
    "SETTINGS_CHECK_SECONDS": 0.2,
    # After a failed connect, TLS handshake or login (nothing charged to any notification), every
    # worker waits about this long, doubling per failure up to the maximum, and only one tries.
    "CONNECT_BACKOFF_SECONDS": 5,
    "CONNECT_BACKOFF_MAX_SECONDS": 300,
    # Publishing a drain request from notify(): the broker's connect and socket timeout, how long
    # to stop trying after a failure, and the shortest gap between two single requests.
    "PUBLISH_TIMEOUT_SECONDS": 0.25,
    "BROKER_BACKOFF_SECONDS": 5,
    "PUBLISH_INTERVAL_SECONDS": 0.05,
    # How long a session with nothing left to send stays open for new rows, and how often it
    # looks for them meanwhile.
    "SESSION_IDLE_SECONDS": 1.0,
    "IDLE_POLL_SECONDS": 0.1,
    # How long one task keeps draining the outbox before it hands over to the next task.
    "DRAIN_SECONDS": 60,
    # Retry policy for temporary failures: exponential backoff with jitter, bounded.
    "RETRY_BASE_SECONDS": 60,
    "RETRY_MAX_SECONDS": 3600,
    "MAX_ATTEMPTS": 12,
    "MAX_AGE_SECONDS": 2 * 24 * 3600,
    # How often each worker records that it is alive, and when a silent one counts as gone.
    "HEARTBEAT_SECONDS": 30,
    "HEARTBEAT_STALE_SECONDS": 120,
    # The rate-limit windows' lengths (tests shorten them; providers count real ones).
    "RATE_WINDOW_SECONDS": {"minute": 60, "hour": 3600, "day": 86400},
    # A session finding the windows full waits in place when one has room within this long;
    # otherwise it closes and one drain is requested for the moment the window opens.
    "RATE_WAIT_IN_SESSION_SECONDS": 5,
    # The least a daily-quota reply holds every worker back (the provider's day may not be ours).
    "THROTTLE_DAILY_SECONDS": 3600,
    # Send test email: most runs per administrator per minute, and the overall bound on one run.
    "TEST_EMAILS_PER_MINUTE": 5,
    "TEST_DEADLINE_SECONDS": 30,
    # Anonymous password-reset mail: most per address, and per client (IP), in an hour.
    "PASSWORD_RESETS_PER_ADDRESS": 3,
    "PASSWORD_RESETS_PER_CLIENT": 10,
    # Where the client's IP address is, for that limit: behind a proxy every request comes from
    # the proxy, so name the header it overwrites with the client's address, e.g.
    # "HTTP_X_REAL_IP" (never one a client could set itself through the proxy).
    "CLIENT_IP_META_KEY": "REMOTE_ADDR",
}


def get(name: str) -> Any:
    """Return NOTIFICATIONS[name] from the settings, or its default."""
    if name not in DEFAULTS:
        raise KeyError(f"Unknown notifications setting {name!r}; known: {', '.join(DEFAULTS)}")
    return getattr(settings, "NOTIFICATIONS", {}).get(name, DEFAULTS[name])


def encryption_keys() -> list[str]:
    """The Fernet keys from NOTIFICATIONS_ENCRYPTION_KEYS: the first encrypts, all decrypt."""
    keys = getattr(settings, "NOTIFICATIONS_ENCRYPTION_KEYS", [])
    if isinstance(keys, str):
        keys = keys.split(",")
    return [key.strip() for key in keys if key.strip()]
