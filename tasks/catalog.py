"""The backup catalog in the store, read without Prefect: what ``runbook backup-list``
answers from directly (no flow run, no Prefect server, no Prefect import).
tasks/backups.py wraps it in the ``read-catalog`` task for the flows."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from runbook.backups import Manifest, Verification, human_age, human_size, ids_in, manifest_key, verification_key
from runbook.errors import StoreError
from runbook.settings import RunbookSettings
from runbook.target import Target
from tasks.store import BackupStore, check_store, get_json, open_store


def read_catalog(store: BackupStore, instance: str) -> tuple[list[Manifest], dict[str, Verification]]:
    """Every manifest under ``instance/`` (oldest first) and the verifications recorded."""
    keys = store.list_keys(f"{instance}/")
    manifests: list[Manifest] = []
    for backup_id in ids_in(keys):
        try:
            manifest = Manifest.model_validate(get_json(store, manifest_key(instance, backup_id)))
        except (ValueError, StoreError):
            continue  # an unreadable manifest is not a usable backup
        # an older manifest has no instance: it belongs where it was found
        manifest.instance = manifest.instance or instance
        manifests.append(manifest)
    verifications: dict[str, Verification] = {}
    present = set(keys)
    for manifest in manifests:
        key = verification_key(instance, manifest.id)
        if key in present:
            try:
                verifications[manifest.id] = Verification.model_validate(get_json(store, key))
            except (ValueError, StoreError):
                continue
    return manifests, verifications


def listing(
    manifests: list[Manifest], verifications: dict[str, Verification], now: datetime, *, database: str, instance: str, store_url: str
) -> dict[str, Any]:
    """backup-list's result: every backup, newest first, with its verification outcome."""
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
    return {"database": database, "instance": instance, "store": store_url, "backups": rows}


def list_backups(settings: RunbookSettings, target: Target, now: datetime) -> dict[str, Any]:
    """backup-list without a flow run: open the store, read the catalog, list it."""
    from psycopg.conninfo import conninfo_to_dict  # not tasks.postgres: that package imports Prefect

    database = str(conninfo_to_dict(target.dsn).get("dbname") or "postgres")  # checked when the settings loaded
    store = open_store(target.store_url, s3_endpoint_url=settings.s3_endpoint_url, part_size_mb=settings.backup.part_size_mb)
    check_store(store)
    manifests, verifications = read_catalog(store, target.instance)
    return listing(manifests, verifications, now, database=database, instance=target.instance, store_url=store.url)
