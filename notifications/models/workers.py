"""What the workers share besides the outbox: the Batch send slots, each server's connect
back-off, the rate-limit reservations and holds, the OAuth2 token cache and the heartbeats."""

from __future__ import annotations

from django.db import models


class SendSlot(models.Model):
    """One of the MAX_BATCH permits to hold an SMTP session open, leased by one worker.

    Slots numbered up to the current Batch may be taken; a lease whose ``expires_at`` passed
    (its worker died) is free again. Living in the database, the cap holds across every worker
    and host with either broker, and needs nothing else to run.
    """

    number = models.PositiveSmallIntegerField(primary_key=True)
    token = models.CharField(max_length=32, blank=True)
    holder = models.CharField(max_length=200, blank=True)
    expires_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["number"]

    def __str__(self) -> str:
        return f"slot {self.number}"


class ConnectBackoff(models.Model):
    """Failed attempts to open an SMTP session to one server, shared by every worker: its pk is
    the server's SmtpSettings pk (1 the primary, 2 the fallback).

    While ``failures`` is above zero, a worker connects only after ``retry_at``, and the first one
    to move ``retry_at`` on is the only one that tries: one connection per back-off, whatever
    the number of workers, and no notification is charged for it.
    """

    failures = models.PositiveIntegerField(default=0)
    # When the current run of failures began: "using the fallback server since …".
    since = models.DateTimeField(null=True, blank=True)
    retry_at = models.DateTimeField(null=True, blank=True)
    reason = models.TextField(blank=True)  # the last failure, sanitised like last_error
    reason_detail = models.JSONField(null=True, blank=True)  # its phrases (notifications.phrases)
    failed_at = models.DateTimeField(null=True, blank=True)
    # The last failure was the provider limiting this sender (a throttling or quota reply), not
    # a server out of reach.
    throttled = models.BooleanField(default=False)

    def __str__(self) -> str:
        return f"{self.failures} failed connection(s)"


class SendReservation(models.Model):
    """One send counted against the rate limits' rolling windows (see ``quotas``).

    Taken just before a message is handed over, given back when nothing was; rows older than the
    longest window are pruned by the sweeper.
    """

    reserved_at = models.DateTimeField(db_index=True)

    def __str__(self) -> str:
        return f"send at {self.reserved_at:%Y-%m-%d %H:%M:%S}"


class RateHold(models.Model):
    """The one record (pk 1) of when a full rate-limit window next has room.

    Whoever moves ``wake_at`` asks for a drain at that moment; everyone else who finds the window
    full leaves it to them, so the workers neither poll nor stampede when the window opens.
    """

    SINGLETON_PK = 1

    wake_at = models.DateTimeField(null=True, blank=True)

    def __str__(self) -> str:
        return f"rate limited until {self.wake_at}" if self.wake_at else "not rate limited"


class CachedToken(models.Model):
    """An OAuth2 access token every worker shares, encrypted, and the lease of whoever fetches it.

    ``key`` is an HMAC of the credentials (see ``tokens.cache_key``), never the credentials.
    """

    key = models.CharField(max_length=64, primary_key=True)
    token_encrypted = models.TextField(blank=True)
    expires_at = models.DateTimeField(null=True, blank=True)
    fetched_at = models.DateTimeField(null=True, blank=True)
    lease_owner = models.CharField(max_length=32, blank=True)
    lease_until = models.DateTimeField(null=True, blank=True)

    def __str__(self) -> str:
        return f"token {self.key[:8]}"


class WorkerHeartbeat(models.Model):
    """The last time each Celery worker said it was alive (every HEARTBEAT_SECONDS)."""

    name = models.CharField(max_length=200, primary_key=True)
    last_seen = models.DateTimeField(db_index=True)
    started_at = models.DateTimeField()
    concurrency = models.PositiveIntegerField(default=0)

    class Meta:
        ordering = ["-last_seen"]

    def __str__(self) -> str:
        return self.name
