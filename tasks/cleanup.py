"""The PostgreSQL side of data clean-up (§4.5): the catalog the policies are checked
against, the plan of what each policy would touch, the journal, and the batches. A
single integer primary key walks arithmetic windows; uuid, text and composite keys
read each window's end from the key index (a composite one by row comparison)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import hashlib
import json

import psycopg
import zstandard
from psycopg import sql
from pydantic import BaseModel

from runbook.cleanup import (
    Action, ArchivedBatch, BatchKey, Policy, PolicyFailed, PolicyPlan, TableInfo, Unfinished, archive_key, batching_problem, definition,
    fingerprint, qualified, resume_problem, selection,
)
from runbook.errors import ConfigError, StoreError
from tasks.store import BackupStore, put_json
from tasks.postgres import SYSTEM_SCHEMAS

SAMPLE_KEYS = 5


def table_catalog(conn: psycopg.Connection[Any]) -> dict[str, TableInfo]:
    """Every user table with its columns (name -> data type) and primary key."""
    columns: dict[str, dict[str, str]] = {}
    for table, column, kind in conn.execute(
        """
        SELECT table_schema || '.' || table_name, column_name, data_type
        FROM information_schema.columns
        WHERE table_schema <> ALL(%s) AND table_schema NOT LIKE 'pg_temp%%'
        ORDER BY 1, ordinal_position
        """,
        (list(SYSTEM_SCHEMAS),),
    ).fetchall():
        columns.setdefault(table, {})[column] = kind
    keys: dict[str, list[str]] = {}
    for table, names in conn.execute(
        """
        SELECT n.nspname || '.' || c.relname,
               array_agg(a.attname ORDER BY array_position(con.conkey, a.attnum))
        FROM pg_constraint con
        JOIN pg_class c ON c.oid = con.conrelid
        JOIN pg_namespace n ON n.oid = c.relnamespace
        JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum = ANY(con.conkey)
        WHERE con.contype = 'p' AND n.nspname <> ALL(%s)
        GROUP BY 1
        """,
        (list(SYSTEM_SCHEMAS),),
    ).fetchall():
        keys[table] = list(names)
    kinds = dict(
        conn.execute(
            "SELECT table_schema || '.' || table_name, table_type FROM information_schema.tables WHERE table_schema <> ALL(%s)",
            (list(SYSTEM_SCHEMAS),),
        ).fetchall()
    )
    return {
        table: TableInfo(columns=cols, primary_key=keys.get(table, []), kind=kinds.get(table, "BASE TABLE"))
        for table, cols in columns.items()
    }


def iso_dates(conn: psycopg.Connection[Any]) -> None:
    """Keys are kept as their columns' text (the journal, the plan): a time in a key is
    written in ISO form, which every DateStyle reads back the same."""
    conn.execute("SET datestyle = 'ISO, YMD'")
    conn.commit()


def batch_key(conn: psycopg.Connection[Any], table: str, key: BatchKey | str | None = None, key_type: str | None = None) -> BatchKey:
    """The key to walk: as given, or one column with its type, or (nothing given) the
    table's primary key read from the catalog. Leaves no transaction open."""
    if isinstance(key, BatchKey):
        return key
    if isinstance(key, str) and key_type is not None:
        return BatchKey(columns=[key], types=[key_type])
    idle = conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
    relation = {"relation": qualified(table).as_string(conn)}  # quoted by sql.Identifier, read by regclass
    types = dict(
        conn.execute(
            "SELECT attname, format_type(atttypid, NULL) FROM pg_attribute"
            " WHERE attrelid = %(relation)s::regclass AND attnum > 0 AND NOT attisdropped",
            relation,
        ).fetchall()
    )
    if key is None:
        row = conn.execute(
            """SELECT array_agg(a.attname ORDER BY array_position(i.indkey::int2[], a.attnum))
               FROM pg_index i JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey)
               WHERE i.indrelid = %(relation)s::regclass AND i.indisprimary""",
            relation,
        ).fetchone()
        columns = list(row[0]) if row and row[0] else []
    else:
        columns = [key]
    if idle and not conn.autocommit:
        conn.rollback()
    if not columns:
        raise ConfigError(f"{table} has no primary key to walk in batches")
    return BatchKey(columns=columns, types=[types.get(c, "") for c in columns])


def count_selected(conn: psycopg.Connection[Any], policy: Policy, cutoff: datetime) -> int:
    """How many rows the policy selects now (for a table it cannot work on in batches)."""
    where, params = selection(policy, cutoff)
    row = conn.execute(sql.SQL("SELECT count(*) FROM {t} WHERE {w}").format(t=qualified(policy.table), w=where), params).fetchone()
    conn.rollback()
    return int(row[0]) if row else 0


def plan_policy(
    conn: psycopg.Connection[Any], policy: Policy, key: BatchKey | str, cutoff: datetime, key_type: str | None = None
) -> PolicyPlan:
    """Count the rows the policy would touch now, their smallest and largest key, and a few
    of their keys (smallest first)."""
    key = batch_key(conn, policy.table, key, key_type)
    where, params = selection(policy, cutoff)
    table = qualified(policy.table)
    bounds = match_bounds(conn, policy, key, cutoff)
    samples = []
    if bounds.first is not None:  # from the first selected key: no walk through the rows before it
        samples = conn.execute(
            sql.SQL("SELECT {d} FROM {t} WHERE {start} AND {w} ORDER BY {k} LIMIT {n}").format(
                d=key.display(), t=table, start=key.compare(">=", "first"), w=where, k=key.names(), n=sql.Literal(SAMPLE_KEYS)
            ),
            {**params, **key.params("first", key.decode(bounds.first))},
        ).fetchall()
        conn.rollback()
    return PolicyPlan(
        policy=policy.name,
        table=policy.table,
        action=policy.action,
        cutoff=cutoff,
        rows=bounds.rows,
        sample_keys=[row[0] for row in samples],
        first_key=bounds.first,
        last_key=bounds.last,
    )


def plan_or_refuse(conn: psycopg.Connection[Any], policy: Policy, info: TableInfo, cutoff: datetime) -> PolicyPlan:
    """The plan of a policy, or, when it cannot be applied (its table has no primary key,
    its plan's queries fail), a plan that says why: the other policies go on."""
    problem = batching_problem(policy, info)
    try:
        if problem is None:
            return plan_policy(conn, policy, BatchKey.of(info), cutoff)
        rows = count_selected(conn, policy, cutoff)
    except psycopg.Error as err:
        conn.rollback()
        text = str(err).strip().splitlines()[0] if str(err).strip() else ""
        problem, rows = f"its plan failed: {type(err).__name__}: {text}", 0
    return PolicyPlan(policy=policy.name, table=policy.table, action=policy.action, cutoff=cutoff, rows=rows, problem=problem)


# --------------------------------------------------------------------------- applying, in batches

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


PRESSURE_EVERY_S = 0.25


class Bounds(BaseModel):
    """The smallest and largest key of the rows a policy selects now, and how many there
    are: one pass over the table (the count keeps the planner off a backward key scan
    that would read every younger row first). Batches walk only this key range."""

    first: str | None
    last: str | None
    rows: int


def match_bounds(conn: psycopg.Connection[Any], policy: Policy, key: BatchKey, cutoff: datetime, after: str | None = None) -> Bounds:
    """``after``: a key as the journal keeps it (only keys beyond it count). An integer
    key takes min/max in one pass; other keys have no min/max (uuid, a row), so their
    first and last selected keys are read in key order from the key index."""
    where, params = selection(policy, cutoff)
    table = qualified(policy.table)
    if key.integer:
        key_column = sql.Identifier(key.columns[0])
        beyond = sql.SQL(" AND {} > %(after)s").format(key_column) if after is not None else sql.SQL("")
        row = conn.execute(
            sql.SQL("SELECT min({k})::text, max({k})::text, count(*) FROM {t} WHERE {w}{b}").format(k=key_column, t=table, w=where, b=beyond),
            {**params, "after": int(after) if after is not None else None},
        ).fetchone()
        conn.rollback()
        return Bounds(first=row[0], last=row[1], rows=int(row[2])) if row else Bounds(first=None, last=None, rows=0)
    beyond = sql.SQL(" AND {}").format(key.compare(">", "after")) if after is not None else sql.SQL("")
    row = conn.execute(
        sql.SQL(
            "SELECT (SELECT {x} FROM {t} WHERE {w}{b} ORDER BY {up} LIMIT 1), (SELECT {x} FROM {t} WHERE {w}{b} ORDER BY {down} LIMIT 1),"
            " (SELECT count(*) FROM {t} WHERE {w}{b})"
        ).format(x=key.texts(), t=table, w=where, b=beyond, up=key.names(), down=key.names("DESC")),
        {**params, **key.params("after", key.decode(after))},
    ).fetchone()
    conn.rollback()
    if not row or row[0] is None:
        return Bounds(first=None, last=None, rows=int(row[2]) if row else 0)
    return Bounds(first=key.encode(row[0]), last=key.encode(row[1]), rows=int(row[2]))


def _window(conn: psycopg.Connection[Any], table: sql.Composable, key_column: sql.Identifier, after: Any, bounds: tuple[Any, Any],
            limit: int) -> tuple[Any, Any] | None:
    """The next window of an integer key after ``after`` (from the first selected key when
    None), at most ``limit`` keys wide and never past the last selected key: (first key,
    last key), or None when no key is left. The window is arithmetic (n values hold at
    most n rows) and starts at the next existing key, so gaps cost nothing."""
    first, last = bounds
    start = sql.SQL("{} > %(after)s").format(key_column) if after is not None else sql.SQL("{} >= %(first)s").format(key_column)
    values = {"after": after, "first": first, "last": last, "limit": limit}
    row = conn.execute(
        sql.SQL("SELECT min({k}) FROM {t} WHERE {s} AND {k} <= %(last)s").format(k=key_column, t=table, s=start), values
    ).fetchone()
    if not row or row[0] is None:
        return None
    return row[0], min(row[0] + limit - 1, last)


def _window_end(conn: psycopg.Connection[Any], table: sql.Composable, key: BatchKey, start: sql.Composable, values: dict[str, Any],
                limit: int) -> tuple[list[str], bool] | None:
    """The ``limit``-th key from ``start`` on, read from the key index (any key type; a
    composite key by row comparison), with whether it is the last selected key; None
    when fewer keys than that are left before the last selected key."""
    row = conn.execute(
        sql.SQL("SELECT {x}, {at_last} FROM {t} WHERE {s} AND {within} ORDER BY {k} OFFSET %(skip)s LIMIT 1").format(
            x=key.texts(), at_last=key.compare(">=", "last"), t=table, s=start, within=key.compare("<=", "last"), k=key.names()
        ),
        {**values, "skip": limit - 1},
    ).fetchone()
    return (list(row[0]), bool(row[1])) if row else None


def _advance(conn: psycopg.Connection[Any], entry: JournalEntry, last_key: str, changed: int) -> None:
    """Move the journal past a batch, in the batch's transaction (the entry in memory
    follows with ``JournalEntry.advance`` once that transaction has committed)."""
    conn.execute(
        sql.SQL(
            "UPDATE {} SET last_key = %s, rows_done = rows_done + %s, batches = batches + 1, updated_at = now()"
            " WHERE run_id = %s AND policy = %s"
        ).format(JOURNAL),
        (last_key, changed, entry.run_id, entry.policy),
    )


def _limits(conn: psycopg.Connection[Any], lock_timeout_ms: int, statement_timeout_ms: int) -> None:
    """This transaction's lock and statement timeouts (one round trip)."""
    conn.execute(
        "SELECT set_config('lock_timeout', %s, true), set_config('statement_timeout', %s, true)",
        (f"{lock_timeout_ms}ms", f"{statement_timeout_ms}ms"),
    )


def _change(policy: Policy, table: sql.Composable, in_window: sql.Composable) -> sql.Composed:
    if policy.action is Action.SET_ARCHIVED:
        return sql.SQL("UPDATE {t} SET {flag} = true WHERE {c}").format(t=table, flag=sql.Identifier(policy.archived_column), c=in_window)
    return sql.SQL("DELETE FROM {t} WHERE {c}").format(t=table, c=in_window)


def apply_batch(
    conn: psycopg.Connection[Any], policy: Policy, key: BatchKey | str, entry: JournalEntry, limit: int, key_type: str | None,
    lock_timeout_ms: int, statement_timeout_ms: int, bounds: Bounds | None = None,
) -> tuple[int, bool]:
    """One short transaction: the next window of at most ``limit`` keys within the selected
    key range (``bounds``, taken once at the start), its matching rows deleted or flagged by
    one range statement, the journal moved on. Returns (rows changed, whether keys remain).

    The selection is checked by the change itself, so a row someone changed meanwhile is
    judged on its new version (EvalPlanQual); rows that start to match during the run are
    left for the next one."""
    key = batch_key(conn, policy.table, key, key_type)
    if bounds is None:
        bounds = match_bounds(conn, policy, key, entry.cutoff, entry.last_key)
    if bounds.first is None or bounds.last is None:
        return 0, False
    if not key.integer:
        return _apply_keyed_batch(conn, policy, key, entry, limit, lock_timeout_ms, statement_timeout_ms, bounds)
    where, params = selection(policy, entry.cutoff)
    table, key_column = qualified(policy.table), sql.Identifier(key.columns[0])
    with conn.transaction():
        _limits(conn, lock_timeout_ms, statement_timeout_ms)
        window = _window(
            conn, table, key_column, _typed(entry.last_key, key), (_typed(bounds.first, key), _typed(bounds.last, key)), limit,
        )
        if window is None:
            return 0, False
        in_window = sql.SQL("{k} >= %(start)s AND {k} <= %(end)s AND {w}").format(k=key_column, w=where)
        changed = conn.execute(_change(policy, table, in_window), {**params, "start": window[0], "end": window[1]}).rowcount
        end = str(window[1])
        _advance(conn, entry, end, changed)
    entry.advance(end, changed)
    return changed, end != bounds.last


def _apply_keyed_batch(
    conn: psycopg.Connection[Any], policy: Policy, key: BatchKey, entry: JournalEntry, limit: int,
    lock_timeout_ms: int, statement_timeout_ms: int, bounds: Bounds,
) -> tuple[int, bool]:
    """``apply_batch`` for a uuid, text or composite key: the window runs from the journal's
    last key (or the first selected key) to the ``limit``-th key after it, or to the last
    selected key when fewer are left; the journal keeps the window's end."""
    where, params = selection(policy, entry.cutoff)
    table = qualified(policy.table)
    after = key.decode(entry.last_key)
    start = key.compare(">", "after") if after is not None else key.compare(">=", "first")
    values = {**params, **key.params("after", after), **key.params("first", key.decode(bounds.first)), **key.params("last", key.decode(bounds.last))}
    with conn.transaction():
        _limits(conn, lock_timeout_ms, statement_timeout_ms)
        found = _window_end(conn, table, key, start, values, limit)
        end, at_last = (key.encode(found[0]), found[1]) if found else (bounds.last, True)
        in_window = sql.SQL("{s} AND {e} AND {w}").format(s=start, e=key.compare("<=", "end"), w=where)
        changed = conn.execute(_change(policy, table, in_window), {**values, **key.params("end", key.decode(end))}).rowcount
        _advance(conn, entry, end, changed)
    entry.advance(end, changed)
    return changed, not at_last


def archive_batch(
    conn: psycopg.Connection[Any], policy: Policy, key: BatchKey | str, entry: JournalEntry, limit: int, key_type: str | None,
    lock_timeout_ms: int, statement_timeout_ms: int, store: BackupStore, database: str, last: str | None = None,
) -> int:
    """One transaction: lock the next rows, write them to the store as compressed JSON
    lines, read the object back and check it, and only then delete exactly those rows
    and move the journal on. A kill before the commit leaves the rows in place, and the
    retried batch (same number) overwrites its own archive object."""
    key = batch_key(conn, policy.table, key, key_type)
    where, params = selection(policy, entry.cutoff)
    table = qualified(policy.table)
    after = sql.SQL(" AND {}").format(key.compare(">", "after")) if entry.last_key is not None else sql.SQL("")
    if last is not None:  # the largest selected key at the start: no scan past it for rows that cannot match
        after = after + sql.SQL(" AND {}").format(key.compare("<=", "last"))
    # t.*: the whole row, even where a column is named t
    pick = sql.SQL("SELECT {x}, row_to_json(t.*)::text FROM {t} AS t WHERE {w}{a} ORDER BY {k} LIMIT %(limit)s FOR UPDATE").format(
        x=sql.Identifier(key.columns[0]) if key.integer else key.texts(), t=table, w=where, a=after, k=key.names()
    )
    with conn.transaction():
        conn.execute(sql.SQL("SET LOCAL lock_timeout = {}").format(sql.Literal(f"{lock_timeout_ms}ms")))
        conn.execute(sql.SQL("SET LOCAL statement_timeout = {}").format(sql.Literal(f"{statement_timeout_ms}ms")))
        rows = conn.execute(
            pick, {**params, "limit": limit, **key.params("after", key.decode(entry.last_key)), **key.params("last", key.decode(last))}
        ).fetchall()
        if not rows:
            return 0
        number = entry.batches + 1
        payload = zstandard.ZstdCompressor(level=3).compress("".join(f"{row[1]}\n" for row in rows).encode())
        as_key = (lambda value: str(value)) if key.integer else key.encode
        record = ArchivedBatch(
            policy=policy.name, table=policy.table, run_id=entry.run_id, batch=number, rows=len(rows),
            first_key=as_key(rows[0][0]), last_key=as_key(rows[-1][0]), sha256=hashlib.sha256(payload).hexdigest(),
            size_bytes=len(payload), cutoff=entry.cutoff,
        )
        object_key = archive_key(database, policy.name, entry.run_id, number)
        store.put_bytes(object_key, payload)
        stored = store.get_bytes(object_key)
        lines = zstandard.ZstdDecompressor().decompress(stored, max_output_size=64 << 30).decode().splitlines() if stored else []
        if hashlib.sha256(stored).hexdigest() != record.sha256 or len(lines) != record.rows:
            raise StoreError(f"archive {object_key} does not read back as written: rows not deleted")
        put_json(store, object_key.removesuffix(".jsonl.zst") + ".json", record.model_dump(mode="json"))
        if key.integer:
            deleted = conn.execute(
                sql.SQL("DELETE FROM {t} WHERE {k} = ANY(%(keys)s)").format(t=table, k=sql.Identifier(key.columns[0])),
                {"keys": [row[0] for row in rows]},
            ).rowcount
        else:  # the archived rows' keys, typed by the table's own row type: exactly those rows
            deleted = conn.execute(
                sql.SQL("DELETE FROM {t} WHERE ({k}) IN (SELECT {k} FROM jsonb_populate_recordset(NULL::{t}, %(rows)s::jsonb))").format(
                    t=table, k=key.names()
                ),
                {"rows": "[" + ",".join(row[1] for row in rows) + "]"},
            ).rowcount
        if deleted != len(rows):
            raise StoreError(f"{policy.table}: {deleted} rows deleted for {len(rows)} archived: rolled back")
        _advance(conn, entry, record.last_key, len(rows))
    entry.advance(record.last_key, len(rows))
    return len(rows)


def _typed(value: str | None, key: BatchKey) -> Any:
    if value is None:
        return None
    return int(value) if key.integer else value


def pressure(conn: psycopg.Connection[Any]) -> tuple[int, float]:
    """(sessions waiting on a lock, age in seconds of the oldest other open transaction),
    in this database. Read from pg_stat_activity alone: pg_locks would take every
    lock-manager partition lock, and stall the platform's own queries while it does."""
    row = conn.execute(
        """
        SELECT count(*) FILTER (WHERE wait_event_type = 'Lock'),
               coalesce(extract(epoch FROM max(now() - xact_start) FILTER (WHERE pid <> pg_backend_pid())), 0)
        FROM pg_stat_activity WHERE backend_type = 'client backend' AND datname = current_database()
        """
    ).fetchone()
    conn.rollback()
    return (int(row[0]), float(row[1])) if row else (0, 0.0)


# --------------------------------------------------------------------------- Prefect tasks

import time  # noqa: E402
from collections.abc import Callable  # noqa: E402

from prefect import get_run_logger, task  # noqa: E402 - the plain functions above need no Prefect
from prefect.cache_policies import NO_CACHE  # noqa: E402

from tasks import postgres  # noqa: E402


def run_policy(
    dsn: str,
    policy: Policy,
    key: BatchKey | str,
    key_type: str | None,
    run_id: str,
    cutoff: datetime,
    *,
    batch_size: int,
    lock_timeout_ms: int,
    statement_timeout_ms: int,
    max_lock_waits: int,
    long_transaction_s: float,
    connect_timeout: int,
    on_batch: Callable[[JournalEntry], None] | None = None,
    store: BackupStore | None = None,
    database: str = "",
    log: Callable[..., None] | None = None,
    bounds: Bounds | None = None,
) -> dict[str, Any]:
    """Every batch of one policy, each its own short transaction, backing off while the
    database is under pressure; resumes an unfinished run of the same, unchanged policy.

    ``bounds`` are the plan's (same cutoff): the selected key range and count, so the
    apply does not read the table once more to find them. A batch that fails raises
    ``PolicyFailed`` with what was done until then; the entry stays unfinished."""
    say = log or (lambda *args: None)
    waited = 0.0
    longest_ms = 0.0
    retries = 0
    with postgres.session(dsn, application="runbook data-cleanup", connect_timeout=connect_timeout, statement_timeout_s=None) as conn:
        iso_dates(conn)
        key = batch_key(conn, policy.table, key, key_type)
        entry = open_entry(conn, policy, run_id, cutoff, key)
        done_before = entry.rows_done  # by the killed run this one finishes
        resumed = entry.run_id != run_id or entry.rows_done > 0

        def result() -> dict[str, Any]:
            return {
                "policy": policy.name,
                "table": policy.table,
                "action": policy.action.value,
                "run_id": entry.run_id,
                "cutoff": entry.cutoff.isoformat(),
                "rows": entry.rows_done,
                "selected_at_start": (bounds.rows if bounds else 0) + done_before,  # comparable with rows: both count a resumed run's first part
                "batches": entry.batches,
                "last_key": entry.last_key,
                "resumed": resumed,
                "longest_batch_ms": round(longest_ms, 1),
                "waited_for_pressure_s": round(waited, 1),
                "lock_retries": retries,
                "outcome": "done",
                "error": None,
            }

        try:
            if bounds is None or entry.cutoff != cutoff:  # no plan, or resuming a run with its own cutoff
                bounds = match_bounds(conn, policy, key, entry.cutoff, entry.last_key)
            if resumed:
                say("Resuming %s of run %s after key %s (%d rows already done)", policy.name, entry.run_id, entry.last_key, entry.rows_done)
            say("%s: %d rows to %s, keys %s to %s", policy.name, bounds.rows,
                "flag" if policy.action is Action.SET_ARCHIVED else "delete", bounds.first, bounds.last)
            pause, checked = 0.25, 0.0
            while bounds.last is not None:
                if time.monotonic() - checked >= PRESSURE_EVERY_S:  # a look at most 4 times a second, not every batch
                    waiting, oldest = pressure(conn)
                    if waiting > max_lock_waits or oldest > long_transaction_s:
                        time.sleep(pause)
                        waited += pause
                        pause = min(pause * 2, 5.0)
                        if waited < 600:  # bounded: after 10 min of pressure, go on at the slowest pace
                            continue
                    pause, checked = 0.25, time.monotonic()
                started = time.perf_counter()
                try:
                    if policy.action is Action.ARCHIVE_THEN_DELETE:
                        if store is None:
                            raise StoreError(f"policy {policy.name!r} archives: no backup store given")
                        changed = archive_batch(
                            conn, policy, key, entry, batch_size, None, lock_timeout_ms, statement_timeout_ms, store, database, bounds.last,
                        )
                        more = changed > 0
                    else:
                        changed, more = apply_batch(conn, policy, key, entry, batch_size, None, lock_timeout_ms, statement_timeout_ms, bounds)
                except psycopg.errors.LockNotAvailable:
                    retries += 1
                    if retries > 20:
                        raise
                    time.sleep(min(0.1 * retries, 2.0))
                    continue
                longest_ms = max(longest_ms, (time.perf_counter() - started) * 1000)
                if on_batch is not None and (changed or more):
                    on_batch(entry)
                if not more:
                    break
            finish_entry(conn, entry)
        except Exception as err:  # noqa: BLE001 - this policy stops here; the flow reports it and goes on with the others
            message = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            failed = result() | {"outcome": "failed", "error": f"{type(err).__name__}: {message}"}
            raise PolicyFailed(f"policy {policy.name!r} stopped after {entry.batches} batches: {failed['error']}", failed) from err
    say("%s: %d rows %s in %d batches", policy.name, entry.rows_done,
        "flagged" if policy.action is Action.SET_ARCHIVED else "deleted", entry.batches)
    return result()


@task(name="apply-policy", cache_policy=NO_CACHE)
def apply_policy(dsn: str, policy: Policy, key: BatchKey, run_id: str, cutoff: datetime, **options: Any) -> dict[str, Any]:
    """Every batch of one policy, each its own short transaction, backing off while the
    database is under pressure; resumes an unfinished run of the same, unchanged policy."""
    return run_policy(dsn, policy, key, None, run_id, cutoff, log=get_run_logger().info, **options)


@task(name="vacuum-analyze", cache_policy=NO_CACHE)
def vacuum_analyze(dsn: str, tables: list[str], connect_timeout: int) -> None:
    """VACUUM ANALYZE the touched tables (outside any transaction)."""
    with postgres.session(dsn, application="runbook vacuum", connect_timeout=connect_timeout, statement_timeout_s=None, autocommit=True) as conn:
        for table in tables:
            get_run_logger().info("VACUUM ANALYZE %s", table)
            conn.execute(sql.SQL("VACUUM ANALYZE {}").format(qualified(table)))
