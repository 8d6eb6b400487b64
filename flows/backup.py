"""``backup`` (runbook §6.1): a checksummed, consistent dump of the platform's
database in the backup store, every hour for the 1-hour RPO of §6.3, then retention."""

from __future__ import annotations

import contextvars
import threading
import time
from datetime import datetime, timezone
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact, create_progress_artifact, update_progress_artifact
from prefect.cache_policies import NO_CACHE
from prefect.runtime import flow_run
from pydantic import BaseModel, Field

from runbook.backups import Manifest, human_size, next_free_id
from runbook.checks import CheckResult, checks_markdown
from runbook.reports import artifact_key, expected_failures
from runbook.retry import RETRIES, backoff, retry_transient
from runbook.settings import RunbookSettings
from runbook.target import prepare
from tasks import backups as backup_tasks
from tasks.pgtools import PgTools, choose_pg_tools
from tasks.postgres import ServerInfo, inspect_database
from tasks.runs import current_deployment_run, report_collisions
from tasks.slots import database_slot
from tasks.store import BackupStore, open_backup_store


class BackupParameters(BaseModel):
    """Options of one backup run."""

    fingerprint: bool | None = Field(
        None, description="Also record per-table content fingerprints (deep verification). Unset: the setting."
    )
    prune: bool = Field(True, description="Apply the retention policy after a successful backup.")
    prune_dry_run: bool = Field(False, description="Only report what retention would remove.")


@task(name="choose-pg-tools", cache_policy=NO_CACHE)
def choose_tools(settings: RunbookSettings, info: ServerInfo) -> PgTools:
    """Pick a pg_dump whose major version is >= the server's (checked before anything else),
    the distribution's rather than the bundled one at the same major version."""
    tools = choose_pg_tools(info.server_major, settings.pg_bin_dir)
    get_run_logger().info(
        "Using pg_dump %s from %s%s (server %s)",
        tools.version,
        tools.bin_dir,
        " (bundled with pgserver)" if tools.bundled else "",
        info.server_version,
    )
    return tools


class DumpProgress:
    """The dump's progress artifact, updated from a side thread every few seconds so
    that the dump's hot loop never waits on the Prefect API."""

    def __init__(self, info: ServerInfo, artifact_id: Any, every_s: float = 2.0) -> None:
        self.artifact_id = artifact_id
        self.estimate = max(info.size_bytes // 2, 1)  # a dump is roughly half the database
        self.raw = 0
        self._stop = threading.Event()
        self._every_s = every_s
        context = contextvars.copy_context()  # the run's Prefect client settings
        self._thread = threading.Thread(target=context.run, args=(self._report,), name="dump-progress", daemon=True)
        self._thread.start()

    def seen(self, raw: int) -> None:
        self.raw = raw

    def _report(self) -> None:
        shown = 0.0
        while not self._stop.wait(self._every_s):
            percent = min(99.0, self.raw * 100.0 / self.estimate)
            if percent > shown:
                shown = percent
                update_progress_artifact(self.artifact_id, percent)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)


@task(
    name="dump-database",
    retries=RETRIES,
    retry_delay_seconds=backoff(),
    retry_condition_fn=retry_transient,
    cache_policy=NO_CACHE,
)
def dump_database(
    dsn: str,
    store: BackupStore,
    tools: PgTools,
    info: ServerInfo,
    settings: RunbookSettings,
    fingerprint: bool,
    deadline: float | None = None,
    instance: str | None = None,
) -> Manifest:
    """Lock, snapshot, count, stream pg_dump through zstd into the store, write the manifest.
    A transient store or connection failure fails this attempt (its manifest FAILED, its
    upload aborted) and the task retries as a new backup, within the same ``deadline``
    (``time.monotonic()``): past it pg_dump is stopped and the backup is FAILED."""
    logger = get_run_logger()
    backup_settings = settings.backup.model_copy(update={"fingerprint": fingerprint})
    progress = DumpProgress(info, create_progress_artifact(progress=0.0, description=f"Dump of {info.database}"))
    logger.info("Dumping %s into %s/%s", info.database, store.url, instance or info.database)
    started = datetime.now(timezone.utc)
    try:
        manifest = backup_tasks.make_backup(
            dsn,
            store,
            tools,
            info,
            backup_settings,
            backup_id_for=lambda taken: next_free_id(started, taken),
            connect_timeout=settings.connect_timeout,
            flow_run_id=str(flow_run.get_id() or ""),
            on_progress=progress.seen,
            log=logger.info,
            deadline=deadline,
            instance=instance,
        )
    finally:
        progress.stop()
    update_progress_artifact(progress.artifact_id, 100.0)
    logger.info("Backup %s DONE: %s, sha256 %s", manifest.id, human_size(manifest.size_bytes), manifest.sha256)
    return manifest


@flow(name="backup")
@expected_failures
def backup(params: BackupParameters = BackupParameters()) -> dict[str, Any]:
    """Back up the platform's database (§6.1): pg_dump of one consistent snapshot,
    zstd-compressed and streamed to the backup store with its sha256, a manifest with
    exact row counts of that snapshot, then the retention policy (§6.3: hourly, RPO 1 h)."""
    settings, target = prepare()
    # One limit for the whole backup, retries included, below the hourly schedule's
    # interval: a stuck dump must end before the next run is due, or the deployment's
    # concurrency limit (CANCEL_NEW) cancels that run and every one after it.
    deadline = time.monotonic() + settings.backup.timeout_seconds
    # ...and when that happened before, this run says so (a warning, in the log and report).
    deployed = current_deployment_run()
    collisions = report_collisions(*deployed, "backup") if deployed else None
    store = open_backup_store(target.store_url, settings.s3_endpoint_url, settings.backup.part_size_mb)
    # one heavy job at a time on this database; the wait counts against the deadline
    wait = max(1.0, min(settings.heavy_jobs.wait_seconds, deadline - time.monotonic()))
    with database_slot(target.instance, job="backup", wait_seconds=wait):
        info = inspect_database(target.dsn, settings.connect_timeout)
        tools = choose_tools(settings, info)
        fingerprint = settings.backup.fingerprint if params.fingerprint is None else params.fingerprint
        # Prefect's own task timeout backs the deadline up, should the dump's watchdog fail.
        dump = dump_database.with_options(timeout_seconds=settings.backup.timeout_seconds + 60)
        manifest = dump(target.dsn, store, tools, info, settings, fingerprint, deadline, target.instance)

    retention: dict[str, Any] | None = None
    if params.prune:
        from flows.backup_prune import apply_retention

        retention = apply_retention(settings, store, info.database, dry_run=params.prune_dry_run, instance=target.instance)

    summary = {
        "backup_id": manifest.id,
        "status": manifest.status.value,
        "database": manifest.database,
        "instance": manifest.instance,
        "store": store.url,
        "size_bytes": manifest.size_bytes,
        "raw_bytes": manifest.raw_bytes,
        "sha256": manifest.sha256,
        "snapshot_at": manifest.snapshot_at.isoformat() if manifest.snapshot_at else None,
        "seconds": round(((manifest.finished_at or manifest.started_at) - manifest.started_at).total_seconds(), 2),
        "tables": manifest.tables,
        "fingerprints": bool(manifest.fingerprints),
        "retention": retention,
        "checks": [collisions.model_dump()] if collisions else [],
    }
    create_markdown_artifact(
        key=artifact_key("backup", target.instance),
        markdown=_report(manifest, store.url, retention, [collisions] if collisions else []),
        description=f"Backup {manifest.id} of {info.database}",
    )
    return summary


def _report(manifest: Manifest, store_url: str, retention: dict[str, Any] | None, checks: list[CheckResult]) -> str:
    lines = [
        f"# Backup {manifest.id}: {manifest.status.value}",
        "",
        f"- database: `{manifest.database}` (PostgreSQL {manifest.server_version}, pg_dump {manifest.pg_dump_version})",
        f"- store: `{store_url}`, instance `{manifest.instance}`",
        f"- snapshot: {manifest.snapshot_at.isoformat() if manifest.snapshot_at else '-'}",
        f"- size: {human_size(manifest.size_bytes)} compressed, {human_size(manifest.raw_bytes)} raw ({manifest.compression})",
        f"- sha256: `{manifest.sha256}`",
        "",
        "| table | rows |",
        "|---|---:|",
    ]
    lines += [f"| {table} | {rows:,} |" for table, rows in manifest.tables.items()]
    if retention:
        removed = retention["removed"] or ["none"]
        verb = "would remove" if retention["dry_run"] else "removed"
        lines += ["", f"Retention {verb}: {', '.join(removed)} (kept {retention['kept']})"]
    if checks:
        lines += ["", "## Checks", "", checks_markdown(checks)]
    return "\n".join(lines)

