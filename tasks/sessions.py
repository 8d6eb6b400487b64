"""The platform's sessions (``invalidate-sessions``, §5.4): the table checked against the
catalog, the preview (counts, admin sessions, samples of configured columns only), the
batched invalidation and its read-back.

Invalidating a session sets its expiry to the time of the action; no row is deleted and
a session whose expiry is already past stays as it is. Each batch is its own short
transaction that picks at most ``batch_rows`` active sessions in scope (FOR UPDATE) by
their physical address (``tableoid``, ``ctid``), so any key works: uuid, text,
composite or none. An interrupted run is finished by running it again: the sessions it
did not reach are still active. Every name is built with psycopg.sql.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg
from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE
from psycopg import sql

from runbook.errors import ConfigError
from runbook.retry import RETRIES, backoff, retry_transient
from runbook.security.actions import Preview
from runbook.security.sessions import SETTING, Scope, required_columns
from runbook.settings import SessionSettings
from tasks.postgres.connection import connect, translate_pg_error

TIME_TYPES = {"timestamp with time zone", "timestamp without time zone"}
ADDRESS_TYPES = {"inet", "cidr"}
TEXT_TYPES = {"text", "character varying", "character"}


@dataclass(frozen=True)
class SessionTable:
    """The sessions table as the catalog knows it, with the configured columns checked."""

    schema: str
    name: str
    expiry: str
    user: str | None
    ip: str | None
    ip_type: str | None
    admin_ids: tuple[str, ...] = ()
    created: str | None = None  # when a session began: logins after the action are told apart
    admin_table: tuple[str, str] | None = None
    admin_key: str = "id"
    admin_column: str | None = None
    admin_values: tuple[str, ...] = ()

    @property
    def ident(self) -> sql.Composed:
        return sql.SQL("{}.{}").format(sql.Identifier(self.schema), sql.Identifier(self.name))

    @property
    def display(self) -> str:
        return f"{self.schema}.{self.name}"

    @property
    def admin_known(self) -> bool:
        return bool(self.admin_ids or self.admin_table)


def _columns(conn: psycopg.Connection[Any], schema: str, table: str) -> dict[str, str] | None:
    """Column -> type (without its modifier) of a table, or None when there is no such table."""
    found = conn.execute(
        "SELECT c.oid FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
        " WHERE n.nspname = %s AND c.relname = %s AND c.relkind IN ('r', 'p')", (schema, table),
    ).fetchone()
    if found is None:
        return None
    rows = conn.execute(
        "SELECT a.attname, format_type(a.atttypid, NULL) FROM pg_attribute a"
        " WHERE a.attrelid = %s AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attnum", (found[0],),
    ).fetchall()
    return {name: kind for name, kind in rows}


def _need(columns: dict[str, str], column: str, setting: str, table: str) -> str:
    if column not in columns:
        raise ConfigError(f"{setting}: {table} has no column {column!r} (its columns: {', '.join(columns)})")
    return columns[column]


def check_sessions_table(conn: psycopg.Connection[Any], settings: SessionSettings, scope: Scope) -> SessionTable:
    """Refuse (ConfigError naming the setting, listing the real columns) a table or column
    that does not exist, or one a scope needs that is not configured; before anything."""
    admin_configured = bool(settings.admin_user_ids or settings.admin_table)
    required_columns(scope, user_column=settings.user_column, ip_column=settings.ip_column, admin_configured=admin_configured)
    schema, name = settings.table.split(".", 1)
    columns = _columns(conn, schema, name)
    if columns is None:
        raise ConfigError(f"{SETTING}TABLE: no table {settings.table!r} in the platform's database")
    kind = _need(columns, settings.expiry_column, f"{SETTING}EXPIRY_COLUMN", settings.table)
    if kind not in TIME_TYPES:
        raise ConfigError(f"{SETTING}EXPIRY_COLUMN: {settings.table}.{settings.expiry_column} is {kind}, not a timestamp")
    if settings.user_column:
        _need(columns, settings.user_column, f"{SETTING}USER_COLUMN", settings.table)
    ip_type = None
    if settings.ip_column:
        ip_type = _need(columns, settings.ip_column, f"{SETTING}IP_COLUMN", settings.table)
        if ip_type not in ADDRESS_TYPES | TEXT_TYPES:
            raise ConfigError(f"{SETTING}IP_COLUMN: {settings.table}.{settings.ip_column} is {ip_type}, not inet, cidr or text")
        if scope.kind == "ip" and ip_type in TEXT_TYPES and not scope.single_address:
            raise ConfigError(f"ip: {scope.value} is a network, and {settings.table}.{settings.ip_column} is text:"
                              " only one address can be matched in a text column")
    if settings.created_column:
        created_type = _need(columns, settings.created_column, f"{SETTING}CREATED_COLUMN", settings.table)
        if created_type not in TIME_TYPES:
            raise ConfigError(f"{SETTING}CREATED_COLUMN: {settings.table}.{settings.created_column} is {created_type}, not a timestamp")
    admin_table = None
    if settings.admin_table:
        if not settings.admin_column:
            raise ConfigError(f"{SETTING}ADMIN_COLUMN: not set: name the column of {settings.admin_table} that marks an admin")
        a_schema, a_name = settings.admin_table.split(".", 1)
        admin_columns = _columns(conn, a_schema, a_name)
        if admin_columns is None:
            raise ConfigError(f"{SETTING}ADMIN_TABLE: no table {settings.admin_table!r} in the platform's database")
        _need(admin_columns, settings.admin_key_column, f"{SETTING}ADMIN_KEY_COLUMN", settings.admin_table)
        _need(admin_columns, settings.admin_column, f"{SETTING}ADMIN_COLUMN", settings.admin_table)
        admin_table = (a_schema, a_name)
    return SessionTable(
        schema=schema, name=name, expiry=settings.expiry_column, user=settings.user_column, ip=settings.ip_column,
        ip_type=ip_type, admin_ids=tuple(settings.admin_user_ids), admin_table=admin_table,
        admin_key=settings.admin_key_column, admin_column=settings.admin_column, admin_values=tuple(settings.admin_values),
        created=settings.created_column,
    )


# --------------------------------------------------------------------------- conditions (the table is aliased ``s``)


def _col(column: str) -> sql.Composed:
    return sql.SQL("s.{}").format(sql.Identifier(column))


def in_scope(table: SessionTable, scope: Scope) -> tuple[sql.Composable, dict[str, Any]]:
    """The scope as a condition on ``s`` and its parameters."""
    if scope.kind == "all":
        return sql.SQL("TRUE"), {}
    if scope.kind == "user":
        assert table.user
        # the value is sent untyped: PostgreSQL reads it as the column's type (bigint, uuid, text)
        return sql.SQL("{} = %(scope_user)s").format(_col(table.user)), {"scope_user": scope.value}
    assert table.ip
    if table.ip_type in ADDRESS_TYPES:
        return sql.SQL("{} <<= %(scope_ip)s::inet").format(_col(table.ip)), {"scope_ip": scope.value}
    return sql.SQL("{} = %(scope_ip)s").format(_col(table.ip)), {"scope_ip": scope.address}


def active(table: SessionTable) -> sql.Composable:
    return sql.SQL("{} > %(at)s").format(_col(table.expiry))


def is_admin(table: SessionTable) -> tuple[sql.Composable, dict[str, Any]] | None:
    """Whether the session ``s`` is an admin's, or None when admins cannot be recognised."""
    if not table.admin_known:
        return None
    assert table.user
    parts: list[sql.Composable] = []
    params: dict[str, Any] = {}
    if table.admin_ids:
        parts.append(sql.SQL("{}::text = ANY(%(admin_ids)s)").format(_col(table.user)))
        params["admin_ids"] = list(table.admin_ids)
    if table.admin_table:
        assert table.admin_column
        parts.append(sql.SQL("EXISTS (SELECT 1 FROM {}.{} a WHERE a.{} = {} AND a.{}::text = ANY(%(admin_values)s))").format(
            sql.Identifier(table.admin_table[0]), sql.Identifier(table.admin_table[1]), sql.Identifier(table.admin_key),
            _col(table.user), sql.Identifier(table.admin_column)))
        params["admin_values"] = list(table.admin_values)
    return sql.SQL("({})").format(sql.SQL(" OR ").join(parts)), params


def _scalar(conn: psycopg.Connection[Any], query: sql.Composable, params: dict[str, Any]) -> Any:
    row = conn.execute(query, params).fetchone()
    assert row is not None
    return row[0]


def _plain(value: Any) -> Any:
    if value is None or isinstance(value, (int, float, bool, str)):
        return value
    return str(value)


# --------------------------------------------------------------------------- preview


def preview_sessions(conn: psycopg.Connection[Any], table: SessionTable, scope: Scope, at: datetime, *,
                     batch_rows: int, samples: int) -> Preview:
    """What invalidating ``scope`` at ``at`` changes: the active sessions in scope, their
    users, the admin sessions among them (a warning), a few samples of the configured
    columns only (never a token). Reads only."""
    where, params = in_scope(table, scope)
    params = {**params, "at": at}
    base = sql.SQL("FROM {} AS s WHERE {} AND {}").format(table.ident, active(table), where)
    try:
        sessions = int(_scalar(conn, sql.SQL("SELECT count(*) ") + base, params))
    except psycopg.errors.DataError as err:
        raise ConfigError(f"{scope.kind}: {scope.value!r} is not a value of {table.display}'s "
                          f"{table.user if scope.kind == 'user' else table.ip} column ({str(err).splitlines()[0]})") from None
    counts = {"active sessions in scope": sessions}
    warnings: list[str] = []
    if table.user:
        counts["users"] = int(_scalar(conn, sql.SQL("SELECT count(DISTINCT {}) ").format(_col(table.user)) + base, params))
    admin = is_admin(table)
    admins = 0
    if admin is None:
        warnings.append(f"Admin sessions cannot be recognised ({SETTING}ADMIN_USER_IDS or {SETTING}ADMIN_TABLE is not set):"
                        " this may log out the team itself")
    else:
        admins = int(_scalar(conn, sql.SQL("SELECT count(*) ") + base + sql.SQL(" AND {}").format(admin[0]),
                             {**params, **admin[1]}))
        counts["admin sessions"] = admins
        if admins:
            warnings.append(f"{admins} admin session(s) will be ended: the team's own admins are logged out too")
    shown = [c for c in (table.user, table.ip, table.expiry) if c]
    rows: list[dict[str, Any]] = []
    if samples and sessions:
        select = sql.SQL(", ").join(_col(c) for c in shown)
        flag = admin[0] if admin else sql.SQL("NULL")
        query = sql.SQL("SELECT {}, {} ").format(select, flag) + base + sql.SQL(" ORDER BY {} DESC LIMIT %(samples)s").format(
            _col(table.expiry))
        for row in conn.execute(query, {**params, **(admin[1] if admin else {}), "samples": samples}).fetchall():
            sample = {c: _plain(v) for c, v in zip(shown, row)}
            if admin:
                sample["admin"] = bool(row[-1])
            rows.append(sample)
    warnings.append("This cannot be undone: every user affected has to log in again")
    return Preview(
        action="invalidate-sessions", target=scope.target,
        summary=(f"End {sessions} active session(s) of {scope.target} in {table.display}"
                 + (f" ({counts['users']} user(s))" if "users" in counts else "")),
        changes=[f"set {table.display}.{table.expiry} to the time of the action on {sessions} active session(s) of {scope.target}",
                 f"in batches of {batch_rows} rows, each its own transaction; no row is deleted; expired sessions stay as they are"],
        counts=counts, samples=rows, warnings=warnings, undo=None, noop=sessions == 0,
        before={"active_sessions": sessions, "admin_sessions": admins, "table": table.display},
    )


# --------------------------------------------------------------------------- apply


def count_out_of_scope(conn: psycopg.Connection[Any], table: SessionTable, scope: Scope, at: datetime) -> int:
    """Active sessions (at ``at``) outside the scope: the invalidation must leave them be."""
    where, params = in_scope(table, scope)
    return int(_scalar(conn, sql.SQL("SELECT count(*) FROM {} AS s WHERE {} AND ({}) IS NOT TRUE").format(
        table.ident, active(table), where), {**params, "at": at}))


def invalidate_batch(conn: psycopg.Connection[Any], table: SessionTable, scope: Scope, at: datetime, limit: int) -> int:
    """One batch in its own transaction: at most ``limit`` active sessions in scope get
    ``expiry = at``. Rows are picked and locked by their physical address, then updated
    by it (a TID scan), so no key is needed. Returns how many were invalidated."""
    if not conn.autocommit or conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
        # inside an open transaction, transaction() would be a savepoint: every batch one transaction
        raise RuntimeError("invalidate_batch needs a connection in autocommit: each batch is its own transaction")
    where, params = in_scope(table, scope)
    params = {**params, "at": at, "limit": limit}
    with conn.transaction():
        picked = conn.execute(
            sql.SQL("SELECT s.tableoid::oid, s.ctid FROM {} AS s WHERE {} AND {} LIMIT %(limit)s FOR UPDATE OF s").format(
                table.ident, active(table), where), params,
        ).fetchall()
        if not picked:
            return 0
        ctids = [str(ctid) for _, ctid in picked]
        pairs = [f"{oid}:{ctid}" for oid, ctid in picked]
        # ctid = ANY(...) lets each partition use a TID scan; the pair pins the partition
        cur = conn.execute(
            sql.SQL("UPDATE {} AS s SET {} = %(at)s WHERE s.ctid = ANY(%(ctids)s::tid[])"
                    " AND (s.tableoid::oid::text || ':' || s.ctid::text) = ANY(%(pairs)s) AND {}").format(
                table.ident, sql.Identifier(table.expiry), active(table)),
            {"at": at, "ctids": ctids, "pairs": pairs},
        )
        return cur.rowcount


def invalidate_sessions(conn: psycopg.Connection[Any], table: SessionTable, scope: Scope, at: datetime, *, batch_rows: int,
                        report: Callable[[int, int], None] = lambda done, total: None) -> dict[str, Any]:
    """Invalidate every active session in scope, batch after batch, until none is left;
    ``report(done, total)`` after each. ``conn`` is in autocommit, so that each batch is
    its own transaction. Returns what was done (the audit's ``after``)."""
    where, params = in_scope(table, scope)
    total = int(_scalar(conn, sql.SQL("SELECT count(*) FROM {} AS s WHERE {} AND {}").format(table.ident, active(table), where),
                        {**params, "at": at}))
    out_of_scope = count_out_of_scope(conn, table, scope, at)
    done = batches = 0
    report(0, total)
    while True:
        changed = invalidate_batch(conn, table, scope, at, batch_rows)
        if changed == 0:
            break
        done += changed
        batches += 1
        report(done, max(total, done))
    return {"at": at.isoformat(), "invalidated": done, "batches": batches, "out_of_scope_active": out_of_scope}


def read_back(conn: psycopg.Connection[Any], table: SessionTable, scope: Scope, at: datetime) -> dict[str, int | None]:
    """What the table says now: active sessions left in scope (with the created column,
    only those begun by the action's time; the ones begun since are ``new_logins_in_scope``,
    None without it), and active sessions out of scope."""
    where, params = in_scope(table, scope)
    count = sql.SQL("SELECT count(*) FROM {} AS s WHERE {} AND {}").format(table.ident, active(table), where)
    new_logins = None
    if table.created:
        begun = sql.SQL(" AND {} <= %(at)s").format(_col(table.created))
        left = int(_scalar(conn, count + begun, {**params, "at": at}))
        new_logins = int(_scalar(conn, count + sql.SQL(" AND {} > %(at)s").format(_col(table.created)), {**params, "at": at}))
    else:
        left = int(_scalar(conn, count, {**params, "at": at}))
    touched = int(_scalar(conn, sql.SQL("SELECT count(*) FROM {} AS s WHERE {} = %(at)s AND ({}) IS NOT TRUE").format(
        table.ident, _col(table.expiry), where), {**params, "at": at}))
    return {"active_left_in_scope": left, "new_logins_in_scope": new_logins,
            "out_of_scope_active": count_out_of_scope(conn, table, scope, at), "out_of_scope_invalidated": touched}


# --------------------------------------------------------------------------- Prefect tasks


def _connect(dsn: str, connect_timeout: int, autocommit: bool = True) -> psycopg.Connection[Any]:
    return connect(dsn, application="runbook-invalidate-sessions", connect_timeout=connect_timeout, autocommit=autocommit)


@task(name="check-sessions-table", retries=RETRIES, retry_delay_seconds=backoff(), retry_condition_fn=retry_transient,
      cache_policy=NO_CACHE)
def check_sessions_table_task(dsn: str, settings: SessionSettings, scope: Scope, connect_timeout: int = 10) -> SessionTable:
    """Check the sessions table and the columns the scope needs against the catalog."""
    with _connect(dsn, connect_timeout) as conn:
        table = check_sessions_table(conn, settings, scope)
    get_run_logger().info("Sessions table %s: expiry %s, user %s, ip %s", table.display, table.expiry, table.user or "-",
                          table.ip or "-")
    return table


@task(name="preview-sessions", retries=RETRIES, retry_delay_seconds=backoff(), retry_condition_fn=retry_transient,
      cache_policy=NO_CACHE)
def preview_sessions_task(dsn: str, table: SessionTable, scope: Scope, at: datetime, batch_rows: int, samples: int,
                          connect_timeout: int = 10) -> Preview:
    """Count (and sample) the active sessions the invalidation would end; changes nothing."""
    with _connect(dsn, connect_timeout) as conn:
        return preview_sessions(conn, table, scope, at, batch_rows=batch_rows, samples=samples)


@task(name="invalidate-sessions", cache_policy=NO_CACHE)
def invalidate_sessions_task(dsn: str, table: SessionTable, scope: Scope, at: datetime, batch_rows: int,
                             report: Callable[[int, int], None], connect_timeout: int = 10) -> dict[str, Any]:
    """Set the expiry of every active session in scope to the action's time, in batches
    (no retry here: a re-run of the flow finishes what an interrupted one left)."""
    get_run_logger().info("Invalidating the active sessions of %s in %s, %d per batch", scope.target, table.display, batch_rows)
    try:
        with _connect(dsn, connect_timeout, autocommit=True) as conn:  # each batch opens its own transaction
            conn.execute("SET lock_timeout = '10s'")
            return invalidate_sessions(conn, table, scope, at, batch_rows=batch_rows, report=report)
    except psycopg.Error as err:
        raise translate_pg_error(err, dsn, f"invalidate sessions in {table.display}") from None


@task(name="read-back-sessions", retries=RETRIES, retry_delay_seconds=backoff(), retry_condition_fn=retry_transient,
      cache_policy=NO_CACHE)
def read_back_task(dsn: str, table: SessionTable, scope: Scope, at: datetime, connect_timeout: int = 10) -> dict[str, int | None]:
    """Read the sessions table back after the invalidation."""
    with _connect(dsn, connect_timeout) as conn:
        return read_back(conn, table, scope, at)
