"""``runbook server start|stop|status``: one local Prefect server that the CLI shares.

Kept under ``RUNBOOK_HOME/server/``: its PREFECT_HOME (and so its SQLite database),
one log file per process and ``state.json`` (the API URL and each process's pid). It
is Prefect's own machinery, nothing of ours: ``prefect server start`` (API and UI on
127.0.0.1:4200 by default), the process work pool of prefect.yaml, ``prefect deploy
--all`` of this checkout (every deployment, its schedule and automations), and
``RUNBOOK_SERVER__WORKERS`` ``prefect worker start`` processes polling that pool: the
UI shows the deployments scheduled, and a run started there goes to a worker. More
machines scale out by starting more workers on the same pool (README).

While it runs, the CLI points ``PREFECT_API_URL`` at it (``use_if_running``), so runs
started from the command line are recorded there too; an explicit PREFECT_API_URL
wins. Each process is started in its own session, so ``stop`` ends it and its children
(a worker's flow-run processes) together.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from runbook.errors import RunbookError

ROOT = Path(__file__).resolve().parent.parent  # the checkout: prefect.yaml and the flows
STOP_GRACE_S = 20.0


class ServerError(RunbookError):
    """The local Prefect server could not be started (the message names why)."""


@dataclass(frozen=True)
class LocalServer:
    home: Path  # RUNBOOK_HOME
    host: str = "127.0.0.1"
    port: int = 4200
    workers: int = 1
    startup_timeout_s: float = 180.0
    scheduler: bool = True

    @classmethod
    def from_settings(cls, settings: Any) -> LocalServer:
        s = settings.server
        return cls(Path(settings.home), s.host, s.port, s.workers, s.startup_timeout_seconds, s.scheduler)

    @property
    def folder(self) -> Path:
        return self.home.resolve() / "server"

    @property
    def state_file(self) -> Path:
        return self.folder / "state.json"

    @property
    def api_url(self) -> str:
        return f"http://{self.host}:{self.port}/api"

    # ----------------------------------------------------------------------- state

    def read_state(self) -> dict[str, Any] | None:
        try:
            return json.loads(self.state_file.read_text())
        except (OSError, ValueError):
            return None

    def _write_state(self, state: dict[str, Any]) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        tmp = self.state_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(state, indent=2))
        tmp.replace(self.state_file)

    # ----------------------------------------------------------------------- commands

    def status(self) -> dict[str, Any]:
        """URL, pids, and whether the deployments are served (server healthy, at least
        one worker alive, deployments on the server)."""
        state = self.read_state()
        if state is None:
            return {"server": "stopped", "home": str(self.folder)}
        processes = state.get("processes", {})
        server = processes.get("server", {})
        alive = {name: _alive(p.get("pid")) for name, p in processes.items()}
        healthy = alive.get("server", False) and _healthy(state["api_url"])
        workers = [
            {"name": name, "pid": p.get("pid"), "alive": alive[name], "log": p.get("log")}
            for name, p in processes.items() if name != "server"
        ]
        deployments = _count(state["api_url"], "deployments") if healthy else None
        return {
            "server": "running" if healthy else ("starting or unhealthy" if alive.get("server") else "stopped (stale state)"),
            "url": state["api_url"].removesuffix("/api"),
            "api_url": state["api_url"],
            "pid": server.get("pid"),
            "log": server.get("log"),
            "started_at": state.get("started_at"),
            "workers": workers,
            "work_pool": state.get("work_pool"),
            "deployments": deployments,
            "serving": bool(healthy and deployments and any(w["alive"] for w in workers)),
            "home": str(self.folder),
        }

    def running_api_url(self) -> str | None:
        """The API URL when the server recorded here is alive and was ready (no HTTP call:
        the CLI asks on every command)."""
        state = self.read_state()
        if not state or not state.get("ready"):
            return None
        server = state.get("processes", {}).get("server", {})
        return state["api_url"] if _alive(server.get("pid")) else None

    def start(self) -> dict[str, Any]:
        """Start whatever is not running: the server (then the pool and ``prefect deploy
        --all``), then the missing workers. Starting a running server changes nothing."""
        state = self.read_state() or {}
        processes: dict[str, Any] = state.get("processes", {})
        server_alive = _alive(processes.get("server", {}).get("pid"))
        if server_alive and _healthy(state["api_url"]):
            missing = [f"worker-{i}" for i in range(1, self.workers + 1) if not _alive(processes.get(f"worker-{i}", {}).get("pid"))]
            if not missing:
                return {**self.status(), "started": []}
            for name in missing:
                processes[name] = self._start_worker(name, state["api_url"], state["work_pool"])
            self._write_state(state)
            return {**self.status(), "started": missing}
        if server_alive:
            raise ServerError(f"a server recorded in {self.state_file} runs (pid {processes['server']['pid']}) but does not answer: "
                              "runbook server stop, then start")
        self._stop_all(processes)  # workers left from a server that died
        if not _port_free(self.host, self.port):
            raise ServerError(f"{self.host}:{self.port} is taken by another process: set RUNBOOK_SERVER__PORT to a free port")

        self.folder.mkdir(parents=True, exist_ok=True)
        api_url = self.api_url
        pool = work_pool_name()
        state = {"api_url": api_url, "port": self.port, "host": self.host, "work_pool": pool, "ready": False,
                 "started_at": datetime.now(timezone.utc).isoformat(timespec="seconds"), "processes": {}}
        args = ["server", "start", "--host", self.host, "--port", str(self.port), *([] if self.scheduler else ["--no-scheduler"])]
        state["processes"]["server"] = self._spawn("server", args, self._env(api_url))
        self._write_state(state)
        try:
            self._wait_healthy(state["processes"]["server"], api_url)
            self._deploy(api_url, pool)
            for i in range(1, self.workers + 1):
                state["processes"][f"worker-{i}"] = self._start_worker(f"worker-{i}", api_url, pool)
        except BaseException:
            self._stop_all(state["processes"])
            self.state_file.unlink(missing_ok=True)
            raise
        state["ready"] = True
        self._write_state(state)
        return {**self.status(), "started": list(state["processes"])}

    def stop(self) -> dict[str, Any]:
        """SIGTERM to each process's group (workers first), SIGKILL after a grace."""
        state = self.read_state()
        if state is None:
            return {"server": "was not running"}
        stopped = self._stop_all(state.get("processes", {}))
        self.state_file.unlink(missing_ok=True)
        return {"server": "stopped", "stopped": stopped}

    # ----------------------------------------------------------------------- processes

    def _env(self, api_url: str, **extra: str) -> dict[str, str]:
        # the server's runs are the platform's: the sandbox never rides along (RUNBOOK_SANDBOX
        # of a `runbook --sandbox ...` or demo process would refuse every run beside the DSN's block)
        env = {k: v for k, v in os.environ.items() if k != "RUNBOOK_SANDBOX"}
        env.update(
            PREFECT_HOME=str(self.folder / "prefect"),
            PREFECT_API_URL=api_url,
            # the UI of a server on another port than 4200 must be told where its API is
            PREFECT_UI_API_URL=api_url,
            PREFECT_SERVER_UI_API_URL=api_url,
            PREFECT_SERVER_ANALYTICS_ENABLED="false",
            PREFECT_CLI_PROMPT="false",
        )
        env.update(extra)
        return env

    def _spawn(self, name: str, args: list[str], env: dict[str, str], cwd: Path | None = None) -> dict[str, Any]:
        log = self.folder / f"{name}.log"
        with log.open("ab") as out:
            popen = subprocess.Popen(
                [sys.executable, "-m", "prefect", *args], env=env, cwd=cwd or self.folder,
                stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
            )
        return {"pid": popen.pid, "log": str(log), "command": ["prefect", *args]}

    def _start_worker(self, name: str, api_url: str, pool: str) -> dict[str, Any]:
        # the worker's environment (this one's, RUNBOOK_* included) is what its runs get,
        # under prefect.yaml's job variables
        args = ["worker", "start", "--pool", pool, "--name", f"runbook-{socket.gethostname()}-{name}"]
        return self._spawn(name, args, self._env(api_url))

    def _wait_healthy(self, server: dict[str, Any], api_url: str) -> None:
        deadline = time.monotonic() + self.startup_timeout_s
        while time.monotonic() < deadline:
            if not _alive(server["pid"]):
                raise ServerError(f"the Prefect server exited while starting:\n{_tail(server['log'])}")
            if _healthy(api_url):
                return
            time.sleep(0.3)
        raise ServerError(f"the Prefect server did not answer within {self.startup_timeout_s:.0f} s "
                          f"(RUNBOOK_SERVER__STARTUP_TIMEOUT_SECONDS):\n{_tail(server['log'])}")

    def _deploy(self, api_url: str, pool: str) -> None:
        """The process work pool (when missing) and every deployment of prefect.yaml."""
        env = self._env(api_url, RUNBOOK_CHECKOUT=str(ROOT))
        log = self.folder / "deploy.log"
        with log.open("ab") as out:
            inspect = subprocess.run([sys.executable, "-m", "prefect", "work-pool", "inspect", pool], env=env, cwd=ROOT,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            steps = [] if inspect.returncode == 0 else [["work-pool", "create", pool, "--type", "process"]]
            for args in [*steps, ["deploy", "--all"]]:
                done = subprocess.run([sys.executable, "-m", "prefect", *args], env=env, cwd=ROOT, stdout=out,
                                      stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
                if done.returncode != 0:
                    raise ServerError(f"prefect {' '.join(args)} failed (exit {done.returncode}):\n{_tail(str(log))}")

    def _stop_all(self, processes: dict[str, Any]) -> list[str]:
        order = sorted(processes, key=lambda name: name == "server")  # workers first
        stopped = []
        for name in order:
            pid = processes[name].get("pid")
            if _alive(pid):
                _terminate_group(pid)
                stopped.append(name)
        return stopped


# --------------------------------------------------------------------------- helpers


def work_pool_name(spec: Path = ROOT / "prefect.yaml") -> str:
    """The work pool prefect.yaml's deployments use (one pool for all)."""
    import yaml

    pools = {(d.get("work_pool") or {}).get("name") for d in yaml.safe_load(spec.read_text())["deployments"]}
    if len(pools) != 1 or None in pools:
        raise ServerError(f"{spec}: the deployments name {sorted(map(str, pools))} as work pools; runbook server needs one")
    return str(pools.pop())


def _alive(pid: int | None) -> bool:
    """Whether ``pid`` is a live (not zombie) process started from Prefect's CLI (a pid the
    system gave to another program since is not ours)."""
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, PermissionError):
        return False
    proc = Path(f"/proc/{pid}")
    if not proc.exists():
        return True  # no /proc (not Linux): the signal's answer is all there is
    try:
        if (proc / "stat").read_text().rsplit(")", 1)[1].split()[0] == "Z":
            return False
        return b"prefect" in (proc / "cmdline").read_bytes()
    except (OSError, IndexError):
        return False


def _terminate_group(pid: int) -> None:
    try:
        os.killpg(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + STOP_GRACE_S
    while time.monotonic() < deadline:
        if not _group_alive(pid):
            return
        _reap(pid)
        time.sleep(0.2)
    try:
        os.killpg(pid, signal.SIGKILL)
    except ProcessLookupError:
        return
    _reap(pid)


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    # a group whose only member is a zombie child of this process is gone
    return _alive(pgid) or any(_in_group(p, pgid) for p in _pids())


def _pids() -> list[int]:
    return [int(p.name) for p in Path("/proc").iterdir() if p.name.isdigit()] if Path("/proc").exists() else []


def _in_group(pid: int, pgid: int) -> bool:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return fields[0] != "Z" and int(fields[2]) == pgid
    except (OSError, IndexError, ValueError):
        return False


def _reap(pid: int) -> None:
    """Collect the exit of a child of this process (``start`` then ``stop`` in one process)."""
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass


def _port_free(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def _healthy(api_url: str) -> bool:
    import httpx

    try:
        return httpx.get(f"{api_url}/health", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def _count(api_url: str, what: str) -> int | None:
    import httpx

    try:
        response = httpx.post(f"{api_url}/{what}/count", json={}, timeout=5)
        return int(response.json()) if response.status_code == 200 else None
    except (httpx.HTTPError, ValueError):
        return None


def _tail(log: str, lines: int = 30) -> str:
    try:
        return "\n".join(Path(log).read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def use_if_running(settings: Any) -> str | None:
    """Point this process's Prefect client at the local server when it runs and no
    PREFECT_API_URL is set; the URL used, or None (Prefect's temporary server then)."""
    if os.environ.get("PREFECT_API_URL"):
        return None
    url = LocalServer.from_settings(settings).running_api_url()
    if url:
        os.environ["PREFECT_API_URL"] = url
    return url
