"""``runbook server`` end to end with real processes (issue 13 §5): its own Prefect
server under a tmp RUNBOOK_HOME on a free port, prefect.yaml deployed onto the process
work pool, two process workers on it; the CLI sharing it; two backups triggered at
once while the database's heavy-job slot is taken. Always stopped in teardown.

Run alone with ``pytest -m deployed``.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pytest
from prefect import flow
from psycopg import sql

from deployments.serve import load_spec
from runbook.backups import MANIFEST_SUFFIX
from runbook.server import _alive
from tests.conftest import _dsn_url, clone_database
from tests.servers import free_port

pytestmark = [pytest.mark.deployed, pytest.mark.timeout(1200)]

ROOT = Path(__file__).resolve().parent.parent
RUN_S = 300.0  # bound on one flow run, trigger to final state, on a loaded machine


def runbook(*args: str, env: dict[str, str], timeout: float = 900) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "runbook.cli", *args], env=env, cwd=ROOT, capture_output=True, text=True, timeout=timeout)


@contextmanager
def on_server(api_url: str) -> Iterator[None]:
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings({PREFECT_API_URL: api_url}):
        yield


@dataclass
class Local:
    env: dict[str, str]
    api_url: str
    port: int
    store: Path
    database: str

    def client(self) -> Any:
        from prefect.client.orchestration import get_client

        return get_client(sync_client=True)

    def runs(self, flow_name: str) -> list[Any]:
        from prefect.client.schemas.filters import FlowFilter, FlowFilterName

        with on_server(self.api_url), self.client() as client:
            return client.read_flow_runs(flow_filter=FlowFilter(name=FlowFilterName(any_=[flow_name])))

    def logs(self, run_id: Any) -> str:
        from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId

        with on_server(self.api_url), self.client() as client:
            return "\n".join(log.message for log in client.read_logs(log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=[run_id]))))


@pytest.fixture(scope="module")
def local(pg_admin_dsn: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Local]:
    tmp = tmp_path_factory.mktemp("server")
    database = f"t_{secrets.token_hex(4)}"
    clone_database(pg_admin_dsn, database)
    port = free_port()
    # the session's PREFECT_* and RUNBOOK_* stay out: only what an operator would set
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "RUNBOOK_"))}
    env.update(
        PYTHONPATH=str(ROOT),
        RUNBOOK_HOME=str(tmp / "home"),
        RUNBOOK_SERVER__PORT=str(port),
        RUNBOOK_SERVER__WORKERS="2",
        RUNBOOK_SERVER__SCHEDULER="false",  # only the runs the tests start
        RUNBOOK_DATABASE_URL=_dsn_url(pg_admin_dsn, database),  # inherited by the workers' runs
        RUNBOOK_BACKUP_STORE=str(tmp / "backups"),
        RUNBOOK_INSTANCE=database,
        PREFECT_WORKER_QUERY_SECONDS="1",
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
    )
    started = runbook("--json", "server", "start", env=env)
    state_file = tmp / "home" / "server" / "state.json"
    pids = [p["pid"] for p in json.loads(state_file.read_text())["processes"].values()] if state_file.exists() else []
    try:
        assert started.returncode == 0, f"{started.stdout}\n{started.stderr}"
        yield Local(env, f"http://127.0.0.1:{port}/api", port, tmp / "backups", database)
    finally:
        stopped = runbook("--json", "server", "stop", env=env, timeout=300)
        left = [pid for pid in pids if _alive(pid)]
        for pid in left:  # never leave a server behind, whatever failed
            os.killpg(pid, 9)
        with psycopg.connect(pg_admin_dsn, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(database)))
    assert stopped.returncode == 0, stopped.stderr
    assert not left, f"runbook server stop left {left} running"
    assert not state_file.exists()
    assert json.loads(runbook("--json", "server", "status", env=env).stdout)["server"] == "stopped"


def test_start_is_idempotent_and_status_says_where_and_what(local: Local) -> None:
    status = json.loads(runbook("--json", "server", "status", env=local.env).stdout)
    assert status["server"] == "running" and status["url"] == f"http://127.0.0.1:{local.port}"
    assert _alive(status["pid"]) and [w["alive"] for w in status["workers"]] == [True, True]
    assert status["deployments"] == len(load_spec()) and status["serving"] is True

    again = runbook("--json", "server", "start", env=local.env)
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout)["started"] == [] and json.loads(again.stdout)["pid"] == status["pid"]

    # two workers polling prefect.yaml's pool, and the deployments on it
    deadline = time.monotonic() + RUN_S
    with on_server(local.api_url), local.client() as client:
        while len(client.read_workers_for_work_pool("runbook")) < 2 and time.monotonic() < deadline:
            time.sleep(0.5)
        assert len(client.read_workers_for_work_pool("runbook")) == 2
        assert client.read_deployment_by_name("backup/backup").work_pool_name == "runbook"


def test_a_cli_run_is_recorded_on_the_server_and_backup_list_makes_none(local: Local) -> None:
    pruned = runbook("--json", "backup-prune", env=local.env)  # no PREFECT_API_URL: the state file says where
    assert pruned.returncode == 0, pruned.stderr
    (run,) = local.runs("backup-prune")
    assert run.state.is_completed() and run.deployment_id is None  # started by the CLI, not a worker

    listed = runbook("--json", "backup-list", env=local.env)
    assert listed.returncode == 0, listed.stderr
    assert json.loads(listed.stdout)["backups"] == []
    assert local.runs("backup-list") == []


@flow(name="holds-the-slot")
def holds_the_slot(instance: str, taken: threading.Event, release: threading.Event) -> None:
    from tasks.slots import database_slot

    with database_slot(instance, job="test", wait_seconds=60):
        taken.set()
        release.wait(RUN_S)


def test_two_backups_at_once_on_two_workers_one_runs_one_is_cancelled(local: Local) -> None:
    """The deployment's limit (CANCEL_NEW) cancels the second; the first waits for the
    database's heavy-job slot, held by another flow run, and runs once it is free."""
    taken, release = threading.Event(), threading.Event()

    def hold() -> None:
        with on_server(local.api_url):
            holds_the_slot(local.database, taken, release)

    holder = threading.Thread(target=hold)
    holder.start()
    try:
        assert taken.wait(RUN_S), "the holder never got the slot"
        with on_server(local.api_url), local.client() as client:
            deployment = client.read_deployment_by_name("backup/backup")
            ids = [client.create_flow_run_from_deployment(deployment.id).id for _ in range(2)]
            deadline = time.monotonic() + RUN_S
            while time.monotonic() < deadline:
                runs = [client.read_flow_run(i) for i in ids]
                cancelled = [r for r in runs if r.state.is_cancelled()]
                waiting = [r for r in runs if r.state.is_running() and "Taking the heavy-job slot" in local.logs(r.id)]
                if cancelled and waiting:
                    break
                time.sleep(0.5)
            else:
                raise AssertionError(f"no cancelled and waiting pair: {[(r.name, r.state.name) for r in runs]}")
        # the running backup is held by the database's slot: nothing dumped yet
        assert not list(local.store.rglob(f"*{MANIFEST_SUFFIX}"))
    finally:
        release.set()
        holder.join(RUN_S)
    (first,) = waiting
    (second,) = cancelled
    assert "concurrency" in (second.state.message or "").lower(), second.state.message
    with on_server(local.api_url), local.client() as client:
        deadline = time.monotonic() + RUN_S
        while not client.read_flow_run(first.id).state.is_final() and time.monotonic() < deadline:
            time.sleep(0.5)
        done = client.read_flow_run(first.id)
    assert done.state.is_completed(), f"{done.state.message}\n{local.logs(done.id)}"
    (manifest,) = local.store.rglob(f"*{MANIFEST_SUFFIX}")
    assert json.loads(manifest.read_text())["flow_run_id"] == str(first.id)
