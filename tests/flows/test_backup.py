"""The backup flow against a real PostgreSQL and real stores, as real flow runs."""

from __future__ import annotations

import hashlib
import json
import re
import subprocess
import threading
import time
from pathlib import Path

import psutil
from prefect import get_client
from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId
import psycopg
import pytest

from flows.backup import BackupParameters, backup
from runbook.backups import BackupStatus, Manifest
from runbook.errors import BackupError, ConcurrencyError, ConfigError
from tasks.pgtools import choose_pg_tools
from tasks.postgres import advisory_key
from tasks.store import open_store
from tests.conftest import Platform


def _manifest(store_url: str, database: str, backup_id: str, **kwargs) -> Manifest:  # type: ignore[no-untyped-def]
    store = open_store(store_url, **kwargs)
    return Manifest.model_validate_json(store.get_bytes(f"{database}/{backup_id}.manifest.json"))


def test_backup_to_a_folder_records_exact_counts_and_checksum(platform: Platform) -> None:
    with platform.connect() as conn:
        expected = {t: conn.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in ("users", "system_logs")}

    state = backup(BackupParameters(prune=False), return_state=True)
    result = state.result()

    manifest = _manifest(platform.store_url, platform.database, result["backup_id"])
    assert manifest.status is BackupStatus.DONE
    assert manifest.flow_run_id == str(state.state_details.flow_run_id)
    with get_client(sync_client=True) as client:
        artifacts = client.read_artifacts(
            artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[state.state_details.flow_run_id]))
        )
    kinds = {a.type: a for a in artifacts}
    assert kinds["progress"].data == 100.0
    assert manifest.id in kinds["markdown"].data and manifest.sha256 in kinds["markdown"].data
    assert manifest.tables["public.users"] == expected["users"]
    assert manifest.tables["public.system_logs"] == expected["system_logs"]
    assert manifest.server_version.startswith("16")
    tools = choose_pg_tools(16)
    assert manifest.pg_dump_version == tools.version and manifest.pg_dump_version.startswith("16")
    printed = subprocess.run([str(tools.pg_dump), "--version"], capture_output=True, text=True, check=True).stdout
    assert manifest.pg_dump_build == printed.strip()
    assert manifest.snapshot_at is not None and manifest.started_at <= manifest.finished_at  # type: ignore[operator]
    dump = Path(platform.store_url, platform.database, f"{manifest.id}.dump.zst").read_bytes()
    assert len(dump) == manifest.size_bytes
    assert hashlib.sha256(dump).hexdigest() == manifest.sha256
    assert manifest.id.startswith("backup_") and len(manifest.id) == len("backup_20261129_073000")


def test_counts_are_taken_in_the_dump_snapshot_not_after(platform: Platform) -> None:
    """Rows written while the dump runs are neither counted nor dumped."""
    with psycopg.connect(platform.dsn) as conn:
        before = conn.execute("SELECT count(*) FROM system_logs").fetchone()[0]
    stop = threading.Event()

    def writer() -> None:
        with psycopg.connect(platform.dsn, autocommit=True) as conn:
            for _ in range(500_000):  # bounded; stopped when the backup ends
                if stop.is_set():
                    return
                conn.execute("INSERT INTO system_logs (level, message) VALUES ('INFO', 'during backup')")

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        result = backup(BackupParameters(prune=False, fingerprint=True))
    finally:
        stop.set()
        thread.join()
    manifest = _manifest(platform.store_url, platform.database, result["backup_id"])
    with psycopg.connect(platform.dsn) as conn:
        after = conn.execute("SELECT count(*) FROM system_logs").fetchone()[0]
        committed_before_snapshot = conn.execute(
            "SELECT count(*) FROM system_logs WHERE message <> 'during backup' OR created_at < %s",
            (manifest.snapshot_at,),
        ).fetchone()[0]
    # rows written after the snapshot are not counted, rows before it all are
    counted = manifest.tables["public.system_logs"]
    assert before <= counted < after
    assert committed_before_snapshot - 1 <= counted <= committed_before_snapshot  # one insert may straddle it
    assert manifest.fingerprints and manifest.fingerprints["public.system_logs"].startswith(
        f"{manifest.tables['public.system_logs']}:"
    )


def test_backup_to_s3_is_a_completed_multipart_upload(s3_platform: Platform, s3_server) -> None:  # type: ignore[no-untyped-def]
    result = backup(BackupParameters(prune=False))
    bucket = s3_platform.store_url.removeprefix("s3://").split("/")[0]
    key = f"backups/{s3_platform.database}/{result['backup_id']}.dump.zst"
    body = s3_server.client.get_object(Bucket=bucket, Key=key)["Body"].read()
    assert hashlib.sha256(body).hexdigest() == result["sha256"]
    manifest = json.loads(
        s3_server.client.get_object(Bucket=bucket, Key=key.replace(".dump.zst", ".manifest.json"))["Body"].read()
    )
    assert manifest["status"] == "DONE"
    assert s3_server.client.list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []


def test_a_second_backup_of_the_same_database_fails_at_once(platform: Platform) -> None:
    with psycopg.connect(platform.dsn, autocommit=True) as holder:
        holder.execute("SELECT pg_advisory_lock(%s)", (advisory_key(f"runbook backup {platform.database}"),))
        started = time.monotonic()
        state = backup(BackupParameters(prune=False), return_state=True)
        elapsed = time.monotonic() - started
    assert state.is_failed()
    with pytest.raises(ConcurrencyError, match="already running"):
        state.result()
    assert elapsed < 30  # no waiting for the lock
    assert not list(Path(platform.store_url).rglob("*.manifest.json"))


def test_pg_dump_older_than_the_server_is_refused_before_anything(platform: Platform, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    old = Path("/usr/lib/postgresql/15/bin")
    if not (old / "pg_dump").exists():
        pytest.skip("no PostgreSQL 15 client binaries on this machine")
    monkeypatch.setenv("RUNBOOK_PG_BIN_DIR", str(old))
    state = backup(BackupParameters(prune=False), return_state=True)
    assert state.is_failed()
    with pytest.raises(ConfigError, match=r"RUNBOOK_PG_BIN_DIR: .*pg_dump is version 15.* server is 16"):
        state.result()
    assert not Path(platform.store_url, platform.database).exists() or not any(Path(platform.store_url, platform.database).iterdir())


def _pg_dump_children() -> list[psutil.Process]:
    """The dump itself, not the short `pg_dump --version` that picks the binary."""
    found = []
    for proc in psutil.Process().children(recursive=True):
        try:
            # a `pg_dump --version` that has exited but is not reaped yet shows no cmdline
            command = proc.cmdline()
            if proc.name() == "pg_dump" and command and "--version" not in command and proc.status() != psutil.STATUS_ZOMBIE:
                found.append(proc)
        except psutil.Error:  # it ended while we looked
            continue
    return found


def test_a_dump_killed_midway_leaves_a_failed_manifest_and_no_upload(s3_platform: Platform, s3_server) -> None:  # type: ignore[no-untyped-def]
    """pg_dump is held on a table lock, then killed: the backup ends FAILED, its
    multipart upload is aborted, and no DONE manifest exists."""
    bucket = s3_platform.store_url.removeprefix("s3://").split("/")[0]
    with psycopg.connect(s3_platform.dsn) as blocker:
        blocker.execute("LOCK TABLE market_data IN ACCESS EXCLUSIVE MODE")
        outcome: dict[str, object] = {}
        thread = threading.Thread(
            target=lambda: outcome.setdefault("state", backup(BackupParameters(prune=False), return_state=True))
        )
        thread.start()
        deadline = time.monotonic() + 60
        victims = _pg_dump_children()
        while not victims and time.monotonic() < deadline:
            time.sleep(0.05)
            victims = _pg_dump_children()
        assert victims, "pg_dump never started"
        time.sleep(0.5)
        assert s3_server.client.list_multipart_uploads(Bucket=bucket).get("Uploads")
        for proc in victims:
            proc.kill()
        thread.join(timeout=120)
        blocker.rollback()
    state = outcome["state"]
    assert state.is_failed()  # type: ignore[attr-defined]
    assert s3_server.client.list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []
    keys = [o["Key"] for o in s3_server.client.list_objects_v2(Bucket=bucket).get("Contents", [])]
    assert not any(k.endswith(".dump.zst") for k in keys)
    manifests = [json.loads(s3_server.client.get_object(Bucket=bucket, Key=k)["Body"].read()) for k in keys if k.endswith(".manifest.json")]
    assert [m["status"] for m in manifests] == ["FAILED"]
    assert "pg_dump was killed" in manifests[0]["error"]


def _backup_in_thread() -> tuple[threading.Thread, dict[str, object]]:
    outcome: dict[str, object] = {}
    thread = threading.Thread(
        target=lambda: outcome.setdefault("state", backup(BackupParameters(prune=False), return_state=True)), daemon=True
    )
    thread.start()
    return thread, outcome


def _only_manifest(store_url: str, database: str) -> Manifest:
    found = list(Path(store_url, database).glob("*.manifest.json"))
    assert len(found) == 1, found
    return Manifest.model_validate_json(found[0].read_bytes())


def test_a_backup_facing_an_exclusive_lock_gives_up_naming_the_lock_wait(platform: Platform, monkeypatch: pytest.MonkeyPatch) -> None:
    """Another session holds ACCESS EXCLUSIVE on a table: pg_dump stops waiting after
    the lock-wait timeout (instead of hanging and holding up every later hourly run)."""
    monkeypatch.setenv("RUNBOOK_BACKUP__LOCK_WAIT_TIMEOUT_SECONDS", "1")
    with psycopg.connect(platform.dsn) as blocker:
        blocker.execute("LOCK TABLE market_data IN ACCESS EXCLUSIVE MODE")
        thread, outcome = _backup_in_thread()
        thread.join(timeout=120)  # a safety net for the test run, not a timing assertion
        finished = not thread.is_alive()
        blocker.rollback()
    thread.join(timeout=120)
    assert finished, "the backup kept waiting for the lock"
    state = outcome["state"]
    assert state.is_failed()  # type: ignore[attr-defined]
    message = (
        r"pg_dump gave up waiting for a table lock( on .*)? after 1 s "
        r"\(RUNBOOK_BACKUP__LOCK_WAIT_TIMEOUT_SECONDS\)"
    )
    with pytest.raises(BackupError, match=message):
        state.result()  # type: ignore[attr-defined]
    manifest = _only_manifest(platform.store_url, platform.database)
    assert manifest.status is BackupStatus.FAILED and re.match(message, manifest.error or "")
    assert not list(Path(platform.store_url).rglob("*.dump.zst*"))


def test_a_backup_past_its_time_limit_is_stopped_and_failed(platform: Platform, monkeypatch: pytest.MonkeyPatch) -> None:
    """pg_dump is held (a lock, with a long lock wait) past RUNBOOK_BACKUP__TIMEOUT_SECONDS:
    it is stopped, the manifest is FAILED naming the limit, nothing is left running."""
    monkeypatch.setenv("RUNBOOK_BACKUP__TIMEOUT_SECONDS", "3")
    with psycopg.connect(platform.dsn) as blocker:
        blocker.execute("LOCK TABLE market_data IN ACCESS EXCLUSIVE MODE")
        thread, outcome = _backup_in_thread()
        thread.join(timeout=120)  # a safety net for the test run, not a timing assertion
        finished = not thread.is_alive()
        left_running = _pg_dump_children()
        blocker.rollback()
    thread.join(timeout=120)
    assert finished, "the backup ran past its time limit"
    assert left_running == []
    state = outcome["state"]
    assert state.is_failed()  # type: ignore[attr-defined]
    with pytest.raises(BackupError, match=r"time limit .*\(3 s, RUNBOOK_BACKUP__TIMEOUT_SECONDS\)"):
        state.result()  # type: ignore[attr-defined]
    manifest = _only_manifest(platform.store_url, platform.database)
    assert manifest.status is BackupStatus.FAILED and "RUNBOOK_BACKUP__TIMEOUT_SECONDS" in (manifest.error or "")
    assert not list(Path(platform.store_url).rglob("*.dump.zst*"))


def test_a_deployed_backup_reports_the_runs_cancelled_while_the_previous_one_ran(platform: Platform) -> None:
    """A deployment with CANCEL_NEW: while one run holds the slot, the server itself
    cancels the next two; the run after them says so, as a warning check in its
    result and report."""
    from prefect.client.schemas.objects import ConcurrencyLimitStrategy, ConcurrencyOptions, StateType
    from prefect.flow_engine import run_flow
    from prefect.states import Completed, Pending, Running

    parameters = {"params": {"prune": False}}
    with get_client(sync_client=True) as client:
        deployment_id = client.create_deployment(
            client.create_flow(backup),
            f"backup-{platform.database}",
            concurrency_limit=1,
            concurrency_options=ConcurrencyOptions(collision_strategy=ConcurrencyLimitStrategy.CANCEL_NEW),
        )
        stuck = client.create_flow_run_from_deployment(deployment_id, parameters=parameters)
        client.set_flow_run_state(stuck.id, Pending())
        client.set_flow_run_state(stuck.id, Running())
        collided = [client.create_flow_run_from_deployment(deployment_id, parameters=parameters) for _ in range(2)]
        for run in collided:
            client.set_flow_run_state(run.id, Pending())  # the server answers: Cancelled
        assert [client.read_flow_run(run.id).state.type for run in collided] == [StateType.CANCELLED] * 2  # type: ignore[union-attr]
        client.set_flow_run_state(stuck.id, Completed())
        current = client.create_flow_run_from_deployment(deployment_id, parameters=parameters)

    state = run_flow(backup, flow_run=current, parameters={"params": BackupParameters(prune=False)}, return_type="state")
    result = state.result()  # type: ignore[union-attr]
    [check] = result["checks"]
    assert check["name"] == "collisions" and not check["ok"] and not check["critical"]
    assert check["detail"].startswith("2 scheduled backup run(s) cancelled by the deployment's concurrency limit")
    assert all(run.name in check["detail"] for run in collided) and stuck.name not in check["detail"]
    with get_client(sync_client=True) as client:
        artifacts = client.read_artifacts(artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[current.id])))
    [report] = [a for a in artifacts if a.type == "markdown"]
    assert "| collisions | FAILED | no |" in report.data and collided[0].name in report.data


def test_a_backup_outside_a_deployment_has_no_collision_check(platform: Platform) -> None:
    assert backup(BackupParameters(prune=False))["checks"] == []
