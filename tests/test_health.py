"""/healthz: database, broker, live workers and "SMTP configured"; 200 or 503; nothing secret."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
from django.conf import settings
from django.test import override_settings
from django.utils import timezone

from notifications import services
from notifications.health import HealthCheckMiddleware
from notifications.models import SmtpSettings, WorkerHeartbeat
from tests.processes import publishing_to

pytestmark = pytest.mark.django_db

HEALTH_MIDDLEWARE = f"{HealthCheckMiddleware.__module__}.{HealthCheckMiddleware.__name__}"


def a_live_worker() -> None:
    services.record_heartbeat(name="celery@host-a", started_at=timezone.now(), concurrency=20)


def test_healthy_with_database_broker_and_a_live_worker(client):
    a_live_worker()
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response["Content-Type"] == "application/json"
    assert "no-cache" in response["Cache-Control"]
    assert response.json() == {
        "healthy": True,
        "database": True,
        "broker": True,
        "workers": 1,
        "smtp_configured": False,
        "sending_paused": False,
    }


def test_no_live_worker_is_unhealthy(client):
    a_live_worker()
    # Silent for longer than HEARTBEAT_STALE_SECONDS: the worker counts as gone.
    WorkerHeartbeat.objects.update(last_seen=timezone.now() - timedelta(hours=1))
    response = client.get("/healthz")
    assert response.status_code == 503
    assert response.json()["workers"] == 0
    assert response.json()["healthy"] is False


def test_returns_503_while_redis_is_stopped_and_200_once_it_is_back(client, redis_server):
    a_live_worker()
    with publishing_to(redis_server.url):
        assert client.get("/healthz").status_code == 200
        redis_server.stop()
        stopped = client.get("/healthz")
        assert stopped.status_code == 503
        assert stopped.json()["broker"] is False
        assert stopped.json()["database"] is True
        redis_server.start()
        back = client.get("/healthz")
        assert back.status_code == 200, back.json()
        assert back.json()["broker"] is True


def test_reports_smtp_configured_and_paused_but_never_the_settings(
    client, plain_smtp_server, configure_smtp
):
    a_live_worker()
    configure_smtp(
        plain_smtp_server,
        username="secret-user@example.com",
        password="S3cret-Pa55word",
        from_address="Secret Sender <secret-sender@example.com>",
    )
    services.pause(SmtpSettings.load().version, "Authentication failed")
    response = client.get("/healthz")
    assert response.status_code == 200  # a configuration problem, not an outage
    body = response.content.decode()
    assert response.json()["smtp_configured"] is True
    assert response.json()["sending_paused"] is True
    for secret in ("secret-user", "S3cret-Pa55word", "secret-sender", "127.0.0.1", "Authentic"):
        assert secret not in body
    assert str(plain_smtp_server.port) not in body
    # Only counts and booleans.
    assert all(isinstance(v, bool | int) or v is None for v in json.loads(body).values())


def test_unauthenticated_get_only(client):
    a_live_worker()
    assert client.get("/healthz").status_code == 200  # anonymous
    assert client.post("/healthz").status_code == 405
    assert client.put("/healthz").status_code == 405


@override_settings(
    ALLOWED_HOSTS=["mail.example.com"],
    SECURE_SSL_REDIRECT=True,
    MIDDLEWARE=[HEALTH_MIDDLEWARE, *settings.MIDDLEWARE],
)
def test_production_middleware_answers_by_address_over_plain_http(client):
    """A load balancer calls http://10.0.0.5:8000/healthz: no host check, no HTTPS redirect."""
    a_live_worker()
    response = client.get("/healthz", HTTP_HOST="10.0.0.5:8000")
    assert response.status_code == 200
    assert response.json()["healthy"] is True
    # Every other path still gets both.
    assert client.get("/admin/login/", HTTP_HOST="10.0.0.5:8000").status_code == 400
    redirect = client.get("/admin/login/", HTTP_HOST="mail.example.com")
    assert redirect.status_code == 301
    assert redirect["Location"].startswith("https://")
