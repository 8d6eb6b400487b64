"""Restoring a backup into a database and checking what came back: the steps that
backup-verify and disaster-recovery share (PostgreSQL side).

Both go through one ``RestorePipeline`` (prepare, fetch and check, restore, check), so
a database is only ever moved aside once its backup has been fetched and proven
readable, and a restore that fails after the move puts the original back."""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE
from pydantic import SecretStr

from runbook.backups import Manifest, human_size
from runbook.checks import CheckResult, describe, failed
from runbook.schema import SecurityPosture
from runbook.retry import RETRIES, backoff, retry_transient
from runbook.settings import RunbookSettings
from tasks import postgres
from tasks.backups import fetch_backup, first_line
from tasks.pgtools import DumpUnreadable, FetchResult, PgTools, choose_pg_tools, restore_dump
from tasks.store import BackupStore
from tasks.validation import IntegrityPlan, IntegrityTimeout, IntegrityWorker


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


def fetch_and_check(store: BackupStore, manifest: Manifest, dump_file: Path) -> list[CheckResult]:
    """Fetch a dump to ``dump_file`` and check its size, sha256 and decompression
    against the manifest (an unreadable dump is a failed check, not an error)."""
    problem = None
    try:
        fetched = fetch_backup(store, manifest, dump_file)
    except DumpUnreadable as err:
        fetched, problem = err.result, str(err)
    return checksum_checks(manifest, fetched, problem)


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
    """Create an empty scratch database on the server of ``dsn`` and return its DSN."""
    get_run_logger().info("Creating scratch database %s", name)
    postgres.create_database(dsn, name, connect_timeout=connect_timeout)
    return postgres.with_database(dsn, name)


@task(name="restore-backup", cache_policy=NO_CACHE, timeout_seconds=6 * 3600)
def restore_backup(tools: PgTools, dump_file: Path, target_dsn: str, jobs: int) -> None:
    """pg_restore the fetched dump into the target database."""
    get_run_logger().info("Restoring %s with pg_restore -j %d", dump_file.name, jobs)
    restore_dump(tools, dump_file, target_dsn, jobs=jobs)


@task(name="check-integrity", cache_policy=NO_CACHE)
def check_integrity(
    restored_dsn: str, manifest: Manifest, settings: RunbookSettings, deep: bool, worker: IntegrityWorker
) -> list[CheckResult]:
    """Great Expectations suites in the restored database, and fingerprints when deep;
    each query within RUNBOOK_STATEMENT_TIMEOUT and all of them within
    RUNBOOK_VERIFY__INTEGRITY_TIMEOUT_SECONDS (then a failed check)."""
    with postgres.session(restored_dsn, application="runbook verify", connect_timeout=settings.connect_timeout, statement_timeout_s=settings.statement_timeout) as conn:
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
    try:
        checks = worker.run(
            restored_dsn, plan, statement_timeout_s=settings.statement_timeout, timeout_s=settings.verify.integrity_timeout_seconds
        )
    except IntegrityTimeout as err:
        return [CheckResult(name="integrity-checks", ok=False, detail=f"{err}: raise RUNBOOK_VERIFY__INTEGRITY_TIMEOUT_SECONDS if the data has grown")]
    extra = sorted(set(shapes) - set(manifest.tables))
    if extra:
        checks.append(CheckResult(name="unexpected-tables", ok=False, detail=", ".join(extra), critical=False))
    if deep:
        checks += fingerprint_checks(manifest.fingerprints or {}, fingerprints)
    return checks


@task(name="drop-scratch-database", retries=RETRIES, retry_delay_seconds=backoff(), retry_condition_fn=retry_transient, cache_policy=NO_CACHE)
def drop_scratch_database(dsn: str, name: str, connect_timeout: int) -> None:
    """Drop a scratch database (also after a failed step)."""
    get_run_logger().info("Dropping scratch database %s", name)
    postgres.drop_database(dsn, name, connect_timeout=connect_timeout)


@task(name="check-health", retries=RETRIES, retry_delay_seconds=backoff(), retry_condition_fn=retry_transient, cache_policy=NO_CACHE)
def check_health(dsn: str, connect_timeout: int) -> list[CheckResult]:
    """The restored database answers, takes writes and is not a read-only standby."""
    started = time.perf_counter()
    with postgres.session(dsn, application="runbook health", connect_timeout=connect_timeout, statement_timeout_s=30) as conn:
        row = conn.execute("SELECT pg_is_in_recovery(), current_setting('transaction_read_only'), version()").fetchone()
    assert row is not None
    elapsed_ms = (time.perf_counter() - started) * 1000
    writable = not row[0] and row[1] == "off"
    return [
        CheckResult(name="health:connect", ok=True, detail=f"connected and answered in {elapsed_ms:.0f} ms"),
        CheckResult(
            name="health:writable",
            ok=writable,
            detail="accepts writes" if writable else "read-only (in recovery or default_transaction_read_only)",
        ),
    ]


@task(name="read-security", retries=RETRIES, retry_delay_seconds=backoff(), retry_condition_fn=retry_transient, cache_policy=NO_CACHE)
def read_security(dsn: str, connect_timeout: int, roles: list[str] | None = None) -> tuple[SecurityPosture, set[str]]:
    """Row-level security, policies and grants of a database, and which of ``roles`` exist on its server."""
    with postgres.session(dsn, application="runbook security", connect_timeout=connect_timeout, statement_timeout_s=60) as conn:
        posture = postgres.security_posture(conn)
        present = postgres.existing_roles(conn, roles or [])
    return posture, present


@task(name="analyze-database", retries=RETRIES, retry_delay_seconds=backoff(), retry_condition_fn=retry_transient, cache_policy=NO_CACHE)
def analyze_database(dsn: str, connect_timeout: int) -> None:
    """ANALYZE the restored database: pg_restore leaves no planner statistics, and
    without them the platform's queries (and the smoke reads' latencies) are off."""
    get_run_logger().info("ANALYZE of the restored database")
    with postgres.session(dsn, application="runbook analyze", connect_timeout=connect_timeout, statement_timeout_s=None, autocommit=True) as conn:
        conn.execute("ANALYZE")


@task(name="inspect-recovery-target", retries=RETRIES, retry_delay_seconds=backoff(), retry_condition_fn=retry_transient, cache_policy=NO_CACHE)
def inspect_recovery_target(server_dsn: str, target_dsn: str, connect_timeout: int) -> int | None:
    """How many user tables the recovery target holds; None when it does not exist."""
    name = postgres.database_name(target_dsn)
    if not postgres.database_exists(server_dsn, name, connect_timeout=connect_timeout):
        get_run_logger().info("Recovery target %s does not exist yet", name)
        return None
    with postgres.session(target_dsn, application="runbook recovery", connect_timeout=connect_timeout, statement_timeout_s=60) as conn:
        tables = postgres.user_table_count(conn)
    get_run_logger().info("Recovery target %s holds %d tables", name, tables)
    return tables


@task(name="move-database-aside", cache_policy=NO_CACHE)
def move_database_aside(server_dsn: str, name: str, new_name: str, connect_timeout: int) -> None:
    """Rename a database out of the way (its sessions are ended first); nothing is dropped."""
    get_run_logger().warning("Moving database %s aside as %s", name, new_name)
    postgres.rename_database(server_dsn, name, new_name, connect_timeout=connect_timeout)


# --------------------------------------------------------------------------- where scratch restores go


@dataclass(frozen=True)
class RestoreServer:
    """The server a scratch restore goes to, reached through a database that exists on
    it, and which setting chose it: ``scratch`` (RUNBOOK_SCRATCH_DATABASE_URL),
    ``recovery`` (RUNBOOK_RECOVERY_DATABASE_URL) or ``production`` (neither is set)."""

    dsn: SecretStr
    source: str
    sandbox: bool = False  # the platform is the embedded sandbox: its one server is no production

    @property
    def production(self) -> bool:
        return self.source == "production"

    @property
    def place(self) -> str:
        """How the report names the platform's own server."""
        return "the sandbox's own server" if self.sandbox else "the production server"

    @property
    def note(self) -> str | None:
        """What the report says when a scratch restore runs on the production server."""
        if not self.production:
            return None
        return (
            f"the scratch restore ran on {self.place} (neither RUNBOOK_SCRATCH_DATABASE_URL nor "
            "RUNBOOK_RECOVERY_DATABASE_URL is set): it used the platform's disk, CPU and connections"
        )


def scratch_server(settings: RunbookSettings, platform_dsn: str) -> RestoreServer:
    """Where backup-verify and drills make their scratch databases: the scratch server,
    else the recovery server, else (said plainly in the report) the platform's own."""
    if settings.scratch_database_url is not None:
        return RestoreServer(dsn=settings.scratch_database_url, source="scratch")
    if settings.recovery_database_url is not None:
        # the recovery target itself may not exist yet: reach its server through "postgres"
        return RestoreServer(dsn=SecretStr(postgres.with_database(settings.recovery_database_url.get_secret_value(), "postgres")), source="recovery")
    return RestoreServer(dsn=SecretStr(platform_dsn), source="production", sandbox=settings.sandbox)


# --------------------------------------------------------------------------- the pipeline


@dataclass
class Destination:
    """Where a backup is restored: a server (reached through a database that exists
    on it), a database name, and whether that database is this run's scratch.
    ``move_aside``: the name a non-empty database of that name is renamed to before the
    restore (never before its backup passed the checks). ``created``: the database
    exists (made by this run, or an empty target restored into as is)."""

    server: SecretStr
    name: str
    dsn: SecretStr
    scratch: bool
    move_aside: str | None = None
    created: bool = False
    moved: bool = False
    put_back: bool = False

    @property
    def still_aside(self) -> str | None:
        """Where the original database is now, when it was moved and not put back."""
        return self.move_aside if self.moved and not self.put_back else None


class RestorePipeline:
    """One restore, in an order no caller can change: prepare (tools for the server's
    version), fetch the dump and check its size, sha256 and decompression, and only
    then move an existing database aside, create the new one and ``pg_restore`` into
    it; then check what came back. If the restore fails after the move, the half-
    restored database is dropped (the backup still holds all of it) and the original
    renamed back. ``failure`` is None, or why the restore did not happen."""

    def __init__(
        self,
        store: BackupStore,
        manifest: Manifest,
        destination: Destination,
        settings: RunbookSettings,
        *,
        notify: Callable[[str], None] | None = None,
    ) -> None:
        self.store, self.manifest, self.destination, self.settings = store, manifest, destination, settings
        self.notify = notify or (lambda _step: None)
        self.failure: str | None = None

    def restore(self) -> list[CheckResult]:
        """Fetch and check the backup, then restore it; the checks made on the way
        (a restore that did not happen is a failed ``restore`` check)."""
        destination, settings = self.destination, self.settings
        server = destination.server.get_secret_value()
        tools = choose_pg_tools(postgres.inspect_database(server, settings.connect_timeout).server_major, settings.pg_bin_dir)
        work_dir = settings.verify.work_dir
        if work_dir is not None:
            work_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(prefix="runbook-restore-", dir=work_dir) as scratch:
            dump_file = Path(scratch) / f"{self.manifest.id}.dump"
            checks = fetch_and_check(self.store, self.manifest, dump_file)
            self.notify("fetched")
            bad = failed(checks, critical_only=True)
            if bad:
                untouched = f"; {destination.name} was not touched" if destination.move_aside else ""
                self.failure = f"{self.manifest.id} does not match its manifest: " + describe(bad) + untouched
                detail = "not attempted: the stored dump does not match its manifest" + untouched
                return [*checks, CheckResult(name="restore", ok=False, detail=detail)]
            try:
                if destination.move_aside:
                    move_database_aside(server, destination.name, destination.move_aside, settings.connect_timeout)
                    destination.moved = True
                if not destination.created:
                    create_scratch_database(server, destination.name, settings.connect_timeout)
                    destination.created = True
                restore_backup(tools, dump_file, destination.dsn.get_secret_value(), settings.backup.restore_jobs)
            except BaseException as err:  # noqa: BLE001 - an interrupted restore puts the original back too
                self.failure = first_line(err) + self._put_back()
                if not isinstance(err, Exception):
                    raise
                return [*checks, CheckResult(name="restore", ok=False, detail=self.failure)]
        self.notify("restored")
        kind = "scratch database" if destination.scratch else "database"
        return [*checks, CheckResult(name="restore", ok=True, detail=f"restored into {kind} {destination.name}")]

    def _put_back(self) -> str:
        """After a failed restore: drop the half-restored database and rename the
        original back; the sentence the report adds (empty when nothing was moved)."""
        destination = self.destination
        if not destination.moved or destination.move_aside is None:
            return ""
        server = destination.server.get_secret_value()
        logger = get_run_logger()
        try:
            if destination.created:
                postgres.drop_database(server, destination.name, connect_timeout=self.settings.connect_timeout)
                destination.created = False
            logger.warning("Putting the original database back: %s to %s", destination.move_aside, destination.name)
            postgres.rename_database(server, destination.move_aside, destination.name, connect_timeout=self.settings.connect_timeout)
        except Exception as err:  # noqa: BLE001 - said in the report: where the original is
            logger.error("Could not put the original database back: %s", first_line(err))
            return (
                f"; the original database could not be put back ({first_line(err)}): "
                f"it is kept as {destination.move_aside}"
            )
        destination.put_back = True
        return f"; the original database was put back as {destination.name} (nothing was replaced)"

    def check(self, worker: IntegrityWorker, deep: bool) -> list[CheckResult]:
        """The integrity checks of backup-verify on the restored database."""
        return check_integrity(self.destination.dsn.get_secret_value(), self.manifest, self.settings, deep, worker)

    def discard(self) -> None:
        """Drop this run's scratch database if it made one (also after a failed step;
        an interrupted run drops it without Prefect, then goes on stopping)."""
        destination = self.destination
        if not (destination.scratch and destination.created):
            return
        server = destination.server.get_secret_value()
        try:
            drop_scratch_database(server, destination.name, self.settings.connect_timeout)
        except BaseException:
            postgres.drop_database(server, destination.name, connect_timeout=self.settings.connect_timeout)
            raise
        destination.created = False
