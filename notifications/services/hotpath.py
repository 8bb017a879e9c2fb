"""PostgreSQL's hot paths, where the ORM's per-row work costs more than the database's.

- A sent outcome and the next row's attempt in one statement: through the ORM that write is
  BEGIN, two UPDATEs and COMMIT, four round trips; as one statement with two data-modifying CTEs
  it is one round trip and still one atomic, durable commit, under the same conditions as the ORM
  path (``owned(token)`` and, for the start, a lease not yet run out).
- A claim: one UPDATE ... RETURNING over the oldest due rows picked FOR UPDATE SKIP LOCKED
  (through the ORM: BEGIN, SET LOCAL, SELECT ... FOR UPDATE, UPDATE, COMMIT and a SELECT of the
  rows, six round trips), its commit not waiting for the disk like the ORM's bookkeeping writes.
- The rows of one notify() call, which differ only in their recipient: one INSERT ... SELECT
  FROM unnest(recipients), without compiling every value of every row.

Other databases, and other outcomes, use the ORM.
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


def claim(*, token: str, limit: int, now: datetime, lease_end: datetime) -> list[Notification]:
    """Claim up to ``limit`` of the oldest due rows for ``token`` (``Notification.due()``'s
    conditions); returns them oldest first. Rows another claim holds locked are skipped, and a
    row that another claim took meanwhile fails the due conditions again, so none is claimed
    twice."""
    meta = Notification._meta
    table = connection.ops.quote_name(meta.db_table)
    columns = ", ".join(
        f"{table}.{connection.ops.quote_name(f.column)}" for f in meta.concrete_fields
    )
    # set_config(..., true) is SET LOCAL for this statement's own transaction: a claim is
    # bookkeeping (leases.bookkeeping), lost at worst with a database crash.
    sql = f"""
        WITH quiet AS (SELECT set_config('synchronous_commit', 'off', true)),
        picked AS (
            SELECT id FROM {table}
            WHERE (status = %s AND next_attempt_at <= %s) OR (status = %s AND claimed_until < %s)
            ORDER BY next_attempt_at, id
            LIMIT %s
            FOR UPDATE SKIP LOCKED
        )
        UPDATE {table} SET status = %s, claim_token = %s, claimed_until = %s
        FROM picked, quiet
        WHERE {table}.id = picked.id
        RETURNING {columns}
    """  # noqa: S608  (the table and column names are ours, every value is a parameter)
    parameters = [Status.QUEUED, now, Status.SENDING, now, limit, Status.SENDING, token, lease_end]
    rows = list(Notification.objects.raw(sql, parameters))
    rows.sort(key=lambda row: (row.next_attempt_at, row.pk))
    return rows


def insert_recipients(rows: list[Notification]) -> None:
    """Insert rows that differ only in ``recipient`` (one notify() call); sets their ``pk``."""
    meta = Notification._meta
    first = rows[0]
    fields = [f for f in meta.concrete_fields if f.name not in ("id", "recipient")]
    columns = ", ".join(
        connection.ops.quote_name(column)
        for column in [meta.get_field("recipient").column, *(f.column for f in fields)]
    )
    values = [f.get_db_prep_save(getattr(first, f.attname), connection) for f in fields]
    placeholders = ", ".join(["%s"] * len(values))
    # Table and column names are the model's own, every value is a parameter.
    sql = (
        f"INSERT INTO {connection.ops.quote_name(meta.db_table)} ({columns}) "  # noqa: S608
        f"SELECT recipient, {placeholders} FROM unnest(%s::text[]) AS recipient "
        "RETURNING id, recipient"
    )
    with connection.cursor() as cursor:
        cursor.execute(sql, [*values, [row.recipient for row in rows]])
        ids = {recipient: pk for pk, recipient in cursor.fetchall()}
    for row in rows:
        row.pk = ids[row.recipient]
        row._state.adding, row._state.db = False, connection.alias
