"""PostgreSQL: one connect helper and the small reads and writes runbook needs.

Every connection carries a connect timeout, a statement timeout and an
``application_name`` naming the procedure, so an operator looking at
``pg_stat_activity`` sees who is there. Connection failures are sorted at this
boundary: refused, reset or timed out is a ``TransientError`` (retried); bad
credentials, a missing database or a malformed DSN is a ``ConfigError`` (never retried).
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterable
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Iterator

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from runbook.errors import ConcurrencyError, ConfigError, TransientError
from runbook.schema import ForeignKey, SecurityPosture, TableSecurity, TableShape
from runbook.settings import redact_dsn

SYSTEM_SCHEMAS = ("pg_catalog", "information_schema", "pg_toast")
_PERMANENT_SQLSTATE_CLASSES = ("28", "3D", "42")  # auth, missing database, syntax/privilege
_AUTH_MARKERS = (
    "password authentication failed",
    "no password supplied",
    "authentication failed",
    "pg_hba.conf rejects",
    "no pg_hba.conf entry",
)
_TRANSIENT_MARKERS = (
    "connection refused",
    "could not connect",
    "timeout expired",
    "server closed the connection",
    "no such file or directory",  # the server's socket is not there yet
    "the database system is starting up",
    "the database system is shutting down",
    "terminating connection",
    "connection reset",
    "too many clients",
)


def translate_pg_error(err: psycopg.Error, dsn: str, action: str) -> Exception:
    """A psycopg error as TransientError or ConfigError with a message that names the
    target (password redacted) and what to do."""
    target = redact_dsn(dsn)
    text = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    sqlstate = getattr(err, "sqlstate", None) or ""
    lowered = str(err).lower()
    if sqlstate.startswith("28") or any(marker in lowered for marker in _AUTH_MARKERS):
        return ConfigError(f"{action}: PostgreSQL refused the credentials for {target}; check RUNBOOK_DATABASE_URL")
    if "role" in lowered and "does not exist" in lowered:
        return ConfigError(f"{action}: PostgreSQL knows no such user for {target}; check RUNBOOK_DATABASE_URL")
    if sqlstate == "3D000" or ("database" in lowered and "does not exist" in lowered):
        return ConfigError(f"{action}: the database of {target} does not exist; check RUNBOOK_DATABASE_URL")
    if isinstance(err, psycopg.OperationalError) and (
        any(marker in lowered for marker in _TRANSIENT_MARKERS) or not sqlstate
    ):
        return TransientError(f"{action}: cannot reach PostgreSQL at {target}: {_scrub(text, dsn)}")
    if sqlstate[:2] in _PERMANENT_SQLSTATE_CLASSES:
        return ConfigError(f"{action} on {target}: {_scrub(text, dsn)}")
    if sqlstate in ("57014",):  # statement timeout
        return TransientError(f"{action} on {target}: statement timed out")
    return err


def _scrub(text: str, dsn: str) -> str:
    password = conninfo_to_dict(dsn).get("password") if dsn else None
    return text.replace(str(password), "***") if password else text


def parse_dsn(dsn: str) -> dict[str, Any]:
    try:
        return conninfo_to_dict(dsn)
    except psycopg.ProgrammingError:
        raise ConfigError(
            "RUNBOOK_DATABASE_URL is not a valid DSN: expected postgresql://user:password@host:port/database"
        ) from None


def with_database(dsn: str, dbname: str) -> str:
    """The same server and credentials, another database."""
    params = parse_dsn(dsn)
    params["dbname"] = dbname
    return make_conninfo("", **params)


def database_name(dsn: str) -> str:
    return str(parse_dsn(dsn).get("dbname") or "postgres")


def libpq_env(dsn: str) -> tuple[str, dict[str, str]]:
    """A conninfo without the password plus PGPASSWORD, for pg_dump and pg_restore:
    a password on a command line would show in ``ps``."""
    params = parse_dsn(dsn)
    env: dict[str, str] = {}
    password = params.pop("password", None)
    if password:
        env["PGPASSWORD"] = str(password)
    return make_conninfo("", **params), env


def connect(
    dsn: str,
    *,
    application: str = "runbook",
    connect_timeout: int = 10,
    statement_timeout_s: int | None = 600,
    autocommit: bool = False,
) -> psycopg.Connection[Any]:
    """Open a connection with timeouts and a labelled application_name."""
    options = f"-c statement_timeout={int(statement_timeout_s * 1000)}" if statement_timeout_s else ""
    try:
        return psycopg.connect(
            dsn,
            connect_timeout=connect_timeout,
            application_name=application,
            options=options,
            autocommit=autocommit,
        )
    except psycopg.Error as err:
        raise translate_pg_error(err, dsn, "connect") from None


@contextmanager
def session(dsn: str, **kwargs: Any) -> Iterator[psycopg.Connection[Any]]:
    conn = connect(dsn, **kwargs)
    try:
        yield conn
    finally:
        conn.close()


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


def database_exists(admin_dsn: str, name: str, **kwargs: Any) -> bool:
    with session(admin_dsn, autocommit=True, **kwargs) as conn:
        return conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone() is not None


def user_table_count(conn: psycopg.Connection[Any]) -> int:
    return len(list_tables(conn))


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


# --------------------------------------------------------------------------- Prefect tasks

from prefect import get_run_logger, task  # noqa: E402 - the plain functions above need no Prefect
from prefect.cache_policies import NO_CACHE  # noqa: E402

from runbook.retry import RETRIES, backoff, retry_transient  # noqa: E402


@task(name="inspect-database", retries=RETRIES, retry_delay_seconds=backoff(), retry_condition_fn=retry_transient, cache_policy=NO_CACHE)
def inspect_database(dsn: str, connect_timeout: int = 10) -> ServerInfo:
    """Connect to the database and read its name, server version and size."""
    get_run_logger().info("Connecting to %s", redact_dsn(dsn))
    with session(dsn, application="runbook inspect", connect_timeout=connect_timeout, statement_timeout_s=60) as conn:
        info = server_info(conn)
    get_run_logger().info("%s: PostgreSQL %s, %d bytes", info.database, info.server_version, info.size_bytes)
    return info


@task(name="diagnose-database", cache_policy=NO_CACHE)
def diagnose_database_task(dsn: str, rls_tables: list[str], long_query_s: float, connect_timeout: int) -> DatabaseDiagnosis:
    """Connect time, version, connections in use, long-running queries, RLS (§3.2)."""
    get_run_logger().info("Diagnosing %s", redact_dsn(dsn))
    return diagnose_database(dsn, rls_tables=rls_tables, long_query_s=long_query_s, connect_timeout=connect_timeout)
