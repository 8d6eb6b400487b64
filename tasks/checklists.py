"""The history of the §8 checklists in the platform's database, in a schema of
runbook's own (RUNBOOK_CALENDAR__STATE_SCHEMA, default ``runbook_ops``): one row per
period run, its lines as jsonb. Every name is built with psycopg.sql; the DDL runs
under an advisory lock so that two first runs do not race each other's CREATEs.

``latest_checklist`` is a plain function: ``runbook checklist`` can answer from it
without a flow run.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import psycopg
from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE
from psycopg import sql
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from runbook.retry import RETRIES, backoff, retry_transient
from tasks.postgres.connection import connect

DDL = """
CREATE SCHEMA IF NOT EXISTS {s};
CREATE TABLE IF NOT EXISTS {s}.checklists (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    period       text NOT NULL,
    at           timestamptz NOT NULL,
    flow_run_id  text,
    outcome      text NOT NULL,
    answered_by  text,
    lines        jsonb NOT NULL,
    items        jsonb NOT NULL
);
CREATE INDEX IF NOT EXISTS checklists_period_at ON {s}.checklists (period, at DESC);
"""


def _connect(dsn: str, connect_timeout: int) -> psycopg.Connection[Any]:
    return connect(dsn, application="runbook-checklists", connect_timeout=connect_timeout, statement_timeout_s=60, autocommit=True)


def _table(schema: str) -> sql.Composed:
    return sql.SQL("{}.{}").format(sql.Identifier(schema), sql.Identifier("checklists"))


def ensure_schema(conn: psycopg.Connection[Any], schema: str) -> None:
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (f"runbook-ops-ddl:{schema}",))
        conn.execute(sql.SQL(DDL).format(s=sql.Identifier(schema)))


def record_checklist(
    dsn: str, schema: str, *, period: str, at: datetime, flow_run_id: str | None, outcome: str, answered_by: str | None,
    lines: list[dict[str, Any]], items: list[dict[str, Any]], connect_timeout: int = 10,
) -> int:
    """Keep one period run's checklist; its id."""
    with _connect(dsn, connect_timeout) as conn:
        ensure_schema(conn, schema)
        row = conn.execute(
            sql.SQL("INSERT INTO {} (period, at, flow_run_id, outcome, answered_by, lines, items)"
                    " VALUES (%s, %s, %s, %s, %s, %s, %s) RETURNING id").format(_table(schema)),
            (period, at, flow_run_id, outcome, answered_by, Jsonb(lines), Jsonb(items)),
        ).fetchone()
    assert row is not None
    return int(row[0])


@task(name="record-checklist", retries=RETRIES, retry_delay_seconds=backoff(), retry_condition_fn=retry_transient, cache_policy=NO_CACHE)
def record_checklist_task(dsn: str, schema: str, connect_timeout: int, **row: Any) -> int:
    """Keep this run's checklist in the history (runbook checklist --period shows the latest)."""
    get_run_logger().info("Recording the %s checklist in %s.checklists", row["period"], schema)
    return record_checklist(dsn, schema, connect_timeout=connect_timeout, **row)


def latest_checklist(dsn: str, schema: str, period: str, connect_timeout: int = 10) -> dict[str, Any] | None:
    """The newest checklist of ``period`` (None when there is none yet, or no history at all)."""
    with _connect(dsn, connect_timeout) as conn:
        exists = conn.execute("SELECT to_regclass(%s)", (sql.SQL("{}.{}").format(
            sql.Identifier(schema), sql.Identifier("checklists")).as_string(conn),)).fetchone()
        if exists is None or exists[0] is None:
            return None
        with conn.cursor(row_factory=dict_row) as cur:
            cur.execute(sql.SQL("SELECT * FROM {} WHERE period = %s ORDER BY at DESC, id DESC LIMIT 1").format(_table(schema)), (period,))
            return cur.fetchone()
