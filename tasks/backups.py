"""Backups in the store: the catalog of manifests, making a backup, fetching one,
recording a verification, pruning.

A backup is three objects under ``<instance>/`` in the store (RUNBOOK_INSTANCE: one
folder per platform, so that two platforms whose databases share a name never touch
each other's backups): the dump
(``backup_YYYYMMDD_HHMMSS.dump.zst``), its manifest (``.manifest.json``) and, once
verified, the verification outcome (``.verification.json``). The manifest is
written STARTED before the dump, and DONE only after the dump is complete in the
store; every reader ignores backups that are not DONE.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import psycopg
from prefect import get_run_logger, task
from psycopg import sql
from prefect.cache_policies import NO_CACHE

from runbook.backups import (
    BackupStatus,
    Manifest,
    RetentionDecision,
    ServerIdentity,
    Verification,
    dump_key,
    ids_in,
    manifest_key,
    orphaned_keys,
    verification_key,
)
from runbook.dr import DrillRecord
from runbook.errors import BackupError, StoreError
from runbook.retry import RETRIES, backoff, retry_transient
from runbook.settings import BackupSettings
from tasks import postgres
from tasks.pgtools import BackupTimeLimit, DumpResult, FetchResult, PgTools, fetch_dump, stream_dump
from tasks.catalog import read_catalog  # noqa: F401 - re-exported: the flows read it from here
from tasks.store import BackupStore, get_json, put_json

LOCK_NAME = "runbook backup"


def first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


# --------------------------------------------------------------------------- catalog


@task(name="read-catalog", retries=RETRIES, retry_delay_seconds=backoff(), retry_condition_fn=retry_transient, cache_policy=NO_CACHE)
def read_catalog_task(store: BackupStore, instance: str) -> tuple[list[Manifest], dict[str, Verification]]:
    """Read the manifests and verification outcomes of one instance's backups."""
    get_run_logger().info("Reading the backup catalog of %s in %s", instance, store.url)
    return read_catalog(store, instance)


def clean_up_interrupted(store: BackupStore, instance: str) -> list[str]:
    """Under the backup lock nothing else is writing this instance's folder: a STARTED
    manifest there is a backup that was killed. Mark it FAILED and abort its unfinished
    upload (only under ``instance/``: another platform's uploads are its own)."""
    store.cleanup_incomplete(f"{instance}/")
    marked = []
    manifests, _ = read_catalog(store, instance)
    for manifest in manifests:
        if manifest.status is BackupStatus.STARTED:
            manifest.status = BackupStatus.FAILED
            manifest.error = "interrupted: the backup process stopped before finishing"
            manifest.finished_at = manifest.finished_at or datetime.now(timezone.utc)
            put_json(store, manifest_key(instance, manifest.id), manifest.model_dump(mode="json"))
            marked.append(manifest.id)
    return marked


# --------------------------------------------------------------------------- making a backup


def _count_in_snapshot(
    dsn: str,
    snapshot_id: str,
    tables: list[str],
    fingerprint: bool,
    out: dict[str, Any],
    connect_timeout: int,
    lock_wait_timeout_s: int | None = None,
    time_limit_s: float | None = None,
) -> None:
    """Row counts (and fingerprints) in the dump's snapshot, on a second connection,
    bounded like the dump: the same lock wait, and no statement past the time limit."""
    statement_timeout_s = max(1, int(time_limit_s)) if time_limit_s is not None else None
    try:
        with postgres.session(dsn, application="runbook backup counts", connect_timeout=connect_timeout, statement_timeout_s=statement_timeout_s, autocommit=True) as conn:
            if lock_wait_timeout_s:
                conn.execute(sql.SQL("SET lock_timeout = {}").format(sql.Literal(f"{int(lock_wait_timeout_s)}s")))
            conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
            conn.execute(sql.SQL("SET TRANSACTION SNAPSHOT {}").format(sql.Literal(snapshot_id)))
            out["counts"] = postgres.count_rows(conn, tables)
            out["security"] = postgres.security_posture(conn)
            if fingerprint:
                out["fingerprints"] = postgres.fingerprint_tables(conn, tables)
            conn.execute("COMMIT")
    except BaseException as err:  # noqa: BLE001 - handed to the caller
        out["error"] = err


def make_backup(
    dsn: str,
    store: BackupStore,
    tools: PgTools,
    info: postgres.ServerInfo,
    backup_settings: BackupSettings,
    *,
    backup_id_for: Callable[[list[str]], str],
    connect_timeout: int = 10,
    flow_run_id: str | None = None,
    on_progress: Callable[[int], None] | None = None,
    log: Callable[..., None] | None = None,
    deadline: float | None = None,
    clock: Callable[[], float] = time.monotonic,
    instance: str | None = None,
) -> Manifest:
    """Take the backup lock, export a snapshot, count rows in it, stream pg_dump of that
    snapshot into the store under ``instance/`` (default: the database name), and write
    the manifest DONE last (FAILED on any error). ``deadline`` (on ``clock``) bounds the
    dump and the counts: past it pg_dump is stopped and the manifest marked FAILED."""
    say = log or (lambda *args: None)

    def time_left() -> float | None:
        return None if deadline is None else deadline - clock()

    database = info.database
    prefix = instance or database
    with postgres.session(dsn, application="runbook backup", connect_timeout=connect_timeout, statement_timeout_s=None, autocommit=True) as conn:
        postgres.try_advisory_lock(conn, f"{LOCK_NAME} {database}")
        interrupted = clean_up_interrupted(store, prefix)
        if interrupted:
            say("Marked interrupted backups FAILED: %s", ", ".join(interrupted))
        taken = ids_in(store.list_keys(f"{prefix}/"))
        identity = ServerIdentity(**postgres.server_identity(conn, dsn))
        snapshot = postgres.export_snapshot(conn)
        manifest = Manifest(
            id=backup_id_for(taken),
            status=BackupStatus.STARTED,
            database=database,
            instance=prefix,
            server=identity,
            server_version=info.server_version,
            pg_dump_version=tools.version,
            pg_dump_build=tools.version_line,
            compression=f"zstd:{backup_settings.zstd_level}",
            started_at=datetime.now(timezone.utc),
            snapshot_at=snapshot.taken_at,
            flow_run_id=flow_run_id,
        )
        put_json(store, manifest_key(prefix, manifest.id), manifest.model_dump(mode="json"))
        say("Backup %s of %s started (snapshot %s)", manifest.id, database, snapshot.snapshot_id)
        try:
            counted: dict[str, Any] = {}
            counter = threading.Thread(
                target=_count_in_snapshot,
                args=(dsn, snapshot.snapshot_id, snapshot.tables, backup_settings.fingerprint, counted, connect_timeout),
                kwargs={"lock_wait_timeout_s": backup_settings.lock_wait_timeout_seconds, "time_limit_s": time_left()},
                daemon=True,
            )
            counter.start()
            writer = store.open_writer(dump_key(prefix, manifest.id))
            try:
                result: DumpResult = stream_dump(
                    tools,
                    dsn,
                    writer,
                    snapshot_id=snapshot.snapshot_id,
                    zstd_level=backup_settings.zstd_level,
                    zstd_threads=backup_settings.zstd_threads,
                    on_progress=on_progress,
                    lock_wait_timeout_s=backup_settings.lock_wait_timeout_seconds,
                    time_limit_s=time_left(),
                )
                left = time_left()
                counter.join(timeout=None if left is None else max(left, 0.0))
                if counter.is_alive():
                    raise BackupTimeLimit("counting rows in the snapshot did not finish within the backup's time limit")
                if "error" in counted:
                    raise BackupError(f"counting rows in the snapshot failed: {first_line(counted['error'])}")
                writer.commit()
            except BaseException:
                writer.abort()
                raise
            manifest.tables = counted["counts"]
            manifest.fingerprints = counted.get("fingerprints")
            manifest.security = counted.get("security")
            manifest.size_bytes = result.size_bytes
            manifest.raw_bytes = result.raw_bytes
            manifest.sha256 = result.sha256
            manifest.finished_at = datetime.now(timezone.utc)
            manifest.status = BackupStatus.DONE
            put_json(store, manifest_key(prefix, manifest.id), manifest.model_dump(mode="json"))
        except BaseException as err:
            if isinstance(err, BackupTimeLimit):
                err = BackupTimeLimit(
                    f"{err} ({backup_settings.timeout_seconds} s, RUNBOOK_BACKUP__TIMEOUT_SECONDS); "
                    "look for what slowed it (locks, load, the store's throughput) or raise the limit, "
                    "keeping it below the schedule's interval"
                )
            manifest.status = BackupStatus.FAILED
            manifest.error = first_line(err) if not isinstance(err, KeyboardInterrupt) else "interrupted"
            manifest.finished_at = datetime.now(timezone.utc)
            try:
                put_json(store, manifest_key(prefix, manifest.id), manifest.model_dump(mode="json"))
            except Exception:  # noqa: BLE001 - the next backup marks a STARTED manifest FAILED
                pass
            if isinstance(err, BackupTimeLimit):
                raise err from None
            raise
        finally:
            if not conn.closed:
                try:
                    conn.execute("ROLLBACK")
                except psycopg.Error:  # the session is gone; closing it ends the transaction
                    pass
    return manifest


# --------------------------------------------------------------------------- fetch, record, prune


@task(name="fetch-backup", retries=RETRIES, retry_delay_seconds=backoff(), retry_condition_fn=retry_transient, cache_policy=NO_CACHE)
def fetch_backup(store: BackupStore, manifest: Manifest, target: Path) -> FetchResult:
    """Download a dump, hashing the stored bytes and decompressing it to ``target``."""
    get_run_logger().info("Fetching %s from %s", manifest.dump_key, store.url)
    return fetch_dump(store.iter_chunks(manifest.dump_key), target)


@task(name="record-verification", retries=RETRIES, retry_delay_seconds=backoff(), retry_condition_fn=retry_transient, cache_policy=NO_CACHE)
def record_verification(store: BackupStore, manifest: Manifest, verification: Verification) -> None:
    """Store the verification outcome beside the manifest, for backup-list and retention."""
    get_run_logger().info("Recording verification of %s: %s", manifest.id, verification.outcome)
    put_json(store, verification_key(manifest.prefix, manifest.id), verification.model_dump(mode="json"))


def prune(
    store: BackupStore, instance: str, decisions: list[RetentionDecision], *, dry_run: bool
) -> tuple[list[str], list[str]]:
    """Delete the backups the plan marks for removal (manifest first, so no reader
    sees a DONE backup whose dump is gone), and objects left without a manifest.
    Returns (backup ids, orphaned keys): removed, or that would be with ``dry_run``."""
    doomed = [d.backup_id for d in decisions if not d.keep]
    orphans = orphaned_keys(store.list_keys(f"{instance}/"))
    if dry_run:
        return doomed, orphans
    for backup_id in doomed:
        store.delete(manifest_key(instance, backup_id))
        store.delete(dump_key(instance, backup_id))
        store.delete(verification_key(instance, backup_id))
    for key in orphans:
        store.delete(key)
    return doomed, orphans


# --------------------------------------------------------------------------- drill records

DRILLS = "drills"


def drill_key(instance: str, run_id: str) -> str:
    return f"{instance}/{DRILLS}/{run_id}.json"


@task(name="read-drill-history", retries=RETRIES, retry_delay_seconds=backoff(), retry_condition_fn=retry_transient, cache_policy=NO_CACHE)
def read_drill_history(store: BackupStore, instance: str, limit: int) -> list[DrillRecord]:
    """The last ``limit`` drills and recoveries of ``instance``, newest first."""
    keys = sorted(k for k in store.list_keys(f"{instance}/{DRILLS}/") if k.endswith(".json"))
    records: list[DrillRecord] = []
    for key in keys:
        try:
            records.append(DrillRecord.model_validate(get_json(store, key)))
        except (ValueError, StoreError):
            continue  # an unreadable record is history lost, not a reason to fail a drill
    return sorted(records, key=lambda r: r.started_at, reverse=True)[:limit]


@task(name="record-drill", retries=RETRIES, retry_delay_seconds=backoff(), retry_condition_fn=retry_transient, cache_policy=NO_CACHE)
def record_drill(store: BackupStore, record: DrillRecord) -> None:
    """Keep what this run measured beside the backups, for the next run to compare with."""
    put_json(store, drill_key(record.instance or record.database, record.run_id), record.model_dump(mode="json"))
