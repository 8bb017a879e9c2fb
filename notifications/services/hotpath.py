"""PostgreSQL's hot path: a sent outcome and the next row's attempt in one statement.

Through the ORM that write is BEGIN, two UPDATEs and COMMIT: four round trips. As one statement
with two data-modifying CTEs it is one round trip and still one atomic, durable commit. Same
conditions as the ORM path (``owned(token)`` and, for the start, a lease not yet run out); other
databases and other outcomes use the ORM.
"""

from __future__ import annotations

from datetime import datetime

from django.db import connection

from notifications.models import Notification, Status


def applies() -> bool:
    return connection.vendor == "postgresql" and not connection.in_atomic_block


def record_sent_and_start(
    *, token: str, row_id: int, fields: dict, upcoming_id: int | None, now: datetime, lease_end
) -> tuple[bool, bool]:
    """(the sent row was still ours, the upcoming row's attempt started)."""
    table = connection.ops.quote_name(Notification._meta.db_table)
    sql = f"""
        WITH done AS (
            UPDATE {table}
            SET status = %s, sent_at = %s, message_id = %s, last_error = %s,
                settings_version = %s, claim_token = '', claimed_until = NULL
            WHERE id = %s AND claim_token = %s AND status = %s
            RETURNING 1
        ), started AS (
            UPDATE {table}
            SET attempts = attempts + 1, claimed_until = %s
            WHERE id = %s AND claim_token = %s AND status = %s AND claimed_until > %s
            RETURNING 1
        )
        SELECT (SELECT count(*) FROM done), (SELECT count(*) FROM started)
    """  # noqa: S608  (the table name is ours, every value is a parameter)
    parameters = [
        Status.SENT,
        fields["sent_at"],
        fields["message_id"],
        fields["last_error"],
        fields["settings_version"],
        row_id,
        token,
        Status.SENDING,
        lease_end,
        upcoming_id,
        token,
        Status.SENDING,
        now,
    ]
    with connection.cursor() as cursor:
        cursor.execute(sql, parameters)
        done, started = cursor.fetchone()
    return bool(done), bool(started)
