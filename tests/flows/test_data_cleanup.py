"""data-cleanup on a real PostgreSQL with the sandbox's generated data: exactly the
rows of §4.5, nothing else, in batches, resumable after a kill."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from datetime import datetime
from typing import Any

import psycopg
import pytest

from flows.data_cleanup import CleanupParameters, data_cleanup
from tests.conftest import Platform, free_database_slot, runbook_here


def _run(**kwargs: Any) -> tuple[Any, dict[str, Any]]:
    state = data_cleanup(CleanupParameters(**kwargs), return_state=True)
    return state, state.result(raise_on_failure=False)


def snapshot(conn: psycopg.Connection) -> dict[str, Any]:
    return {
        "logs": dict(conn.execute("SELECT id, created_at FROM system_logs").fetchall()),
        "alerts": {r[0]: r[1:] for r in conn.execute("SELECT id, resolved, resolved_at, archived FROM user_alerts").fetchall()},
        "sessions": dict(conn.execute("SELECT id, expires_at FROM user_sessions").fetchall()),
    }


def cutoffs(report: dict[str, Any]) -> dict[str, datetime]:
    return {p["policy"]: datetime.fromisoformat(p["cutoff"]) for p in report["plans"]}


def test_a_dry_run_plans_exactly_and_touches_nothing(platform: Platform) -> None:
    with platform.connect() as conn:
        before = snapshot(conn)
    state, report = _run()
    assert state.is_completed() and report["dry_run"]
    cut = cutoffs(report)
    plans = {p["policy"]: p["rows"] for p in report["plans"]}
    assert plans["system-logs"] == sum(1 for t in before["logs"].values() if t < cut["system-logs"])
    assert plans["expired-sessions"] == sum(1 for t in before["sessions"].values() if t < cut["expired-sessions"])
    assert plans["resolved-alerts"] == sum(1 for r, at, a in before["alerts"].values() if r and at < cut["resolved-alerts"] and not a)
    with platform.connect() as conn:
        assert snapshot(conn) == before
        assert conn.execute("SELECT to_regclass('runbook.cleanup_journal')").fetchone() == (None,)


def test_apply_removes_and_flags_exactly_the_rows_of_4_5_in_batches_while_a_writer_inserts(platform: Platform) -> None:
    with platform.connect() as conn:
        before = snapshot(conn)
    written: list[int] = []
    stop = threading.Event()

    def writer() -> None:  # a log row every few ms, as the platform would
        with psycopg.connect(platform.dsn, autocommit=True) as conn:
            for _ in range(5000):
                if stop.is_set():
                    return
                written.append(conn.execute("INSERT INTO system_logs (level, message) VALUES ('INFO', 'live') RETURNING id").fetchone()[0])  # type: ignore[index]
                time.sleep(0.005)

    thread = threading.Thread(target=writer, daemon=True)
    thread.start()
    time.sleep(0.2)
    try:
        state, report = _run(dry_run=False, batch_size=500)
    finally:
        stop.set()
        thread.join(timeout=30)
    assert state.is_completed(), state.message
    cut = cutoffs(report)
    results = {r["policy"]: r for r in report["results"]}
    with platform.connect() as conn:
        after = snapshot(conn)
    old_logs = {i for i, t in before["logs"].items() if t < cut["system-logs"]}
    assert set(after["logs"]) == (set(before["logs"]) - old_logs) | set(written)  # the writer lost nothing
    assert results["system-logs"]["rows"] == len(old_logs) and results["system-logs"]["batches"] >= len(old_logs) // 500
    flagged = {i for i, (r, at, a) in before["alerts"].items() if r and at < cut["resolved-alerts"] and not a}
    assert {i for i, (_, _, a) in after["alerts"].items() if a} == flagged | {i for i, (_, _, a) in before["alerts"].items() if a}
    assert set(after["alerts"]) == set(before["alerts"])  # flagged, never deleted; unresolved ones untouched
    expired = {i for i, t in before["sessions"].items() if t < cut["expired-sessions"]}
    assert set(after["sessions"]) == set(before["sessions"]) - expired and results["expired-sessions"]["rows"] == len(expired)
    assert all(t >= cut["expired-sessions"] for t in after["sessions"].values())  # live sessions kept
    assert report["vacuumed"] == ["public.system_logs", "public.user_alerts", "public.user_sessions"]

    state, report = _run(dry_run=False)  # a second run: only rows that aged past its later cutoff meanwhile
    cut = cutoffs(report)
    assert all(r["rows"] < 50 for r in report["results"]), report["results"]
    with platform.connect() as conn:
        assert conn.execute("SELECT count(*) FROM system_logs WHERE created_at < %s", (cut["system-logs"],)).fetchone() == (0,)
        assert conn.execute("SELECT count(*) FROM user_sessions WHERE expires_at < %s", (cut["expired-sessions"],)).fetchone() == (0,)


def test_a_run_killed_between_batches_is_finished_by_the_next_with_exact_counts(platform: Platform, prefect_harness: str) -> None:
    with platform.connect() as conn:
        before = snapshot(conn)
    env = {**os.environ, "PREFECT_API_URL": prefect_harness}
    process = subprocess.Popen(
        [sys.executable, "-m", "runbook.cli", "data-cleanup", "--apply", "--policy", "system-logs", "--batch-size", "200"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, start_new_session=True,
    )
    deadline = time.monotonic() + 120
    done = 0
    with psycopg.connect(platform.dsn, autocommit=True) as conn:
        while time.monotonic() < deadline and process.poll() is None:
            if conn.execute("SELECT to_regclass('runbook.cleanup_journal')").fetchone() != (None,):
                row = conn.execute("SELECT rows_done FROM runbook.cleanup_journal WHERE policy = 'system-logs'").fetchone()
                done = row[0] if row else 0
                if done >= 1000:
                    break
            time.sleep(0.02)
        if process.poll() is not None:
            raise AssertionError(f"the clean-up ended before the kill: {process.stderr.read()[-1500:]}")  # type: ignore[union-attr]
        assert done >= 1000, "the clean-up did not get going before the kill"
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=30)
        free_database_slot(platform.database)  # the killed run's lease would hold it for a minute
        killed_at = conn.execute("SELECT rows_done, finished_at FROM runbook.cleanup_journal WHERE policy = 'system-logs'").fetchone()
    assert killed_at is not None and killed_at[1] is None  # unfinished
    state, report = _run(dry_run=False, policies=["system-logs"])
    assert state.is_completed(), state.message
    result = report["results"][0]
    assert result["resumed"] is True
    cutoff = datetime.fromisoformat(result["cutoff"])  # the first run's cutoff, kept in the journal
    old = {i for i, t in before["logs"].items() if t < cutoff}
    with platform.connect() as conn:
        remaining = {r[0] for r in conn.execute("SELECT id FROM system_logs").fetchall()}
    assert remaining == set(before["logs"]) - old
    assert result["rows"] == len(old) == result["selected_at_start"]  # both runs together, each row counted once


@pytest.mark.parametrize(
    ("policies", "message"),
    [
        ([{"name": "x", "table": "no_such", "time_column": "created_at", "older_than_days": 1}], "no table public.no_such"),
        ([{"name": "x", "table": "system_logs", "time_column": "created_at", "older_than_days": 0}], "must be > 0"),
        ([{"name": "x", "table": "system_logs", "time_column": "message", "older_than_days": 5}], "not a timestamp"),
    ],
)
def test_invalid_policies_exit_2_with_nothing_touched(
    platform: Platform, policies: list[dict[str, Any]], message: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    with platform.connect() as conn:
        before = snapshot(conn)
    proc = runbook_here("data-cleanup", "--apply", env={"RUNBOOK_CLEANUP__POLICIES": json.dumps(policies)}, monkeypatch=monkeypatch)
    assert proc.returncode == 2, proc.stderr[-1000:]
    assert message in proc.stderr and "Traceback" not in proc.stderr
    with platform.connect() as conn:
        assert snapshot(conn) == before
        assert conn.execute("SELECT to_regclass('runbook.cleanup_journal')").fetchone() == (None,)


def _archived_rows(store_root: str, database: str) -> list[dict[str, Any]]:
    import zstandard

    from pathlib import Path

    rows = []
    for path in sorted(Path(store_root, database, "archive").rglob("*.jsonl.zst")):
        text = zstandard.ZstdDecompressor().decompress(path.read_bytes()).decode()
        record = json.loads(path.with_name(path.name.removesuffix(".jsonl.zst") + ".json").read_text())
        lines = text.splitlines()
        assert record["rows"] == len(lines)
        import hashlib

        assert record["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
        rows += [json.loads(line) for line in lines]
    return rows


def test_archive_then_delete_keeps_exactly_the_deleted_rows_in_the_store(platform: Platform, monkeypatch: pytest.MonkeyPatch) -> None:
    import hashlib

    policy = {"name": "old-logs", "table": "system_logs", "time_column": "created_at", "older_than_days": 90, "action": "archive-then-delete"}
    monkeypatch.setenv("RUNBOOK_CLEANUP__POLICIES", json.dumps([policy]))
    state, report = _run()  # the plan fixes nothing: the apply run decides its own cutoff
    state, report = _run(dry_run=False, batch_size=700)
    assert state.is_completed(), state.message
    cutoff = datetime.fromisoformat(report["results"][0]["cutoff"])
    archived = sorted(_archived_rows(platform.store_url, platform.database), key=lambda r: r["id"])
    with platform.connect() as conn:
        assert conn.execute("SELECT count(*) FROM system_logs WHERE created_at < %s", (cutoff,)).fetchone() == (0,)
        survivors = conn.execute("SELECT count(*) FROM system_logs").fetchone()[0]  # type: ignore[index]
    from tasks.postgres import with_database

    with psycopg.connect(with_database(platform.admin_dsn, "platform_template")) as source:
        expected = [json.loads(r[0]) for r in source.execute(
            "SELECT row_to_json(t)::text FROM system_logs t WHERE created_at < %s ORDER BY id", (cutoff,)
        ).fetchall()]
        total = source.execute("SELECT count(*) FROM system_logs").fetchone()[0]  # type: ignore[index]

    def checksum(rows: list[dict[str, Any]]) -> str:
        return hashlib.sha256("\n".join(json.dumps(r, sort_keys=True) for r in rows).encode()).hexdigest()

    assert [r["id"] for r in archived] == [r["id"] for r in expected] and len(expected) > 0
    assert checksum(archived) == checksum(expected)  # the same rows, the same content
    assert report["results"][0]["rows"] == len(expected) and survivors == total - len(expected)


def test_a_second_clean_up_of_the_same_database_is_refused_with_nothing_touched(platform: Platform) -> None:
    from tasks.postgres import advisory_key

    with platform.connect() as conn:
        before = snapshot(conn)
    with psycopg.connect(platform.dsn, autocommit=True, application_name="the first clean-up") as holder:
        holder.execute("SELECT pg_advisory_lock(%s)", (advisory_key(f"data-cleanup of {platform.database}"),))
        state, _ = _run(dry_run=False)
    assert state.is_failed()
    assert "already running on this database" in (state.message or "") and "the first clean-up" in (state.message or "")
    with platform.connect() as conn:
        assert snapshot(conn) == before


# --------------------------------------------------------------------------- the "variants" database (issue 10)


def variant_rows(conn: psycopg.Connection) -> dict[str, Any]:
    return {
        "alerts": {r[0]: r[1:] for r in conn.execute("SELECT id, resolved, resolved_at, archived FROM user_alerts").fetchall()},
        "sessions": dict(conn.execute("SELECT token_hash, expires_at FROM user_sessions").fetchall()),
        "logs": sorted(conn.execute("SELECT created_at, level, message FROM system_logs").fetchall()),
        "market": dict(conn.execute('SELECT (symbol, "timestamp")::text, "timestamp" FROM market_data').fetchall()),
        "orders": dict(conn.execute('SELECT ("user", "select")::text, "placed at" FROM app."order"').fetchall()),
        "audit": dict(conn.execute('SELECT "id", "when" FROM app."audit log"').fetchall()),
    }


def _journal(conn: psycopg.Connection) -> list[tuple[Any, ...]]:
    if conn.execute("SELECT to_regclass('runbook.cleanup_journal')").fetchone() == (None,):
        return []
    return conn.execute("SELECT run_id, policy, last_key, rows_done, batches, finished_at, abandoned_at FROM runbook.cleanup_journal ORDER BY started_at").fetchall()


def test_the_default_policies_on_uuid_and_text_keys_run_and_the_table_without_a_key_is_refused(
    variants: Platform, monkeypatch: pytest.MonkeyPatch
) -> None:
    """§4.5 on the variants database: alerts (uuid key) flagged and sessions (text key)
    deleted exactly; system_logs (no primary key) refused with the reason; the dry run
    and the apply both end Failed and name it."""
    from prefect.artifacts import Artifact

    from runbook.cli import _human
    from tests.conftest import runbook_here

    with variants.connect() as conn:
        before = variant_rows(conn)
    state, report = _run()  # the dry run plans the two it can run, exactly, and names the third
    assert state.is_failed() and "system-logs cannot run: public.system_logs has no primary key" in (state.message or "")
    cut = cutoffs(report)
    plans = {p["policy"]: p for p in report["plans"]}
    flaggable = {i for i, (r, at, a) in before["alerts"].items() if r and at < cut["resolved-alerts"] and not a}
    expired = {t for t, at in before["sessions"].items() if at < cut["expired-sessions"]}
    assert plans["resolved-alerts"]["rows"] == len(flaggable) > 0 and plans["expired-sessions"]["rows"] == len(expired) > 0
    assert plans["resolved-alerts"]["sample_keys"][0] == str(min(flaggable)) and plans["expired-sessions"]["first_key"] == min(expired)
    assert plans["system-logs"]["problem"].startswith("public.system_logs has no primary key")
    assert "CANNOT RUN: public.system_logs has no primary key" in _human("data-cleanup", report)
    with variants.connect() as conn:
        assert variant_rows(conn) == before and _journal(conn) == []

    proc = runbook_here("data-cleanup", "--apply", "--batch-size", "64", "--json", env={}, monkeypatch=monkeypatch)
    assert proc.returncode == 1, proc.stderr[-1500:]
    report = json.loads(proc.stdout)
    assert "system-logs refused: public.system_logs has no primary key" in proc.stderr
    results = {r["policy"]: r for r in report["results"]}
    assert results["system-logs"]["outcome"] == "refused" and results["system-logs"]["rows"] == 0
    assert "system-logs          REFUSED: public.system_logs has no primary key" in _human("data-cleanup", report)
    cut = cutoffs(report)
    with variants.connect() as conn:
        after = variant_rows(conn)
    flagged = {i for i, (r, at, a) in before["alerts"].items() if r and at < cut["resolved-alerts"] and not a}
    assert {i for i, (_, _, a) in after["alerts"].items() if a} == flagged and set(after["alerts"]) == set(before["alerts"])
    assert results["resolved-alerts"]["outcome"] == "done" and results["resolved-alerts"]["rows"] == len(flagged)
    assert results["resolved-alerts"]["batches"] == -(-len(before["alerts"]) // 64)  # windows of 64 keys over every uuid
    expired = {t for t, at in before["sessions"].items() if at < cut["expired-sessions"]}
    assert set(after["sessions"]) == set(before["sessions"]) - expired and results["expired-sessions"]["rows"] == len(expired)
    assert results["expired-sessions"]["batches"] > 1
    assert after["logs"] == before["logs"]  # refused: not a row touched
    markdown = Artifact.get(f"data-cleanup-{variants.database}".replace("_", "-"))
    assert markdown is not None and "**system-logs** refused: public.system_logs has no primary key" in str(markdown.data)


def _archived(store_root: str, database: str, policy: str) -> list[dict[str, Any]]:
    import zstandard

    from pathlib import Path

    rows: list[dict[str, Any]] = []
    for path in sorted(Path(store_root, database, "archive", policy).rglob("*.jsonl.zst")):
        rows += [json.loads(line) for line in zstandard.ZstdDecompressor().decompress(path.read_bytes()).decode().splitlines()]
    return rows


VARIANT_POLICIES = [
    {"name": "old-prices", "table": "market_data", "time_column": "timestamp", "older_than_days": 2},
    {"name": "old-orders", "table": "app.order", "time_column": "placed at", "older_than_days": 30, "action": "archive-then-delete"},
    {"name": "old-audit", "table": "app.audit log", "time_column": "when", "older_than_days": 30},
]


def test_composite_keys_reserved_words_and_spaces_delete_exactly_the_old_rows_in_batches(
    variants: Platform, monkeypatch: pytest.MonkeyPatch
) -> None:
    """market_data (composite key, partitioned), app."order" (composite key of reserved
    words, archived first) and app."audit log" (bigint key, spaced names): exactly the
    rows older than each cutoff, in many small batches."""
    monkeypatch.setenv("RUNBOOK_CLEANUP__POLICIES", json.dumps(VARIANT_POLICIES))
    with variants.connect() as conn:
        before = variant_rows(conn)
        partitions = conn.execute("SELECT (SELECT count(*) FROM market_data_before), (SELECT count(*) FROM market_data_recent)").fetchone()
    state, report = _run(dry_run=False, batch_size=37)
    assert state.is_completed(), state.message
    cut = cutoffs(report)
    results = {r["policy"]: r for r in report["results"]}
    with variants.connect() as conn:
        after = variant_rows(conn)
        partitions_after = conn.execute("SELECT (SELECT count(*) FROM market_data_before), (SELECT count(*) FROM market_data_recent)").fetchone()
    for name, table in [("old-prices", "market"), ("old-orders", "orders"), ("old-audit", "audit")]:
        old = {k for k, at in before[table].items() if at < cut[name]}
        assert 37 * 2 < len(old) < len(before[table]), name  # several batches, and rows to keep
        assert after[table] == {k: at for k, at in before[table].items() if k not in old}, name
        assert results[name]["rows"] == results[name]["selected_at_start"] == len(old)
        assert results[name]["batches"] >= -(-len(old) // 37)  # at least ceil(rows / batch size)
    assert partitions_after[0] < partitions[0] and partitions_after[1] < partitions[1]  # both partitions held old rows
    archived = _archived(variants.store_url, variants.database, "old-orders")
    assert sorted((r["user"], r["select"]) for r in archived) == sorted(
        (k.strip("()").split(",")[0], int(k.strip("()").split(",")[1])) for k, at in before["orders"].items() if at < cut["old-orders"]
    )


def test_a_table_and_columns_with_a_percent_sign_are_archived_and_deleted_exactly(
    variants: Platform, monkeypatch: pytest.MonkeyPatch
) -> None:
    """app."usage %" ("cpu%" too): psycopg reads % as a placeholder, also in quoted names."""
    policy = {"name": "old-usage", "table": "app.usage %", "time_column": "at", "older_than_days": 2, "action": "archive-then-delete"}
    monkeypatch.setenv("RUNBOOK_CLEANUP__POLICIES", json.dumps([policy]))
    with variants.connect() as conn:
        before = dict(conn.execute('SELECT "id", "at" FROM app."usage %"').fetchall())
    state, report = _run(dry_run=False, batch_size=37)
    assert state.is_completed(), state.message
    cut = cutoffs(report)["old-usage"]
    old = {k for k, at in before.items() if at < cut}
    assert 37 * 2 < len(old) < len(before)  # several batches, and rows to keep
    with variants.connect() as conn:
        after = dict(conn.execute('SELECT "id", "at" FROM app."usage %"').fetchall())
    assert after == {k: at for k, at in before.items() if k not in old}
    assert sorted(r["id"] for r in _archived(variants.store_url, variants.database, "old-usage")) == sorted(old)
    assert all("cpu%" in r for r in _archived(variants.store_url, variants.database, "old-usage"))


KILL_AFTER_BATCHES = r"""
import json, os, signal, sys
from datetime import datetime

from runbook.cleanup import Policy
from tasks.cleanup import ensure_journal, run_policy
import psycopg

dsn, policy, cutoff, kill_after = sys.argv[1], Policy(**json.loads(sys.argv[2])), datetime.fromisoformat(sys.argv[3]), int(sys.argv[4])


def on_batch(entry):  # called once the batch has committed: the process dies between two batches
    if entry.batches == kill_after:
        os.kill(os.getpid(), signal.SIGKILL)


with psycopg.connect(dsn) as conn:
    ensure_journal(conn)
run_policy(dsn, policy, None, None, "killed-run", cutoff, batch_size=int(sys.argv[5]), lock_timeout_ms=2000, statement_timeout_ms=30000,
           max_lock_waits=100, long_transaction_s=600, connect_timeout=10, on_batch=on_batch)
"""


@pytest.mark.parametrize(
    ("policy", "table", "batch"),
    [
        ({"name": "old-prices", "table": "market_data", "time_column": "timestamp", "older_than_days": 2}, "market", 50),
        ({"name": "resolved-alerts", "table": "user_alerts", "time_column": "resolved_at", "older_than_days": 30,
          "conditions": [{"column": "resolved", "equals": True}], "action": "set-archived"}, "alerts", 100),
    ],
    ids=["composite-key", "uuid-key"],
)
def test_a_run_killed_between_batches_resumes_exactly_on_a_composite_or_uuid_key(
    variants: Platform, monkeypatch: pytest.MonkeyPatch, policy: dict[str, Any], table: str, batch: int
) -> None:
    with variants.connect() as conn:
        before = variant_rows(conn)
        now = conn.execute("SELECT now()").fetchone()[0]  # type: ignore[index]
    cutoff = now - __import__("datetime").timedelta(days=policy["older_than_days"])
    killed = subprocess.run(
        [sys.executable, "-c", KILL_AFTER_BATCHES, variants.dsn, json.dumps(policy), cutoff.isoformat(), "3", str(batch)],
        capture_output=True, text=True, timeout=120,
    )
    assert killed.returncode == -9, killed.stderr[-1500:]
    with variants.connect() as conn:
        (run_id, _, last_key, rows_done, batches, finished, _), = _journal(conn)
        middle = variant_rows(conn)
    assert (run_id, batches, finished) == ("killed-run", 3, None)
    if table == "market":
        assert json.loads(last_key)[0].startswith("SYM")  # the journal keeps the composite key as a JSON list
        changed = len(before["market"]) - len(middle["market"])
        expected = {k for k, at in before["market"].items() if at < cutoff}
    else:
        changed = sum(1 for r in middle["alerts"].values() if r[2]) - sum(1 for r in before["alerts"].values() if r[2])
        expected = {i for i, (r, at, a) in before["alerts"].items() if r and at < cutoff and not a}
    assert 0 < rows_done == changed < len(expected)  # stopped in the middle, its count exact

    monkeypatch.setenv("RUNBOOK_CLEANUP__POLICIES", json.dumps([policy]))
    state, report = _run(dry_run=False, batch_size=batch)
    assert state.is_completed(), state.message
    result = report["results"][0]
    assert result["resumed"] and result["run_id"] == "killed-run" and datetime.fromisoformat(result["cutoff"]) == cutoff
    assert result["rows"] == len(expected) == result["selected_at_start"]  # both runs together, each row once
    with variants.connect() as conn:
        after = variant_rows(conn)
    if table == "market":
        assert set(after["market"]) == set(before["market"]) - expected
    else:
        assert {i for i, r in after["alerts"].items() if r[2]} == expected | {i for i, r in before["alerts"].items() if r[2]}


FAIL_ON = """
CREATE FUNCTION app.refuse() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF OLD."id" >= %s THEN RAISE EXCEPTION 'audit rows are kept by law'; END IF;
    RETURN OLD;
END $$;
CREATE TRIGGER "keep audit" BEFORE DELETE ON app."audit log" FOR EACH ROW EXECUTE FUNCTION app.refuse();
"""


def _fail_half_way(conn: psycopg.Connection) -> int:
    """A trigger that refuses to delete the younger half of the old audit rows: the first
    batches pass, then one fails. Returns the first id it refuses."""
    old = sorted(r[0] for r in conn.execute('SELECT "id" FROM app."audit log" WHERE "when" < now() - interval \'31 days\'').fetchall())
    assert len(old) > 200
    conn.execute(FAIL_ON.replace("%s", str(old[len(old) // 2])))
    return old[len(old) // 2]


def test_a_policy_whose_batches_fail_does_not_stop_the_others_and_the_next_run_finishes_it(
    variants: Platform, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tests.conftest import runbook_here

    monkeypatch.setenv("RUNBOOK_CLEANUP__POLICIES", json.dumps([VARIANT_POLICIES[2], VARIANT_POLICIES[0]]))
    with variants.connect() as conn:
        before = variant_rows(conn)
        refused_from = _fail_half_way(conn)
    proc = runbook_here("data-cleanup", "--apply", "--batch-size", "40", "--json", env={}, monkeypatch=monkeypatch)
    assert proc.returncode == 1, proc.stderr[-1500:]
    report = json.loads(proc.stdout)
    results = {r["policy"]: r for r in report["results"]}
    audit, prices = results["old-audit"], results["old-prices"]
    assert audit["outcome"] == "failed" and "audit rows are kept by law" in audit["error"] and "old-audit failed" in proc.stderr
    cut = cutoffs(report)
    with variants.connect() as conn:
        middle = variant_rows(conn)
        journal = {row[1]: row for row in _journal(conn)}
    old_audit = {k for k, at in before["audit"].items() if at < cut["old-audit"]}
    gone = set(before["audit"]) - set(middle["audit"])
    assert gone and gone < old_audit and all(k < refused_from for k in gone) and audit["rows"] == len(gone)  # its committed batches stay done
    assert journal["old-audit"][5] is None and journal["old-audit"][2] == audit["last_key"]  # unfinished, resumable
    assert prices["outcome"] == "done"  # the next policy ran anyway
    assert set(middle["market"]) == {k for k, at in before["market"].items() if at >= cut["old-prices"]}

    with variants.connect() as conn:
        conn.execute('DROP TRIGGER "keep audit" ON app."audit log"')
    state, report = _run(dry_run=False, batch_size=40, policies=["old-audit"])
    assert state.is_completed(), state.message
    assert report["results"][0]["resumed"] and report["results"][0]["rows"] == len(old_audit)
    with variants.connect() as conn:
        assert set(variant_rows(conn)["audit"]) == set(before["audit"]) - old_audit


def test_a_changed_policy_does_not_resume_its_unfinished_run_until_it_is_abandoned(
    variants: Platform, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A run stopped half-way (a failing trigger); the policy's age is then changed: the
    apply and the dry run refuse with exit 2 and nothing touched, naming the run and
    --abandon-unfinished; a dry run with it says what it would abandon; the apply with it
    marks the run abandoned, reports what it had changed and runs the new policy."""
    from tests.conftest import runbook_here

    policy = VARIANT_POLICIES[2]
    with variants.connect() as conn:
        _fail_half_way(conn)
    first = runbook_here("data-cleanup", "--apply", "--batch-size", "40", env={"RUNBOOK_CLEANUP__POLICIES": json.dumps([policy])}, monkeypatch=monkeypatch)
    assert first.returncode == 1, first.stderr[-1500:]
    with variants.connect() as conn:
        conn.execute('DROP TRIGGER "keep audit" ON app."audit log"')
        before, journal = variant_rows(conn), _journal(conn)
    (run_id, _, last_key, rows_done, batches, _, _), = journal
    assert rows_done > 0

    changed = [policy | {"older_than_days": 20}]
    for mode in ("--apply", "--dry-run"):
        refused = runbook_here("data-cleanup", mode, env={"RUNBOOK_CLEANUP__POLICIES": json.dumps(changed)}, monkeypatch=monkeypatch)
        assert refused.returncode == 2, refused.stderr[-1500:]
        assert f"unfinished run {run_id}" in refused.stderr and "the policy changed since (older_than_days)" in refused.stderr
        assert "--abandon-unfinished" in refused.stderr and "Traceback" not in refused.stderr
        with variants.connect() as conn:
            assert variant_rows(conn) == before and _journal(conn) == journal
    done = f"{rows_done:,} rows deleted in {batches} batches, last key {last_key}"
    preview = runbook_here("data-cleanup", "--dry-run", "--abandon-unfinished", env={}, monkeypatch=monkeypatch)
    assert preview.returncode == 0, preview.stderr[-1500:]
    assert f"would abandon unfinished run {run_id} of old-audit" in preview.stdout and done in preview.stdout
    with variants.connect() as conn:
        assert _journal(conn) == journal

    applied = runbook_here("data-cleanup", "--apply", "--abandon-unfinished", "--json", env={}, monkeypatch=monkeypatch)
    assert applied.returncode == 0, applied.stderr[-1500:]
    report = json.loads(applied.stdout)
    (abandoned,) = report["unfinished"]
    assert (abandoned["run_id"], abandoned["rows_done"], abandoned["batches"], abandoned["last_key"]) == (run_id, rows_done, batches, last_key)
    result = report["results"][0]
    assert not result["resumed"] and result["run_id"] != run_id
    cut = cutoffs(report)
    with variants.connect() as conn:
        after, journal_after = variant_rows(conn), _journal(conn)
    assert set(after["audit"]) == {k for k, at in before["audit"].items() if at >= cut["old-audit"]}
    assert result["rows"] == len(before["audit"]) - len(after["audit"])
    assert journal_after[0][0] == run_id and journal_after[0][6] is not None and journal_after[0][5] is None  # abandoned, not finished
    assert journal_after[1][5] is not None  # the new run finished


def test_data_cleanup_takes_dry_run_explicitly_and_refuses_it_with_apply(platform: Platform, monkeypatch: pytest.MonkeyPatch) -> None:
    from tests.conftest import runbook_here

    with platform.connect() as conn:
        before = snapshot(conn)
    both = runbook_here("data-cleanup", "--dry-run", "--apply", env={}, monkeypatch=monkeypatch)
    assert both.returncode == 2 and "not allowed with argument" in both.stderr
    dry = runbook_here("data-cleanup", "--dry-run", "--policy", "system-logs", env={}, monkeypatch=monkeypatch)
    assert dry.returncode == 0 and "clean-up plan (dry run: add --apply to do it)" in dry.stdout, dry.stderr[-1500:]
    with platform.connect() as conn:
        assert snapshot(conn) == before


OLD_JOURNAL = """
CREATE SCHEMA runbook;
CREATE TABLE runbook.cleanup_journal (
    run_id text NOT NULL, policy text NOT NULL, table_name text NOT NULL, action text NOT NULL, cutoff timestamptz NOT NULL,
    last_key text, rows_done bigint NOT NULL DEFAULT 0, batches integer NOT NULL DEFAULT 0,
    started_at timestamptz NOT NULL DEFAULT now(), updated_at timestamptz NOT NULL DEFAULT now(), finished_at timestamptz,
    PRIMARY KEY (run_id, policy)
);
INSERT INTO runbook.cleanup_journal (run_id, policy, table_name, action, cutoff, last_key, rows_done, batches)
VALUES ('cleanup_20261101_040000_abcd', 'system-logs', 'public.system_logs', 'delete', now() - interval '120 days', '500', 123, 2);
"""


def test_an_unfinished_run_from_an_older_journal_is_migrated_refused_and_can_be_abandoned(
    platform: Platform, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A journal made before fingerprints (no column for them): its unfinished run cannot
    be proved unchanged, so it is not resumed; the table gains the new columns and the
    old row reads as before (its single key), so it can be abandoned."""
    from tests.conftest import runbook_here

    with platform.connect() as conn:
        conn.execute(OLD_JOURNAL)
        before = snapshot(conn)
    refused = runbook_here("data-cleanup", "--apply", "--policy", "system-logs", env={}, monkeypatch=monkeypatch)
    assert refused.returncode == 2 and "cannot tell whether the policy changed" in refused.stderr, refused.stderr[-1500:]
    with platform.connect() as conn:
        assert snapshot(conn) == before
        columns = {r[0] for r in conn.execute("SELECT column_name FROM information_schema.columns WHERE table_name = 'cleanup_journal'").fetchall()}
    assert "fingerprint" not in columns  # refused before anything, its own journal included, was touched
    abandoned = runbook_here("data-cleanup", "--apply", "--policy", "system-logs", "--abandon-unfinished", env={}, monkeypatch=monkeypatch)
    assert abandoned.returncode == 0, abandoned.stderr[-1500:]
    with platform.connect() as conn:
        columns = {r[0] for r in conn.execute("SELECT column_name FROM information_schema.columns WHERE table_name = 'cleanup_journal'").fetchall()}
        legacy = conn.execute("SELECT abandoned_at IS NOT NULL, finished_at FROM runbook.cleanup_journal WHERE run_id LIKE '%abcd'").fetchone()
    assert {"fingerprint", "definition", "abandoned_at", "abandoned_by"} <= columns and legacy == (True, None)  # migrated in place
    assert "abandoned unfinished run cleanup_20261101_040000_abcd of system-logs" in abandoned.stdout
    assert "it had 123 rows deleted in 2 batches, last key 500" in abandoned.stdout and "clean-up done:" in abandoned.stdout
