"""/healthz: can this deployment send notifications? Counts and booleans only, never a secret."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from celery import current_app
from django.db import DatabaseError, connection
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET

from notifications import services
from notifications.models import SmtpSettings

logger = logging.getLogger(__name__)

PATH = "/healthz"
BROKER_TIMEOUT_SECONDS = 2.0


def database_ok() -> bool:
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
            cursor.fetchone()
    except DatabaseError as error:
        logger.warning("Health: the database does not answer (%s).", type(error).__name__)
        return False
    return True


def broker_ok(timeout: float = BROKER_TIMEOUT_SECONDS) -> bool:
    """Connect to the Celery broker once, without the long retries publishing may do."""
    try:
        with current_app.connection_for_write() as broker:
            broker.ensure_connection(
                max_retries=1, interval_start=0, interval_step=0, timeout=timeout
            )
    except Exception as error:  # every transport has its own errors: any failure is "down"
        logger.warning("Health: the broker does not answer (%s).", type(error).__name__)
        return False
    return True


def report() -> dict[str, Any]:
    """The probe's findings; ``healthy`` needs the database, the broker and a live worker."""
    database = database_ok()
    broker = broker_ok()
    workers: int | None = None
    smtp_configured: bool | None = None
    sending_paused: bool | None = None
    if database:
        try:
            workers = services.live_workers().count()
            # Not SmtpSettings.load(): a probe must not write, and the row may not exist yet.
            records = {r.pk: r for r in SmtpSettings.objects.all()}
            record = records.get(SmtpSettings.PRIMARY_PK)
            fallback = records.get(SmtpSettings.FALLBACK_PK)
            smtp_configured = bool(record and record.is_configured)
            # A paused primary with a fallback that can send is not a pause of sending.
            sending_paused = bool(record and record.paused_reason) and not (
                fallback is not None and fallback.can_send
            )
        except DatabaseError:
            database = False
    return {
        # An unconfigured site stays healthy: its admin must be reachable to configure it.
        "healthy": database and broker and bool(workers),
        "database": database,
        "broker": broker,
        "workers": workers,
        "smtp_configured": smtp_configured,
        "sending_paused": sending_paused,
    }


@never_cache
@require_GET
def healthz(request: HttpRequest) -> HttpResponse:
    """200 when healthy, 503 otherwise; unauthenticated, for load balancers and monitors."""
    findings = report()
    response = JsonResponse(findings, status=200 if findings["healthy"] else 503)
    # report() logged a warning naming what is down; Django would add an ERROR line for every
    # probe of every instance while the outage lasts.
    response._has_been_logged = True
    return response


class HealthCheckMiddleware:
    """Answer /healthz before host validation and the HTTPS redirect run.

    Load balancers and container checks probe each instance by its address over plain HTTP, so
    neither the Host header nor the scheme would pass; the answer depends on neither.
    """

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        if request.path_info == PATH:
            return healthz(request)
        return self.get_response(request)
