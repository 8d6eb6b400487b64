"""``backup-verify`` (runbook §6.2): prove a backup can be restored and holds what
it should: checksum, a test restore into a scratch database, integrity checks, size watch."""

from __future__ import annotations

import secrets
from collections.abc import Callable
from datetime import datetime, timezone
from typing import Any

from prefect import flow, get_run_logger
from prefect.artifacts import (
    create_markdown_artifact,
    create_progress_artifact,
    create_table_artifact,
    update_progress_artifact,
)
from prefect.runtime import flow_run
from prefect.states import Failed
from pydantic import BaseModel, Field, SecretStr

from runbook.backups import BackupStatus, Manifest, Verification, dump_key, human_size, select_backup, size_watch
from runbook.checks import CheckResult, checks_markdown, failed, outcome
from runbook.errors import ConfigError
from runbook.reports import artifact_key, conclude, expected_failures
from runbook.settings import RunbookSettings
from runbook.target import prepare
from runbook.times import maybe_team_time, show
from tasks import postgres
from tasks.backups import read_catalog_task, record_verification
from tasks.restore import Destination, RestorePipeline, RestoreServer, scratch_server
from tasks.store import BackupStore, open_backup_store
from tasks.validation import IntegrityWorker


class VerifyParameters(BaseModel):
    """Which backup to verify, and how deeply."""

    backup_id: str | None = Field(None, description="A backup id such as backup_20261129_073000. Unset: the latest DONE.")
    at: datetime | None = Field(
        None,
        description="Take the latest DONE backup at or before this time. Without an offset: in the team's timezone (RUNBOOK_TIMEZONE).",
    )
    deep: bool = Field(
        False,
        description="Also compare per-table content fingerprints (needs a backup made with fingerprints) "
        "and scan every key even where a restored constraint proves it.",
    )


PROGRESS = {"fetched": 30.0, "restored": 70.0}  # percent done after each step of the restore


def restore_and_check(
    store: BackupStore,
    manifest: Manifest,
    server: RestoreServer,
    settings: RunbookSettings,
    deep: bool,
    progress: Callable[[float], None],
    worker: IntegrityWorker,
) -> list[CheckResult]:
    """Fetch and check the dump, restore it into a scratch database (only when the
    dump matches its manifest), run the integrity checks, always drop it."""
    name = f"runbook_verify_{manifest.id.removeprefix('backup_')}_{secrets.token_hex(3)}"
    dsn = SecretStr(postgres.with_database(server.dsn.get_secret_value(), name))
    destination = Destination(server=server.dsn, name=name, dsn=dsn, scratch=True)
    pipeline = RestorePipeline(store, manifest, destination, settings, notify=lambda step: progress(PROGRESS[step]))
    try:
        checks = pipeline.restore()
        if pipeline.failure is None:
            checks += pipeline.check(worker, deep)
    finally:
        pipeline.discard()
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
    manifests, _ = read_catalog_task(store, target.instance)
    if params.backup_id and params.backup_id not in {m.id for m in manifests}:
        if dump_key(target.instance, params.backup_id) in store.list_keys(f"{target.instance}/"):
            return _manifest_missing(params, database, store.url, target.instance)
    manifest = select_backup(manifests, backup_id=params.backup_id, at_or_before=maybe_team_time(params.at, settings.timezone))
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

    # the checks' worker starts now, so Great Expectations is imported by the time
    # the dump is fetched and restored
    worker = IntegrityWorker.shared()
    server = scratch_server(settings, target.dsn)
    if server.note:
        logger.warning("Restoring on %s: set RUNBOOK_SCRATCH_DATABASE_URL to restore elsewhere", server.place)
    checks += restore_and_check(store, manifest, server, settings, params.deep, progress, worker)

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
        "restore_server": server.source,
        "notes": [server.note] if server.note else [],
    }
    create_markdown_artifact(
        key=artifact_key("backup-verify", target.instance),
        markdown=_report(manifest, checks, result, report["notes"], settings.timezone),
        description=f"Verification of {manifest.id}: {result}",
    )
    create_table_artifact(
        key=artifact_key("backup-verify-checks", target.instance),
        table=[check.model_dump() for check in checks],
        description=f"Checks of {manifest.id}",
    )
    where = f" (restored on {server.place})" if server.production else ""
    return conclude(checks, report, passed=f"{manifest.id} verified: {result}{where}", failed_as=f"{manifest.id} failed verification", limit=5)


def _manifest_missing(params: VerifyParameters, database: str, store_url: str, instance: str) -> Any:
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
        key=artifact_key("backup-verify", instance),
        markdown=f"# Verification of {params.backup_id}: failed\n\n" + checks_markdown([check]),
    )
    return Failed(message=f"{params.backup_id} failed verification: manifest ({check.detail})", data=report)


def _report(manifest: Manifest, checks: list[CheckResult], result: str, notes: list[str], zone: str) -> str:
    return "\n".join(
        [
            f"# Verification of {manifest.id}: {result}",
            "",
            *(f"- **{note}**" for note in notes),
            f"- database: `{manifest.database}`, snapshot {show(manifest.snapshot_at, zone) if manifest.snapshot_at else '-'}",
            f"- size: {human_size(manifest.size_bytes)}, sha256 `{manifest.sha256}`",
            f"- checks: {len(checks)} run, {len(failed(checks))} failed ({len(failed(checks, critical_only=True))} critical)",
            "",
            checks_markdown(checks),
        ]
    )
