"""The sandbox's data generator: deterministic, scalable, with rows for every retention rule."""

from __future__ import annotations

import secrets
from datetime import datetime, timezone

import psycopg
from psycopg import sql

from sandbox.platform import TABLES, load_schema, seed_database
from tasks.postgres import fingerprint_tables, with_database

ANCHOR = datetime(2026, 11, 1, tzinfo=timezone.utc)


def _fresh(admin_dsn: str) -> str:
    name = f"s_{secrets.token_hex(4)}"
    with psycopg.connect(admin_dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    dsn = with_database(admin_dsn, name)
    load_schema(dsn)
    return dsn


def test_the_same_scale_and_anchor_give_the_same_rows(pg_admin_dsn: str) -> None:
    one, two = _fresh(pg_admin_dsn), _fresh(pg_admin_dsn)
    counts = seed_database(one, scale=1, anchor=ANCHOR)
    assert seed_database(two, scale=1, anchor=ANCHOR) == counts
    tables = [f"public.{t}" for t in TABLES]
    with psycopg.connect(one) as a, psycopg.connect(two) as b:
        assert fingerprint_tables(a, tables) == fingerprint_tables(b, tables)
    doubled = seed_database(two, scale=2, anchor=ANCHOR)
    assert doubled == {table: 2 * rows for table, rows in counts.items()}


def test_the_data_holds_rows_for_each_retention_rule_and_none_in_the_future(pg_admin_dsn: str) -> None:
    dsn = _fresh(pg_admin_dsn)
    seed_database(dsn, scale=1, anchor=ANCHOR)
    with psycopg.connect(dsn) as conn:
        old_logs, logs = conn.execute(
            "SELECT count(*) FILTER (WHERE created_at < %s - interval '90 days'), count(*) FROM system_logs", (ANCHOR,)
        ).fetchone()
        assert 0.4 < old_logs / logs < 0.6
        old_resolved, unresolved = conn.execute(
            "SELECT count(*) FILTER (WHERE resolved AND resolved_at < %s - interval '30 days'),"
            " count(*) FILTER (WHERE NOT resolved) FROM user_alerts",
            (ANCHOR,),
        ).fetchone()
        assert old_resolved > 0 and unresolved > 0
        expired, live = conn.execute(
            "SELECT count(*) FILTER (WHERE expires_at < %s), count(*) FILTER (WHERE expires_at >= %s) FROM user_sessions",
            (ANCHOR, ANCHOR),
        ).fetchone()
        assert expired > 0 and live > 0
        for table, column in (("system_logs", "created_at"), ("user_alerts", "resolved_at"), ("market_data", "timestamp"), ("users", "created_at")):
            latest = conn.execute(sql.SQL("SELECT max({}) FROM {}").format(sql.Identifier(column), sql.Identifier(table))).fetchone()[0]
            assert latest <= ANCHOR, (table, column)
        indexes = {r[0] for r in conn.execute("SELECT indexdef FROM pg_indexes WHERE schemaname = 'public'")}
        assert any("user_alerts USING btree (user_id, created_at DESC)" in i for i in indexes)
        assert any('market_data USING btree (symbol, "timestamp" DESC)' in i for i in indexes)
        rls = {r[0] for r in conn.execute("SELECT relname FROM pg_class WHERE relrowsecurity")}
        assert {"users", "user_alerts", "user_sessions"} <= rls
