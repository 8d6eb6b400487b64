"""The batch engine of data clean-up: short transactions walking the selected key
range (arithmetic windows for one integer key; windows read from the key index for
uuid, text and composite keys, a composite one by row comparison), archive-then-delete,
and the back-off while the database is under pressure."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from datetime import datetime
from typing import Any

import psycopg
import zstandard
from psycopg import sql

from runbook.cleanup import (
    Action,
    ArchivedBatch,
    BatchKey,
    Policy,
    PolicyFailed,
    archive_key,
    qualified,
    selection,
)
from runbook.errors import StoreError
from tasks import postgres
from tasks.cleanup.journal import JOURNAL, JournalEntry, finish_entry, open_entry
from tasks.cleanup.plan import Bounds, batch_key, iso_dates, match_bounds
from tasks.store import BackupStore, put_json

PRESSURE_EVERY_S = 0.25


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
