"""disaster-recovery: drills and recoveries on a real PostgreSQL, restored from a real
backup, run as real flow runs; RTO/RPO read back through the Prefect client."""

from __future__ import annotations

import json
import sys
import threading
import time
from datetime import datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import psycopg
import pytest
from prefect import get_client
from prefect.artifacts import Artifact
from prefect.client.schemas.filters import FlowFilter, FlowFilterName
from prefect.client.schemas.sorting import FlowRunSort
from prefect.flow_runs import resume_flow_run

from flows.backup import BackupParameters, backup
from flows.disaster_recovery import DrParameters, Mode, disaster_recovery
from tasks.postgres import advisory_key, with_database
from tests.conftest import Platform, _dsn_url, scratch_databases
from tests.paused import wait_paused


@pytest.fixture
def backed_up(platform: Platform) -> tuple[Platform, str]:
    result = backup(BackupParameters(prune=False))
    return platform, result["backup_id"]


ACCEPTED = {"accepted_by": "qa team", "tried": "login, a payment, an alert"}


def _run(**kwargs: Any) -> tuple[Any, dict[str, Any]]:
    if kwargs.get("mode") is Mode.RECOVER:
        kwargs.setdefault("acceptance", ACCEPTED)  # a recovery ends with its user acceptance test
    state = disaster_recovery(DrParameters(**kwargs), return_state=True)
    return state, state.result(raise_on_failure=False)


def _flow_run(state: Any) -> Any:
    with get_client(sync_client=True) as client:
        return client.read_flow_run(state.state_details.flow_run_id)


def _phases(report: dict[str, Any]) -> dict[str, str]:
    return {p["name"]: p["status"] for p in report["phases"]}


def _counts(dsn: str) -> dict[str, int]:
    with psycopg.connect(dsn) as conn:
        tables = [r[0] for r in conn.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public' ORDER BY 1")]
        return {t: conn.execute(f'SELECT count(*) FROM "{t}"').fetchone()[0] for t in tables}  # type: ignore[index]


def test_a_drill_passes_and_leaves_rto_rpo_labels_tags_history_and_no_scratch(backed_up: tuple[Platform, str]) -> None:
    platform, backup_id = backed_up
    state, report = _run()
    assert state.is_completed(), state.message
    assert report["outcome"] == "passed" and report["backup_id"] == backup_id and report["mode"] == "drill"
    assert _phases(report) == {
        "shutdown": "skipped",
        "restore": "ok",
        "verify": "ok",
        "restore-services": "skipped",
        "test-functions": "ok",
    }
    checks = {c["name"]: c for c in report["checks"]}
    for name in ("sha256", "row-count:public.users", "smoke:latest-price-per-symbol", "smoke:session-lookup",
                 "health:writable", "security:row-level-security", "security:grants", "security:roles",
                 "security:no-new-public-writes", "performance"):
        assert checks[name]["ok"], checks[name]
    assert "3 tables" in checks["security:row-level-security"]["detail"]
    assert report["rpo"]["ok"] and report["rto"]["ok"]
    assert 0 < report["rpo"]["achieved_seconds"] < 600
    assert report["rto"]["achieved_seconds"] >= report["phase_seconds"]["restore"] > 0

    run = _flow_run(state)
    labels = run.labels
    assert labels["backup_id"] == backup_id and labels["outcome"] == "passed"
    assert labels["rto_seconds"] == round(report["rto"]["achieved_seconds"], 1)
    assert labels["rpo_ok"] is True and labels["phase_restore_seconds"] > 0
    assert {"drill", "rto-ok", "rpo-ok"} <= set(run.tags)
    assert scratch_databases(platform.admin_dsn, "drill") == []
    # no scratch or recovery server set: the drill ran on production, and the report says so
    assert report["restore_server"] == "production" and "production server" in report["notes"][0]
    assert state.message.endswith("on the production server")

    # a second drill: the history artifact has both, performance compares with the first
    state2, report2 = _run()
    assert state2.is_completed(), state2.message
    perf = [c for c in report2["checks"] if c["name"].startswith("performance:")]
    assert {c["name"] for c in perf} == {"performance:latest-price-per-symbol", "performance:user-alerts", "performance:session-lookup"}
    assert all("previous drill" in c["detail"] for c in perf)
    history = Artifact.get(f"dr-history-{platform.database}".replace("_", "-"))
    assert history is not None
    rows = json.loads(history.data) if isinstance(history.data, str) else history.data
    assert len(rows) == 2 and rows[0]["outcome"] == "passed" and rows[0]["backup"] == backup_id
    markdown = Artifact.get(f"dr-report-{platform.database}".replace("_", "-"))
    assert markdown is not None and "Last runs side by side" in markdown.data and "1,000 GB" in markdown.data
    assert "the scratch restore ran on the production server" in markdown.data
    records = list(Path(platform.store_url, platform.database, "drills").glob("drill_*.json"))
    assert len(records) == 2
    assert scratch_databases(platform.admin_dsn, "drill") == []


def test_a_backup_older_than_the_rpo_fails_the_drill_saying_by_how_much(backed_up: tuple[Platform, str]) -> None:
    platform, backup_id = backed_up
    manifest_file = Path(platform.store_url, platform.database, f"{backup_id}.manifest.json")
    manifest = json.loads(manifest_file.read_text())
    manifest["snapshot_at"] = (datetime.now(timezone.utc) - timedelta(hours=1, minutes=30)).isoformat()
    manifest_file.write_text(json.dumps(manifest))
    state, report = _run()
    assert state.is_failed()
    assert report["rpo"]["ok"] is False and report["rto"]["ok"] is True
    assert "RPO 1h30m" in state.message and "breaches the 1h00m00s target by 30m" in state.message
    assert set(_phases(report).values()) <= {"ok", "skipped"}  # the restore itself was fine
    run = _flow_run(state)
    assert {"rpo-breached", "rto-ok"} <= set(run.tags) and run.labels["outcome"] == "failed"


def test_an_rto_target_shorter_than_the_drill_fails_it(backed_up: tuple[Platform, str]) -> None:
    state, report = _run(rto_target_minutes=0.001)
    assert state.is_failed()
    assert report["rto"]["ok"] is False and report["rpo"]["ok"] is True
    assert "breaches the 0.1s target" in state.message
    assert "rto-breached" in _flow_run(state).tags


def test_a_corrupted_dump_fails_the_restore_phase_runs_nothing_after_it_and_drops_the_scratch(
    backed_up: tuple[Platform, str],
) -> None:
    platform, backup_id = backed_up
    dump = Path(platform.store_url, platform.database, f"{backup_id}.dump.zst")
    data = bytearray(dump.read_bytes())
    data[len(data) // 3] ^= 0xFF
    dump.write_bytes(bytes(data))
    state, report = _run()
    assert state.is_failed()
    assert _phases(report) == {
        "shutdown": "skipped",
        "restore": "failed",
        "verify": "not-run",
        "restore-services": "not-run",
        "test-functions": "not-run",
    }
    assert "phase restore failed" in state.message and "sha256" in state.message
    assert report["rto"] is None and "rto-breached" in _flow_run(state).tags
    assert scratch_databases(platform.admin_dsn, "drill") == []


def test_keep_restored_keeps_the_scratch_database_with_the_data(backed_up: tuple[Platform, str]) -> None:
    platform, _ = backed_up
    state, report = _run(keep_restored=True)
    assert state.is_completed(), state.message
    kept = scratch_databases(platform.admin_dsn, "drill")
    try:
        assert kept == [report["restored_into"]] and report["kept"] is True
        assert _counts(with_database(platform.admin_dsn, kept[0])) == _counts(platform.dsn)
    finally:
        with psycopg.connect(platform.admin_dsn, autocommit=True) as conn:
            for name in kept:
                conn.execute(f'DROP DATABASE "{name}" WITH (FORCE)')


def test_two_drills_of_one_database_never_run_at_once(backed_up: tuple[Platform, str]) -> None:
    platform, _ = backed_up
    with psycopg.connect(platform.dsn, autocommit=True) as holder:
        holder.execute("SELECT pg_advisory_lock(%s)", (advisory_key(f"disaster-recovery of {platform.database}"),))
        state, _ = _run()
    assert state.is_failed() and "already running" in state.message
    assert scratch_databases(platform.admin_dsn, "drill") == []


# --------------------------------------------------------------------------- recovery


class Recorder(BaseHTTPRequestHandler):
    """The platform's HTTP side for the recovery: records calls, answers 200."""

    calls: list[tuple[str, str, str]] = []

    def _answer(self) -> None:
        Recorder.calls.append((self.command, self.path, self.headers.get("Authorization", "")))
        body = b'{"status": "ok"}'
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = _answer

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def platform_http() -> Any:
    Recorder.calls = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), Recorder)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


@pytest.fixture
def recovery(backed_up: tuple[Platform, str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Any:
    """A recovery target that does not exist yet, on the same server."""
    platform, backup_id = backed_up
    name = f"{platform.database}_recovered"
    monkeypatch.setenv("RUNBOOK_RECOVERY_DATABASE_URL", _dsn_url(platform.admin_dsn, name))
    yield platform, backup_id, name
    with psycopg.connect(platform.admin_dsn, autocommit=True) as conn:
        rows = conn.execute("SELECT datname FROM pg_database WHERE datname LIKE %s", (f"{name[:40]}%",)).fetchall()
        for (db,) in rows:
            conn.execute(f'DROP DATABASE "{db}" WITH (FORCE)')




def test_a_recovery_pauses_for_the_typed_name_then_runs_every_phase_and_hook(
    recovery: Any, platform_http: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    platform, backup_id, name = recovery
    log = tmp_path / "hooks.log"
    script = "import os,sys; open(sys.argv[1],'a').write(sys.argv[2] + ' ' + os.environ['RUNBOOK_RESTORED_DATABASE'] + '\\n')"
    monkeypatch.setenv("RUNBOOK_DR__SHUTDOWN", json.dumps(
        {"name": "maintenance mode", "url": f"{platform_http}/maintenance", "headers": {"Authorization": "Bearer hook-token-123"}}
    ))
    monkeypatch.setenv("RUNBOOK_DR__RESTORE_SERVICES", json.dumps([
        {"name": "point the app", "command": [sys.executable, "-c", script, str(log), "point"]},
        {"name": "warm caches", "command": [sys.executable, "-c", script, str(log), "warm"]},
    ]))
    monkeypatch.setenv("RUNBOOK_PLATFORM_URL", platform_http)
    monkeypatch.setenv("RUNBOOK_DR__HTTP_CHECKS", '["/api/health", "/api/market/prices"]')

    outcome: dict[str, Any] = {}
    worker = threading.Thread(target=lambda: outcome.update(zip(("state", "report"), _run(mode=Mode.RECOVER, acceptance=None))))
    worker.start()
    run_id = wait_paused("the recovery", flow_name="typed-input", key="confirm-recovery")
    assert Recorder.calls == []  # nothing touched before the confirmation
    resume_flow_run(run_id, run_input={"database": name})
    # it ends with the user acceptance test (§6.4), asked the same way
    resume_flow_run(wait_paused("the acceptance test", timeout=300, flow_name="user-acceptance"), run_input={"accepted_by": "mio", "tried": "logged in, paid"})
    worker.join(timeout=300)
    state, report = outcome["state"], outcome["report"]
    assert state.is_completed(), state.message
    assert _phases(report) == {p: "ok" for p in ("shutdown", "restore", "verify", "restore-services", "test-functions")}
    assert report["restored_into"] == name and report["mode"] == "recover"
    assert _counts(with_database(platform.admin_dsn, name)) == _counts(platform.dsn)
    assert log.read_text().splitlines() == [f"point {name}", f"warm {name}"]
    assert Recorder.calls[0] == ("POST", "/maintenance", "Bearer hook-token-123")
    assert [c[1] for c in Recorder.calls[1:]] == ["/api/health", "/api/market/prices"]
    assert {"recover", "rto-ok", "rpo-ok"} <= set(_flow_run(state).tags)
    assert "hook-token-123" not in json.dumps(report)
    assert report["acceptance"] == {"status": "accepted", "by": "mio", "tried": "logged in, paid", "detail": "accepted by mio after: logged in, paid"}
    assert "user acceptance test: accepted: accepted by mio after: logged in, paid" in report["notes"]


def test_no_confirmation_in_time_touches_nothing_and_says_so(recovery: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    platform, _, name = recovery
    monkeypatch.setenv("RUNBOOK_DR__CONFIRM_TIMEOUT_SECONDS", "10")  # the least it allows
    state, _ = _run(mode=Mode.RECOVER)
    assert state.is_failed() and "no confirmation within 10 s: nothing was touched" in state.message, state.message
    with psycopg.connect(platform.admin_dsn, autocommit=True) as conn:
        assert conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone() is None


def test_an_unanswered_acceptance_test_is_recorded_as_not_accepted_never_as_accepted(
    recovery: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    platform, _, name = recovery
    monkeypatch.setenv("RUNBOOK_DR__ACCEPTANCE_TIMEOUT_SECONDS", "3")
    state, report = _run(mode=Mode.RECOVER, confirm=name, acceptance=None)  # asked in the UI; nobody answers
    assert state.is_completed(), state.message  # the platform is back; the missing acceptance is a warning
    assert report["acceptance"] == {"status": "not accepted", "detail": "no answer within 3 s"}
    assert "user acceptance test: not accepted: no answer within 3 s" in report["notes"]
    history = [json.loads(p.read_text()) for p in (Path(platform.store_url) / platform.database / "drills").glob("recovery_*.json")]
    assert [h["acceptance"]["status"] for h in history] == ["not accepted"]
    with get_client(sync_client=True) as client:  # the question itself was a real paused run that timed out
        (asked,) = client.read_flow_runs(
            flow_filter=FlowFilter(name=FlowFilterName(any_=["user-acceptance"])),
            sort=FlowRunSort.START_TIME_DESC, limit=1,
        )
    assert asked.state is not None and not asked.state.is_completed()
    assert _counts(with_database(platform.admin_dsn, name)) == _counts(platform.dsn)


def test_a_recovery_refuses_a_wrong_confirmation_and_a_non_empty_target(recovery: Any) -> None:
    platform, _, name = recovery
    state, _ = _run(mode=Mode.RECOVER, confirm="production")
    assert state.is_failed() and "is not the recovery target" in state.message
    with psycopg.connect(platform.admin_dsn, autocommit=True) as conn:
        assert conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone() is None  # nothing touched

    # a target with tables: refused unless replace, which moves it aside and keeps it
    with psycopg.connect(platform.admin_dsn, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    with psycopg.connect(with_database(platform.admin_dsn, name), autocommit=True) as conn:
        conn.execute("CREATE TABLE precious (id int)")
        conn.execute("INSERT INTO precious VALUES (42)")
    state, _ = _run(mode=Mode.RECOVER, confirm=name)
    assert state.is_failed() and "not empty (1 tables)" in state.message and "replace" in state.message

    state, report = _run(mode=Mode.RECOVER, confirm=name, replace=True)
    assert state.is_completed(), state.message
    assert report["acceptance"]["status"] == "accepted" and report["acceptance"]["by"] == "qa team"  # given as a parameter
    history = [json.loads(p.read_text()) for p in (Path(platform.store_url) / platform.database / "drills").glob("recovery_*.json")]
    assert [h["acceptance"]["tried"] for h in history] == ["login, a payment, an alert"]  # kept in the recovery's history
    aside = report["moved_aside"]
    assert aside and aside.startswith(name[:40])
    with psycopg.connect(with_database(platform.admin_dsn, aside)) as conn:
        assert conn.execute("SELECT id FROM precious").fetchone() == (42,)
    assert _counts(with_database(platform.admin_dsn, name)) == _counts(platform.dsn)


def test_a_drill_restores_from_s3_and_keeps_its_record_there(s3_platform: Platform, s3_server: Any) -> None:
    backup(BackupParameters(prune=False))
    state, report = _run()
    assert state.is_completed(), state.message
    bucket = s3_platform.store_url.split("/")[2]
    keys = [o["Key"] for o in s3_server.client.list_objects_v2(Bucket=bucket)["Contents"]]
    assert [k for k in keys if "/drills/drill_" in k and k.endswith(".json")]
    assert scratch_databases(s3_platform.admin_dsn, "drill") == []


def test_the_cancellation_hook_drops_only_this_runs_scratch_database(platform: Platform) -> None:
    """What Prefect runs when a drill is cancelled or crashes: the flow's own clean-up
    may not have run, so the hook finds the scratch database by the run's id."""
    from types import SimpleNamespace
    from uuid import uuid4

    from flows.disaster_recovery import _drop_abandoned_scratch, scratch_suffix

    run, other = uuid4(), uuid4()
    mine, theirs = (f"runbook_drill_20261129_000000_{scratch_suffix(r)}" for r in (run, other))
    with psycopg.connect(platform.admin_dsn, autocommit=True) as conn:
        for name in (mine, theirs):
            conn.execute(f'CREATE DATABASE "{name}"')
    try:
        kept = SimpleNamespace(id=run, parameters={"params": {"mode": "drill", "keep_restored": True}})
        _drop_abandoned_scratch(None, kept, None)
        assert set(scratch_databases(platform.admin_dsn, "drill")) == {mine, theirs}
        _drop_abandoned_scratch(None, SimpleNamespace(id=run, parameters={"params": {"mode": "drill"}}), None)
        assert scratch_databases(platform.admin_dsn, "drill") == [theirs]
    finally:
        with psycopg.connect(platform.admin_dsn, autocommit=True) as conn:
            for name in (mine, theirs):
                conn.execute(f'DROP DATABASE IF EXISTS "{name}"')


def test_a_recovery_restores_the_last_backup_before_the_incident_never_a_later_one(recovery: Any) -> None:
    platform, first, name = recovery
    with psycopg.connect(platform.dsn, autocommit=True) as conn:
        conn.execute("INSERT INTO system_logs (level, message, created_at) VALUES ('ERROR', 'the damage', now())")
    time.sleep(1.1)
    incident = datetime.now(timezone.utc)
    time.sleep(0.1)
    later = backup(BackupParameters(prune=False))["backup_id"]
    state, _ = _run(mode=Mode.RECOVER, confirm=name, incident_at=incident, backup_id=later)
    assert state.is_failed() and "after the incident time" in state.message
    state, report = _run(mode=Mode.RECOVER, confirm=name, incident_at=incident)
    assert state.is_completed(), state.message
    assert report["backup_id"] == first != later
    with psycopg.connect(with_database(platform.admin_dsn, name)) as conn:
        assert conn.execute("SELECT count(*) FROM system_logs WHERE message = 'the damage'").fetchone() == (0,)


def test_a_drill_makes_its_scratch_database_on_the_recovery_server_when_one_is_set(
    backed_up: tuple[Platform, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    platform, _ = backed_up
    # the recovery target itself is never touched by a drill: it need not even exist
    monkeypatch.setenv("RUNBOOK_RECOVERY_DATABASE_URL", _dsn_url(platform.admin_dsn, "not_created_by_a_drill"))
    state, report = _run()
    assert state.is_completed(), state.message
    assert report["restored_into"].startswith("runbook_drill_")
    assert report["restore_server"] == "recovery" and report["notes"] == [] and "production" not in state.message
    with psycopg.connect(platform.admin_dsn, autocommit=True) as conn:
        assert conn.execute("SELECT 1 FROM pg_database WHERE datname = 'not_created_by_a_drill'").fetchone() is None
    assert scratch_databases(platform.admin_dsn, "drill") == []


# --------------------------------------------------------------------------- replacing a database safely


def _precious_target(platform: Platform, name: str) -> None:
    """A recovery target that holds data: what --replace must never lose."""
    with psycopg.connect(platform.admin_dsn, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    with psycopg.connect(with_database(platform.admin_dsn, name), autocommit=True) as conn:
        conn.execute("CREATE TABLE precious (id int)")
        conn.execute("INSERT INTO precious VALUES (42)")


def _databases_like(platform: Platform, prefix: str) -> list[str]:
    with psycopg.connect(platform.admin_dsn, autocommit=True) as conn:
        return sorted(r[0] for r in conn.execute("SELECT datname FROM pg_database WHERE datname LIKE %s", (f"{prefix}%",)))


def _assert_untouched(platform: Platform, name: str) -> None:
    assert _databases_like(platform, name[:40]) == [name]  # nothing renamed, nothing left beside it
    with psycopg.connect(with_database(platform.admin_dsn, name)) as conn:
        assert [r[0] for r in conn.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")] == ["precious"]
        assert conn.execute("SELECT id FROM precious").fetchall() == [(42,)]


def test_replace_with_a_corrupt_dump_leaves_the_target_untouched(recovery: Any) -> None:
    platform, backup_id, name = recovery
    _precious_target(platform, name)
    dump = Path(platform.store_url, platform.database, f"{backup_id}.dump.zst")
    data = bytearray(dump.read_bytes())
    data[len(data) // 3] ^= 0xFF
    dump.write_bytes(bytes(data))
    state, report = _run(mode=Mode.RECOVER, confirm=name, replace=True)
    assert state.is_failed()
    assert _phases(report)["restore"] == "failed" and "sha256" in state.message and f"{name} was not touched" in state.message
    assert report["moved_aside"] is None and report["put_back"] is False
    assert f"{name} was not touched" in " ".join(report["notes"])
    _assert_untouched(platform, name)


def _unrestorable(platform: Platform, backup_id: str) -> None:
    """A dump that passes every check before the restore (its manifest's sha256 and
    size, a whole zstd stream) and that pg_restore then refuses."""
    import hashlib

    import zstandard

    data = zstandard.ZstdCompressor().compress(b"not a pg_dump archive\n" * 100)
    Path(platform.store_url, platform.database, f"{backup_id}.dump.zst").write_bytes(data)
    manifest_file = Path(platform.store_url, platform.database, f"{backup_id}.manifest.json")
    manifest = json.loads(manifest_file.read_text())
    manifest.update(sha256=hashlib.sha256(data).hexdigest(), size_bytes=len(data))
    manifest_file.write_text(json.dumps(manifest))


def test_a_restore_failing_after_the_move_puts_the_original_back_and_says_so(recovery: Any) -> None:
    platform, backup_id, name = recovery
    _precious_target(platform, name)
    _unrestorable(platform, backup_id)
    state, report = _run(mode=Mode.RECOVER, confirm=name, replace=True)
    assert state.is_failed()
    checks = {c["name"]: c for c in report["checks"]}
    assert checks["sha256"]["ok"] and checks["decompress"]["ok"]  # it got past the checks: the move did happen
    assert _phases(report)["restore"] == "failed"
    assert "pg_restore failed" in state.message and "put back" in state.message
    assert report["put_back"] is True and report["moved_aside"] is None
    assert any("put back" in note for note in report["notes"])
    markdown = Artifact.get(f"dr-report-{platform.database}".replace("_", "-"))
    assert markdown is not None and "put back" in markdown.data
    _assert_untouched(platform, name)


def test_a_drill_whose_restore_fails_drops_its_scratch_database(backed_up: tuple[Platform, str]) -> None:
    platform, backup_id = backed_up
    _unrestorable(platform, backup_id)
    state, report = _run()
    assert state.is_failed() and "pg_restore failed" in state.message
    assert report["put_back"] is False and "put back" not in state.message
    assert scratch_databases(platform.admin_dsn, "drill") == []


def test_a_drill_restores_on_the_scratch_server_and_never_touches_production(
    backed_up: tuple[Platform, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from tests.flows.test_verify import only_the_scratch_server_answers

    platform, _ = backed_up
    only_the_scratch_server_answers(platform, monkeypatch)  # the scratch server is all a drill needs
    state, report = _run()
    assert state.is_completed(), state.message
    assert report["restore_server"] == "scratch" and report["notes"] == []
    assert scratch_databases(platform.admin_dsn, "drill") == []
