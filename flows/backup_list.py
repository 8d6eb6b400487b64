"""``backup-list`` (runbook §6.1): the backups of the database, newest first."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from prefect import flow
from prefect.artifacts import create_table_artifact

from runbook.backups import human_age, human_size
from runbook.reports import artifact_key, expected_failures
from runbook.target import prepare
from tasks.backups import read_catalog_task
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
    now = datetime.now(timezone.utc)
    rows = []
    for manifest in sorted(manifests, key=lambda m: m.id, reverse=True):
        verification = verifications.get(manifest.id)
        rows.append(
            {
                "id": manifest.id,
                "time": (manifest.snapshot_at or manifest.started_at).isoformat(timespec="seconds"),
                "size_bytes": manifest.size_bytes,
                "size": human_size(manifest.size_bytes),
                "status": manifest.status.value,
                "age": human_age(now - manifest.started_at),
                "verified": verification.outcome if verification else "not verified",
                "verified_at": verification.verified_at.isoformat(timespec="seconds") if verification else None,
                "error": manifest.error,
            }
        )
    create_table_artifact(
        key=artifact_key("backup-list", target.instance),
        table=[{k: v for k, v in row.items() if k not in ("size_bytes", "error")} for row in rows] or [{"id": "no backups"}],
        description=f"Backups of {database} in {store.url}/{target.instance}",
    )
    return {"database": database, "instance": target.instance, "store": store.url, "backups": rows}
