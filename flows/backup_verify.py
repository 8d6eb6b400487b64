"""``backup-verify`` (runbook §6.2): prove a backup can be restored and holds what
it should: checksum, a test restore into a scratch database, integrity checks, size watch."""

from __future__ import annotations

import secrets
import tempfile
from datetime import datetime, timezone
from collections.abc import Callable
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.artifacts import (
    create_markdown_artifact,
    create_progress_artifact,
    create_table_artifact,
    update_progress_artifact,
)
from prefect.cache_policies import NO_CACHE
from prefect.runtime import flow_run
from prefect.states import Completed, Failed
from pydantic import BaseModel, Field

from runbook.backups import BackupStatus, Manifest, Verification, dump_key, human_size, select_backup, size_watch
from runbook.checks import CheckResult, checks_markdown, failed, outcome
from runbook.errors import ConfigError
from runbook.reports import artifact_key, expected_failures
from runbook.retry import RETRIES, backoff, retry_transient
from runbook.settings import RunbookSettings
from runbook.target import prepare
from tasks import postgres
from tasks.backups import fetch_backup, first_line, read_catalog_task, record_verification
from tasks.pgtools import DumpUnreadable, FetchResult, PgTools, choose_pg_tools, restore_dump
from tasks.store import open_backup_store
from tasks.validation import IntegrityPlan, IntegrityWorker


class VerifyParameters(BaseModel):
    """Which backup to verify, and how deeply."""

    backup_id: str | None = Field(None, description="A backup id such as backup_20261129_073000. Unset: the latest DONE.")
    at: datetime | None = Field(None, description="Take the latest DONE backup at or before this time.")
    deep: bool = Field(
        False,
        description="Also compare per-table content fingerprints (needs a backup made with fingerprints) "
        "and scan every key even where a restored constraint proves it.",
    )


def checksum_checks(manifest: Manifest, fetched: FetchResult, problem: str | None) -> list[CheckResult]:
    """Size and sha256 of the stored dump against the manifest, and whether it decompresses."""
    checks = [
        CheckResult(
            name="size",
            ok=fetched.size_bytes == manifest.size_bytes,
            detail=f"{fetched.size_bytes:,} bytes in the store, {manifest.size_bytes or 0:,} in the manifest",
        ),
        CheckResult(
            name="sha256",
            ok=fetched.sha256 == manifest.sha256,
            detail=f"store {fetched.sha256[:16]}..., manifest {(manifest.sha256 or '')[:16]}...",
        ),
    ]
    checks.append(CheckResult(name="decompress", ok=problem is None, detail=problem or f"{human_size(fetched.raw_bytes)} dump"))
    return checks


def fingerprint_checks(expected: dict[str, str], actual: dict[str, str]) -> list[CheckResult]:
    return [
        CheckResult(
            name=f"fingerprint:{table}",
            ok=actual.get(table) == value,
            detail="identical content" if actual.get(table) == value else f"expected {value}, restored {actual.get(table, 'missing')}",
        )
        for table, value in expected.items()
    ]


@task(name="create-scratch-database", retries=RETRIES, retry_delay_seconds=backoff(), retry_condition_fn=retry_transient, cache_policy=NO_CACHE)
def create_scratch_database(dsn: str, name: str, connect_timeout: int) -> str:
    """Create an empty scratch database on the source's server and return its DSN."""
    get_run_logger().info("Creating scratch database %s", name)
    postgres.create_database(dsn, name, connect_timeout=connect_timeout)
    return postgres.with_database(dsn, name)


@task(name="restore-backup", cache_policy=NO_CACHE, timeout_seconds=6 * 3600)
def restore_backup(tools: PgTools, dump_file: Path, scratch_dsn: str, jobs: int) -> None:
    """pg_restore the fetched dump into the scratch database."""
    get_run_logger().info("Restoring %s with pg_restore -j %d", dump_file.name, jobs)
    restore_dump(tools, dump_file, scratch_dsn, jobs=jobs)


@task(name="check-integrity", cache_policy=NO_CACHE)
def check_integrity(
    scratch_dsn: str, manifest: Manifest, settings: RunbookSettings, deep: bool, worker: IntegrityWorker
) -> list[CheckResult]:
    """Great Expectations suites in the restored database, and fingerprints when deep."""
    with postgres.session(scratch_dsn, application="runbook verify", connect_timeout=settings.connect_timeout, statement_timeout_s=settings.statement_timeout) as conn:
        shapes = postgres.table_shapes(conn)
        keys = postgres.foreign_keys(conn)
        fingerprints = postgres.fingerprint_tables(conn, list(manifest.fingerprints or {})) if deep else {}
    plan = IntegrityPlan(
        expected_rows=manifest.tables,
        shapes=shapes,
        foreign_keys=keys,
        snapshot_at=manifest.snapshot_at,
        future_time_columns=settings.verify.future_time_columns,
        thorough=deep or settings.verify.thorough,
    )
    checks = worker.run(scratch_dsn, plan)
    extra = sorted(set(shapes) - set(manifest.tables))
    if extra:
        checks.append(CheckResult(name="unexpected-tables", ok=False, detail=", ".join(extra), critical=False))
    if deep:
        checks += fingerprint_checks(manifest.fingerprints or {}, fingerprints)
    return checks


@task(name="drop-scratch-database", retries=RETRIES, retry_delay_seconds=backoff(), retry_condition_fn=retry_transient, cache_policy=NO_CACHE)
def drop_scratch_database(dsn: str, name: str, connect_timeout: int) -> None:
    """Drop the scratch database (also after a failed step)."""
    get_run_logger().info("Dropping scratch database %s", name)
    postgres.drop_database(dsn, name, connect_timeout=connect_timeout)


def restore_and_check(
    settings: RunbookSettings,
    dsn: str,
    manifest: Manifest,
    dump_file: Path,
    deep: bool,
    progress: Callable[[float], None],
    worker: IntegrityWorker,
) -> list[CheckResult]:
    """Restore into a scratch database, run the integrity checks, always drop it."""
    info = postgres.inspect_database(dsn, settings.connect_timeout)
    tools = choose_pg_tools(info.server_major, settings.pg_bin_dir)
    name = f"runbook_verify_{manifest.id.removeprefix('backup_')}_{secrets.token_hex(3)}"
    checks: list[CheckResult] = []
    scratch_dsn = create_scratch_database(dsn, name, settings.connect_timeout)
    try:
        try:
            restore_backup(tools, dump_file, scratch_dsn, settings.backup.restore_jobs)
        except Exception as err:  # noqa: BLE001 - becomes the failed check
            return [CheckResult(name="restore", ok=False, detail=first_line(err))]
        checks.append(CheckResult(name="restore", ok=True, detail=f"restored into scratch database {name}"))
        progress(70.0)
        checks += check_integrity(scratch_dsn, manifest, settings, deep, worker)
    finally:
        drop_scratch_database(dsn, name, settings.connect_timeout)
    return checks


@flow(name="backup-verify")
@expected_failures
def backup_verify(params: VerifyParameters = VerifyParameters()) -> Any:
    """Verify a backup (§6.2): re-read it from the store and check its sha256 and size,
    restore it into a scratch database (dropped afterwards), check every table's row
    count, primary keys, foreign keys and freshness with Great Expectations, compare
    content fingerprints in deep mode, and watch the size. Fails if a critical check fails."""
    logger = get_run_logger()
    settings, target = prepare()
    store = open_backup_store(target.store_url, settings.s3_endpoint_url, settings.backup.part_size_mb)
    database = postgres.database_name(target.dsn)
    manifests, _ = read_catalog_task(store, database)
    if params.backup_id and params.backup_id not in {m.id for m in manifests}:
        if dump_key(database, params.backup_id) in store.list_keys(f"{database}/"):
            return _manifest_missing(params, database, store.url)
    manifest = select_backup(manifests, backup_id=params.backup_id, at_or_before=params.at)
    if params.deep and not manifest.fingerprints:
        raise ConfigError(
            f"deep verification needs fingerprints, and {manifest.id} has none: "
            "make backups with fingerprint=true (RUNBOOK_BACKUP__FINGERPRINT=true)"
        )
    logger.info("Verifying %s of %s (%s)", manifest.id, database, human_size(manifest.size_bytes))

    checks: list[CheckResult] = []
    progress_id = create_progress_artifact(progress=0.0, description=f"Verification of {manifest.id}")

    def progress(percent: float) -> None:
        update_progress_artifact(progress_id, percent)

    work_dir = settings.verify.work_dir
    if work_dir is not None:
        work_dir.mkdir(parents=True, exist_ok=True)
    # the checks' worker starts now, so Great Expectations is imported by the time
    # the dump is fetched and restored
    worker = IntegrityWorker.shared()
    with tempfile.TemporaryDirectory(prefix="runbook-verify-", dir=work_dir) as scratch:
        dump_file = Path(scratch) / f"{manifest.id}.dump"
        problem = None
        try:
            fetched = fetch_backup(store, manifest, dump_file)
        except DumpUnreadable as err:
            fetched, problem = err.result, str(err)
        checks += checksum_checks(manifest, fetched, problem)
        progress(30.0)
        if failed(checks, critical_only=True):
            checks.append(CheckResult(name="restore", ok=False, detail="not attempted: the stored dump does not match its manifest"))
        else:
            checks += restore_and_check(settings, target.dsn, manifest, dump_file, params.deep, progress, worker)

    previous = [m.size_bytes for m in manifests if m.status is BackupStatus.DONE and m.id < manifest.id and m.size_bytes]
    checks.append(size_watch(manifest.size_bytes or 0, previous, settings.verify.size_watch))

    progress(100.0)
    result = outcome(checks)
    verification = Verification(
        backup_id=manifest.id,
        verified_at=datetime.now(timezone.utc),
        outcome=result,
        deep=params.deep,
        failed_checks=[check.name for check in failed(checks)],
        flow_run_id=str(flow_run.get_id() or ""),
    )
    record_verification(store, manifest, verification)
    report = {
        "backup_id": manifest.id,
        "database": database,
        "store": store.url,
        "outcome": result,
        "deep": params.deep,
        "checks": [check.model_dump() for check in checks],
        "failed": verification.failed_checks,
    }
    create_markdown_artifact(
        key=artifact_key("backup-verify", database),
        markdown=_report(manifest, checks, result),
        description=f"Verification of {manifest.id}: {result}",
    )
    create_table_artifact(
        key=artifact_key("backup-verify-checks", database),
        table=[check.model_dump() for check in checks],
        description=f"Checks of {manifest.id}",
    )
    critical = failed(checks, critical_only=True)
    if critical:
        message = f"{manifest.id} failed verification: " + ", ".join(f"{c.name} ({c.detail})" for c in critical[:5])
        logger.error(message)
        return Failed(message=message, data=report)
    return Completed(message=f"{manifest.id} verified: {result}", data=report)


def _manifest_missing(params: VerifyParameters, database: str, store_url: str) -> Any:
    """A dump whose manifest is gone cannot be verified: a failed ``manifest`` check."""
    check = CheckResult(name="manifest", ok=False, detail=f"{params.backup_id} has a dump but no manifest")
    report = {
        "backup_id": params.backup_id,
        "database": database,
        "store": store_url,
        "outcome": "failed",
        "deep": params.deep,
        "checks": [check.model_dump()],
        "failed": [check.name],
    }
    create_markdown_artifact(
        key=artifact_key("backup-verify", database),
        markdown=f"# Verification of {params.backup_id}: failed\n\n" + checks_markdown([check]),
    )
    return Failed(message=f"{params.backup_id} failed verification: manifest ({check.detail})", data=report)


def _report(manifest: Manifest, checks: list[CheckResult], result: str) -> str:
    return "\n".join(
        [
            f"# Verification of {manifest.id}: {result}",
            "",
            f"- database: `{manifest.database}`, snapshot {manifest.snapshot_at.isoformat() if manifest.snapshot_at else '-'}",
            f"- size: {human_size(manifest.size_bytes)}, sha256 `{manifest.sha256}`",
            f"- checks: {len(checks)} run, {len(failed(checks))} failed ({len(failed(checks, critical_only=True))} critical)",
            "",
            checks_markdown(checks),
        ]
    )
