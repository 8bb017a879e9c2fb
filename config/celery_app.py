"""The Celery application: configured from Django settings (CELERY_*), tasks found in the apps."""

from __future__ import annotations

import os

from celery import Celery

from notifications.heartbeat import Heartbeat

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings.local")

app = Celery("config")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()
app.steps["worker"].add(Heartbeat)
