"""Security events out of PostgreSQL: the rows of one source between two times, mapped
to the detectors' fields. Every name goes through psycopg.sql; a json path is read with
``->`` / ``->>`` and literal keys."""

from __future__ import annotations

import ipaddress
from datetime import datetime
from typing import Any

import psycopg
from psycopg import sql

from runbook.errors import ConfigError
from runbook.security.detectors import Event
from runbook.security.sources import SourceMapping


def _field(path: str) -> sql.Composable:
    column, *keys = path.split(".")
    expr: sql.Composable = sql.Identifier(column)
    for i, key in enumerate(keys):
        op = sql.SQL("->>") if i == len(keys) - 1 else sql.SQL("->")
        expr = sql.SQL("({} {} {})").format(expr, op, sql.Literal(key))
    return expr


def check_source(conn: psycopg.Connection[Any], name: str, mapping: SourceMapping) -> None:
    """Refuse (ConfigError, exit 2) a source whose table or columns do not exist."""
    schema, table = mapping.schema_table
    rows = conn.execute(
        "SELECT a.attname FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid JOIN pg_namespace n ON n.oid = c.relnamespace"
        " WHERE n.nspname = %s AND c.relname = %s AND a.attnum > 0 AND NOT a.attisdropped",
        (schema, table),
    ).fetchall()
    if not rows:
        raise ConfigError(f"RUNBOOK_SECURITY__SOURCES__{name.upper()}__TABLE: no table {mapping.table!r}")
    columns = {r[0] for r in rows}
    missing = [f"{field} -> {path}" for field, path in {"(time)": mapping.time_column, **mapping.fields}.items()
               if path.split(".")[0] not in columns]
    if missing:
        raise ConfigError(f"RUNBOOK_SECURITY__SOURCES__{name.upper()}: {mapping.table} has no column for {', '.join(missing)}"
                          f" (columns: {', '.join(sorted(columns))})")


def _plain(value: Any) -> Any:
    if isinstance(value, (ipaddress.IPv4Address, ipaddress.IPv6Address, ipaddress.IPv4Interface, ipaddress.IPv6Interface)):
        return str(value).split("/")[0]
    return value


def read_events(conn: psycopg.Connection[Any], mapping: SourceMapping, since: datetime, until: datetime, *,
                limit: int = 2_000_000) -> list[Event]:
    """The rows with ``since <= time < until``, oldest first, as detector events."""
    schema, table = mapping.schema_table
    names = list(mapping.fields)
    query = sql.SQL("SELECT {t}, {f} FROM {s}.{tb} WHERE {t} >= %s AND {t} < %s ORDER BY {t} LIMIT %s").format(
        t=sql.Identifier(mapping.time_column), f=sql.SQL(", ").join(_field(mapping.fields[n]) for n in names),
        s=sql.Identifier(schema), tb=sql.Identifier(table),
    )
    rows = conn.execute(query, (since, until, limit)).fetchall()
    return [Event(at=row[0], fields={n: _plain(v) for n, v in zip(names, row[1:])}) for row in rows]
