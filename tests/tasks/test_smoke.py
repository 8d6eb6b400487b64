"""The smoke reads of §6.4 step 5, on a real copy of the platform database."""

from __future__ import annotations

import psycopg

from tasks.smoke import SMOKE_QUERIES, run_smoke_queries
from tests.conftest import Platform


def test_every_smoke_read_answers_on_the_platform(platform: Platform) -> None:
    with psycopg.connect(platform.dsn) as conn:
        checks, latencies = run_smoke_queries(conn)
    assert [c.name for c in checks] == [f"smoke:{name}" for name in SMOKE_QUERIES]
    assert all(c.ok for c in checks), checks
    assert set(latencies) == set(SMOKE_QUERIES) and all(ms >= 0 for ms in latencies.values())
    prices = next(c for c in checks if c.name == "smoke:latest-price-per-symbol")
    assert prices.detail.startswith("20 rows")  # one per symbol of the sandbox


def test_an_empty_or_broken_restore_fails_the_smoke_reads(platform: Platform) -> None:
    with psycopg.connect(platform.dsn, autocommit=True) as conn:
        conn.execute("TRUNCATE market_data")
        conn.execute("DROP TABLE user_sessions")
        checks, _ = run_smoke_queries(conn)
    by_name = {c.name: c for c in checks}
    assert not by_name["smoke:latest-price-per-symbol"].ok
    assert "no market data" in by_name["smoke:latest-price-per-symbol"].detail
    assert not by_name["smoke:session-lookup"].ok
    assert "user_sessions" in by_name["smoke:session-lookup"].detail
    assert by_name["smoke:user-alerts"].ok
