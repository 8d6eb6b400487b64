"""Every database procedure but data-cleanup, as real flow runs on the "variants"
database (sandbox/variants.sql): uuid, text, composite and no primary keys; mixed-case,
reserved and spaced names in a second schema; a partitioned table, an enum, a
generated column, a view, a sequence. Each ends Completed with the checks it owes."""

from __future__ import annotations

import json
from typing import Any

from psycopg import sql
import pytest

from flows.backup import BackupParameters, backup
from flows.backup_verify import VerifyParameters, backup_verify
from flows.db_maintenance import MaintenanceParameters, db_maintenance
from flows.diagnose import Component, DiagnoseParameters, diagnose
from flows.disaster_recovery import DrParameters, disaster_recovery
from runbook.settings import DEFAULT_SMOKE_READS
from sandbox.platform import VARIANT_TABLES
from tests.conftest import Platform, scratch_databases

# what variants.sql puts in the tables whose names need quoting, and in the partitioned one
EXPECTED_ROWS = {"app.audit log": 1200, "app.User": 200, "app.order": 1000, "app.usage %": 500, "public.market_data": 8 * 240}


def _counts(platform: Platform) -> dict[str, int]:
    with platform.connect() as conn:
        out = {}
        for table in VARIANT_TABLES:
            schema, _, name = table.partition(".")
            row = conn.execute(sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(schema, name))).fetchone()
            out[table] = row[0] if row else -1
        return out


def _checks(report: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["name"]: c for c in report["checks"]}


def _no_missing_relation(report: dict[str, Any]) -> None:
    text = json.dumps(report["checks"])
    assert "does not exist" not in text and "could not run" not in text, [c for c in report["checks"] if not c["ok"]]


@pytest.fixture
def backed_up(variants: Platform) -> tuple[Platform, dict[str, Any]]:
    return variants, backup(BackupParameters(prune=False, fingerprint=True))


def test_backup_with_fingerprints_counts_every_table_including_quoted_and_partitioned(variants: Platform) -> None:
    state = backup(BackupParameters(prune=False, fingerprint=True), return_state=True)
    assert state.is_completed(), state.message
    summary = state.result()
    assert summary["fingerprints"] is True
    assert summary["tables"] == _counts(variants)  # partitions count in their parent, never apart
    for table, rows in EXPECTED_ROWS.items():
        assert summary["tables"][table] == rows


def test_backup_verify_checks_row_counts_keys_and_freshness_of_quoted_tables(backed_up: tuple[Platform, dict[str, Any]]) -> None:
    platform, summary = backed_up
    state = backup_verify(VerifyParameters(), return_state=True)
    report = state.result(raise_on_failure=False)
    assert state.is_completed(), state.message
    assert report["outcome"] == "passed" and report["backup_id"] == summary["backup_id"]
    _no_missing_relation(report)
    checks = _checks(report)
    for table, rows in EXPECTED_ROWS.items():
        assert checks[f"row-count:{table}"]["ok"] and checks[f"row-count:{table}"]["detail"] == f"observed {rows}"
    for name in (
        "freshness:app.audit log.when",
        "freshness:app.order.placed at",
        "freshness:app.User.createdAt",
        "freshness:app.usage %.at",  # a % in the name: psycopg and the library read it as a placeholder
        "freshness:public.market_data.timestamp",
        "primary-key-unique:app.order",  # composite, proven by the restored index
        "primary-key-unique:public.users",  # uuid
        "primary-key-unique:public.user_sessions",  # text
    ):
        assert checks[name]["ok"], checks[name]
    assert "freshness:public.user_sessions.expires_at" not in checks  # in the future by design
    assert not any(name.startswith("primary-key") and "system_logs" in name for name in checks)  # it has no key
    assert not any("market_data_before" in name or "market_data_recent" in name for name in checks)
    assert scratch_databases(platform.admin_dsn) == []


def test_deep_verification_scans_every_key_and_fingerprint_of_quoted_tables(backed_up: tuple[Platform, dict[str, Any]]) -> None:
    platform, _ = backed_up
    state = backup_verify(VerifyParameters(deep=True), return_state=True)
    report = state.result(raise_on_failure=False)
    assert state.is_completed(), state.message
    _no_missing_relation(report)
    checks = _checks(report)
    assert all(c["ok"] for c in report["checks"]), [c for c in report["checks"] if not c["ok"]]
    for table in VARIANT_TABLES:
        assert checks[f"fingerprint:{table}"]["detail"] == "identical content"
    # scanned by Great Expectations, not taken from the restored constraints
    assert checks["foreign-key:app.order.order_user_fkey"]["detail"] == "0 unexpected rows"  # "user" -> app."User" ("id")
    assert checks["foreign-key:public.user_alerts.user_alerts_user_id_fkey"]["detail"] == "0 unexpected rows"  # uuid
    assert checks["primary-key-unique:app.order"]["detail"] == "0 unexpected rows"  # ("user", "select")
    assert checks["primary-key-not-null:app.audit log.id"]["ok"]
    assert checks["primary-key-unique:public.market_data"]["detail"] == "0 unexpected rows"  # partitioned
    assert scratch_databases(platform.admin_dsn) == []


def test_a_drill_of_variants_passes_every_phase_and_compares_its_reads_by_name(
    variants: Platform, monkeypatch: pytest.MonkeyPatch
) -> None:
    # columns §0 does not name are called otherwise here: the default reads must not need them
    with variants.connect() as conn:
        conn.execute("ALTER TABLE user_sessions RENAME COLUMN token_hash TO token_digest")
        conn.execute("ALTER TABLE users RENAME COLUMN email TO mail")
        conn.execute("ALTER TABLE market_data RENAME COLUMN price TO close")
    reads = [r.model_dump() for r in DEFAULT_SMOKE_READS]
    reads.append({"name": "recent-audit", "sql": 'SELECT * FROM app."audit log" ORDER BY "when" DESC LIMIT 20'})
    monkeypatch.setenv("RUNBOOK_DR__SMOKE_READS", json.dumps(reads))
    monkeypatch.setenv("RUNBOOK_DR__LATENCY_FLOOR_MS", "100000")  # compared, never flagged: no timed assertion
    assert backup(BackupParameters(prune=False), return_state=True).is_completed()

    for attempt in (1, 2):
        state = disaster_recovery(DrParameters(), return_state=True)
        report = state.result(raise_on_failure=False)
        assert state.is_completed(), state.message
        assert {p["name"]: p["status"] for p in report["phases"]} == {
            "shutdown": "skipped", "restore": "ok", "verify": "ok", "restore-services": "skipped", "test-functions": "ok",
        }
        _no_missing_relation(report)
        checks = _checks(report)
        for table, rows in EXPECTED_ROWS.items():
            assert checks[f"row-count:{table}"]["detail"] == f"observed {rows}"
        for name in ("latest-price-per-symbol", "user-alerts", "session-lookup", "recent-audit"):
            assert checks[f"smoke:{name}"]["ok"], checks[f"smoke:{name}"]
        assert checks["smoke:latest-price-per-symbol"]["detail"].startswith("8 rows")
        assert checks["smoke:recent-audit"]["detail"].startswith("20 rows")
        performance = {n for n in checks if n.startswith("performance:")}
        if attempt == 2:  # the second drill compares each read with the first's, by name
            assert performance == {f"performance:{n}" for n in ("latest-price-per-symbol", "user-alerts", "session-lookup", "recent-audit")}
            assert all(checks[n]["ok"] for n in performance)
    assert scratch_databases(variants.admin_dsn, "drill") == []


def test_db_maintenance_vacuums_quoted_tables_and_indexes_the_partitioned_one(
    variants: Platform, monkeypatch: pytest.MonkeyPatch
) -> None:
    tables = ["public.market_data", "app.audit log", "app.User", "app.order"]
    monkeypatch.setenv("RUNBOOK_MAINTENANCE__TABLES", json.dumps(tables))
    # market_data's key is (symbol, "timestamp") ascending: §7.4's (symbol, timestamp DESC) is missing
    state = db_maintenance(MaintenanceParameters(apply=True), return_state=True)
    report = state.result(raise_on_failure=False)
    assert state.is_completed(), state.message
    assert report["vacuumed"] == tables
    checks = _checks(report)
    assert report["created_indexes"] == ["idx_market_data_symbol_timestamp"]
    assert checks["index:idx_market_data_symbol_timestamp"]["ok"] and checks["index:idx_user_alerts_user_created"]["ok"]
    assert checks["invalid-indexes"]["ok"]
    with variants.connect() as conn:
        vacuumed = dict(conn.execute(
            "SELECT n.nspname || '.' || c.relname, s.last_vacuum IS NOT NULL FROM pg_stat_user_tables s"
            " JOIN pg_class c ON c.oid = s.relid JOIN pg_namespace n ON n.oid = c.relnamespace"
        ).fetchall())
        parts = conn.execute(
            "SELECT count(*), bool_and(i.indisvalid) FROM pg_inherits h JOIN pg_index i ON i.indexrelid = h.inhrelid"
            " WHERE h.inhparent = 'public.idx_market_data_symbol_timestamp'::regclass"
        ).fetchone()
        parent = conn.execute("SELECT indisvalid FROM pg_index WHERE indexrelid = 'public.idx_market_data_symbol_timestamp'::regclass").fetchone()
    for table in ("app.audit log", "app.User", "app.order", "public.market_data_before", "public.market_data_recent"):
        assert vacuumed[table], table
    assert not vacuumed["public.system_logs"]
    assert parts == (2, True) and parent == (True,)  # one valid part per partition, the whole index valid


def test_diagnose_database_reads_row_level_security_of_quoted_tables(variants: Platform, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RUNBOOK_DIAGNOSE__RLS_TABLES", json.dumps(["public.users", "app.User", "app.audit log"]))
    with variants.connect() as conn:
        conn.execute("ALTER TABLE users ENABLE ROW LEVEL SECURITY")
        conn.execute('ALTER TABLE app."User" ENABLE ROW LEVEL SECURITY')
        conn.execute('ALTER TABLE app."audit log" ENABLE ROW LEVEL SECURITY')
    state = diagnose(DiagnoseParameters(component=Component.DATABASE), return_state=True)
    report = state.result(raise_on_failure=False)
    assert state.is_completed(), state.message
    assert report["components"] == {"database": "passed"}
    assert _checks(report)["database:row-level-security"]["detail"] == "on where expected"

    with variants.connect() as conn:
        conn.execute('ALTER TABLE app."audit log" DISABLE ROW LEVEL SECURITY')
    state = diagnose(DiagnoseParameters(component=Component.DATABASE), return_state=True)
    report = state.result(raise_on_failure=False)
    assert state.is_failed()
    assert _checks(report)["database:row-level-security"]["detail"] == "app.audit log has row-level security OFF"
