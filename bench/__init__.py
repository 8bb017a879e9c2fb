"""The benchmark (issue 7): ``python -m bench`` measures end-to-end dispatch against baselines.

One module per job: ``servers`` (local SMTP servers counting sessions), ``baselines`` (plain
smtplib), ``infra`` (PostgreSQL database, Redis, Celery workers), ``endtoend`` (notify() → sent),
``report`` (the markdown table); ``__main__`` runs them in order and cleans up.
"""
