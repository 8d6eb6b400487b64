"""Smoke reads on a (restored) platform database: the queries the platform's API
depends on (§6.4 step 5, "test every function"), each timed, each a named check.

- latest price per symbol (``GET /api/market/prices``)
- one user's alerts, newest first (the dashboard)
- a session lookup by token hash (every authenticated request)
"""

from __future__ import annotations

import time
from typing import Any

import psycopg

from runbook.checks import CheckResult

SMOKE_QUERIES: dict[str, tuple[str, str]] = {
    # name: (query returning rows, what an empty answer means)
    "latest-price-per-symbol": (
        # one index probe per symbol on (symbol, timestamp DESC) of §7.4, as the API
        # should read it (a DISTINCT ON over the whole table takes 250x longer)
        """
        WITH RECURSIVE symbols(symbol) AS (
            (SELECT symbol FROM market_data ORDER BY symbol LIMIT 1)
            UNION ALL
            SELECT (SELECT m.symbol FROM market_data m WHERE m.symbol > s.symbol ORDER BY m.symbol LIMIT 1)
            FROM symbols s WHERE s.symbol IS NOT NULL
        )
        SELECT p.symbol, p."timestamp", p.price
        FROM symbols s
        CROSS JOIN LATERAL (
            SELECT m.symbol, m."timestamp", m.price FROM market_data m
            WHERE m.symbol = s.symbol ORDER BY m."timestamp" DESC LIMIT 1
        ) p
        """,
        "no market data: the prices endpoint would answer nothing",
    ),
    "user-alerts": (
        """
        SELECT a.id, a.symbol, a.condition, a.created_at
        FROM user_alerts a
        WHERE a.user_id = (SELECT user_id FROM user_alerts ORDER BY created_at DESC LIMIT 1)
        ORDER BY a.created_at DESC LIMIT 50
        """,
        "no alerts readable for the most recent alert's user",
    ),
    "session-lookup": (
        """
        SELECT s.user_id, u.email, s.expires_at
        FROM user_sessions s JOIN users u ON u.id = s.user_id
        WHERE s.token_hash = (SELECT token_hash FROM user_sessions ORDER BY expires_at DESC LIMIT 1)
        """,
        "the newest session's token does not resolve to a user",
    ),
}


def run_smoke_queries(conn: psycopg.Connection[Any]) -> tuple[list[CheckResult], dict[str, float]]:
    """Run every smoke query once; a query that errors or returns nothing fails.
    Returns the checks and each query's latency in milliseconds."""
    checks: list[CheckResult] = []
    latencies: dict[str, float] = {}
    for name, (query, empty_means) in SMOKE_QUERIES.items():
        started = time.perf_counter()
        try:
            rows = conn.execute(query).fetchall()
        except psycopg.Error as err:
            conn.rollback()
            checks.append(CheckResult(name=f"smoke:{name}", ok=False, detail=str(err).strip().splitlines()[0]))
            continue
        elapsed_ms = (time.perf_counter() - started) * 1000
        latencies[name] = round(elapsed_ms, 2)
        ok = bool(rows)
        detail = f"{len(rows)} rows in {elapsed_ms:.1f} ms" if ok else empty_means
        checks.append(CheckResult(name=f"smoke:{name}", ok=ok, detail=detail))
    return checks, latencies


from prefect import get_run_logger, task  # noqa: E402 - the plain function above needs no Prefect
from prefect.cache_policies import NO_CACHE  # noqa: E402

from runbook.retry import RETRIES, backoff, retry_transient  # noqa: E402
from tasks import postgres  # noqa: E402


@task(name="smoke-queries", retries=RETRIES, retry_delay_seconds=backoff(), retry_condition_fn=retry_transient, cache_policy=NO_CACHE)
def smoke_test(dsn: str, connect_timeout: int, statement_timeout: int) -> tuple[list[CheckResult], dict[str, float]]:
    """Run the platform's key reads once on the database, each timed."""
    get_run_logger().info("Running %d smoke queries", len(SMOKE_QUERIES))
    with postgres.session(dsn, application="runbook smoke", connect_timeout=connect_timeout, statement_timeout_s=statement_timeout) as conn:
        return run_smoke_queries(conn)
