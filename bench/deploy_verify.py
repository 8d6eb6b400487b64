"""Benchmark: ``deploy-verify`` against the stand-in API next to a plain concurrent
httpx script doing the same requests, side by side in one run.

    /work/main/.venv/bin/python bench/deploy_verify.py --repeat 5

Setup (not timed): the sandbox database (scale 1 unless --scale), the stand-in API on
127.0.0.1, 10 endpoints (the five of §0 and five more paths of the stand-in, the
dashboard with its token) x 20 samples, 10 requests in flight at once.

Measured, alternating which goes first, medians reported:

- plain httpx: one ``httpx.AsyncClient`` (same limits, same timeout), ``asyncio.gather``
  of the 200 GETs under a semaphore of 10, reading each body;
- runbook: the ``deploy-verify`` flow (staging: no rollback), a real flow run, wall
  time of the call: the same 200 requests plus the dashboard once without its token,
  the timing breakdown, the checks, the report artifacts.

Target (issue 4): runbook <= 1.3x the plain script's wall time.
Writes bench/results/deploy-verify-<timestamp>.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))

import backup_verify as bv  # noqa: E402 - the shared harness (network guard installed on import)

TARGET = 1.3
TOKEN = "bench-dashboard-token"
EXTRA_PATHS = ["/api/health?probe=2", "/api/market/prices?page=2", "/api/learning/lessons?page=2",
               "/api/monitoring/metrics?window=5m", "/api/learning/lessons?page=3"]


def endpoints() -> list[dict[str, Any]]:
    from runbook.deploy import DEFAULT_ENDPOINTS

    extra = [{"path": p} for p in EXTRA_PATHS]
    return [e.model_dump() for e in DEFAULT_ENDPOINTS] + extra


async def plain(base_url: str, items: list[dict[str, Any]], samples: int, concurrency: int) -> int:
    import httpx

    gate = asyncio.Semaphore(concurrency)
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=base_url, timeout=10, limits=limits) as client:

        async def one(item: dict[str, Any]) -> int:
            headers = {"Authorization": f"Bearer {TOKEN}"} if item.get("auth") else {}
            async with gate:
                response = await client.get(item["path"], headers=headers)
                response.read()
                return response.status_code

        statuses = await asyncio.gather(*(one(item) for item in items for _ in range(samples)))
    return sum(1 for s in statuses if s == 200)


def fmt(runs: list[dict[str, float]], name: str) -> str:
    return ", ".join(f"{r[name]:.3f}" for r in runs)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=5, help="repetitions (median reported)")
    parser.add_argument("--samples", type=int, default=20)
    parser.add_argument("--concurrency", type=int, default=10)
    parser.add_argument("--scale", type=int, default=1, help="sandbox seed scale (the API reads it)")
    parser.add_argument("--work", type=Path, default=BENCH / ".work-deploy", help="sandbox and Prefect home")
    args = parser.parse_args(argv)

    work = args.work.resolve()
    bv.WORK = work
    dsn, db_meta = bv.prepare_sandbox(work, args.scale, False)
    os.environ["PREFECT_HOME"] = str(work / "prefect-home")
    os.environ["RUNBOOK_HOME"] = str(work / "home")
    from prefect.settings import PREFECT_FLOWS_HEARTBEAT_FREQUENCY, temporary_settings
    from prefect.testing.utilities import prefect_test_harness

    from flows.deploy_verify import DeployVerifyParameters, deploy_verify

    # the stand-in runs in its own process, as the platform would: not sharing our GIL
    import subprocess

    server = subprocess.Popen(
        [sys.executable, "-m", "sandbox.api", "--port", "0"],
        env={**os.environ, "RUNBOOK_DATABASE_URL": dsn, "RUNBOOK_PLATFORM_TOKEN": TOKEN, "STRIPE_WEBHOOK_SECRET": "whsec_bench"},
        stdout=subprocess.PIPE, text=True, cwd=BENCH.parent,
    )
    assert server.stdout is not None
    url = server.stdout.readline().strip()
    if not url.startswith("http"):
        server.kill()
        raise SystemExit("the stand-in API did not start")
    api = type("Api", (), {"url": url, "stop": lambda self: (server.terminate(), server.wait(10))})()
    items = endpoints()
    os.environ.update(
        {
            "RUNBOOK_PLATFORM_URL": api.url,
            "RUNBOOK_PLATFORM_TOKEN": TOKEN,
            "RUNBOOK_DEPLOY__ENDPOINTS": json.dumps(items),
            "RUNBOOK_DEPLOY__SAMPLES": str(args.samples),
            "RUNBOOK_DEPLOY__CONCURRENCY": str(args.concurrency),
        }
    )
    runs: list[dict[str, float]] = []
    started_at = datetime.now(timezone.utc)
    try:
        with prefect_test_harness(server_startup_timeout=120):
            with temporary_settings({PREFECT_FLOWS_HEARTBEAT_FREQUENCY: None}):
                deploy_verify(DeployVerifyParameters(samples=2), return_state=True)  # warm-up: imports, first flow run
                asyncio.run(plain(api.url, items, 2, args.concurrency))
                for index in range(args.repeat):
                    rep: dict[str, float] = {}
                    order = ["plain", "runbook"] if index % 2 == 0 else ["runbook", "plain"]
                    for name in order:
                        bv.wait_quiet(10)
                        begin = time.perf_counter()
                        if name == "plain":
                            ok = asyncio.run(plain(api.url, items, args.samples, args.concurrency))
                            assert ok == len(items) * args.samples, f"plain: only {ok} answers were 200"
                        else:
                            state = deploy_verify(DeployVerifyParameters(), return_state=True)
                            assert state.is_completed(), state.message
                        rep[name] = time.perf_counter() - begin
                        bv.say(f"[{index + 1}/{args.repeat}] {name}: {rep[name]:.3f} s")
                    runs.append(rep)
    finally:
        api.stop()
    plain_s = statistics.median(r["plain"] for r in runs)
    runbook_s = statistics.median(r["runbook"] for r in runs)
    ratio = runbook_s / plain_s
    requests = len(items) * args.samples
    lines = [
        f"deploy-verify benchmark {started_at.isoformat(timespec='seconds')}: {len(items)} endpoints x {args.samples} samples "
        f"= {requests} requests, {args.concurrency} at a time, stand-in on 127.0.0.1 (scale {args.scale})",
        f"plain concurrent httpx   {plain_s:7.3f} s  ({requests / plain_s:6.0f} req/s)  runs: {fmt(runs, 'plain')}",
        f"runbook deploy-verify    {runbook_s:7.3f} s  ({requests / runbook_s:6.0f} req/s)  runs: {fmt(runs, 'runbook')}",
        f"{'PASS' if ratio <= TARGET else 'MISS'}  deploy-verify <= {TARGET}x the plain script: {ratio:.2f}x",
    ]
    print("\n".join(lines))
    out = BENCH / "results" / f"deploy-verify-{started_at.strftime('%Y%m%dT%H%M%SZ')}.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps({"runs": runs, "plain_s": plain_s, "runbook_s": runbook_s, "ratio": ratio, "requests": requests,
                               "database": db_meta, "machine": bv.machine_meta()}, indent=2, default=str))
    print(f"results: {out.relative_to(BENCH.parent)}")
    if db_meta["started_server"]:
        from sandbox.platform import Sandbox

        Sandbox(work / "sandbox").down()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
