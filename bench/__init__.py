"""The benchmark (issues 7, 12): ``python -m bench`` measures dispatch against baselines and peers.

One module per job: ``servers`` (local SMTP servers counting sessions), ``baselines`` (plain
smtplib), ``peers`` (django-post-office's send phase, run by ``peer_post_office`` in the bench's
own venv), ``infra`` (PostgreSQL database, Redis, Celery workers), ``endtoend`` (a pre-queued
burst, or a paced producer → sent), ``report`` (the markdown table); ``__main__`` runs them in
order and cleans up.
"""
