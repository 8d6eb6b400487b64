"""The PostgreSQL side of data clean-up (§4.5): the catalog the policies are checked
against, and the plan of what each policy would touch."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import psycopg
from psycopg import sql

from runbook.cleanup import Policy, PolicyPlan, TableInfo, qualified, selection
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
    return {table: TableInfo(columns=cols, primary_key=keys.get(table, [])) for table, cols in columns.items()}


def plan_policy(conn: psycopg.Connection[Any], policy: Policy, key: str, cutoff: datetime) -> PolicyPlan:
    """Count the rows the policy would touch now, and a few of their keys (smallest first)."""
    where, params = selection(policy, cutoff)
    table, key_column = qualified(policy.table), sql.Identifier(key)
    count = conn.execute(sql.SQL("SELECT count(*) FROM {} WHERE {}").format(table, where), params).fetchone()
    samples = conn.execute(
        sql.SQL("SELECT {} FROM {} WHERE {} ORDER BY {} LIMIT {}").format(key_column, table, where, key_column, sql.Literal(SAMPLE_KEYS)),
        params,
    ).fetchall()
    return PolicyPlan(
        policy=policy.name,
        table=policy.table,
        action=policy.action,
        cutoff=cutoff,
        rows=int(count[0]) if count else 0,
        sample_keys=[row[0] for row in samples],
    )
