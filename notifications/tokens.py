"""The OAuth2 access-token cache every worker process and host shares, in the database.

One row per set of credentials (keyed by an HMAC of them, so new credentials never get an old
token), the token Fernet-encrypted like the password. A worker that finds no fresh token takes a
short lease on the row and fetches; the others wait for it instead of stampeding the endpoint.
Works on SQLite and PostgreSQL alike: the lease is one conditional UPDATE.
"""

from __future__ import annotations

import logging
import secrets
import time
from datetime import UTC, datetime, timedelta

from django.db.models import Q
from django.utils import timezone
from django.utils.crypto import salted_hmac

from notifications import crypto, oauth
from notifications.exceptions import NotificationsError, SmtpTemporaryError
from notifications.models import CachedToken
from notifications.phrases import phrase as _
from notifications.smtp.config import OAuthCredentials

logger = logging.getLogger(__name__)

#: A token is replaced this long before it expires, so no session starts with one about to lapse.
REFRESH_MARGIN = timedelta(minutes=5)
#: How often a worker waiting for another's fetch looks again.
POLL_SECONDS = 0.05


def cache_key(credentials: OAuthCredentials) -> str:
    """Which row holds the token: an HMAC (under SECRET_KEY) of everything that makes one."""
    material = "\0".join(
        (
            credentials.method,
            credentials.token_url,
            credentials.scope,
            credentials.mailbox,
            credentials.client_id,
            credentials.key_id,
            credentials.secret,
        )
    )
    return salted_hmac("notifications.tokens", material, algorithm="sha256").hexdigest()


class SharedTokens:
    """The TokenSource the SMTP session uses when sending (see ``smtp.auth.TokenSource``)."""

    def get(self, credentials: OAuthCredentials, *, timeout: float) -> oauth.AccessToken:
        """A cached token with REFRESH_MARGIN to spare, or one fetched by this or another worker."""
        key = cache_key(credentials)
        give_up = time.monotonic() + timeout + 5
        while True:
            row = CachedToken.objects.filter(key=key).first()
            if row is None:  # the first use of these credentials: a row to lease
                CachedToken.objects.bulk_create([CachedToken(key=key)], ignore_conflicts=True)
                continue
            now = timezone.now()
            fresh = _cached(row, valid_after=now + REFRESH_MARGIN)
            if fresh is not None:
                return fresh
            owner = secrets.token_hex(8)
            if _take_lease(key, owner, now, until=now + timedelta(seconds=timeout + 5)):
                return self._fetch(credentials, key, owner, timeout=timeout)
            # Another worker is fetching. A token within the margin still works meanwhile.
            usable = _cached(row, valid_after=now)
            if usable is not None:
                return usable
            if time.monotonic() > give_up:
                raise SmtpTemporaryError(
                    _("Access token: another worker's token request did not finish."),
                    step="token",
                    hint=_("Sending is retried automatically."),
                )
            time.sleep(POLL_SECONDS)

    def refresh(
        self, credentials: OAuthCredentials, rejected: oauth.AccessToken, *, timeout: float
    ) -> oauth.AccessToken:
        """Drop ``rejected`` (unless another worker already replaced it), then get() again."""
        key = cache_key(credentials)
        if rejected.handle:
            CachedToken.objects.filter(key=key, token_encrypted=rejected.handle).update(
                token_encrypted="", expires_at=None
            )
        logger.info("The SMTP server refused a cached access token; fetching a new one.")
        return self.get(credentials, timeout=timeout)

    def _fetch(
        self, credentials: OAuthCredentials, key: str, owner: str, *, timeout: float
    ) -> oauth.AccessToken:
        try:
            token = oauth.fetch(credentials, timeout=timeout)
        except BaseException:
            CachedToken.objects.filter(key=key, lease_owner=owner).update(
                lease_owner="", lease_until=None
            )
            raise
        handle = crypto.encrypt(token.value)
        expires_at = datetime.fromtimestamp(token.expires_at, tz=UTC)
        # Rows of credentials no longer in use expire and are dropped here.
        CachedToken.objects.filter(expires_at__lt=timezone.now()).exclude(key=key).delete()
        CachedToken.objects.filter(key=key).update(
            token_encrypted=handle,
            expires_at=expires_at,
            fetched_at=timezone.now(),
            lease_owner="",
            lease_until=None,
        )
        logger.info("Fetched a new OAuth2 access token (expires %s).", expires_at.isoformat())
        return oauth.AccessToken(value=token.value, expires_at=token.expires_at, handle=handle)


def _take_lease(key: str, owner: str, now: datetime, *, until: datetime) -> bool:
    """One conditional UPDATE: only one worker finds the lease free (or expired) and the token
    still stale, so a worker that looked just before another stored a token fetches no second."""
    free = Q(lease_until__isnull=True) | Q(lease_until__lt=now)
    stale = Q(token_encrypted="") | Q(expires_at__isnull=True)
    stale |= Q(expires_at__lte=now + REFRESH_MARGIN)
    updated = CachedToken.objects.filter(free, stale, key=key).update(
        lease_owner=owner, lease_until=until
    )
    return updated == 1


def _cached(row: CachedToken, *, valid_after: datetime) -> oauth.AccessToken | None:
    """The row's token if it is still valid at ``valid_after``, else None."""
    if not row.token_encrypted or row.expires_at is None or row.expires_at <= valid_after:
        return None
    try:
        value = crypto.decrypt(row.token_encrypted)
    except NotificationsError:  # encrypted under a key since removed: fetch a new one
        return None
    return oauth.AccessToken(
        value=value, expires_at=row.expires_at.timestamp(), cached=True, handle=row.token_encrypted
    )


def forget_all() -> None:
    """Drop every cached token (the credentials changed, or the encryption keys rotated)."""
    CachedToken.objects.all().delete()


SHARED = SharedTokens()
