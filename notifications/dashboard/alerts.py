"""The panel's warnings: what needs the administrator, most urgent first."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from django.core.exceptions import ValidationError
from django.utils import timezone
from django.utils.translation import gettext as _
from django.utils.translation import ngettext

from notifications import quotas
from notifications.dashboard.state import (
    FallbackState,
    Workers,
    clock,
    connect_backoff,
    shown_reason,
)
from notifications.models import ConnectBackoff, SmtpSettings
from notifications.providers import provider_for_host
from notifications.validators import parse_from_address

#: Past this age the panel asks for a new password ("change the SMTP password regularly").
PASSWORD_MAX_AGE = timedelta(days=180)
#: How long before a client secret expires the page starts warning.
SECRET_EXPIRY_NOTICE = timedelta(days=30)


@dataclass(frozen=True)
class HealthWarning:
    """Something the administrator should act on; ``field`` names the form field it is about."""

    message: str
    field: str = ""


#: ``warnings()`` reads the connection back-off itself unless given it (None: there is none).
_READ = object()


def warnings(
    *,
    settings: SmtpSettings,
    workers: Workers,
    now: datetime,
    backoff: object = _READ,
    fallback: FallbackState | None = None,
) -> list[HealthWarning]:
    """What needs attention, most urgent first: no worker, then risks in the stored settings."""
    if backoff is _READ:
        backoff = connect_backoff()
    found = [
        _worker_warning(workers, now),
        _capacity_warning(settings, workers),
        # While the fallback sends, its own line in the panel says why the primary is not used.
        None if fallback and fallback.active else _connection_warning(settings, backoff),
        _rate_warning(settings, now, fallback=fallback),
    ]
    if settings.skip_verify:
        found.append(
            HealthWarning(
                _(
                    "Skip Verify is on (insecure): certificate verification is skipped, so "
                    "anyone between this site and the server can read the password and the mail. "
                    "Paste the server's CA certificate into Extra trusted CA (PEM) under "
                    "Advanced security instead."
                ),
                "skip_verify",
            )
        )
    if settings.allow_plaintext_login:
        found.append(
            HealthWarning(
                _(
                    "Plaintext login is allowed: with Security set to None the username and "
                    "password cross the network unencrypted. Keep it for a trusted relay on a "
                    "private network only."
                ),
                "allow_plaintext_login",
            )
        )
    found += [_password_age_warning(settings, now), _office365_warning(settings)]
    found.append(_client_secret_warning(settings, now))
    found.append(_sender_domain_warning(settings))
    return [warning for warning in found if warning is not None]


def _worker_warning(workers: Workers, now: datetime) -> HealthWarning | None:
    if workers.alive:
        return None
    if workers.last_seen is None:
        return HealthWarning(
            _("No worker has reported yet: nothing will be sent until a Celery worker runs.")
        )
    minutes = max(1, int((now - workers.last_seen).total_seconds() // 60))
    return HealthWarning(
        ngettext(
            "No worker has reported in %(minutes)d minute: nothing will be sent.",
            "No worker has reported in %(minutes)d minutes: nothing will be sent.",
            minutes,
        )
        % {"minutes": minutes}
    )


def _capacity_warning(settings: SmtpSettings, workers: Workers) -> HealthWarning | None:
    """Each session is one running task: fewer task slots than Batch cap sending below Batch."""
    if not workers.alive or not workers.concurrency or workers.concurrency >= settings.batch:
        return None  # (no concurrency recorded: unknown, not zero)
    return HealthWarning(
        _(
            "The live workers can run %(concurrency)d tasks at once: at most %(concurrency)d of "
            "Batch %(batch)d in flight. Raise the workers' concurrency (CELERY_WORKER_CONCURRENCY "
            "or --concurrency) or start more workers."
        )
        % {"concurrency": workers.concurrency, "batch": settings.batch},
        "batch",
    )


def _connection_warning(
    settings: SmtpSettings, backoff: ConnectBackoff | None
) -> HealthWarning | None:
    """Sessions that could not open charge no notification, so only this says why mail waits."""
    if backoff is None or settings.paused_reason:
        return None
    reason = shown_reason(backoff)
    if backoff.throttled:
        return HealthWarning(
            _(
                "Throttled by the provider until %(time)s: “%(reply)s”. Every worker waits, and "
                "no notification is charged for it; if it keeps happening, lower the limits."
            )
            % {"time": clock(backoff.retry_at), "reply": reason},
            "rate_per_minute",
        )
    return HealthWarning(
        ngettext(
            "The SMTP server could not be reached (%(count)d failed attempt); sending waits and "
            "tries again by itself: %(reason)s",
            "The SMTP server could not be reached (%(count)d failed attempts); sending waits and "
            "tries again by itself: %(reason)s",
            backoff.failures,
        )
        % {"count": backoff.failures, "reason": reason},
        "host",
    )


def _rate_warning(
    settings: SmtpSettings, now: datetime, *, fallback: FallbackState | None = None
) -> HealthWarning | None:
    """A full rate-limit window: what waits, and until when (the limits hold for the fallback
    too, so a paused primary hides it only when no fallback sends)."""
    refusal = quotas.next_send_at(quotas.limits_of(settings), now=now)
    if refusal is None or (settings.paused_reason and not (fallback and fallback.active)):
        return None
    return HealthWarning(
        _("Rate limited: the next send is at %(time)s, when the limits allow it again.")
        % {"time": clock(refusal)},
        "rate_per_minute",
    )


def _password_age_warning(settings: SmtpSettings, now: datetime) -> HealthWarning | None:
    changed = settings.password_changed_at
    if not settings.has_password or changed is None or now - changed < PASSWORD_MAX_AGE:
        return None
    days = (now - changed).days
    return HealthWarning(
        ngettext(
            "The SMTP password was set %(days)d day ago: change the SMTP password regularly.",
            "The SMTP password was set %(days)d days ago: change the SMTP password regularly.",
            days,
        )
        % {"days": days},
        "password",
    )


def _office365_warning(settings: SmtpSettings) -> HealthWarning | None:
    provider = provider_for_host(settings.host)
    if settings.provider != "office365" and (provider is None or provider.key != "office365"):
        return None
    if settings.uses_oauth:
        return None
    return HealthWarning(
        _(
            "Microsoft is retiring basic authentication (username and password) for SMTP AUTH "
            "in Outlook / Office 365. Switch the sign-in method to Microsoft 365 (OAuth2), or "
            "use an SMTP relay connector or another provider."
        ),
        "auth_method",
    )


def _client_secret_warning(settings: SmtpSettings, now: datetime) -> HealthWarning | None:
    """The Microsoft client secret expires (Entra allows two years at most): say so in time."""
    expires = settings.client_secret_expires
    if settings.auth_method != "microsoft-oauth2" or expires is None:
        return None
    days = (expires - timezone.localdate(now)).days
    if days < 0:
        message = _(
            "The client secret expired on %(date)s: sending fails until you create a new one "
            "in Microsoft Entra (Certificates & secrets) and enter it here."
        ) % {"date": expires.isoformat()}
    elif days <= SECRET_EXPIRY_NOTICE.days:
        message = ngettext(
            "The client secret expires in %(days)d day (%(date)s): create a new one in "
            "Microsoft Entra (Certificates & secrets) and enter it here before then.",
            "The client secret expires in %(days)d days (%(date)s): create a new one in "
            "Microsoft Entra (Certificates & secrets) and enter it here before then.",
            days,
        ) % {"days": days, "date": expires.isoformat()}
    else:
        return None
    return HealthWarning(message, "client_secret")


def _sender_domain_warning(settings: SmtpSettings) -> HealthWarning | None:
    """From's domain differs from the login's: servers often refuse it (553 sender rejected)."""
    _local, at, login_domain = settings.username.rpartition("@")
    if not at or not settings.from_address:
        return None
    try:
        from_domain = parse_from_address(settings.from_address).domain
    except ValidationError:
        return None
    if from_domain.lower().rstrip(".") == login_domain.lower().rstrip("."):
        return None
    return HealthWarning(
        _(
            "The From address's domain (%(from_domain)s) differs from the login's "
            "(%(login_domain)s): many servers refuse such mail with “553 sender rejected”. Send "
            "from an address the login may use."
        )
        % {"from_domain": from_domain, "login_domain": login_domain},
        "from_address",
    )
