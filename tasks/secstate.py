"""Security operations' state in the platform's database, in a schema of runbook's own
(RUNBOOK_SECURITY__STATE_SCHEMA, default ``runbook_security``): the audit of every
incident action, and the tables each feature adds (the blocklist the platform reads,
repeat offenders, the watch's checkpoint, recorded database access...).

It lives in the platform's database, not the alert state's, because the platform must
read the blocklist, and an action and its audit record commit together.

Each feature declares its DDL (``{s}`` is the schema) and calls ``ensure`` with it; the
DDL runs once per connection holder, under an advisory lock, so that two first runs
do not race each other's CREATEs. Every name is built with psycopg.sql.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import psycopg
from psycopg import sql
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from runbook.security.actions import Phase, Preview
from tasks.postgres.connection import connect

AUDIT_DDL = """
CREATE SCHEMA IF NOT EXISTS {s};
CREATE TABLE IF NOT EXISTS {s}.audit (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at          timestamptz NOT NULL,
    actor       text NOT NULL,
    action      text NOT NULL,
    target      text NOT NULL,
    reason      text NOT NULL,
    phase       text NOT NULL,
    run_id      text,
    preview     jsonb,
    before      jsonb,
    after       jsonb,
    detail      text NOT NULL DEFAULT ''
);
CREATE INDEX IF NOT EXISTS audit_action_target ON {s}.audit (action, target, at);
"""


def q(schema: str, table: str) -> sql.Composed:
    return sql.SQL("{}.{}").format(sql.Identifier(schema), sql.Identifier(table))


def ensure(conn: psycopg.Connection[Any], schema: str, key: str, ddl: str) -> None:
    """Run one feature's DDL (idempotent), in one transaction, under an advisory lock."""
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (f"runbook-security-ddl:{schema}",))
        conn.execute(sql.SQL(AUDIT_DDL).format(s=sql.Identifier(schema)))
        if ddl:
            conn.execute(sql.SQL(ddl).format(s=sql.Identifier(schema)))


@dataclass
class SecurityState:
    """How to reach the security state: the platform's DSN and the schema."""

    dsn: str
    schema: str = "runbook_security"
    connect_timeout: int = 10
    ready: set[str] = field(default_factory=set)

    def connect(self, *ddl: tuple[str, str], autocommit: bool = True) -> psycopg.Connection[Any]:
        """A connection, with the audit table and each (key, ddl) given in place."""
        conn = connect(self.dsn, application="runbook-security", connect_timeout=self.connect_timeout,
                       statement_timeout_s=600, autocommit=autocommit)
        for key, text in (("audit", ""), *ddl):
            if key not in self.ready:
                ensure(conn, self.schema, key, text)
                self.ready.add(key)
        if not autocommit:
            conn.commit()
        return conn


def record(conn: psycopg.Connection[Any], schema: str, *, at: datetime, actor: str, action: str, target: str, reason: str,
           phase: Phase, run_id: str | None = None, preview: Preview | None = None, before: Any = None, after: Any = None,
           detail: str = "") -> int:
    """One audit row (its id): who, when, why, what changed (before/after) and the run."""
    row = conn.execute(
        sql.SQL("INSERT INTO {} (at, actor, action, target, reason, phase, run_id, preview, before, after, detail)"
                " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s) RETURNING id").format(q(schema, "audit")),
        (at, actor, action, target, reason, phase, run_id, None if preview is None else Jsonb(preview.model_dump(mode="json")),
         None if before is None else Jsonb(before), None if after is None else Jsonb(after), detail),
    ).fetchone()
    assert row is not None
    return int(row[0])


def audit_rows(conn: psycopg.Connection[Any], schema: str, *, action: str | None = None, target: str | None = None,
               limit: int = 200) -> list[dict[str, Any]]:
    """The newest audit rows first (optionally of one action and target)."""
    where = [sql.SQL("TRUE")]
    args: list[Any] = []
    if action is not None:
        where.append(sql.SQL("action = %s"))
        args.append(action)
    if target is not None:
        where.append(sql.SQL("target = %s"))
        args.append(target)
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute(sql.SQL("SELECT * FROM {} WHERE {} ORDER BY id DESC LIMIT %s").format(
            q(schema, "audit"), sql.SQL(" AND ").join(where)), (*args, limit))
        return list(cur.fetchall())


def security_state(settings: Any, dsn: str) -> SecurityState:
    """The security state of the platform at ``dsn`` (RUNBOOK_SECURITY__STATE_SCHEMA)."""
    return SecurityState(dsn=dsn, schema=settings.security.state_schema, connect_timeout=settings.connect_timeout)


# --------------------------------------------------------------------------- security incidents (§5.3)

INCIDENT_DDL = """
CREATE TABLE IF NOT EXISTS {s}.incident (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    title       text NOT NULL,
    opened_by   text NOT NULL,
    opened_at   timestamptz NOT NULL,
    severity    text,
    scope       text,
    status      text NOT NULL DEFAULT 'open',
    closed_at   timestamptz,
    run_id      text
);
CREATE TABLE IF NOT EXISTS {s}.incident_timeline (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    incident_id  bigint NOT NULL REFERENCES {s}.incident (id),
    at           timestamptz NOT NULL,
    phase        text NOT NULL,
    actor        text NOT NULL,
    entry        text NOT NULL,
    detail       jsonb NOT NULL DEFAULT '{{}}'::jsonb
);
"""


def open_incident(conn: psycopg.Connection[Any], schema: str, *, title: str, by: str, at: datetime, run_id: str | None) -> int:
    row = conn.execute(sql.SQL("INSERT INTO {} (title, opened_by, opened_at, run_id) VALUES (%s, %s, %s, %s) RETURNING id").format(
        q(schema, "incident")), (title, by, at, run_id)).fetchone()
    assert row is not None
    return int(row[0])


def update_incident(conn: psycopg.Connection[Any], schema: str, incident_id: int, **values: Any) -> None:
    """Set some of severity, scope, status, closed_at."""
    allowed = {"severity", "scope", "status", "closed_at"}
    assert set(values) <= allowed, set(values) - allowed
    sets = sql.SQL(", ").join(sql.SQL("{} = %s").format(sql.Identifier(k)) for k in values)
    conn.execute(sql.SQL("UPDATE {} SET {} WHERE id = %s").format(q(schema, "incident"), sets), (*values.values(), incident_id))


def add_entry(conn: psycopg.Connection[Any], schema: str, incident_id: int, *, at: datetime, phase: str, actor: str, entry: str,
              detail: dict[str, Any] | None = None) -> None:
    conn.execute(sql.SQL("INSERT INTO {} (incident_id, at, phase, actor, entry, detail) VALUES (%s, %s, %s, %s, %s, %s)").format(
        q(schema, "incident_timeline")), (incident_id, at, phase, actor, entry, Jsonb(detail or {})))


def incident_timeline(conn: psycopg.Connection[Any], schema: str, incident_id: int) -> list[dict[str, Any]]:
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute(sql.SQL("SELECT at, phase, actor, entry, detail FROM {} WHERE incident_id = %s ORDER BY id").format(
            q(schema, "incident_timeline")), (incident_id,))
        return list(cur.fetchall())
