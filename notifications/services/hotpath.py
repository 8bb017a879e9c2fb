"""PostgreSQL's hot paths, where the ORM's per-row work costs more than the database's.

- A sent outcome and the next row's attempt in one statement: through the ORM that write is
  BEGIN, two UPDATEs and COMMIT, four round trips; as one statement with two data-modifying CTEs
  it is one round trip and still one atomic, durable commit, under the same conditions as the ORM
  path (``owned(token)`` and, for the start, a lease that outlasts the send:
  ``leases.start_attempt_query``).
- A claim: one UPDATE ... RETURNING over the oldest due rows picked FOR UPDATE SKIP LOCKED
  down the partial indexes (through the ORM: BEGIN, SET LOCAL, SELECT ... FOR UPDATE, UPDATE,
  COMMIT and a SELECT of the rows, six round trips), its commit not waiting for the disk like
  the ORM's bookkeeping writes.
- The rows of one notify() call, which differ only in their recipient: one INSERT ... SELECT
  FROM unnest(recipients), without compiling every value of every row.

Other databases, and other outcomes, use the ORM.
"""

from __future__ import annotations

import functools
from datetime import datetime

import psycopg
from django.db import connection, connections

from notifications.models import Notification, Status


def applies() -> bool:
    return connection.vendor == "postgresql" and not connection.in_atomic_block


def record_sent_and_start(
    *, token: str, row_id: int, fields: dict, upcoming_id: int | None, send_ends: datetime
) -> tuple[bool, bool]:
    """(the sent row was still ours, the upcoming row's attempt started: its lease lasts past
    ``send_ends``)."""
    table = connection.ops.quote_name(Notification._meta.db_table)
    sql = f"""
        WITH done AS (
            UPDATE {table}
            SET status = %s, sent_at = %s, message_id = %s, last_error = %s,
                settings_version = %s, server = %s, claim_token = '', claimed_until = NULL
            WHERE id = %s AND claim_token = %s AND status = %s
            RETURNING 1
        ), started AS (
            UPDATE {table}
            SET attempts = attempts + 1
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
        fields["server"],
        row_id,
        token,
        Status.SENDING,
        upcoming_id,
        token,
        Status.SENDING,
        send_ends,
    ]
    rows = _prepared(sql, [str(p) if isinstance(p, Status) else p for p in parameters])
    done, started = rows[0]
    return bool(done), bool(started)


def _prepared(sql: str, parameters: list | dict) -> list[tuple]:
    """Run a statement of the hot path as a prepared statement, and return its rows.

    Django's cursors bind parameters in the client (the whole statement is sent, parsed and
    planned each time); this one binds them in the server and prepares the statement once per
    connection, which saves both sides a good part of the statement's cost. Errors are Django's,
    as from any cursor (``wrap_database_errors`` also marks the connection for the worker's
    after-task check).
    """
    connection.ensure_connection()
    with connection.wrap_database_errors, psycopg.Cursor(connection.connection) as cursor:
        cursor.execute(sql, parameters, prepare=True)
        return cursor.fetchall()


def claim(*, token: str, limit: int, now: datetime, lease_end: datetime) -> list[Notification]:
    """Claim up to ``limit`` of the oldest due rows for ``token`` (``Notification.due()``'s
    conditions); returns them oldest first. Rows another claim holds locked are skipped, and a
    row that another claim took meanwhile fails the due conditions again, so none is claimed
    twice.

    The two kinds of due row are picked apart, each down its own partial index in the claim's
    order (``notif_waiting_idx``, ``notif_leased_idx``), so a claim reads about ``limit`` rows
    whatever the backlog; ``due()``'s OR in one query made PostgreSQL read and sort every due
    row on every claim, about 1 ms of its CPU per message with 10,000 waiting.
    """
    meta = Notification._meta
    table = connection.ops.quote_name(meta.db_table)
    columns = ", ".join(
        f"{table}.{connection.ops.quote_name(f.column)}" for f in meta.concrete_fields
    )
    # set_config(..., true) is SET LOCAL for this statement's own transaction: a claim is
    # bookkeeping (leases.bookkeeping), lost at worst with a database crash.
    sql = f"""
        WITH quiet AS (SELECT set_config('synchronous_commit', 'off', true)),
        waiting AS (
            SELECT id, next_attempt_at FROM {table}
            WHERE status = %(queued)s AND next_attempt_at <= %(now)s
            ORDER BY next_attempt_at, id
            LIMIT %(limit)s
            FOR UPDATE SKIP LOCKED
        ),
        expired AS (
            SELECT id, next_attempt_at FROM {table}
            WHERE status = %(sending)s AND claimed_until < %(now)s
            ORDER BY claimed_until
            LIMIT %(limit)s
            FOR UPDATE SKIP LOCKED
        ),
        picked AS (
            SELECT id FROM (SELECT * FROM waiting UNION ALL SELECT * FROM expired) AS due
            ORDER BY next_attempt_at, id
            LIMIT %(limit)s
        )
        UPDATE {table} SET status = %(sending)s, claim_token = %(token)s, claimed_until = %(end)s
        FROM picked, quiet
        WHERE {table}.id = picked.id
        RETURNING {columns}
    """  # noqa: S608  (the table and column names are ours, every value is a parameter)
    parameters = {
        "queued": str(Status.QUEUED),
        "sending": str(Status.SENDING),
        "now": now,
        "limit": limit,
        "token": token,
        "end": lease_end,
    }
    rows = _instances(_prepared(sql, parameters))
    rows.sort(key=lambda row: (row.next_attempt_at, row.pk))
    return rows


def _instances(rows: list[tuple]) -> list[Notification]:
    """Notifications from rows of their concrete columns, converted as the ORM would (the JSON
    headers, say); RawQuerySet does the same at several times the cost."""
    db = connections[connection.alias]
    fields = Notification._meta.concrete_fields
    names = [field.attname for field in fields]
    converters = []
    for index, field in enumerate(fields):
        column = field.get_col(Notification._meta.db_table)
        for converter in db.ops.get_db_converters(column) + field.get_db_converters(db):
            converters.append((index, converter, column))
    instances = []
    for values in rows:
        values = list(values)
        for index, converter, column in converters:
            values[index] = converter(values[index], column, db)
        instances.append(Notification.from_db(db.alias, names, values))
    return instances


def insert_recipients(rows: list[Notification]) -> None:
    """Insert rows that differ only in ``recipient`` (one notify() call); sets their ``pk``."""
    db = connections[connection.alias]  # once: every use of the proxy is a thread-local lookup
    fields, sql = _insert_statement()
    first = rows[0]
    values = [field.get_db_prep_save(getattr(first, field.attname), db) for field in fields]
    with db.cursor() as cursor:
        cursor.execute(sql, [*values, [row.recipient for row in rows]])
        ids = {recipient: pk for pk, recipient in cursor.fetchall()}
    for row in rows:
        row.pk = ids[row.recipient]
        row._state.adding, row._state.db = False, db.alias


@functools.cache
def _insert_statement() -> tuple[list, str]:
    """(the fields after ``recipient``, the INSERT ... SELECT FROM unnest statement): the same
    for every call, so written once per process."""
    meta = Notification._meta
    fields = [f for f in meta.concrete_fields if f.name not in ("id", "recipient")]
    quote = connection.ops.quote_name
    columns = ", ".join(
        quote(column)
        for column in [meta.get_field("recipient").column, *(f.column for f in fields)]
    )
    placeholders = ", ".join(["%s"] * len(fields))
    # Table and column names are the model's own, every value is a parameter.
    sql = (
        f"INSERT INTO {quote(meta.db_table)} ({columns}) "  # noqa: S608
        f"SELECT recipient, {placeholders} FROM unnest(%s::text[]) AS recipient "
        "RETURNING id, recipient"
    )
    return fields, sql
