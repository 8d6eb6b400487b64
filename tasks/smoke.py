"""Smoke reads on a (restored) platform database: the queries the platform's API
depends on (§6.4 step 5, "test every function"), each timed, each a named check.

Which reads run is configuration (``RUNBOOK_DR__SMOKE_READS``); the defaults read
only the tables and columns §0 names:

- latest ``market_data`` per ``symbol`` (``GET /api/market/prices``)
- one user's ``user_alerts`` by ``user_id, created_at`` (the dashboard)
- live ``user_sessions`` by ``expires_at`` (every authenticated request)
"""

from __future__ import annotations

import time
from typing import Any

import psycopg

from runbook.checks import CheckResult
from runbook.settings import SmokeRead


def run_smoke_queries(conn: psycopg.Connection[Any], reads: list[SmokeRead]) -> tuple[list[CheckResult], dict[str, float]]:
    """Run every smoke read once, each in a READ ONLY transaction of its own (a read
    must not change a restored database); a read that errors fails, and so does an
    empty answer when it must return rows. Returns the checks and each read's latency
    in milliseconds."""
    checks: list[CheckResult] = []
    latencies: dict[str, float] = {}
    for read in reads:
        try:
            with conn.transaction():
                conn.execute("SET TRANSACTION READ ONLY")
                started = time.perf_counter()
                cursor = conn.execute(read.sql)
                rows = cursor.fetchall() if cursor.description is not None else []
                elapsed_ms = (time.perf_counter() - started) * 1000
        except psycopg.Error as err:
            checks.append(CheckResult(name=f"smoke:{read.name}", ok=False, detail=str(err).strip().splitlines()[0]))
            continue
        latencies[read.name] = round(elapsed_ms, 2)
        ok = bool(rows) or not read.must_return_rows
        detail = f"{len(rows)} rows in {elapsed_ms:.1f} ms" if ok else f"no rows (it must return some), in {elapsed_ms:.1f} ms"
        checks.append(CheckResult(name=f"smoke:{read.name}", ok=ok, detail=detail))
    return checks, latencies


from prefect import get_run_logger, task  # noqa: E402 - the plain function above needs no Prefect
from prefect.cache_policies import NO_CACHE  # noqa: E402

from runbook.retry import RETRIES, backoff, retry_transient  # noqa: E402
from tasks import postgres  # noqa: E402


@task(name="smoke-queries", retries=RETRIES, retry_delay_seconds=backoff(), retry_condition_fn=retry_transient, cache_policy=NO_CACHE)
def smoke_test(
    dsn: str, reads: list[SmokeRead], connect_timeout: int, statement_timeout: int
) -> tuple[list[CheckResult], dict[str, float]]:
    """Run the platform's key reads (RUNBOOK_DR__SMOKE_READS) once on the database, each timed."""
    get_run_logger().info("Running %d smoke reads: %s", len(reads), ", ".join(r.name for r in reads))
    with postgres.session(dsn, application="runbook smoke", connect_timeout=connect_timeout, statement_timeout_s=statement_timeout) as conn:
        return run_smoke_queries(conn, reads)
