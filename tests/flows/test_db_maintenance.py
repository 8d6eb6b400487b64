"""db-maintenance on a real PostgreSQL: VACUUM ANALYZE, the indexes and settings of
§7.4, unused and invalid indexes, and building a missing index concurrently."""

from __future__ import annotations

from typing import Any

import psycopg

from flows.db_maintenance import MaintenanceParameters, db_maintenance
from tests.conftest import Platform


def _run(**kwargs: Any) -> tuple[Any, dict[str, Any]]:
    state = db_maintenance(MaintenanceParameters(**kwargs), return_state=True)
    return state, state.result(raise_on_failure=False)


def _checks(report: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["name"]: c for c in report["checks"]}


def test_vacuums_the_large_tables_and_reports_settings_indexes_unused_and_size(platform: Platform) -> None:
    with platform.connect() as conn:
        conn.execute("CREATE INDEX idx_logs_level ON system_logs (level)")  # never used
    state, report = _run()
    assert state.is_completed(), state.message
    assert report["vacuumed"] == ["public.users", "public.user_alerts", "public.market_data"]
    with platform.connect() as conn:
        vacuumed = dict(conn.execute("SELECT relname, last_vacuum IS NOT NULL FROM pg_stat_user_tables").fetchall())
    assert vacuumed["users"] and vacuumed["user_alerts"] and vacuumed["market_data"] and not vacuumed["system_logs"]
    checks = _checks(report)
    assert checks["index:idx_user_alerts_user_created"]["ok"] and checks["index:idx_market_data_symbol_timestamp"]["ok"]
    assert not checks["setting:shared_buffers"]["ok"] and "recommended 1.0 GB (§7.4)" in checks["setting:shared_buffers"]["detail"]
    assert checks["database-size"]["ok"] and "80.0 GB threshold" in checks["database-size"]["detail"]
    unused = {row["index"] for row in report["unused_indexes"]}
    assert "public.idx_logs_level" in unused
    assert not any(name.endswith("_pkey") or name.endswith("_key") for name in unused)  # primary keys and unique constraints never
    assert checks["invalid-indexes"]["ok"]


def test_a_missing_recommended_index_is_reported_then_built_concurrently_with_apply(platform: Platform) -> None:
    with platform.connect() as conn:
        conn.execute("DROP INDEX idx_market_data_symbol_timestamp")
    state, report = _run(vacuum=False)
    missing = _checks(report)["index:idx_market_data_symbol_timestamp"]
    assert not missing["ok"] and "symbol, timestamp DESC" in missing["detail"]
    state, report = _run(vacuum=False, apply=True)
    assert report["created_indexes"] == ["idx_market_data_symbol_timestamp"]
    assert _checks(report)["index:idx_market_data_symbol_timestamp"]["ok"]
    with platform.connect() as conn:
        valid = conn.execute("SELECT indisvalid FROM pg_index WHERE indexrelid = 'idx_market_data_symbol_timestamp'::regclass").fetchone()
    assert valid == (True,)


def test_an_invalid_index_from_a_failed_concurrent_build_is_reported_and_never_guessed_over(platform: Platform) -> None:
    with psycopg.connect(platform.dsn, autocommit=True) as conn:
        conn.execute("DROP INDEX idx_user_alerts_user_created")
        try:  # a user has many alerts: the unique build fails and leaves an INVALID index behind
            conn.execute("CREATE UNIQUE INDEX CONCURRENTLY idx_user_alerts_user_created ON user_alerts (user_id)")
        except psycopg.errors.UniqueViolation:
            pass
    state, report = _run(vacuum=False, apply=True)
    checks = _checks(report)
    assert "DROP INDEX CONCURRENTLY public.idx_user_alerts_user_created" in checks["invalid-index:public.idx_user_alerts_user_created"]["detail"]
    assert not checks["index:idx_user_alerts_user_created"]["ok"]
    assert "already exists: drop or rename it first" in checks["create:idx_user_alerts_user_created"]["detail"]
    assert report["created_indexes"] == []
    assert "public.idx_user_alerts_user_created" not in {row["index"] for row in report["unused_indexes"]}
