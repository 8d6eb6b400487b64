"""The PostgreSQL side of data clean-up (§4.5), split along its seams: ``plan`` (the
catalog policies are checked against, batch keys, the plan of what each policy would
touch), ``journal`` (where each policy's run stands, resumable), ``batches`` (the batch
engine: key windows, archive-then-delete, pressure back-off, ``run_policy``). This
package re-exports them and holds the Prefect tasks."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE
from psycopg import sql

from runbook.cleanup import BatchKey, Policy, qualified
from tasks import postgres
from tasks.cleanup.batches import PRESSURE_EVERY_S, apply_batch, archive_batch, pressure, run_policy
from tasks.cleanup.journal import (
    JOURNAL,
    JournalEntry,
    abandon_entry,
    ensure_journal,
    finish_entry,
    open_entry,
    unfinished_entries,
)
from tasks.cleanup.plan import (
    SAMPLE_KEYS,
    Bounds,
    batch_key,
    count_selected,
    iso_dates,
    match_bounds,
    plan_or_refuse,
    plan_policy,
    table_catalog,
)

__all__ = [
    "JOURNAL", "PRESSURE_EVERY_S", "SAMPLE_KEYS", "Bounds", "JournalEntry", "abandon_entry", "apply_batch", "apply_policy",
    "archive_batch", "batch_key", "count_selected", "ensure_journal", "finish_entry", "iso_dates", "match_bounds",
    "open_entry", "plan_or_refuse", "plan_policy", "pressure", "run_policy", "table_catalog", "unfinished_entries",
    "vacuum_analyze",
]


@task(name="apply-policy", cache_policy=NO_CACHE)
def apply_policy(dsn: str, policy: Policy, key: BatchKey, run_id: str, cutoff: datetime, **options: Any) -> dict[str, Any]:
    """Every batch of one policy, each its own short transaction, backing off while the
    database is under pressure; resumes an unfinished run of the same, unchanged policy."""
    return run_policy(dsn, policy, key, None, run_id, cutoff, log=get_run_logger().info, **options)


@task(name="vacuum-analyze", cache_policy=NO_CACHE)
def vacuum_analyze(dsn: str, tables: list[str], connect_timeout: int) -> None:
    """VACUUM ANALYZE the touched tables (outside any transaction)."""
    with postgres.session(dsn, application="runbook vacuum", connect_timeout=connect_timeout, statement_timeout_s=None, autocommit=True) as conn:
        for table in tables:
            get_run_logger().info("VACUUM ANALYZE %s", table)
            conn.execute(sql.SQL("VACUUM ANALYZE {}").format(qualified(table)))
