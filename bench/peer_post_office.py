"""django-post-office's send phase, the bench's peer; runs in the bench's own venv (see peers.py).

Queues N one-recipient mails (not timed), then times ``send_queued_mail_until_done`` with
THREADS_PER_PROCESS sending threads, one process, Django's SMTP backend (one connection per
thread, reused), on a PostgreSQL database of its own. Prints one JSON line: messages, seconds,
and the CPU seconds of this process and of the whole machine over the send phase.

Self-contained on purpose: it runs on another interpreter, with only Django, post_office and
psycopg installed.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import time
from urllib.parse import urlparse

_TICK = os.sysconf("SC_CLK_TCK")


def _machine_cpu() -> float:
    with open("/proc/stat") as stat:
        values = [int(v) for v in stat.readline().split()[1:]]
    return (sum(values[:8]) - values[3] - values[4]) / _TICK


def _own_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def main() -> None:
    parser = argparse.ArgumentParser(prog="peer_post_office")
    parser.add_argument("--database-url", required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--messages", type=int, required=True)
    parser.add_argument("--threads", type=int, required=True)
    args = parser.parse_args()
    url = urlparse(args.database_url)

    import django
    from django.conf import settings

    settings.configure(
        INSTALLED_APPS=["django.contrib.contenttypes", "post_office"],
        DATABASES={
            "default": {
                "ENGINE": "django.db.backends.postgresql",
                "NAME": url.path.lstrip("/"),
                "USER": url.username or "postgres",
                "HOST": url.hostname,
                "PORT": url.port or 5432,
            }
        },
        EMAIL_BACKEND="post_office.EmailBackend",
        EMAIL_HOST="127.0.0.1",
        EMAIL_PORT=args.port,
        POST_OFFICE={
            "BACKENDS": {"default": "django.core.mail.backends.smtp.EmailBackend"},
            "THREADS_PER_PROCESS": args.threads,
            "BATCH_SIZE": 1000,
            "LOG_LEVEL": 0,  # log nothing per mail: the bench's own project logs one INFO line
        },
        TEMPLATES=[{"BACKEND": "django.template.backends.django.DjangoTemplates"}],
        USE_TZ=True,
        DEFAULT_AUTO_FIELD="django.db.models.AutoField",
    )
    django.setup()
    from django.core.management import call_command
    from post_office import mail

    call_command("migrate", verbosity=0)
    mail.send_many(
        [
            {
                "sender": "Site <noreply@example.com>",
                "recipients": [f"user{n}@example.com"],
                "subject": f"Benchmark post_office #{n}",
                "message": "Hello from the bench.\n",
            }
            for n in range(args.messages)
        ]
    )
    started, machine, own = time.monotonic(), _machine_cpu(), _own_cpu()
    lockfile = os.path.join(os.environ.get("TMPDIR", "/tmp"), f"post_office_bench_{os.getpid()}")  # noqa: S108
    mail.send_queued_mail_until_done(lockfile=lockfile)
    seconds = time.monotonic() - started
    print(
        json.dumps(
            {
                "messages": args.messages,
                "seconds": seconds,
                "own_cpu": _own_cpu() - own,
                "machine_cpu": _machine_cpu() - machine,
            }
        ),
        flush=True,
    )


if __name__ == "__main__":
    main()
