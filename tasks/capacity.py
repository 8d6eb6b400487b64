"""What the capacity review (§7) reads: the platform's table and database sizes, read
at run time, and their recorded history in runbook's own ``table_size_history`` table
(in RUNBOOK_ALERTS__STATE_SCHEMA of the alert-state database, beside the monitor's
``metric_history``), so that a history of table sizes builds up run after run.

Names are quoted with ``sql.Identifier``; the platform is only read
(``pg_total_relation_size``, ``pg_database_size``), in a read-only transaction.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import psycopg
from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE
from psycopg import sql
from pydantic import BaseModel

from runbook.retry import RETRIES, backoff, retry_transient
from tasks import alertstate, postgres
from tasks.postgres.catalog import SYSTEM_SCHEMAS

_DDL = """
CREATE TABLE IF NOT EXISTS {t} (
    instance      text NOT NULL,
    table_schema  text NOT NULL,
    table_name    text NOT NULL,
    at            timestamptz NOT NULL,
    bytes         bigint NOT NULL,
    PRIMARY KEY (instance, table_schema, table_name, at)
)
"""


class Sizes(BaseModel):
    """The platform's sizes at one moment."""

    at: datetime
    database_bytes: int
    tables: dict[str, int]  # "schema.table" -> pg_total_relation_size (a partitioned table: its partitions')


def read_sizes(conn: psycopg.Connection[Any], now: datetime) -> Sizes:
    """Every user table's total size (heap, indexes, TOAST) and the database's."""
    rows = conn.execute(
        """
        SELECT n.nspname, c.relname,
               CASE WHEN c.relkind = 'p'
                    THEN (SELECT coalesce(sum(pg_total_relation_size(t.relid)), 0) FROM pg_partition_tree(c.oid) t)
                    ELSE pg_total_relation_size(c.oid) END
        FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE c.relkind IN ('r', 'p', 'm') AND NOT c.relispartition
          AND n.nspname <> ALL(%s) AND n.nspname NOT LIKE 'pg_temp%%' AND n.nspname NOT LIKE 'pg_toast%%'
        ORDER BY 3 DESC, 1, 2
        """,
        (list(SYSTEM_SCHEMAS),),
    ).fetchall()
    size = conn.execute("SELECT pg_database_size(current_database())").fetchone()
    assert size is not None
    return Sizes(at=now, database_bytes=int(size[0]), tables={f"{s}.{t}": int(b) for s, t, b in rows})


def ensure_table(conn: psycopg.Connection[Any], schema: str) -> None:
    """Create table_size_history where missing (the schema exists: alertstate.ensure_schema)."""
    conn.execute(sql.SQL(_DDL).format(t=alertstate.q(schema, "table_size_history")))


def record_sizes(conn: psycopg.Connection[Any], schema: str, instance: str, sizes: Sizes, keep: timedelta) -> int:
    """Keep this reading (one row per table) and forget readings older than ``keep``."""
    table = alertstate.q(schema, "table_size_history")
    rows = [(instance, *name.split(".", 1), sizes.at, size) for name, size in sizes.tables.items()]
    with conn.cursor() as cur:
        cur.executemany(
            sql.SQL("INSERT INTO {} (instance, table_schema, table_name, at, bytes) VALUES (%s, %s, %s, %s, %s)"
                    " ON CONFLICT DO NOTHING").format(table),
            rows,
        )
    conn.execute(sql.SQL("DELETE FROM {} WHERE instance = %s AND at < %s").format(table), (instance, sizes.at - keep))
    return len(rows)


def last_recorded(conn: psycopg.Connection[Any], schema: str, instance: str) -> datetime | None:
    """When the instance's table sizes were last recorded (None: never, or no table yet)."""
    exists = conn.execute("SELECT to_regclass(%s)", (f"{alertstate.q(schema, 'table_size_history').as_string(conn)}",)).fetchone()
    if not exists or exists[0] is None:
        return None
    row = conn.execute(sql.SQL("SELECT max(at) FROM {} WHERE instance = %s").format(alertstate.q(schema, "table_size_history")),
                       (instance,)).fetchone()
    return row[0] if row else None


def store_sizes(conn: psycopg.Connection[Any], schema: str, instance: str, sizes: Sizes, keep: timedelta) -> int:
    """Record a reading in table_size_history, schema and table made where missing, in
    one transaction (on an autocommit connection)."""
    alertstate.ensure_schema(conn, schema)
    with conn.transaction():
        ensure_table(conn, schema)
        return record_sizes(conn, schema, instance, sizes, keep)


def read_size_history(conn: psycopg.Connection[Any], schema: str, instance: str, since: datetime) -> dict[str, list[tuple[datetime, float]]]:
    """"schema.table" -> (at, bytes) of the recorded readings since ``since``, oldest first."""
    found: dict[str, list[tuple[datetime, float]]] = {}
    rows = conn.execute(
        sql.SQL("SELECT table_schema, table_name, at, bytes FROM {} WHERE instance = %s AND at >= %s ORDER BY at").format(
            alertstate.q(schema, "table_size_history")),
        (instance, since),
    ).fetchall()
    for s, t, at, size in rows:
        found.setdefault(f"{s}.{t}", []).append((at, float(size)))
    return found


class History(BaseModel):
    """The metric history the reviews read, per metric: (at, value) oldest first."""

    metrics: dict[str, list[tuple[datetime, float]]]


def read_metrics(conn: psycopg.Connection[Any], schema: str, metrics: dict[str, str], since: datetime, until: datetime) -> History:
    """``metrics`` (metric -> its resource) from the monitor's metric_history."""
    return History(metrics={
        metric: [(at, value) for _, at, value in alertstate.read_history(conn, schema, metric, since, until, resource=resource)]
        for metric, resource in metrics.items()
    })


# --------------------------------------------------------------------------- Prefect tasks


@task(name="read-platform-sizes", retries=RETRIES, retry_delay_seconds=backoff(), retry_condition_fn=retry_transient, cache_policy=NO_CACHE)
def read_platform_sizes(dsn: str, now: datetime, connect_timeout: int, statement_timeout: int) -> Sizes:
    """The total size of every table and of the database, read from the platform (read only)."""
    get_run_logger().info("Reading table and database sizes")
    with postgres.session(dsn, application="runbook capacity-review", connect_timeout=connect_timeout,
                          statement_timeout_s=statement_timeout) as conn:
        conn.read_only = True
        with conn.transaction():
            return read_sizes(conn, now)


@task(name="record-table-sizes", retries=RETRIES, retry_delay_seconds=backoff(), retry_condition_fn=retry_transient, cache_policy=NO_CACHE)
def record_table_sizes(state_dsn: str, schema: str, instance: str, sizes: Sizes, keep_days: int, since: datetime,
                       connect_timeout: int) -> dict[str, list[tuple[datetime, float]]]:
    """Record this reading in table_size_history (one transaction: retried whole) and
    return the history of each table since ``since``, this reading included."""
    with postgres.session(state_dsn, application="runbook capacity-review", connect_timeout=connect_timeout,
                          statement_timeout_s=60, autocommit=True) as conn:
        kept = store_sizes(conn, schema, instance, sizes, timedelta(days=keep_days))
        history = read_size_history(conn, schema, instance, since)
    get_run_logger().info("Recorded the sizes of %d tables in %s.table_size_history", kept, schema)
    return history


@task(name="read-metric-history", retries=RETRIES, retry_delay_seconds=backoff(), retry_condition_fn=retry_transient, cache_policy=NO_CACHE)
def read_metric_history(state_dsn: str, schema: str, metrics: dict[str, str], since: datetime, until: datetime,
                        connect_timeout: int) -> History:
    """The monitor's samples of ``metrics`` (metric -> resource) in [since, until)."""
    get_run_logger().info("Reading the metric history (%s) from %s", ", ".join(metrics), since.isoformat(timespec="seconds"))
    with postgres.session(state_dsn, application="runbook reviews", connect_timeout=connect_timeout, statement_timeout_s=120,
                          autocommit=True) as conn:
        alertstate.ensure_schema(conn, schema)  # a monitor that never ran: an empty history, said so, not an error
        return read_metrics(conn, schema, metrics, since, until)


@task(name="record-table-sizes-if-due", cache_policy=NO_CACHE)  # not retried: the next monitor run, a minute later, tries again
def record_table_sizes_if_due(dsn: str, state_dsn: str, schema: str, instance: str, now: datetime, every: timedelta,
                              keep_days: int, connect_timeout: int, statement_timeout: int) -> str:
    """The monitor's share of the capacity history: when the last reading of the
    instance's table sizes is older than ``every``, read them (read only) and record
    them. What it did, in a line."""
    with postgres.session(state_dsn, application="runbook monitor", connect_timeout=connect_timeout,
                          statement_timeout_s=60, autocommit=True) as conn:
        last = last_recorded(conn, schema, instance)
    if last is not None and now - last < every:
        return f"not due (last recorded {last.isoformat(timespec='minutes')})"
    with postgres.session(dsn, application="runbook monitor", connect_timeout=connect_timeout,
                          statement_timeout_s=statement_timeout) as conn:
        conn.read_only = True
        with conn.transaction():
            sizes = read_sizes(conn, now)
    with postgres.session(state_dsn, application="runbook monitor", connect_timeout=connect_timeout,
                          statement_timeout_s=60, autocommit=True) as conn:
        kept = store_sizes(conn, schema, instance, sizes, timedelta(days=keep_days))
    get_run_logger().info("Recorded the sizes of %d tables in %s.table_size_history", kept, schema)
    return f"recorded the sizes of {kept} tables"
