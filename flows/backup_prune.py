"""``backup-prune``: the retention policy of backups (grandfather-father-son), planned
as a pure report, then applied. The only step that ever deletes from the store."""

from __future__ import annotations

from typing import Any

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_table_artifact
from prefect.cache_policies import NO_CACHE
from pydantic import BaseModel, Field

from runbook.backups import plan_retention
from runbook.reports import artifact_key, expected_failures
from runbook.retry import RETRIES, backoff, retry_transient
from runbook.settings import RunbookSettings
from runbook.target import prepare
from tasks import backups as backup_tasks
from tasks.postgres import database_name
from tasks.store import BackupStore, open_backup_store


class PruneParameters(BaseModel):
    """Options of a retention run."""

    dry_run: bool = Field(True, description="Only report what would be removed.")


@task(name="prune-backups", retries=RETRIES, retry_delay_seconds=backoff(), retry_condition_fn=retry_transient, cache_policy=NO_CACHE)
def apply_retention(
    settings: RunbookSettings, store: BackupStore, database: str, *, dry_run: bool, instance: str | None = None
) -> dict[str, Any]:
    """Plan retention from the catalog of one instance (default: the database name),
    publish the plan, then delete what it marks (nothing when ``dry_run``). The newest
    DONE and newest verified backups are always kept; other instances are never read."""
    logger = get_run_logger()
    prefix = instance or database
    manifests, verifications = backup_tasks.read_catalog(store, prefix)
    decisions = plan_retention(manifests, verifications, settings.retention, timezone_name=settings.timezone)
    create_table_artifact(
        key=artifact_key("backup-retention", prefix),
        table=[
            {"backup": d.backup_id, "action": "keep" if d.keep else ("would remove" if dry_run else "remove"), "why": "; ".join(d.reasons) or "outside every retention period"}
            for d in decisions
        ],
        description=f"Retention plan for {database} ({'dry run' if dry_run else 'applied'})",
    )
    removed, orphans = backup_tasks.prune(store, prefix, decisions, dry_run=dry_run)
    verb = "Would remove" if dry_run else "Removed"
    for backup_id in removed:
        logger.info("%s backup %s from %s", verb, backup_id, store.url)
    for key in orphans:
        logger.info("%s %s from %s: it has no manifest", verb, key, store.url)
    return {"dry_run": dry_run, "removed": removed, "orphans": orphans, "kept": sum(d.keep for d in decisions)}


@flow(name="backup-prune")
@expected_failures
def backup_prune(params: PruneParameters = PruneParameters()) -> dict[str, Any]:
    """Apply the backup retention policy (24 hourly, 7 daily, 4 weekly, 12 monthly by
    default). Dry run by default: the plan is published as an artifact."""
    settings, target = prepare()
    store = open_backup_store(target.store_url, settings.s3_endpoint_url, settings.backup.part_size_mb)
    return apply_retention(settings, store, database_name(target.dsn), dry_run=params.dry_run, instance=target.instance)
