"""The deployed path, end to end (issue 10 §7): what an operator does in the README's
"Deploying to a Prefect server", with real processes.

A ``prefect server start`` of its own (port, PREFECT_HOME and database in a tmp folder),
the ``runbook`` process work pool, the Secret block and Variables saved on it,
``prefect deploy --all`` of this repository's prefect.yaml, and a ``prefect worker`` whose
environment has no RUNBOOK_DATABASE_URL or RUNBOOK_BACKUP_STORE: the settings can only
come from the deployment. Runs are triggered through the API, as the UI does.

Run alone with ``pytest -m deployed``.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from uuid import UUID

import httpx
import psycopg
import pytest
from psycopg import sql

from runbook.backups import DUMP_SUFFIX, MANIFEST_SUFFIX
from tests.conftest import _dsn_url, clone_database
from tests.servers import free_port
from tests.standins import SlackStandIn

# the server's start, `prefect deploy` and each run's interpreter take seconds on an idle
# machine and minutes on a loaded one: bound the whole module well above pytest's default
pytestmark = [pytest.mark.deployed, pytest.mark.timeout(1200)]

ROOT = Path(__file__).resolve().parent.parent
PREFECT = Path(sys.executable).with_name("prefect")  # the venv's CLI, next to this interpreter
SECRET_BLOCK = "runbook-database-url"  # prefect.yaml: RUNBOOK_DATABASE_URL_SECRET_BLOCK
STARTUP_S = 300.0  # bound on the server's start (6-10 s on an idle machine, 140 s seen under load 10)
RUN_S = 300.0  # bound on one flow run, from trigger to final state (worker start included)


# --------------------------------------------------------------------------- processes


def _env(home: Path, api_url: str, **extra: str) -> dict[str, str]:
    """An explicit environment for a Prefect process: this session's PREFECT_* and
    RUNBOOK_* variables left out (the in-process harness and the ``platform``-style
    settings must not leak into a worker), its own PREFECT_HOME, our server's API."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "RUNBOOK_"))}
    env.update(
        PREFECT_HOME=str(home),
        PREFECT_API_URL=api_url,
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
        PREFECT_CLI_PROMPT="false",
    )
    env.update(extra)
    return env


@dataclass
class Process:
    """A process started by this module, in its own process group, logging to a file."""

    name: str
    popen: subprocess.Popen[bytes]
    log: Path

    def tail(self, lines: int = 40) -> str:
        text = self.log.read_text(errors="replace") if self.log.exists() else ""
        return f"--- {self.name} log ({self.log}) ---\n" + "\n".join(text.splitlines()[-lines:])

    def stop(self, grace_s: float = 20.0) -> None:
        """SIGTERM, then SIGKILL after ``grace_s``; then anything left in its group."""
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(grace_s)
            except subprocess.TimeoutExpired:
                os.killpg(self.popen.pid, signal.SIGKILL)
                self.popen.wait(10)
        deadline = time.monotonic() + 10
        while _group_alive(self.popen.pid) and time.monotonic() < deadline:
            os.killpg(self.popen.pid, signal.SIGTERM if time.monotonic() < deadline - 5 else signal.SIGKILL)
            time.sleep(0.2)


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


def _start(name: str, args: list[str], *, env: dict[str, str], cwd: Path, logs: Path) -> Process:
    log = logs / f"{name}.log"
    with log.open("wb") as out:
        popen = subprocess.Popen(args, env=env, cwd=cwd, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    return Process(name, popen, log)


class Cli:
    """One ``prefect ...`` command started now, its outcome checked by ``done()``."""

    def __init__(self, *args: str, env: dict[str, str], cwd: Path = ROOT) -> None:
        self.args = args
        self.popen = subprocess.Popen(
            [str(PREFECT), *args], env=env, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )

    def done(self, timeout: float = 300) -> str:
        try:
            out, _ = self.popen.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.popen.kill()
            out, _ = self.popen.communicate()
            raise AssertionError(f"prefect {' '.join(self.args)}: not done within {timeout:.0f} s\n{out}") from None
        assert self.popen.returncode == 0, f"prefect {' '.join(self.args)}: exit {self.popen.returncode}\n{out}"
        return out


def _wait_healthy(server: Process, api_url: str) -> None:
    deadline = time.monotonic() + STARTUP_S
    while time.monotonic() < deadline:
        assert server.popen.poll() is None, f"the server exited ({server.popen.returncode})\n{server.tail()}"
        try:
            if httpx.get(f"{api_url}/health", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    raise AssertionError(f"no /api/health within {STARTUP_S:.0f} s\n{server.tail()}")


@contextmanager
def on_server(api_url: str) -> Iterator[None]:
    """In-process Prefect calls go to our server, not to the session's test harness."""
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings({PREFECT_API_URL: api_url}):
        yield


def save_settings(api_url: str, *, dsn: str, store: str) -> None:
    """What an operator saves on the server before ``prefect deploy`` (README,
    "Deploying"): the Secret block holding the DSN and the Variables prefect.yaml uses.
    The one place to change when the settings move."""
    from prefect.blocks.system import Secret
    from prefect.variables import Variable

    with on_server(api_url):
        Secret(value=dsn).save(SECRET_BLOCK, overwrite=True)
        for name, value in {"runbook_backup_store": store}.items():
            Variable.set(name, value, overwrite=True)


def delete_secret(api_url: str) -> None:
    from prefect.client.orchestration import get_client

    with on_server(api_url), get_client(sync_client=True) as client:
        block = client.read_block_document_by_name(SECRET_BLOCK, block_type_slug="secret")
        client.delete_block_document(block.id)


# --------------------------------------------------------------------------- the deployment


@dataclass
class Deployed:
    api_url: str
    dsn: str
    admin_dsn: str
    database: str
    store: Path
    worker_home: Path
    server: Process
    worker: Process
    slack: SlackStandIn

    def run(self, deployment: str) -> Any:
        """Trigger a deployment as the UI's "Quick run" does and wait for its final state."""
        from prefect.client.orchestration import get_client

        with on_server(self.api_url), get_client(sync_client=True) as client:
            found = client.read_deployment_by_name(deployment)
            run_id: UUID = client.create_flow_run_from_deployment(found.id).id
            started = time.monotonic()
            while time.monotonic() < started + RUN_S:
                run = client.read_flow_run(run_id)
                if run.state is not None and run.state.is_final():
                    print(f"[deployed] {deployment}: {run.state.name} in {time.monotonic() - started:.1f} s", flush=True)
                    return run
                assert self.worker.popen.poll() is None, f"the worker exited\n{self.worker.tail()}"
                time.sleep(0.25)
        raise AssertionError(f"{deployment}: run {run_id} not final within {RUN_S:.0f} s\n{self.worker.tail()}\n{self.server.tail()}")

    def deployment(self, name: str) -> Any:
        from prefect.client.orchestration import get_client

        with on_server(self.api_url), get_client(sync_client=True) as client:
            return client.read_deployment_by_name(name)

    def logs(self, run: Any) -> str:
        from prefect.client.orchestration import get_client
        from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId

        with on_server(self.api_url), get_client(sync_client=True) as client:
            found = client.read_logs(log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=[run.id])))
        return "\n".join(log.message for log in found)

    @property
    def prefix(self) -> Path:
        """Where this database's backups belong in the configured store: its instance
        (no RUNBOOK_INSTANCE is configured, so the default one of host, port, database)."""
        from runbook.target import default_instance

        return self.store / default_instance(self.dsn)

    def manifests(self) -> list[Path]:
        """Every backup manifest in the configured store, wherever it lies."""
        return sorted(self.store.rglob(f"*{MANIFEST_SUFFIX}"))


@pytest.fixture(scope="module")
def deployed(pg_admin_dsn: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployed]:
    """A server, the work pool, the settings, ``prefect deploy --all``, and a worker."""
    tmp = tmp_path_factory.mktemp("deployed")
    database = f"t_{secrets.token_hex(4)}"
    clone_database(pg_admin_dsn, database)  # a fresh copy of the seeded platform, as ``platform`` makes
    dsn = _dsn_url(pg_admin_dsn, database)
    store, worker_home, worker_cwd, logs = (tmp / n for n in ("backups", "worker-home", "worker-cwd", "logs"))
    for folder in (worker_home, worker_cwd, logs):
        folder.mkdir()

    port = free_port()
    api_url = f"http://127.0.0.1:{port}/api"
    server_env = _env(
        tmp / "server-home",
        api_url,
        PREFECT_SERVER_DATABASE_CONNECTION_URL=f"sqlite+aiosqlite:///{tmp / 'server.db'}",
    )
    client_env = _env(tmp / "client-home", api_url)
    started: list[Process] = []
    clock = time.monotonic()
    slack = SlackStandIn()  # where the worker's runs post (notify-failure, started by the automations)

    def phase(name: str) -> None:  # where the time goes, for -s and for failures
        print(f"[deployed] {name}: {time.monotonic() - clock:.1f} s", flush=True)

    try:
        # no scheduler: a scheduled run (backup is hourly) must not join the triggered ones
        server = _start(
            "server",
            [str(PREFECT), "server", "start", "--host", "127.0.0.1", "--port", str(port), "--no-ui", "--no-scheduler"],
            env=server_env,
            cwd=tmp,
            logs=logs,
        )
        started.append(server)
        _wait_healthy(server, api_url)
        phase("server healthy")

        pool = Cli("work-pool", "create", "runbook", "--type", "process", env=client_env)
        try:
            save_settings(api_url, dsn=dsn, store=str(store))  # meanwhile
        finally:
            pool.done()
        phase("pool and settings")
        # the worker's environment names neither the database nor the store; its
        # RUNBOOK_HOME is empty, so a sandbox started there would show
        worker_env = _env(
            tmp / "worker-prefect-home", api_url, PREFECT_WORKER_QUERY_SECONDS="1", RUNBOOK_HOME=str(worker_home),
            **slack.settings_env(),
            # a chain Slack alone covers: the other channels have no stand-in here
            RUNBOOK_ALERTS__ESCALATION__LEVELS=json.dumps([{"level": 1, "name": "automatic", "after_minutes": 0,
                                                            "contacts": [{"channel": "slack"}]}]),
        )
        worker = _start(
            "worker",
            [str(PREFECT), "worker", "start", "--pool", "runbook", "--name", "e2e"],
            env=worker_env,
            cwd=worker_cwd,  # not the checkout: the deployment's pull step has to find it
            logs=logs,
        )
        started.append(worker)
        Cli("deploy", "--all", env={**client_env, "RUNBOOK_CHECKOUT": str(ROOT)}).done()
        phase("prefect deploy --all")

        yield Deployed(api_url, dsn, pg_admin_dsn, database, store, worker_home, server, worker, slack)
    finally:
        for process in reversed(started):
            process.stop()
        slack.stop()
        # a run that fell back to the sandbox (what the tests check against) would have
        # left its PostgreSQL running under the worker's home: stop it too
        from sandbox.platform import Sandbox

        Sandbox(worker_home).down()
        with psycopg.connect(pg_admin_dsn, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(database)))
    assert not [p.name for p in started if _group_alive(p.popen.pid)], "processes left running"


# --------------------------------------------------------------------------- tests


def test_backup_and_drill_run_on_the_worker_against_the_configured_database_and_store(deployed: Deployed) -> None:
    # RUNBOOK_CHECKOUT was rendered when `prefect deploy` ran: the worker has none, and
    # starts in another folder
    pull = deployed.deployment("backup/backup").pull_steps
    assert pull == [{"prefect.deployments.steps.set_working_directory": {"directory": str(ROOT)}}]

    backup = deployed.run("backup/backup")
    assert backup.state.is_completed(), f"{backup.state.message}\n{deployed.logs(backup)}\n{deployed.worker.tail()}"
    assert backup.deployment_id is not None and backup.work_pool_name == "runbook"

    # this run's backup of the configured database is in the configured store, under its prefix
    (found,) = deployed.manifests()
    manifest = json.loads(found.read_text())
    assert found.parent == deployed.prefix, found
    assert manifest["database"] == deployed.database and manifest["status"] == "DONE"
    backup_id = found.name.removesuffix(MANIFEST_SUFFIX)
    assert manifest["id"] == backup_id and manifest["flow_run_id"] == str(backup.id)
    assert (deployed.prefix / f"{backup_id}{DUMP_SUFFIX}").stat().st_size > 0
    # and no sandbox: nothing under the worker's RUNBOOK_HOME (no pgdata, no backups)
    assert list(deployed.worker_home.iterdir()) == []

    drill = deployed.run("disaster-recovery/dr-drill")
    assert drill.state.is_completed(), f"{drill.state.message}\n{deployed.logs(drill)}\n{deployed.worker.tail()}"
    labels = drill.labels
    assert labels["backup_id"] == backup_id and labels["outcome"] == "passed"  # the configured store's backup
    assert labels["rto_seconds"] > 0 and labels["rpo_seconds"] >= 0
    assert labels["rto_ok"] is True and labels["rpo_ok"] is True
    assert {"runbook", "dr", "drill", "rto-ok", "rpo-ok"} <= set(drill.tags)
    assert len(list((deployed.prefix / "drills").glob("drill_*.json"))) == 1  # its record, beside the backups
    assert list(deployed.worker_home.iterdir()) == []


def test_a_missing_secret_block_fails_the_run_naming_it(deployed: Deployed) -> None:
    before = deployed.manifests()
    delete_secret(deployed.api_url)
    try:
        run = deployed.run("backup/backup")
    finally:
        save_settings(deployed.api_url, dsn=deployed.dsn, store=str(deployed.store))
    assert run.state.is_failed(), run.state
    assert SECRET_BLOCK in (run.state.message or ""), f"{run.state.message}\n{deployed.logs(run)}"
    # the run's logs reach the server in batches, possibly after its final state
    deadline = time.monotonic() + 60
    while SECRET_BLOCK not in deployed.logs(run) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert SECRET_BLOCK in deployed.logs(run)
    # refused before anything was touched: no backup, no sandbox
    assert deployed.manifests() == before
    assert list(deployed.worker_home.iterdir()) == []


def test_a_failed_run_reaches_slack_through_the_automation(deployed: Deployed) -> None:
    """prefect deploy made the automations of prefect.yaml; a failed run (cert-check
    with no host configured) makes the server start notify-failure on the worker,
    which tells Slack, naming the run and why it failed."""
    from prefect.client.orchestration import get_client

    with on_server(deployed.api_url), get_client(sync_client=True) as client:
        names = {a.name for a in client.read_automations()}
    assert {"runbook flow run failed", "no completed backup for 75 minutes"} <= names, names

    failed = deployed.run("cert-check/cert-check")
    assert failed.state.is_failed(), failed.state
    deadline = time.monotonic() + RUN_S
    told: list[str] = []
    while time.monotonic() < deadline and not told:
        told = [t for t in (json.dumps(body) for body in deployed.slack.accepted) if failed.name in t]
        time.sleep(0.5)
    assert told, f"nothing reached Slack\n{deployed.worker.tail(80)}"
    assert "flow-run-failed" in told[0] and "cert-check" in told[0] and "no host to check" in told[0]
    with on_server(deployed.api_url), get_client(sync_client=True) as client:
        notifier = client.read_deployment_by_name("notify-failure/notify-failure")
        from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterDeploymentId

        runs = client.read_flow_runs(flow_run_filter=FlowRunFilter(deployment_id=FlowRunFilterDeploymentId(any_=[notifier.id])))
    assert any(r.parameters["params"]["flow_run_id"] == f"prefect.flow-run.{failed.id}" for r in runs), [r.parameters for r in runs]
