# The image every app service runs (web, worker, beat, migrate): same code, different command.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    DJANGO_SETTINGS_MODULE=config.settings.production

WORKDIR /app

# A fixed uid, so that files the container writes on a mounted volume have a known owner.
RUN groupadd --system --gid 10001 app \
    && useradd --system --uid 10001 --gid app --home-dir /app --no-create-home \
        --shell /usr/sbin/nologin app

COPY requirements.txt ./
RUN pip install -r requirements.txt

COPY . .

# Static files are collected at build time (hashed names and compressed copies for WhiteNoise).
# collectstatic reads no secret, but the production settings refuse to load without them: give
# throwaway values that exist only in this build step.
RUN SECRET_KEY=collectstatic-only-not-a-secret \
    ALLOWED_HOSTS=localhost \
    NOTIFICATIONS_ENCRYPTION_KEYS=collectstatic-only-not-a-key \
    CELERY_BROKER_URL=memory:// \
    python manage.py collectstatic --noinput \
    && mkdir -p var \
    && chown app:app var

# The code stays root-owned and read-only to the app; it writes only under var/.
USER app

EXPOSE 8000
CMD ["gunicorn", "config.wsgi:application", "--bind", "0.0.0.0:8000", "--no-control-socket"]
