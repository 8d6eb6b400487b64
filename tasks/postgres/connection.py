"""PostgreSQL connections and their errors: one connect helper, and the sorting of
failures at this boundary.

Every connection carries a connect timeout, a statement timeout and an
``application_name`` naming the procedure, so an operator looking at
``pg_stat_activity`` sees who is there. Refused, reset or timed out is a
``TransientError`` (retried); bad credentials, a missing database or a malformed DSN
is a ``ConfigError`` (never retried).
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Any, Iterator

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from runbook.errors import ConfigError, RunbookError, TransientError
from runbook.settings import redact_dsn

_PERMANENT_SQLSTATE_CLASSES = ("28", "3D", "42")  # auth, missing database, a missing table or column, privileges
# Of class 42, the states that only runbook's own SQL can cause (what it queries comes
# from the catalog and the settings are checked against it): a bug, not a setting.
_QUERY_BUGS = {
    "42601": "syntax error",
    "42803": "grouping error",
    "42804": "datatype mismatch",
    "42P08": "ambiguous parameter",
    "42P18": "indeterminate datatype",
    "42702": "ambiguous column",
}
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
    """A psycopg error as TransientError (retried), ConfigError (exit 2: a setting is
    wrong), or RunbookError for SQL only a bug in runbook writes (exit 1), with a message
    that names the target (password redacted) and what to do."""
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
    if sqlstate in _QUERY_BUGS:
        return RunbookError(
            f"{action} on {target}: PostgreSQL refused runbook's own query ({_QUERY_BUGS[sqlstate]}: {_scrub(text, dsn)}); "
            "this is a bug in runbook, not a setting: please report it with this message"
        )
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


def percent_safe(query: Any, context: Any) -> Any:
    """``query`` with every ``%`` inside its identifiers and literals doubled. psycopg
    reads ``%`` in a query with parameters as a placeholder, also inside a quoted name
    built with sql.Identifier (psycopg/psycopg2#825, never fixed): a table called
    ``"cpu%"`` made such a query fail. Only composed queries are touched; a plain string
    is ours, written with ``%%`` where it means a percent sign."""
    if isinstance(query, sql.Composed):
        return sql.Composed([percent_safe(part, context) for part in query])
    if isinstance(query, (sql.Identifier, sql.Literal)):
        text = query.as_string(context)
        return sql.SQL(text.replace("%", "%%")) if "%" in text else query
    return query


class Cursor(psycopg.Cursor[Any]):
    """psycopg's cursor, safe for names that hold a ``%`` (:func:`percent_safe`)."""

    def execute(self, query: Any, params: Any = None, **kwargs: Any) -> Any:  # type: ignore[override]
        return super().execute(percent_safe(query, self) if params is not None else query, params, **kwargs)

    def executemany(self, query: Any, params_seq: Any, **kwargs: Any) -> None:  # type: ignore[override]
        super().executemany(percent_safe(query, self), params_seq, **kwargs)


class ServerCursor(psycopg.ServerCursor[Any]):
    """psycopg's named (server-side) cursor, safe for names that hold a ``%``."""

    def execute(self, query: Any, params: Any = None, **kwargs: Any) -> Any:  # type: ignore[override]
        return super().execute(percent_safe(query, self) if params is not None else query, params, **kwargs)


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
        conn = psycopg.connect(
            dsn,
            connect_timeout=connect_timeout,
            application_name=application,
            options=options,
            autocommit=autocommit,
            cursor_factory=Cursor,
        )
    except psycopg.Error as err:
        raise translate_pg_error(err, dsn, "connect") from None
    conn.server_cursor_factory = ServerCursor
    return conn


@contextmanager
def session(dsn: str, **kwargs: Any) -> Iterator[psycopg.Connection[Any]]:
    conn = connect(dsn, **kwargs)
    try:
        yield conn
    finally:
        conn.close()
