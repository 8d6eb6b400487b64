"""The smoke reads of §6.4 step 5, on a real copy of the platform database: the
defaults, configured reads, and reads that must not change what they read."""

from __future__ import annotations

import json

import psycopg
import pytest

from runbook.errors import ConfigError
from runbook.settings import DEFAULT_SMOKE_READS, SmokeRead, load_settings
from tasks.smoke import run_smoke_queries
from tests.conftest import Platform


def test_every_smoke_read_answers_on_the_platform(platform: Platform) -> None:
    with psycopg.connect(platform.dsn) as conn:
        checks, latencies = run_smoke_queries(conn, DEFAULT_SMOKE_READS)
    assert [c.name for c in checks] == [f"smoke:{r.name}" for r in DEFAULT_SMOKE_READS]
    assert all(c.ok for c in checks), checks
    assert set(latencies) == {r.name for r in DEFAULT_SMOKE_READS} and all(ms >= 0 for ms in latencies.values())
    prices = next(c for c in checks if c.name == "smoke:latest-price-per-symbol")
    assert prices.detail.startswith("20 rows")  # one per symbol of the sandbox


def test_an_empty_or_broken_restore_fails_the_smoke_reads(platform: Platform) -> None:
    with psycopg.connect(platform.dsn, autocommit=True) as conn:
        conn.execute("TRUNCATE market_data")
        conn.execute("DROP TABLE user_sessions")
        checks, _ = run_smoke_queries(conn, DEFAULT_SMOKE_READS)
    by_name = {c.name: c for c in checks}
    assert not by_name["smoke:latest-price-per-symbol"].ok
    assert "no rows" in by_name["smoke:latest-price-per-symbol"].detail
    assert not by_name["smoke:session-lookup"].ok
    assert "user_sessions" in by_name["smoke:session-lookup"].detail
    assert by_name["smoke:user-alerts"].ok


def test_the_default_reads_need_only_the_columns_section_0_names(variants: Platform) -> None:
    # another platform's names for everything §0 does not name: the sandbox's own
    # token_hash, email and price columns are not there
    with psycopg.connect(variants.dsn, autocommit=True) as conn:
        conn.execute("ALTER TABLE user_sessions RENAME COLUMN token_hash TO token_digest")
        conn.execute("ALTER TABLE users RENAME COLUMN email TO mail")
        conn.execute("ALTER TABLE market_data RENAME COLUMN price TO close")
        conn.execute("ALTER TABLE user_alerts RENAME COLUMN symbol TO ticker")
    with psycopg.connect(variants.dsn) as conn:
        checks, latencies = run_smoke_queries(conn, DEFAULT_SMOKE_READS)
    assert all(c.ok for c in checks), checks
    assert next(c for c in checks if c.name == "smoke:latest-price-per-symbol").detail.startswith("8 rows")
    assert set(latencies) == {"latest-price-per-symbol", "user-alerts", "session-lookup"}


def test_configured_reads_run_read_only_and_an_empty_answer_fails_only_when_rows_are_required(platform: Platform) -> None:
    reads = [
        SmokeRead(name="no-rows-allowed", sql="SELECT 1 WHERE false", must_return_rows=False),
        SmokeRead(name="no-rows-refused", sql="SELECT 1 WHERE false"),
        SmokeRead(name="a-write", sql="DELETE FROM system_logs"),
        SmokeRead(name="after-the-write", sql="SELECT count(*) FROM system_logs"),
    ]
    with psycopg.connect(platform.dsn) as conn:
        before = conn.execute("SELECT count(*) FROM system_logs").fetchone()
        conn.commit()
        checks, latencies = run_smoke_queries(conn, reads)
        after = conn.execute("SELECT count(*) FROM system_logs").fetchone()
    by_name = {c.name: c for c in checks}
    assert by_name["smoke:no-rows-allowed"].ok and by_name["smoke:no-rows-allowed"].detail.startswith("0 rows")
    assert not by_name["smoke:no-rows-refused"].ok and "no rows" in by_name["smoke:no-rows-refused"].detail
    assert not by_name["smoke:a-write"].ok and "read-only transaction" in by_name["smoke:a-write"].detail
    assert by_name["smoke:after-the-write"].ok  # the failed read left the session usable
    assert before == after and before is not None and before[0] > 0
    assert set(latencies) == {"no-rows-allowed", "no-rows-refused", "after-the-write"}


def test_smoke_reads_are_read_from_the_settings_and_checked_at_load(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(
        "RUNBOOK_DR__SMOKE_READS",
        json.dumps([{"name": "orders", "sql": 'SELECT * FROM app."order" LIMIT 1'}, {"name": "logs", "sql": "SELECT 1", "must_return_rows": False}]),
    )
    reads = load_settings().dr.smoke_reads
    assert [(r.name, r.must_return_rows) for r in reads] == [("orders", True), ("logs", False)]
    for bad, says in (
        ([], "at least 1"),
        ([{"name": "a", "sql": "SELECT 1"}, {"name": "a", "sql": "SELECT 2"}], "unique"),
        ([{"name": "Latest Prices", "sql": "SELECT 1"}], "RUNBOOK_DR__SMOKE_READS__NAME"),
        ([{"name": "blank", "sql": "  "}], "needs its SQL"),
        ([{"name": "no-sql"}], "RUNBOOK_DR__SMOKE_READS__SQL"),
    ):
        monkeypatch.setenv("RUNBOOK_DR__SMOKE_READS", json.dumps(bad))
        with pytest.raises(ConfigError, match="RUNBOOK_DR__SMOKE_READS") as raised:
            load_settings()
        assert says in str(raised.value), (bad, str(raised.value))
