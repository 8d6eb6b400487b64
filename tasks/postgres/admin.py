"""Operations on a PostgreSQL server: advisory locks (one procedure per database at
a time), exported snapshots, creating, renaming and dropping databases, and the
health questions of §3.2."""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import psycopg
from psycopg import sql

from runbook.errors import ConcurrencyError
from tasks.postgres.catalog import list_tables
from tasks.postgres.connection import session


def advisory_key(name: str) -> int:
    """A stable signed 64-bit advisory-lock key for a name."""
    return int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "big", signed=True)


def try_advisory_lock(conn: psycopg.Connection[Any], name: str) -> None:
    """Take a session advisory lock or fail at once naming who holds it."""
    key = advisory_key(name)
    row = conn.execute("SELECT pg_try_advisory_lock(%s)", (key,)).fetchone()
    if row and row[0]:
        return
    holder = conn.execute(
        """
        SELECT a.pid, a.application_name, a.backend_start
        FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
        WHERE l.locktype = 'advisory' AND l.granted
          AND ((l.classid::bigint << 32) | l.objid::bigint) = (%s::bigint & x'ffffffffffffffff'::bigint)
        LIMIT 1
        """,
        (key,),
    ).fetchone()
    who = f" (pid {holder[0]}, {holder[1] or 'unnamed'}, since {holder[2]:%Y-%m-%d %H:%M:%S})" if holder else ""
    raise ConcurrencyError(f"{name} is already running on this database{who}; wait for it to finish")


@dataclass
class Snapshot:
    """An open REPEATABLE READ transaction whose snapshot has been exported."""

    conn: psycopg.Connection[Any]
    snapshot_id: str
    taken_at: datetime
    tables: list[str] = field(default_factory=list)


def export_snapshot(conn: psycopg.Connection[Any]) -> Snapshot:
    """Start a REPEATABLE READ, READ ONLY transaction and export its snapshot; the
    connection must stay open (and idle in the transaction) while others use it."""
    conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
    row = conn.execute("SELECT pg_export_snapshot(), statement_timestamp()").fetchone()
    assert row is not None
    return Snapshot(conn=conn, snapshot_id=row[0], taken_at=row[1], tables=list_tables(conn))


def database_exists(admin_dsn: str, name: str, **kwargs: Any) -> bool:
    with session(admin_dsn, autocommit=True, **kwargs) as conn:
        return conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone() is not None


def databases_like(admin_dsn: str, pattern: str, **kwargs: Any) -> list[str]:
    """The databases on the server whose name matches a LIKE ``pattern``."""
    with session(admin_dsn, autocommit=True, **kwargs) as conn:
        return [row[0] for row in conn.execute("SELECT datname FROM pg_database WHERE datname LIKE %s ORDER BY 1", (pattern,))]


def rename_database(admin_dsn: str, name: str, new_name: str, **kwargs: Any) -> None:
    """Move a database aside under a new name, disconnecting its sessions first."""
    with session(admin_dsn, autocommit=True, **kwargs) as conn:
        conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()", (name,)
        )
        conn.execute(sql.SQL("ALTER DATABASE {} RENAME TO {}").format(sql.Identifier(name), sql.Identifier(new_name)))


@dataclass(frozen=True)
class DatabaseDiagnosis:
    connect_ms: float
    server_version: str
    connections: int
    max_connections: int
    long_running: list[tuple[int, float, str, str]]  # pid, seconds, state, query (literals masked)
    rls_off: list[str]
    missing: list[str]


def diagnose_database(
    dsn: str, *, rls_tables: list[str], long_query_s: float, connect_timeout: int = 10
) -> DatabaseDiagnosis:
    """What §3.2 asks about a database: connect time, version, connections in use,
    long-running queries, and tables where row-level security is expected but off."""
    from runbook.diagnose import mask_literals

    started = time.perf_counter()
    with session(dsn, application="runbook diagnose", connect_timeout=connect_timeout, statement_timeout_s=30, autocommit=True) as conn:
        connect_ms = (time.perf_counter() - started) * 1000
        row = conn.execute(
            "SELECT current_setting('server_version'), (SELECT count(*) FROM pg_stat_activity),"
            " current_setting('max_connections')::int"
        ).fetchone()
        assert row is not None
        long_running = [
            (r[0], float(r[1]), r[2], mask_literals(r[3] or ""))
            for r in conn.execute(
                """
                SELECT pid, extract(epoch FROM now() - query_start), state, query
                FROM pg_stat_activity
                WHERE state NOT IN ('idle') AND pid <> pg_backend_pid() AND backend_type = 'client backend'
                  AND query_start < now() - make_interval(secs => %s)
                ORDER BY query_start
                LIMIT 20
                """,
                (long_query_s,),
            ).fetchall()
        ]
        flags = {
            r[0]: r[1]
            for r in conn.execute(
                """
                SELECT n.nspname || '.' || c.relname, c.relrowsecurity
                FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
                WHERE c.relkind IN ('r', 'p') AND n.nspname || '.' || c.relname = ANY(%s)
                """,
                (rls_tables,),
            ).fetchall()
        }
    return DatabaseDiagnosis(
        connect_ms=connect_ms,
        server_version=row[0],
        connections=row[1],
        max_connections=row[2],
        long_running=long_running,
        rls_off=sorted(t for t, on in flags.items() if not on),
        missing=sorted(set(rls_tables) - set(flags)),
    )


def create_database(admin_dsn: str, name: str, **kwargs: Any) -> None:
    with session(admin_dsn, autocommit=True, **kwargs) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))


def drop_database(admin_dsn: str, name: str, **kwargs: Any) -> None:
    """Drop a database, disconnecting its sessions; a missing one counts as dropped."""
    with session(admin_dsn, autocommit=True, **kwargs) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
