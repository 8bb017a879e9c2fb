"""URL routes: the admin is the whole user interface, its password-reset pages, and /healthz."""

from __future__ import annotations

from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import path
from django.views.generic import RedirectView

from notifications import health, password_reset

urlpatterns = [
    path("", RedirectView.as_view(pattern_name="admin:index", permanent=False)),
    # Django's admin shows "Forgotten your password?" when these exist; the mail goes through
    # the outbox like every other, throttled per address and per client.
    path(
        "admin/password_reset/",
        password_reset.PasswordResetView.as_view(),
        name="admin_password_reset",
    ),
    path(
        "admin/password_reset/done/",
        auth_views.PasswordResetDoneView.as_view(),
        name="password_reset_done",
    ),
    path(
        "reset/<uidb64>/<token>/",
        auth_views.PasswordResetConfirmView.as_view(),
        name="password_reset_confirm",
    ),
    path(
        "reset/done/",
        auth_views.PasswordResetCompleteView.as_view(),
        name="password_reset_complete",
    ),
    path("admin/", admin.site.urls),
    # Unauthenticated, GET only: load balancers and monitors (production also answers it in
    # notifications.health.HealthCheckMiddleware, before host validation and the HTTPS redirect).
    path(health.PATH.lstrip("/"), health.healthz, name="healthz"),
]
