"""The journal of data clean-up (``runbook.cleanup_journal``): one entry a policy and
run, moved on in each batch's own transaction, so a killed run is finished exactly by
the next one, and only if the policy is unchanged (its definition is fingerprinted)."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

import psycopg
from psycopg import sql
from pydantic import BaseModel

from runbook.cleanup import (
    BatchKey,
    Policy,
    Unfinished,
    definition,
    fingerprint,
    resume_problem,
)
from runbook.errors import ConfigError
from tasks.cleanup.plan import batch_key

JOURNAL = sql.SQL("runbook.cleanup_journal")
JOURNAL_DDL = """
CREATE SCHEMA IF NOT EXISTS runbook;
CREATE TABLE IF NOT EXISTS runbook.cleanup_journal (
    run_id       text NOT NULL,
    policy       text NOT NULL,
    table_name   text NOT NULL,
    action       text NOT NULL,
    cutoff       timestamptz NOT NULL,
    last_key     text,
    rows_done    bigint NOT NULL DEFAULT 0,
    batches      integer NOT NULL DEFAULT 0,
    started_at   timestamptz NOT NULL DEFAULT now(),
    updated_at   timestamptz NOT NULL DEFAULT now(),
    finished_at  timestamptz,
    PRIMARY KEY (run_id, policy)
);
ALTER TABLE runbook.cleanup_journal
    ADD COLUMN IF NOT EXISTS fingerprint   text,
    ADD COLUMN IF NOT EXISTS definition    jsonb,
    ADD COLUMN IF NOT EXISTS abandoned_at  timestamptz,
    ADD COLUMN IF NOT EXISTS abandoned_by  text;
"""
# An entry is unfinished while neither finished_at nor abandoned_at is set. last_key is a
# single key's text, or the JSON list of a composite key's texts (BatchKey.encode).
UNFINISHED = sql.SQL("finished_at IS NULL AND abandoned_at IS NULL")


class JournalEntry(BaseModel):
    """Where a policy's clean-up stands: updated in the same transaction as each batch,
    so a re-run after a kill resumes exactly (same cutoff, after the last key, counts)."""

    run_id: str
    policy: str
    cutoff: datetime
    last_key: str | None
    rows_done: int
    batches: int
    finished: bool

    def advance(self, last_key: str, changed: int) -> None:
        self.last_key, self.rows_done, self.batches = last_key, self.rows_done + changed, self.batches + 1


def ensure_journal(conn: psycopg.Connection[Any]) -> None:
    with conn.transaction():
        conn.execute(JOURNAL_DDL)


def unfinished_entries(conn: psycopg.Connection[Any], names: list[str]) -> dict[str, Unfinished]:
    """The unfinished entry of each named policy, newest first. Read-only: works on a
    journal that does not exist yet, or that an older runbook made (no fingerprint)."""
    if conn.execute("SELECT to_regclass('runbook.cleanup_journal')").fetchone() in (None, (None,)):
        conn.rollback()
        return {}
    rows = conn.execute(
        sql.SQL(
            "SELECT DISTINCT ON (policy) to_jsonb(j) FROM {} j WHERE policy = ANY(%s) AND finished_at IS NULL"
            " AND (to_jsonb(j) ->> 'abandoned_at') IS NULL ORDER BY policy, started_at DESC"
        ).format(JOURNAL),
        (names,),
    ).fetchall()
    conn.rollback()
    found = {}
    for (row,) in rows:
        found[row["policy"]] = Unfinished(
            run_id=row["run_id"], policy=row["policy"], table=row["table_name"], action=row["action"], cutoff=row["cutoff"],
            last_key=row["last_key"], rows_done=row["rows_done"], batches=row["batches"], started_at=row["started_at"],
            updated_at=row["updated_at"], fingerprint=row.get("fingerprint"), definition=row.get("definition"),
        )
    return found


def abandon_entry(conn: psycopg.Connection[Any], entry: Unfinished, by_run: str) -> None:
    """Mark an unfinished entry abandoned: no run resumes it; what it changed stays."""
    with conn.transaction():
        conn.execute(
            sql.SQL("UPDATE {} SET abandoned_at = now(), abandoned_by = %s, updated_at = now() WHERE run_id = %s AND policy = %s AND {}").format(
                JOURNAL, UNFINISHED
            ),
            (by_run, entry.run_id, entry.policy),
        )


def open_entry(conn: psycopg.Connection[Any], policy: Policy, run_id: str, cutoff: datetime, key: BatchKey | None = None) -> JournalEntry:
    """The unfinished entry of this policy (a killed run: resume it, if the policy is
    unchanged), or a new one recording the policy's definition and fingerprint."""
    with conn.transaction():
        key = batch_key(conn, policy.table, key)
        spec = definition(policy, key)
        row = conn.execute(
            sql.SQL(
                "SELECT run_id, cutoff, last_key, rows_done, batches, fingerprint, definition, table_name, action, started_at, updated_at"
                " FROM {} WHERE policy = %s AND {} ORDER BY started_at DESC LIMIT 1"
            ).format(JOURNAL, UNFINISHED),
            (policy.name,),
        ).fetchone()
        if row:
            problem = resume_problem(policy, key, Unfinished(
                run_id=row[0], policy=policy.name, cutoff=row[1], last_key=row[2], rows_done=row[3], batches=row[4], fingerprint=row[5],
                definition=row[6], table=row[7], action=row[8], started_at=row[9], updated_at=row[10],
            ))
            if problem:  # the flow checks first; this keeps a plain caller from resuming a changed policy
                raise ConfigError(problem)
            return JournalEntry(run_id=row[0], policy=policy.name, cutoff=row[1], last_key=row[2], rows_done=row[3], batches=row[4], finished=False)
        conn.execute(
            sql.SQL(
                "INSERT INTO {} (run_id, policy, table_name, action, cutoff, fingerprint, definition) VALUES (%s, %s, %s, %s, %s, %s, %s)"
            ).format(JOURNAL),
            (run_id, policy.name, policy.table, policy.action.value, cutoff, fingerprint(spec), json.dumps(spec)),
        )
    return JournalEntry(run_id=run_id, policy=policy.name, cutoff=cutoff, last_key=None, rows_done=0, batches=0, finished=False)


def finish_entry(conn: psycopg.Connection[Any], entry: JournalEntry) -> None:
    with conn.transaction():
        conn.execute(
            sql.SQL("UPDATE {} SET finished_at = now(), updated_at = now() WHERE run_id = %s AND policy = %s").format(JOURNAL),
            (entry.run_id, entry.policy),
        )
