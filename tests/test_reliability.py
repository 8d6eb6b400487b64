"""Transient failures are retried with backoff, permanent ones fail at once; nothing
is ever deleted from the store except by the prune step; a killed backup process
leaves no DONE manifest and its upload is cleaned up by the next backup."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import psycopg
import pytest
from prefect import get_client
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

from flows.backup import BackupParameters, backup
from flows.backup_list import backup_list
from flows.backup_prune import PruneParameters, backup_prune
from flows.backup_verify import VerifyParameters, backup_verify
from runbook.errors import ConfigError, StoreError, TransientError
from runbook.retry import is_transient
from tasks.postgres import parse_dsn
from tests.conftest import Platform, free_database_slot
from tests.servers import FaultyS3Proxy, LateTcpForwarder, free_port


def task_runs(state, expect: str) -> dict[str, int]:  # type: ignore[no-untyped-def]
    """How many times each task of a flow run ran (run_count counts retries). Task runs
    reach the server through events, a moment after the flow ends: wait for ``expect``."""
    counts: dict[str, int] = {}
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        with get_client(sync_client=True) as client:
            runs = client.read_task_runs(
                flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[state.state_details.flow_run_id]))
            )
        counts = {}
        for run in runs:
            name = run.name.rsplit("-", 1)[0]
            counts[name] = max(counts.get(name, 0), run.run_count)
        if expect in counts and all(run.state is not None and run.state.is_final() for run in runs):
            return counts
        time.sleep(0.2)
    return counts


def _socket_of(platform: Platform) -> str:
    return f"{parse_dsn(platform.admin_dsn)['host']}/.s.PGSQL.5432"


def test_postgres_refusing_connections_for_a_while_is_retried(platform: Platform, monkeypatch: pytest.MonkeyPatch) -> None:
    port = free_port()
    monkeypatch.setenv("RUNBOOK_DATABASE_URL", f"postgresql://postgres@127.0.0.1:{port}/{platform.database}")
    with LateTcpForwarder(port, _socket_of(platform), delay=2.5):
        state = backup(BackupParameters(prune=False), return_state=True)
    assert state.is_completed(), state.message
    assert task_runs(state, "inspect-database")["inspect-database"] >= 2


def test_a_silent_server_times_out_and_is_retried_then_reported(platform: Platform, monkeypatch: pytest.MonkeyPatch) -> None:
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)  # accepts at the TCP level, never answers
    port = listener.getsockname()[1]
    monkeypatch.setenv("RUNBOOK_DATABASE_URL", f"postgresql://postgres:hunter2-secret@127.0.0.1:{port}/{platform.database}")
    monkeypatch.setenv("RUNBOOK_CONNECT_TIMEOUT", "1")
    import flows.backup

    from tasks.postgres import inspect_database

    # the same task with its retries, without the 2 + 4 + 8 s between them
    monkeypatch.setattr(flows.backup, "inspect_database", inspect_database.with_options(retry_delay_seconds=[0.1, 0.1, 0.1]))
    try:
        state = backup(BackupParameters(prune=False), return_state=True)
    finally:
        listener.close()
    assert state.is_failed()
    with pytest.raises(TransientError, match="cannot reach PostgreSQL") as caught:
        state.result()
    assert "hunter2-secret" not in str(caught.value)
    assert task_runs(state, "inspect-database")["inspect-database"] == 4  # first try and three retries


@pytest.mark.parametrize(
    ("dsn_template", "message"),
    [
        ("postgresql://nobody@/{db}?host={host}", "no such user"),
        ("postgresql://postgres@/no_such_db?host={host}", "does not exist"),
    ],
)
def test_bad_credentials_or_database_fail_at_once(platform: Platform, monkeypatch: pytest.MonkeyPatch, dsn_template: str, message: str) -> None:
    host = parse_dsn(platform.admin_dsn)["host"]
    monkeypatch.setenv("RUNBOOK_DATABASE_URL", dsn_template.format(db=platform.database, host=host))
    started = time.monotonic()
    state = backup(BackupParameters(prune=False), return_state=True)
    assert state.is_failed()
    with pytest.raises(ConfigError, match=message):
        state.result()
    assert task_runs(state, "inspect-database")["inspect-database"] == 1
    assert time.monotonic() - started < 10


def test_s3_throttling_is_retried(s3_platform: Platform, s3_server, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    """Four 503 SlowDown answers: botocore's own four attempts are used up, the task retries."""
    with FaultyS3Proxy(s3_server.endpoint, failures=4, matches=lambda method, path: method == "HEAD") as proxy:
        monkeypatch.setenv("RUNBOOK_S3_ENDPOINT_URL", proxy.endpoint)
        state = backup(BackupParameters(prune=False), return_state=True)
    assert state.is_completed(), state.message
    assert task_runs(state, "open-backup-store")["open-backup-store"] == 2
    assert [status for _, _, status in proxy.seen].count(503) == 4


def test_s3_errors_during_the_upload_retry_the_dump_as_a_new_backup(s3_platform: Platform, s3_server, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    uploads = lambda method, path: method == "PUT" and "uploadId=" in path  # noqa: E731
    # botocore makes 1 + 3 attempts of each request; four failures exhaust them
    with FaultyS3Proxy(s3_server.endpoint, failures=4, matches=uploads) as proxy:
        monkeypatch.setenv("RUNBOOK_S3_ENDPOINT_URL", proxy.endpoint)
        state = backup(BackupParameters(prune=False), return_state=True)
    assert state.is_completed(), state.message
    assert task_runs(state, "dump-database")["dump-database"] == 2
    bucket = s3_platform.store_url.removeprefix("s3://").split("/")[0]
    keys = [o["Key"] for o in s3_server.client.list_objects_v2(Bucket=bucket)["Contents"]]
    statuses = sorted(
        json.loads(s3_server.client.get_object(Bucket=bucket, Key=k)["Body"].read())["status"]
        for k in keys
        if k.endswith(".manifest.json")
    )
    assert statuses == ["DONE", "FAILED"]
    assert s3_server.client.list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []


def test_a_missing_bucket_fails_at_once(platform: Platform, s3_server, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("RUNBOOK_BACKUP_STORE", "s3://no-such-bucket-here/backups")
    monkeypatch.setenv("RUNBOOK_S3_ENDPOINT_URL", s3_server.endpoint)
    state = backup(BackupParameters(prune=False), return_state=True)
    assert state.is_failed()
    with pytest.raises(ConfigError, match="bucket 'no-such-bucket-here' does not exist"):
        state.result()
    assert task_runs(state, "open-backup-store")["open-backup-store"] == 1


def test_transient_and_permanent_errors_are_told_apart() -> None:
    from botocore.exceptions import ClientError, ConnectTimeoutError, EndpointConnectionError, ReadTimeoutError

    from tasks.store import translate_s3_error

    def client_error(code: str, status: int) -> ClientError:
        return ClientError({"Error": {"Code": code}, "ResponseMetadata": {"HTTPStatusCode": status}}, "PutObject")

    assert is_transient(translate_s3_error(client_error("SlowDown", 503), "x"))
    assert is_transient(translate_s3_error(client_error("InternalError", 500), "x"))
    assert is_transient(translate_s3_error(EndpointConnectionError(endpoint_url="http://127.0.0.1:1"), "x"))
    assert is_transient(translate_s3_error(ReadTimeoutError(endpoint_url="http://127.0.0.1:1"), "x"))
    assert is_transient(translate_s3_error(ConnectTimeoutError(endpoint_url="http://127.0.0.1:1"), "x"))
    for code, status in (("AccessDenied", 403), ("NoSuchBucket", 404), ("InvalidAccessKeyId", 403)):
        error = translate_s3_error(client_error(code, status), "x")
        assert isinstance(error, StoreError) and not is_transient(error)
    assert not is_transient(ConfigError("bad"))


def _keys(folder: Path) -> set[str]:
    return {str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file()}


def test_nothing_is_deleted_from_the_store_except_by_prune(platform: Platform, monkeypatch: pytest.MonkeyPatch) -> None:
    store = Path(platform.store_url)
    seen: set[str] = set()

    def grows() -> None:
        nonlocal seen
        now = _keys(store)
        assert seen <= now, f"deleted: {seen - now}"
        seen = now

    monkeypatch.setenv("RUNBOOK_RETENTION__HOURLY", "1")
    monkeypatch.setenv("RUNBOOK_RETENTION__DAILY", "0")
    monkeypatch.setenv("RUNBOOK_RETENTION__WEEKLY", "0")
    monkeypatch.setenv("RUNBOOK_RETENTION__MONTHLY", "0")
    first = backup(BackupParameters(prune=False))
    grows()
    assert backup_verify(VerifyParameters(backup_id=first["backup_id"]))["outcome"] == "passed"
    grows()
    second = backup(BackupParameters(prune=False))
    grows()
    dump = store / platform.database / f"{second['backup_id']}.dump.zst"
    dump.write_bytes(dump.read_bytes()[:-10])  # a damaged newest backup
    assert backup_verify(VerifyParameters(), return_state=True).is_failed()
    grows()
    backup_list()
    grows()
    plan = backup_prune(PruneParameters(dry_run=True))
    grows()
    assert plan["removed"] == []  # the newest and the newest verified are both kept
    third = backup(BackupParameters(prune=True, prune_dry_run=False))
    after = _keys(store)
    # retention removed the damaged middle backup only: the newest (third) and the
    # newest verified (first) stay
    assert third["retention"]["removed"] == [second["backup_id"]]
    assert not any(second["backup_id"] in key for key in after)
    assert any(first["backup_id"] in key for key in after) and any(third["backup_id"] in key for key in after)


def test_a_killed_backup_process_leaves_no_done_manifest_and_the_next_backup_cleans_up(
    s3_platform: Platform, s3_server, prefect_harness: str  # type: ignore[no-untyped-def]
) -> None:
    bucket = s3_platform.store_url.removeprefix("s3://").split("/")[0]
    env = {**os.environ, "PREFECT_API_URL": prefect_harness}
    with psycopg.connect(s3_platform.dsn) as blocker:
        blocker.execute("LOCK TABLE market_data IN ACCESS EXCLUSIVE MODE")  # holds pg_dump mid-way
        process = subprocess.Popen(
            [sys.executable, "-m", "runbook.cli", "backup", "--no-prune"],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline and not s3_server.client.list_multipart_uploads(Bucket=bucket).get("Uploads"):
            time.sleep(0.2)
        assert s3_server.client.list_multipart_uploads(Bucket=bucket).get("Uploads"), "the backup never started its upload"
        os.killpg(process.pid, signal.SIGKILL)  # no chance to clean up
        process.wait(timeout=30)
        free_database_slot(s3_platform.database)  # the killed run's lease would hold it for a minute
        blocker.rollback()
    objects = [o["Key"] for o in s3_server.client.list_objects_v2(Bucket=bucket).get("Contents", [])]
    manifests = [json.loads(s3_server.client.get_object(Bucket=bucket, Key=k)["Body"].read()) for k in objects if k.endswith(".manifest.json")]
    assert [m["status"] for m in manifests] == ["STARTED"]
    assert not any(k.endswith(".dump.zst") for k in objects)

    result = backup(BackupParameters(prune=False))
    assert result["status"] == "DONE"
    assert s3_server.client.list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []
    killed = json.loads(
        s3_server.client.get_object(Bucket=bucket, Key=[k for k in objects if k.endswith(".manifest.json")][0])["Body"].read()
    )
    assert killed["status"] == "FAILED" and killed["error"].startswith("interrupted")


def test_sigterm_aborts_the_upload_and_marks_the_backup_failed(s3_platform: Platform, s3_server, prefect_harness: str) -> None:  # type: ignore[no-untyped-def]
    bucket = s3_platform.store_url.removeprefix("s3://").split("/")[0]
    env = {**os.environ, "PREFECT_API_URL": prefect_harness}
    with psycopg.connect(s3_platform.dsn) as blocker:
        blocker.execute("LOCK TABLE market_data IN ACCESS EXCLUSIVE MODE")
        process = subprocess.Popen(
            [sys.executable, "-m", "runbook.cli", "backup", "--no-prune"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline and not s3_server.client.list_multipart_uploads(Bucket=bucket).get("Uploads"):
            time.sleep(0.2)
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=60)
        blocker.rollback()
    assert process.returncode != 0
    assert s3_server.client.list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []
    objects = [o["Key"] for o in s3_server.client.list_objects_v2(Bucket=bucket).get("Contents", [])]
    manifests = [json.loads(s3_server.client.get_object(Bucket=bucket, Key=k)["Body"].read()) for k in objects if k.endswith(".manifest.json")]
    assert [m["status"] for m in manifests] == ["FAILED"]
