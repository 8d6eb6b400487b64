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
from tests.conftest import Platform, runbook_here


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
