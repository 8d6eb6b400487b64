"""The catalog data-clean-up policies are checked against, each table's batch key,
and the plan of what each policy would touch (exact count, key range, sample keys)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import psycopg
from psycopg import sql
from pydantic import BaseModel

from runbook.cleanup import (
    BatchKey,
    Policy,
    PolicyPlan,
    TableInfo,
    batching_problem,
    qualified,
    selection,
)
from runbook.errors import ConfigError
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
