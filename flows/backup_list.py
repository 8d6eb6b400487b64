"""``backup-list`` (runbook §6.1): the backups of the database, newest first. The CLI
answers it without a flow run (tasks.catalog.list_backups); this flow is the same list
for the UI, with its table artifact."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from prefect import flow
from prefect.artifacts import create_table_artifact

from runbook.reports import artifact_key, expected_failures
from runbook.target import prepare
from tasks.backups import read_catalog_task
from tasks.catalog import listing
from tasks.postgres import database_name
from tasks.store import open_backup_store


@flow(name="backup-list")
@expected_failures
def backup_list() -> dict[str, Any]:
    """List every backup with its time, size, status, age and verification outcome."""
    settings, target = prepare()
    store = open_backup_store(target.store_url, settings.s3_endpoint_url, settings.backup.part_size_mb)
    database = database_name(target.dsn)
    manifests, verifications = read_catalog_task(store, target.instance)
    result = listing(manifests, verifications, datetime.now(timezone.utc), database=database, instance=target.instance, store_url=store.url)
    rows = result["backups"]
    create_table_artifact(
        key=artifact_key("backup-list", target.instance),
        table=[{k: v for k, v in row.items() if k not in ("size_bytes", "error")} for row in rows] or [{"id": "no backups"}],
        description=f"Backups of {database} in {store.url}/{target.instance}",
    )
    return result
