"""PostgreSQL, split along its seams: ``connection`` (connect helper, DSNs, error
sorting), ``catalog`` (what a database holds), ``admin`` (locks, snapshots, databases,
diagnosis). This package re-exports all three, so callers write ``postgres.session``,
``postgres.table_shapes``, ``postgres.drop_database``; the Prefect tasks are here.
"""

from __future__ import annotations

from runbook.settings import redact_dsn
from tasks.postgres.admin import (
    DatabaseDiagnosis,
    Snapshot,
    advisory_key,
    create_database,
    database_exists,
    databases_like,
    diagnose_database,
    drop_database,
    export_snapshot,
    rename_database,
    try_advisory_lock,
)
from tasks.postgres.catalog import (
    SYSTEM_SCHEMAS,
    ServerInfo,
    count_rows,
    existing_roles,
    fingerprint_table,
    fingerprint_tables,
    foreign_keys,
    list_tables,
    qualified,
    security_posture,
    server_identity,
    server_info,
    table_shapes,
    user_table_count,
)
from tasks.postgres.connection import (
    connect,
    database_name,
    libpq_env,
    parse_dsn,
    session,
    translate_pg_error,
    with_database,
)

__all__ = [
    "DatabaseDiagnosis", "SYSTEM_SCHEMAS", "ServerInfo", "Snapshot", "advisory_key", "connect", "count_rows",
    "create_database", "database_exists", "database_name", "databases_like", "diagnose_database", "diagnose_database_task", "drop_database",
    "existing_roles", "export_snapshot", "fingerprint_table", "fingerprint_tables", "foreign_keys", "inspect_database",
    "libpq_env", "list_tables", "parse_dsn", "qualified", "rename_database", "security_posture", "server_identity",
    "server_info", "session", "table_shapes", "translate_pg_error", "try_advisory_lock", "user_table_count", "with_database",
]

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
