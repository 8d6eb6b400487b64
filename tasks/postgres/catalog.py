"""What a PostgreSQL database holds, read from its catalog: the server, the user
tables and their row counts and content fingerprints, keys, foreign keys, security
(row-level security, policies, grants) and roles. Read-only; every name quoted."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg import sql

from runbook.schema import ForeignKey, SecurityPosture, TableSecurity, TableShape
from tasks.postgres.connection import parse_dsn

SYSTEM_SCHEMAS = ("pg_catalog", "information_schema", "pg_toast")


@dataclass(frozen=True)
class ServerInfo:
    database: str
    server_version: str
    server_major: int
    size_bytes: int


def server_info(conn: psycopg.Connection[Any]) -> ServerInfo:
    row = conn.execute(
        "SELECT current_database(), current_setting('server_version'),"
        " current_setting('server_version_num')::int, pg_database_size(current_database())"
    ).fetchone()
    assert row is not None
    return ServerInfo(database=row[0], server_version=row[1], server_major=row[2] // 10000, size_bytes=row[3])


def server_identity(conn: psycopg.Connection[Any], dsn: str) -> dict[str, Any]:
    """The server a backup comes from, without credentials: its system identifier
    (pg_control_system(), unique per cluster; None where the role may not read it),
    the DSN's host, the server's port, the database and the version."""
    system_identifier = None
    try:
        with conn.transaction():
            row = conn.execute("SELECT system_identifier::text FROM pg_control_system()").fetchone()
            system_identifier = row[0] if row else None
    except psycopg.Error:
        pass  # a managed server may refuse it: the rest still names the server
    row = conn.execute("SELECT current_database(), current_setting('port')::int, current_setting('server_version')").fetchone()
    assert row is not None
    host = str(parse_dsn(dsn).get("host") or "").split(",")[0]
    return {"system_identifier": system_identifier, "host": host, "port": row[1], "database": row[0], "server_version": row[2]}


def qualified(table: str) -> sql.Composed:
    schema, _, name = table.partition(".")
    return sql.SQL("{}.{}").format(sql.Identifier(schema), sql.Identifier(name))


def list_tables(conn: psycopg.Connection[Any]) -> list[str]:
    """Ordinary and partitioned user tables as ``schema.table``."""
    rows = conn.execute(
        """
        SELECT n.nspname || '.' || c.relname
        FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE c.relkind IN ('r', 'p') AND NOT c.relispartition
          AND n.nspname <> ALL(%s) AND n.nspname NOT LIKE 'pg_temp%%'
        ORDER BY 1
        """,
        (list(SYSTEM_SCHEMAS),),
    ).fetchall()
    return [row[0] for row in rows]


def count_rows(conn: psycopg.Connection[Any], tables: Iterable[str]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for table in tables:
        row = conn.execute(sql.SQL("SELECT count(*) FROM {}").format(qualified(table))).fetchone()
        counts[table] = int(row[0]) if row else 0
    return counts


def fingerprint_table(conn: psycopg.Connection[Any], table: str) -> str:
    """An order-independent hash of every row: the sum of the first 60 bits of each
    row's md5 (of its text form), with the row count. Equal tables give equal values."""
    row = conn.execute(
        sql.SQL(
            "SELECT count(*), coalesce(sum(('x' || substr(md5(t::text), 1, 15))::bit(60)::bigint), 0)"
            " FROM {} AS t"
        ).format(qualified(table))
    ).fetchone()
    assert row is not None
    digest = hashlib.sha256(f"{row[0]}:{row[1]}".encode()).hexdigest()[:32]
    return f"{row[0]}:{digest}"


def fingerprint_tables(conn: psycopg.Connection[Any], tables: Iterable[str]) -> dict[str, str]:
    return {table: fingerprint_table(conn, table) for table in tables}


def table_shapes(conn: psycopg.Connection[Any]) -> dict[str, TableShape]:
    keys: dict[str, tuple[list[str], bool]] = {
        row[0]: (list(row[1]), bool(row[2]))
        for row in conn.execute(
            """
            SELECT n.nspname || '.' || c.relname,
                   array_agg(a.attname ORDER BY array_position(con.conkey, a.attnum)),
                   bool_and(coalesce(i.indisvalid AND i.indisunique, false))
            FROM pg_constraint con
            JOIN pg_class c ON c.oid = con.conrelid
            JOIN pg_namespace n ON n.oid = c.relnamespace
            JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum = ANY(con.conkey)
            LEFT JOIN pg_index i ON i.indexrelid = con.conindid
            WHERE con.contype = 'p' AND n.nspname <> ALL(%s)
            GROUP BY 1
            """,
            (list(SYSTEM_SCHEMAS),),
        ).fetchall()
    }
    times: dict[str, list[str]] = {}
    for table, column in conn.execute(
        """
        SELECT table_schema || '.' || table_name, column_name
        FROM information_schema.columns
        WHERE data_type IN ('timestamp with time zone', 'timestamp without time zone', 'date')
          AND table_schema <> ALL(%s)
        ORDER BY 1, ordinal_position
        """,
        (list(SYSTEM_SCHEMAS),),
    ).fetchall():
        times.setdefault(table, []).append(column)
    return {
        table: TableShape(
            table=table,
            primary_key=keys.get(table, ([], False))[0],
            time_columns=times.get(table, []),
            primary_key_enforced=keys.get(table, ([], False))[1],
        )
        for table in list_tables(conn)
    }


def foreign_keys(conn: psycopg.Connection[Any]) -> list[ForeignKey]:
    rows = conn.execute(
        """
        SELECT con.conname,
               sn.nspname || '.' || sc.relname,
               con.convalidated,
               (SELECT array_agg(a.attname ORDER BY k.i) FROM unnest(con.conkey) WITH ORDINALITY k(n, i)
                  JOIN pg_attribute a ON a.attrelid = con.conrelid AND a.attnum = k.n),
               tn.nspname || '.' || tc.relname,
               (SELECT array_agg(a.attname ORDER BY k.i) FROM unnest(con.confkey) WITH ORDINALITY k(n, i)
                  JOIN pg_attribute a ON a.attrelid = con.confrelid AND a.attnum = k.n)
        FROM pg_constraint con
        JOIN pg_class sc ON sc.oid = con.conrelid JOIN pg_namespace sn ON sn.oid = sc.relnamespace
        JOIN pg_class tc ON tc.oid = con.confrelid JOIN pg_namespace tn ON tn.oid = tc.relnamespace
        WHERE con.contype = 'f' AND sn.nspname <> ALL(%s)
        ORDER BY 1
        """,
        (list(SYSTEM_SCHEMAS),),
    ).fetchall()
    return [
        ForeignKey(name=r[0], table=r[1], validated=r[2], columns=list(r[3]), ref_table=r[4], ref_columns=list(r[5]))
        for r in rows
    ]


def security_posture(conn: psycopg.Connection[Any]) -> SecurityPosture:
    """Row-level security, policies and grants of every user table (the owner's own
    privileges left out: a restore with --no-owner gives tables a new owner)."""
    rows = conn.execute(
        """
        SELECT n.nspname || '.' || c.relname, c.relrowsecurity, c.relforcerowsecurity,
               ARRAY(SELECT p.polname::text FROM pg_policy p WHERE p.polrelid = c.oid ORDER BY 1),
               ARRAY(SELECT DISTINCT CASE WHEN a.grantee = 0 THEN 'PUBLIC' ELSE pg_get_userbyid(a.grantee) END
                                     || ':' || a.privilege_type
                     FROM aclexplode(c.relacl) a WHERE a.grantee <> c.relowner ORDER BY 1)
        FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE c.relkind IN ('r', 'p') AND n.nspname <> ALL(%s) AND n.nspname NOT LIKE 'pg_temp%%'
        ORDER BY 1
        """,
        (list(SYSTEM_SCHEMAS),),
    ).fetchall()
    return SecurityPosture(
        tables={r[0]: TableSecurity(rls=r[1], forced=r[2], policies=list(r[3]), grants=list(r[4])) for r in rows}
    )


def existing_roles(conn: psycopg.Connection[Any], names: Iterable[str]) -> set[str]:
    rows = conn.execute("SELECT rolname FROM pg_roles WHERE rolname = ANY(%s)", (list(names),)).fetchall()
    return {row[0] for row in rows}


def user_table_count(conn: psycopg.Connection[Any]) -> int:
    return len(list_tables(conn))
