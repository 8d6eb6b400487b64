"""Benchmark: the CLI with ``runbook server`` running, beside the same commands under
Prefect's temporary server (what every command did before issue 13).

    /work/main/.venv/bin/python bench/cli_server.py --repeat 3

Each measurement is the wall time of a new ``python -m runbook.cli ...`` process (or,
for the old backup-list, of a process running the ``backup-list`` flow), from start to
exit, as an operator sees it. The database is never contacted by these two commands
(the DSN only names it); the store is an empty folder under bench/.work/cli.

| measurement | what |
|---|---|
| backup-list, old | the ``backup-list`` flow in a new process without PREFECT_API_URL: Prefect's temporary server, a flow run |
| backup-list, temporary | ``runbook backup-list`` now, no server running (it answers without a flow run, without Prefect) |
| backup-list, server | ``runbook backup-list`` with ``runbook server`` running |
| backup-prune, temporary | ``runbook backup-prune`` (a dry run: a short real flow run) under the temporary server |
| backup-prune, server | the same with ``runbook server`` running; the flow's own duration read from the server (start to end of the run) |

Targets (issue 13 §5): backup-list <= 1.5 s with the server running; a procedure
started from the CLI within 2 s of the flow's own duration. The order of the
measurements rotates between repetitions; medians reported. Writes
bench/results/cli-server-<timestamp>.json. The server (``RUNBOOK_HOME`` under
bench/.work/cli, a free port, no scheduler, one worker) is stopped at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
WORK = BENCH / ".work" / "cli"  # git-ignored
LIST_TARGET_S = 1.5
OVERHEAD_TARGET_S = 2.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def environment(port: int) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "RUNBOOK_"))}
    env.update(
        PYTHONPATH=str(ROOT),
        RUNBOOK_HOME=str(WORK / "home"),
        RUNBOOK_DATABASE_URL="postgresql://bench@127.0.0.1:9/bench",  # named, never connected to
        RUNBOOK_BACKUP_STORE=str(WORK / "backups"),
        RUNBOOK_SERVER__PORT=str(port),
        RUNBOOK_SERVER__SCHEDULER="false",
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
        PREFECT_HOME=str(WORK / "prefect-client"),  # the temporary server's database here, not ~/.prefect
        PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS="180",  # as the CLI sets it (the old backup-list runs the flow bare)
    )
    return env


def timed(args: list[str], env: dict[str, str]) -> float:
    started = time.perf_counter()
    done = subprocess.run(args, env=env, cwd=ROOT, capture_output=True, text=True, timeout=600)
    took = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(args)}: exit {done.returncode}\n{done.stderr[-2000:]}")
    return took


def newest_run_seconds(api_url: str, flow_name: str) -> float:
    """Start to end of the newest run of ``flow_name`` on the server."""
    import httpx

    body = {"flows": {"name": {"any_": [flow_name]}}, "sort": "START_TIME_DESC", "limit": 1}
    (run,) = httpx.post(f"{api_url}/flow_runs/filter", json=body, timeout=10).json()
    start, end = (datetime.fromisoformat(run[k]) for k in ("start_time", "end_time"))
    return (end - start).total_seconds()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    opts = parser.parse_args(argv)
    (WORK / "backups").mkdir(parents=True, exist_ok=True)
    port = free_port()
    env = environment(port)
    cli = [sys.executable, "-m", "runbook.cli"]
    old_list = [sys.executable, "-c", "from flows.backup_list import backup_list; backup_list()"]
    temp_env = {**env, "RUNBOOK_HOME": str(WORK / "no-server")}  # no state file: the temporary server

    print(f"starting runbook server on 127.0.0.1:{port} ...", flush=True)
    started = time.perf_counter()
    timed([*cli, "server", "start"], env)
    start_s = time.perf_counter() - started
    api_url = f"http://127.0.0.1:{port}/api"
    samples: dict[str, list[float]] = {k: [] for k in ("list_old", "list_temporary", "list_server", "prune_temporary", "prune_server")}
    prune_flow: list[float] = []
    try:
        timed([*cli, "backup-list"], env)  # first contact: bytecode, the server's caches
        steps = {
            "list_old": lambda: timed(old_list, temp_env),
            "list_temporary": lambda: timed([*cli, "backup-list"], temp_env),
            "list_server": lambda: timed([*cli, "backup-list"], env),
            "prune_temporary": lambda: timed([*cli, "backup-prune"], temp_env),
            "prune_server": lambda: timed([*cli, "backup-prune"], env),
        }
        order = list(steps)
        for rep in range(opts.repeat):
            for name in order[rep % len(order):] + order[: rep % len(order)]:
                samples[name].append(steps[name]())
                if name == "prune_server":
                    prune_flow.append(newest_run_seconds(api_url, "backup-prune"))
                print(f"  rep {rep + 1} {name}: {samples[name][-1]:.2f} s", flush=True)
    finally:
        subprocess.run([*cli, "server", "stop"], env=env, cwd=ROOT, capture_output=True, timeout=300)

    med = {name: statistics.median(values) for name, values in samples.items()}
    flow_s = statistics.median(prune_flow)
    overheads = [wall - own for wall, own in zip(samples["prune_server"], prune_flow)]
    overhead = statistics.median(overheads)
    list_ok = med["list_server"] <= LIST_TARGET_S
    prune_ok = overhead <= OVERHEAD_TARGET_S
    print(f"\nrunbook server start: {start_s:.1f} s (server, work pool, prefect deploy --all, a worker)")
    print(f"{'measurement':<28} {'median':>8}")
    for name, value in med.items():
        print(f"{name:<28} {value:>7.2f} s")
    print(f"\nbackup-list with the server: {med['list_server']:.2f} s (target <= {LIST_TARGET_S} s): {'PASS' if list_ok else 'MISS'}; "
          f"{med['list_old'] / med['list_server']:.1f}x faster than the flow under the temporary server")
    print(f"backup-prune with the server: {med['prune_server']:.2f} s, the flow itself {flow_s:.2f} s, overhead {overhead:.2f} s "
          f"(target <= {OVERHEAD_TARGET_S} s): {'PASS' if prune_ok else 'MISS'}; "
          f"under the temporary server {med['prune_temporary']:.2f} s ({med['prune_temporary'] / med['prune_server']:.1f}x)")
    load = os.getloadavg()
    print(f"load average: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} on {os.cpu_count()} cores")

    results: dict[str, Any] = {
        "benchmark": "cli-server",
        "started_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "repeat": opts.repeat,
        "server_start_s": round(start_s, 2),
        "samples_s": {k: [round(v, 3) for v in vs] for k, vs in samples.items()},
        "medians_s": {k: round(v, 3) for k, v in med.items()},
        "prune_flow_s": [round(v, 3) for v in prune_flow],
        "prune_overhead_s": round(overhead, 3),
        "targets": {
            "backup_list_server_s": {"target": LIST_TARGET_S, "value": round(med["list_server"], 3), "pass": list_ok},
            "procedure_overhead_s": {"target": OVERHEAD_TARGET_S, "value": round(overhead, 3), "pass": prune_ok},
        },
        "loadavg": load,
    }
    out = BENCH / "results" / f"cli-server-{datetime.now(timezone.utc):%Y%m%dT%H%M%SZ}.json"
    out.write_text(json.dumps(results, indent=2))
    print(f"results: {out.relative_to(ROOT)}")
    return 0 if list_ok and prune_ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
