"""The runbook command as an operator runs it: exit codes, --json, no secrets anywhere."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from prefect import get_client

from tasks.postgres import parse_dsn
from tests.conftest import Platform, runbook_here

SECRET = "Sup3r-Secret-pw"


def runbook(*args: str, env: dict[str, str] | None = None, timeout: int = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "runbook.cli", *args],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        timeout=timeout,
    )


@pytest.fixture
def cli_env(platform: Platform, prefect_harness: str) -> dict[str, str]:
    host = parse_dsn(platform.admin_dsn)["host"]
    # the test server trusts local connections, so any password works: it must never show
    return {
        "PREFECT_API_URL": prefect_harness,
        "RUNBOOK_DATABASE_URL": f"postgresql://postgres:{SECRET}@/{platform.database}?host={host}",
    }


def test_backup_list_verify_with_json_and_no_secret_anywhere(
    platform: Platform, cli_env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    made = runbook("--json", "backup", "--no-prune", env=cli_env)  # its own process: every log line on its stderr
    assert made.returncode == 0, made.stderr
    result = json.loads(made.stdout)  # one JSON object and nothing else on stdout
    assert result["status"] == "DONE" and result["backup_id"].startswith("backup_")

    listed = runbook_here("backup-list", "--json", env=cli_env, monkeypatch=monkeypatch)
    assert listed.returncode == 0
    assert [b["id"] for b in json.loads(listed.stdout)["backups"]] == [result["backup_id"]]

    verified = runbook("backup-verify", "--json", env=cli_env)
    assert verified.returncode == 0, verified.stderr
    report = json.loads(verified.stdout)
    assert report["outcome"] == "passed" and report["backup_id"] == result["backup_id"]

    human = runbook_here("backup-list", env=cli_env, monkeypatch=monkeypatch)
    assert result["backup_id"] in human.stdout and "passed" in human.stdout

    for proc in (made, listed, verified, human):
        assert SECRET not in proc.stdout and SECRET not in proc.stderr
    for path in Path(platform.store_url).rglob("*"):
        if path.is_file() and path.suffix == ".json":
            assert SECRET not in path.read_text()
    with get_client(sync_client=True) as client:
        artifacts = client.read_artifacts()
        assert artifacts
        assert not [a.key for a in artifacts if SECRET in json.dumps(a.data, default=str)]
        runs = client.read_flow_runs()
        assert not [r.name for r in runs if SECRET in json.dumps(r.parameters, default=str)]
        logs = client.read_logs()
        assert logs and not [log.message for log in logs if SECRET in log.message]


def test_backup_list_answers_without_a_flow_run_a_server_or_prefect(platform: Platform, cli_env: dict[str, str]) -> None:
    from flows.backup import BackupParameters, backup

    made = backup(BackupParameters(prune=False))
    listed_before = _list_runs()
    probe = (
        "import json, sys\n"
        "from runbook.cli import main\n"
        "code = main(['--json', 'backup-list'])\n"
        "print(json.dumps({'code': code, 'prefect': 'prefect' in sys.modules}), file=sys.stderr)\n"
    )
    # no Prefect server anywhere: an API that refuses connections, and no temporary one
    env = {**cli_env, "PREFECT_API_URL": "http://127.0.0.1:9/api", "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "1"}
    proc = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, env={**os.environ, **env}, timeout=120)
    outcome = json.loads(proc.stderr.strip().splitlines()[-1])
    assert outcome == {"code": 0, "prefect": False}, proc.stderr
    assert [b["id"] for b in json.loads(proc.stdout)["backups"]] == [made["backup_id"]]
    assert _list_runs() == listed_before  # and no flow run on the session's server either


def _list_runs() -> int:
    from prefect.client.schemas.filters import FlowFilter, FlowFilterName

    with get_client(sync_client=True) as client:
        return len(client.read_flow_runs(flow_filter=FlowFilter(name=FlowFilterName(any_=["backup-list"]))))


def test_a_damaged_backup_exits_1_with_the_failed_checks(platform: Platform, cli_env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    made = json.loads(runbook_here("--json", "backup", "--no-prune", env=cli_env, monkeypatch=monkeypatch).stdout)
    dump = Path(platform.store_url, platform.database, f"{made['backup_id']}.dump.zst")
    data = bytearray(dump.read_bytes())
    data[100] ^= 0xFF
    dump.write_bytes(bytes(data))
    verified = runbook_here("--json", "backup-verify", env=cli_env, monkeypatch=monkeypatch)
    assert verified.returncode == 1
    assert "sha256" in json.loads(verified.stdout)["failed"]
    human = runbook_here("backup-verify", env=cli_env, monkeypatch=monkeypatch)
    assert human.returncode == 1
    assert "FAIL sha256" in human.stdout
    assert "failed verification: sha256 (store " in human.stderr  # the check named, with what was seen


@pytest.mark.parametrize(
    ("args", "env", "message"),
    [
        (("backup",), {"RUNBOOK_DATABASE_URL": f"postgresql://u:{SECRET}@db:54x2/p"}, "RUNBOOK_DATABASE_URL"),
        (("backup",), {"RUNBOOK_BACKUP_STORE": "gopher://x"}, "RUNBOOK_BACKUP_STORE"),
        # never a silent fallback to the sandbox or to a local folder
        (("backup",), {"RUNBOOK_DATABASE_URL": ""}, "RUNBOOK_DATABASE_URL: not set"),
        (("dr-drill",), {"RUNBOOK_DATABASE_URL": ""}, "RUNBOOK_DATABASE_URL: not set"),
        (("diagnose", "--component", "database"), {"RUNBOOK_DATABASE_URL": ""}, "RUNBOOK_DATABASE_URL: not set"),
        (("backup",), {"RUNBOOK_BACKUP_STORE": ""}, "RUNBOOK_BACKUP_STORE: not set"),
        (("backup-list",), {"RUNBOOK_BACKUP_STORE": ""}, "RUNBOOK_BACKUP_STORE: not set"),
        (("backup",), {"RUNBOOK_DATABASE_URL": "", "RUNBOOK_DATABASE_URL_SECRET_BLOCK": "no-such-block"}, "RUNBOOK_DATABASE_URL_SECRET_BLOCK"),
        (("--sandbox", "backup"), {}, "RUNBOOK_SANDBOX"),  # the sandbox beside a configured DSN: refused
        (("backup",), {"RUNBOOK_INSTANCE": "../prod"}, "RUNBOOK_INSTANCE: '../prod' is not a safe instance name"),
        (("deploy-verify",), {"RUNBOOK_PLATFORM_URL": "http://127.0.0.1:9", "RUNBOOK_PLATFORM_TOKEN": ""}, "RUNBOOK_PLATFORM_TOKEN"),
        (("deploy-verify",), {"RUNBOOK_PLATFORM_URL": "http://127.0.0.1:9", "RUNBOOK_PLATFORM_TOKEN": "  "}, "RUNBOOK_PLATFORM_TOKEN"),
        (("backup-verify", "--at", "yesterday"), {}, "not an ISO time"),
        (("backup-verify",), {}, "no DONE backup"),
        (("backup-verify", "--backup-id", "backup_20200101_000000"), {}, "no backup backup_20200101_000000"),
        (("no-such-procedure",), {}, "invalid choice"),
        (("sandbox", "seed", "--scale", "-3"), {}, "must be >= 1"),
        (("disaster-recovery",), {}, "needs --confirm <database>"),
        (("disaster-recovery", "--confirm", "x"), {}, "RUNBOOK_RECOVERY_DATABASE_URL"),
        (("dr-drill", "--rto-minutes", "0"), {}, "must be > 0 minutes"),
        (("dr-drill", "--backup-id", "backup_1", "--at", "2026-11-29T00:00:00"), {}, "not both"),
        (("deploy-verify",), {"RUNBOOK_PLATFORM_URL": ""}, "RUNBOOK_PLATFORM_URL"),
        (("deploy-verify", "--base-url", "ftp://x"), {}, "not an http(s)://host[:port] URL"),
        (("deploy-verify", "--env", "prod"), {}, "invalid choice"),
        (("diagnose", "--component", "cache"), {}, "invalid choice"),
        (("cert-check",), {}, "RUNBOOK_CERTS__HOSTS"),
        (("diagnose", "--component", "payments"), {"RUNBOOK_PLATFORM_URL": ""}, "RUNBOOK_PLATFORM_URL"),
        (("diagnose",), {"RUNBOOK_DIAGNOSE__OPENAI_URL": "api.openai.com"}, "RUNBOOK_DIAGNOSE__OPENAI_URL"),
        (("predeploy-check",), {"RUNBOOK_PREDEPLOY__GATES": '[{"name": "x", "command": []}]'}, "RUNBOOK_PREDEPLOY__GATES"),
        (("predeploy-check", "--deploy"), {"RUNBOOK_PREDEPLOY__DEPLOY_COMMANDS": '{"staging": ["true"]}'}, "no command for production"),
        (("dr-drill",), {"RUNBOOK_DR__SHUTDOWN": '{"name": "m", "command": ["x"], "url": "http://h"}'}, "RUNBOOK_DR__SHUTDOWN"),
    ],
)
def test_bad_input_exits_2_with_one_clear_line(
    cli_env: dict[str, str], args: tuple[str, ...], env: dict[str, str], message: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    proc = runbook_here(*args, env={**cli_env, **env}, monkeypatch=monkeypatch)
    assert proc.returncode == 2, proc.stderr
    assert message in proc.stderr
    assert "Traceback" not in proc.stderr
    assert SECRET not in proc.stderr and SECRET not in proc.stdout
    errors = [line for line in proc.stderr.splitlines() if line.startswith("runbook")]
    assert len(errors) == 1


def test_the_demo_records_on_an_explicit_prefect_server_and_starts_none(tmp_path: Path, prefect_harness: str) -> None:
    """PREFECT_API_URL set: the demo's runs go there, no local server is started (or left)."""
    env = {"PREFECT_API_URL": prefect_harness, "RUNBOOK_HOME": str(tmp_path / "rb")}
    base = {k: v for k, v in os.environ.items() if not k.startswith("RUNBOOK_")}
    try:
        demo = subprocess.run(
            [sys.executable, "-m", "runbook.cli", "demo"], capture_output=True, text=True, env={**base, **env}, timeout=600
        )
        assert demo.returncode == 0, demo.stdout + demo.stderr[-2000:]
        assert f"on the Prefect server at {prefect_harness.removesuffix('/api')}" in demo.stdout
        assert "ok   dr-drill" in demo.stdout and "achieved RPO: RPO" in demo.stdout
        assert "starting the local Prefect server" not in demo.stderr
        assert not (tmp_path / "rb" / "server" / "state.json").exists()
        assert list((tmp_path / "rb" / "backups" / "local-5432-platform").glob("*.dump.zst"))
    finally:
        down = subprocess.run(
            [sys.executable, "-m", "runbook.cli", "--json", "sandbox", "down"], capture_output=True, text=True, env={**base, **env}, timeout=120
        )
    assert json.loads(down.stdout)["sandbox"] == "down"


def test_a_drill_stopped_by_sigterm_drops_its_scratch_database(platform: Platform, cli_env: dict[str, str]) -> None:
    import signal
    import time

    from tests.conftest import scratch_databases

    assert runbook("backup", "--no-prune", env=cli_env).returncode == 0
    proc = subprocess.Popen(
        [sys.executable, "-m", "runbook.cli", "dr-drill"], env={**os.environ, **cli_env},
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    deadline = time.monotonic() + 120
    while not scratch_databases(platform.admin_dsn, "drill") and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.05)
    assert scratch_databases(platform.admin_dsn, "drill"), "the drill never created its scratch database"
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err[-2000:]
    assert scratch_databases(platform.admin_dsn, "drill") == []


def test_deploy_verify_exits_1_on_a_bad_deploy_and_0_on_a_good_one(platform: Platform, cli_env: dict[str, str]) -> None:
    import httpx

    from sandbox.api import serve

    running = serve(platform.dsn, dashboard_token="cli-token-9")
    try:
        env = {**cli_env, "RUNBOOK_PLATFORM_URL": running.url, "RUNBOOK_PLATFORM_TOKEN": "cli-token-9", "RUNBOOK_DEPLOY__SAMPLES": "2"}
        good = runbook("deploy-verify", "--env", "production", env=env)
        assert good.returncode == 0, good.stderr[-2000:]
        assert "PASSED" in good.stdout and "/api/market/prices" in good.stdout
        httpx.put(f"{running.url}/__faults", json={"database_down": True}).raise_for_status()
        bad = runbook("--json", "deploy-verify", "--env", "production", env={**env, "RUNBOOK_DEPLOY__ROLLBACK_COMMAND": "[]"})
        assert bad.returncode == 1
        report = json.loads(bad.stdout)
        assert "status:/api/health" in report["failed"] and "alert only" in report["message"]
        assert "cli-token-9" not in bad.stdout + bad.stderr + good.stdout + good.stderr
    finally:
        running.stop()


def test_diagnose_prints_each_component_with_its_failures_and_advice(platform: Platform, cli_env: dict[str, str]) -> None:
    with psycopg_connect(platform.dsn) as conn:
        conn.execute("ALTER TABLE user_alerts DISABLE ROW LEVEL SECURITY")
    proc = runbook("diagnose", "--component", "database", env=cli_env)
    assert proc.returncode == 1
    assert "database: failed" in proc.stdout
    assert "FAIL database:row-level-security: public.user_alerts has row-level security OFF" in proc.stdout
    assert "next: Database connection refused (§3.2)" in proc.stdout


def psycopg_connect(dsn: str):  # type: ignore[no-untyped-def]
    import psycopg

    return psycopg.connect(dsn, autocommit=True)


def test_data_cleanup_is_a_dry_run_unless_applied_and_shows_its_progress(
    platform: Platform, cli_env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    plan = runbook_here("data-cleanup", env=cli_env, monkeypatch=monkeypatch)
    assert plan.returncode == 0, plan.stderr[-1500:]
    assert "clean-up plan (dry run: add --apply to do it)" in plan.stdout and "system-logs" in plan.stdout
    assert "clean-up of" not in plan.stderr  # nothing applied, no progress
    done = runbook_here("data-cleanup", "--apply", "--policy", "system-logs", "--batch-size", "500", env=cli_env, monkeypatch=monkeypatch)
    assert done.returncode == 0, done.stderr[-1500:]
    assert "clean-up done:" in done.stdout and "system-logs" in done.stdout
    lines = [line for line in done.stderr.splitlines() if line.startswith(f"clean-up of {platform.database}: ")]
    assert len(lines) >= 3 and lines[-1].startswith(f"clean-up of {platform.database}: 100% "), done.stderr[-1500:]
    unknown = runbook_here("data-cleanup", "--policy", "nope", env=cli_env, monkeypatch=monkeypatch)
    assert unknown.returncode == 2 and "no policy named nope" in unknown.stderr


def test_db_maintenance_reports_on_the_command_line(platform: Platform, cli_env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    proc = runbook_here("db-maintenance", "--no-vacuum", env=cli_env, monkeypatch=monkeypatch)
    assert proc.returncode == 0, proc.stderr[-1500:]
    assert "ok   index:idx_market_data_symbol_timestamp" in proc.stdout and "warn setting:shared_buffers" in proc.stdout


def test_a_sigterm_caught_by_another_handler_still_counts_as_stopped() -> None:
    """Prefect's engine swaps in its own SIGTERM handler while a flow runs; a signal it
    turns into some other error must still make the CLI exit 130 (the wakeup pipe)."""
    import signal

    from runbook import cli

    before = signal.getsignal(signal.SIGTERM)
    try:
        cli._install_signal_handlers()
        assert cli._stopped_by_signal() is None
        signal.signal(signal.SIGTERM, lambda *_: None)  # as Prefect's handler, swallowing it here
        os.kill(os.getpid(), signal.SIGTERM)
        assert cli._stopped_by_signal() == "SIGTERM"
        cli._install_signal_handlers()  # the next run in this process starts clean
        assert cli._stopped_by_signal() is None
    finally:
        signal.signal(signal.SIGTERM, before)
        signal.set_wakeup_fd(-1)
        for fd in cli._WAKEUP:
            os.close(fd)
        cli._WAKEUP.clear()
