"""The PostgreSQL side of clean-up on a real server: the catalog, exact plans, quoting."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from pathlib import Path

import psycopg
import pytest

from runbook.cleanup import DEFAULT_POLICIES, Action, Condition, Policy, check_policies
from tasks.cleanup import table_catalog, plan_policy
from tests.conftest import Platform


def test_the_catalog_knows_the_platform_tables_and_the_default_policies_pass(platform: Platform) -> None:
    with psycopg.connect(platform.dsn) as conn:
        catalog = table_catalog(conn)
    assert {"public.users", "public.user_alerts", "public.market_data", "public.system_logs", "public.user_sessions"} <= set(catalog)
    assert catalog["public.user_alerts"].primary_key == ["id"]
    assert catalog["public.user_alerts"].columns["archived"] == "boolean"
    check_policies(DEFAULT_POLICIES, catalog)  # raises if not


def test_plans_count_exactly_what_each_rule_of_4_5_selects(platform: Platform) -> None:
    logs, alerts, sessions = DEFAULT_POLICIES
    with psycopg.connect(platform.dsn) as conn:
        now = conn.execute("SELECT now()").fetchone()[0]  # type: ignore[index]
        conn.execute("UPDATE user_alerts SET archived = true WHERE id IN (SELECT id FROM user_alerts WHERE resolved AND resolved_at < now() - interval '30 days' ORDER BY id LIMIT 3)")
        plans = [plan_policy(conn, p, "id", p.cutoff(now)) for p in DEFAULT_POLICIES]
        expected = [
            conn.execute("SELECT count(*) FROM system_logs WHERE created_at < %s", (now - timedelta(days=90),)).fetchone()[0],  # type: ignore[index]
            conn.execute(
                "SELECT count(*) FROM user_alerts WHERE resolved AND resolved_at < %s AND NOT archived", (now - timedelta(days=30),)
            ).fetchone()[0],  # type: ignore[index]
            conn.execute("SELECT count(*) FROM user_sessions WHERE expires_at < %s", (now,)).fetchone()[0],  # type: ignore[index]
        ]
        smallest = conn.execute("SELECT min(id) FROM system_logs WHERE created_at < %s", (now - timedelta(days=90),)).fetchone()[0]  # type: ignore[index]
    assert [p.rows for p in plans] == expected
    assert all(n > 0 for n in expected)  # the sandbox data has rows for every rule
    assert plans[0].sample_keys[0] == smallest and len(plans[0].sample_keys) == 5
    assert plans[1].action is Action.SET_ARCHIVED


def test_odd_identifiers_are_quoted_not_interpolated(platform: Platform) -> None:
    with psycopg.connect(platform.dsn, autocommit=True) as conn:
        conn.execute('CREATE TABLE "odd ""name"" log" (id int PRIMARY KEY, "created at" timestamptz, "kind;drop" text)')
        conn.execute(
            """INSERT INTO "odd ""name"" log" SELECT g, now() - g * interval '1 day', CASE WHEN g % 2 = 0 THEN 'a' ELSE 'b' END
               FROM generate_series(1, 20) g"""
        )
        policy = Policy(
            name="odd", table='public.odd "name" log', time_column="created at", older_than_days=10,
            conditions=[Condition(column="kind;drop", equals="a")],
        )
        check_policies([policy], table_catalog(conn))
        plan = plan_policy(conn, policy, "id", policy.cutoff(datetime.now(timezone.utc)))
    # created 10..20 days ago, kind a (even ids): the row of exactly 10 days is older than the later cutoff
    assert plan.rows == 6 and plan.sample_keys == [10, 12, 14, 16, 18]


def test_a_condition_on_the_key_column_itself_is_not_ambiguous_in_a_batch(platform: Platform) -> None:
    from tasks.cleanup import JournalEntry, apply_batch, ensure_journal, open_entry

    policy = Policy(name="odd-ids", table="system_logs", time_column="created_at", expired=True,
                    conditions=[Condition(column="level", equals="DEBUG")])
    with psycopg.connect(platform.dsn) as conn:
        ensure_journal(conn)
        first = conn.execute("SELECT min(id) FROM system_logs").fetchone()[0]  # type: ignore[index]
        policy = policy.model_copy(update={"conditions": [Condition(column="id", equals=first)]})
        entry: JournalEntry = open_entry(conn, policy, "run-1", datetime.now(timezone.utc))
        changed, more = apply_batch(conn, policy, "id", entry, 100, "bigint", 2000, 30000)
        assert changed == 1 and not more and entry.rows_done == 1 and entry.last_key == str(first)  # the only selected key
        assert conn.execute("SELECT count(*) FROM system_logs WHERE id = %s", (first,)).fetchone() == (0,)


KILLER = r"""
import os, signal, sys
from datetime import datetime
from pathlib import Path

from runbook.cleanup import Action, Policy
from tasks import store as stores
from tasks.cleanup import ensure_journal, run_policy
import psycopg
import pytest

dsn, root, cutoff, kill_at = sys.argv[1], sys.argv[2], datetime.fromisoformat(sys.argv[3]), int(sys.argv[4])


class KilledAfterArchiving(stores.LocalStore):
    # the batch's archive and its record are written and read back: then the process dies, before the DELETE commits
    def put_json_written(self, key: str) -> None:
        if key.endswith(f"batch_{kill_at:06d}.json"):
            os.kill(os.getpid(), signal.SIGKILL)

    def put_bytes(self, key: str, data: bytes) -> None:
        super().put_bytes(key, data)
        if key.endswith(".json"):
            self.put_json_written(key)


policy = Policy(name="old-logs", table="system_logs", time_column="created_at", older_than_days=90, action=Action.ARCHIVE_THEN_DELETE)
with psycopg.connect(dsn) as conn:
    ensure_journal(conn)
run_policy(dsn, policy, "id", "bigint", "first-run", cutoff, batch_size=300, lock_timeout_ms=2000, statement_timeout_ms=30000,
           max_lock_waits=100, long_transaction_s=600, connect_timeout=10, store=KilledAfterArchiving(Path(root)), database="db")
"""


def test_archive_then_delete_killed_between_archive_write_and_commit_resumes_without_loss_or_duplicates(
    platform: Platform, tmp_path: Path
) -> None:
    """A SIGKILL after batch 3's archive is written and checked, before its DELETE commits:
    the rows stay in the table, the re-run writes batch 3 again over the same object, and
    the archive ends with every deleted row exactly once."""
    import hashlib
    import json
    import subprocess
    import sys

    import zstandard

    from runbook.cleanup import Action
    from tasks.cleanup import run_policy
    from tasks.store import LocalStore

    root = tmp_path / "store"
    with psycopg.connect(platform.dsn) as conn:
        now = conn.execute("SELECT now()").fetchone()[0]  # type: ignore[index]
        cutoff = now - timedelta(days=90)
        expected = {r[0]: json.loads(r[1]) for r in conn.execute(
            "SELECT id, row_to_json(t)::text FROM system_logs t WHERE created_at < %s", (cutoff,)
        ).fetchall()}
        total = conn.execute("SELECT count(*) FROM system_logs").fetchone()[0]  # type: ignore[index]
    assert len(expected) > 3 * 300  # the kill comes in the middle
    killed = subprocess.run(
        [sys.executable, "-c", KILLER, platform.dsn, str(root), cutoff.isoformat(), "3"], capture_output=True, text=True, timeout=120
    )
    assert killed.returncode == -9, killed.stderr[-1500:]
    batch_3 = root / "db/archive/old-logs/first-run/batch_000003.jsonl.zst"
    written_before_the_kill = zstandard.ZstdDecompressor().decompress(batch_3.read_bytes()).decode().splitlines()
    with psycopg.connect(platform.dsn) as conn:
        journal = conn.execute("SELECT rows_done, batches, finished_at FROM runbook.cleanup_journal WHERE policy = 'old-logs'").fetchone()
        assert journal == (600, 2, None)  # batch 3 never committed
        in_batch_3 = [json.loads(line)["id"] for line in written_before_the_kill]
        assert conn.execute("SELECT count(*) FROM system_logs WHERE id = ANY(%s)", (in_batch_3,)).fetchone() == (300,)  # still there

    policy = Policy(name="old-logs", table="system_logs", time_column="created_at", older_than_days=90, action=Action.ARCHIVE_THEN_DELETE)
    result = run_policy(
        platform.dsn, policy, "id", "bigint", "second-run", now, batch_size=300, lock_timeout_ms=2000, statement_timeout_ms=30000,
        max_lock_waits=100, long_transaction_s=600, connect_timeout=10, store=LocalStore(root), database="db",
    )
    assert result["resumed"] is True and result["run_id"] == "first-run" and result["cutoff"] == cutoff.isoformat()
    assert result["rows"] == len(expected)  # both runs, each row counted once

    archived: list[dict[str, object]] = []
    objects = sorted((root / "db/archive/old-logs/first-run").glob("*.jsonl.zst"))
    assert [p.name for p in objects] == [f"batch_{n:06d}.jsonl.zst" for n in range(1, len(objects) + 1)]
    for path in objects:
        record = json.loads(path.with_name(path.name.removesuffix(".jsonl.zst") + ".json").read_text())
        lines = zstandard.ZstdDecompressor().decompress(path.read_bytes()).decode().splitlines()
        assert record["rows"] == len(lines) and record["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
        archived += [json.loads(line) for line in lines]
    ids = [row["id"] for row in archived]
    assert len(ids) == len(set(ids)) and set(ids) == set(expected)  # every deleted row exactly once
    assert sorted(archived, key=lambda r: r["id"]) == [expected[i] for i in sorted(expected)]  # and its content
    with psycopg.connect(platform.dsn) as conn:
        assert conn.execute("SELECT count(*) FROM system_logs WHERE created_at < %s", (cutoff,)).fetchone() == (0,)
        assert conn.execute("SELECT count(*) FROM system_logs").fetchone() == (total - len(expected),)


def _policy_run(dsn: str, policy: Policy, key_type: "str | object", batch_size: int) -> tuple[dict[str, object], list[int]]:
    from runbook.cleanup import BatchKey

    from tasks.cleanup import ensure_journal, run_policy

    with psycopg.connect(dsn) as conn:
        ensure_journal(conn)
        now = conn.execute("SELECT now()").fetchone()[0]  # type: ignore[index]
    sizes: list[int] = []
    done = [0]

    def on_batch(entry: object) -> None:
        sizes.append(entry.rows_done - done[0])  # type: ignore[attr-defined]
        done[0] = entry.rows_done  # type: ignore[attr-defined]

    key, kind = (key_type, None) if isinstance(key_type, BatchKey) else ("id", key_type)
    result = run_policy(
        dsn, policy, key, kind, f"run-{policy.name}", policy.cutoff(now), batch_size=batch_size, lock_timeout_ms=2000,
        statement_timeout_ms=30000, max_lock_waits=100, long_transaction_s=600, connect_timeout=10, on_batch=on_batch,
    )
    return result, sizes


def test_integer_key_windows_jump_gaps_and_never_hold_more_than_a_batch(platform: Platform) -> None:
    """Two clusters of ids a trillion apart, odd ids old: six windows of 20 ids, not fifty billion."""
    with psycopg.connect(platform.dsn, autocommit=True) as conn:
        conn.execute("CREATE TABLE gappy (id bigint PRIMARY KEY, created_at timestamptz NOT NULL)")
        conn.execute(
            """INSERT INTO gappy SELECT base + g, now() - CASE WHEN g % 2 = 1 THEN interval '200 days' ELSE interval '1 day' END
               FROM generate_series(1, 50) g, (VALUES (0::bigint), (1000000000000::bigint)) AS b(base)"""
        )
    policy = Policy(name="gappy", table="gappy", time_column="created_at", older_than_days=90)
    result, sizes = _policy_run(platform.dsn, policy, "bigint", 20)
    with psycopg.connect(platform.dsn) as conn:
        left = [r[0] for r in conn.execute("SELECT id FROM gappy ORDER BY id").fetchall()]
    assert left == [base + g for base in (0, 10**12) for g in range(2, 51, 2)]
    assert result["rows"] == 50 and result["selected_at_start"] == 50
    assert result["batches"] == 6 and sizes == [10, 10, 5, 10, 10, 5]


def test_text_key_windows_read_their_end_from_the_key_index(platform: Platform) -> None:
    with psycopg.connect(platform.dsn, autocommit=True) as conn:
        conn.execute("CREATE TABLE texty (id text PRIMARY KEY, created_at timestamptz NOT NULL)")
        conn.execute(
            """INSERT INTO texty SELECT 'k' || lpad(g::text, 4, '0'), now() - CASE WHEN g % 3 = 0 THEN interval '200 days' ELSE interval '1 day' END
               FROM generate_series(1, 100) g"""
        )
    policy = Policy(name="texty", table="texty", time_column="created_at", older_than_days=90)
    result, sizes = _policy_run(platform.dsn, policy, "text", 15)
    with psycopg.connect(platform.dsn) as conn:
        left = [r[0] for r in conn.execute("SELECT id FROM texty ORDER BY id").fetchall()]
    assert left == [f"k{g:04d}" for g in range(1, 101) if g % 3]
    assert result["rows"] == 33 and sum(sizes) == 33 and max(sizes) <= 15


@pytest.mark.parametrize("kind", ["long transaction", "lock wait"])
def test_batches_wait_while_the_database_is_under_pressure_then_finish_exactly(platform: Platform, kind: str) -> None:
    """Another session holds a transaction open (or waits on a lock) for 1.5 s: the
    clean-up waits for it to end before its next batch, then deletes exactly."""
    import threading
    import time

    from tasks.cleanup import ensure_journal, run_policy

    policy = Policy(name="old-logs", table="system_logs", time_column="created_at", older_than_days=90)
    with psycopg.connect(platform.dsn) as conn:
        ensure_journal(conn)
        now = conn.execute("SELECT now()").fetchone()[0]  # type: ignore[index]
        old = conn.execute("SELECT count(*) FROM system_logs WHERE created_at < %s", (policy.cutoff(now),)).fetchone()[0]  # type: ignore[index]
    holding = threading.Event()

    def hold() -> None:
        with psycopg.connect(platform.dsn) as first, psycopg.connect(platform.dsn) as second:
            first.execute("SELECT id FROM users ORDER BY id LIMIT 1 FOR UPDATE")  # a transaction stays open
            if kind == "lock wait":
                second.execute("SET lock_timeout = '1500ms'")
                holding.set()
                with pytest.raises(psycopg.errors.LockNotAvailable):  # waits on the lock for 1.5 s
                    second.execute("SELECT id FROM users ORDER BY id LIMIT 1 FOR UPDATE")
            else:
                holding.set()
                time.sleep(1.5)
            first.rollback()

    holder = threading.Thread(target=hold)
    holder.start()
    assert holding.wait(10)
    time.sleep(0.2)  # the waiter is waiting
    result = run_policy(
        platform.dsn, policy, "id", "bigint", "pressed", policy.cutoff(now), batch_size=500, lock_timeout_ms=2000,
        statement_timeout_ms=30000, max_lock_waits=0, long_transaction_s=0.1 if kind == "long transaction" else 600,
        connect_timeout=10,
    )
    holder.join(10)
    assert result["waited_for_pressure_s"] >= 0.75, result
    assert result["rows"] == old and old > 0
    with psycopg.connect(platform.dsn) as conn:
        assert conn.execute("SELECT count(*) FROM system_logs WHERE created_at < %s", (policy.cutoff(now),)).fetchone() == (0,)


def test_composite_key_windows_walk_by_row_comparison_and_never_hold_more_than_a_batch(platform: Platform) -> None:
    """A (text, timestamptz) key, each symbol's older rows selected: windows of 15 keys in
    key order, each one range statement; the journal's last key is the JSON of the
    window's end and the walk stops at the last selected key."""
    import json

    from runbook.cleanup import BatchKey

    with psycopg.connect(platform.dsn, autocommit=True) as conn:
        conn.execute('CREATE TABLE pairs (sym text, "at" timestamptz, PRIMARY KEY (sym, "at"))')
        conn.execute(
            """INSERT INTO pairs SELECT 's' || (g % 4), now() - make_interval(days => g * 3)
               FROM generate_series(1, 100) g"""
        )
        expected = {r[0] for r in conn.execute("""SELECT (sym, "at")::text FROM pairs WHERE "at" < now() - interval '90 days'""").fetchall()}
    policy = Policy(name="pairs", table="pairs", time_column="at", older_than_days=90)
    key = BatchKey(columns=["sym", "at"], types=["text", "timestamp with time zone"])
    with psycopg.connect(platform.dsn) as conn:
        plan = plan_policy(conn, policy, key, policy.cutoff(conn.execute("SELECT now()").fetchone()[0]))  # type: ignore[index]
    assert plan.rows == len(expected) and plan.sample_keys[0].startswith("(s0,") and json.loads(plan.first_key or "")[0] == "s0"
    result, sizes = _policy_run(platform.dsn, policy, key, 15)  # type: ignore[arg-type]
    with psycopg.connect(platform.dsn) as conn:
        left = {r[0] for r in conn.execute('SELECT (sym, "at")::text FROM pairs').fetchall()}
        last_key = conn.execute("SELECT last_key FROM runbook.cleanup_journal WHERE policy = 'pairs'").fetchone()[0]  # type: ignore[index]
    assert len(left) == 100 - len(expected) and not (left & expected)
    assert result["rows"] == len(expected) and sum(sizes) == len(expected) and max(sizes) <= 15
    assert last_key == plan.last_key  # stopped at the last selected key, not at the end of the table
