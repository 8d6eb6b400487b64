"""The PostgreSQL side of clean-up on a real server: the catalog, exact plans, quoting."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import psycopg

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
        assert changed == 1 and more and entry.rows_done == 1 and int(entry.last_key or 0) >= first
        assert conn.execute("SELECT count(*) FROM system_logs WHERE id = %s", (first,)).fetchone() == (0,)
