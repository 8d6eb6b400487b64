"""Security events read from a real PostgreSQL through a column mapping: the sandbox's
tables, Supabase's auth.audit_log_entries, and a quoted table in another schema."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from runbook.errors import ConfigError
from runbook.security.detectors import DEFAULT_DETECTORS, detect
from runbook.security.sources import DEFAULT_SOURCES, SUPABASE_AUTH, SourceMapping
from tasks.security import check_source, read_events
from tests.conftest import ANCHOR, Platform

BY_NAME = {d.name: d for d in DEFAULT_DETECTORS}


def test_a_burst_in_the_seeded_logins_is_found_and_the_background_is_quiet(platform: Platform) -> None:
    start = ANCHOR - timedelta(hours=3)
    with platform.connect() as conn:
        check_source(conn, "auth", DEFAULT_SOURCES["auth"])
        background = read_events(conn, DEFAULT_SOURCES["auth"], ANCHOR - timedelta(days=7), ANCHOR + timedelta(seconds=1))
        assert len(background) > 10_000 and detect(BY_NAME["brute-force"], background) == []
        conn.execute(
            "INSERT INTO auth_events (email, ip, success, created_at)"
            " SELECT 'admin@example.test', '93.184.216.34', false, %s + make_interval(secs => i * 5) FROM generate_series(1, 30) i",
            (start,),
        )
        events = read_events(conn, DEFAULT_SOURCES["auth"], start - timedelta(hours=1), start + timedelta(hours=1))
    (finding,) = detect(BY_NAME["brute-force"], events)
    assert finding.group == {"ip": "93.184.216.34"} and finding.count >= 20
    assert finding.samples[0]["user"] == "admin@example.test" and finding.samples[0]["success"] is False


def test_supabase_audit_log_entries_and_a_quoted_table_elsewhere(variants: Platform) -> None:
    at = datetime(2026, 12, 1, 2, 0, tzinfo=timezone.utc)
    with variants.connect() as conn:
        conn.execute("CREATE SCHEMA IF NOT EXISTS auth")
        conn.execute("CREATE TABLE auth.audit_log_entries (instance_id uuid, id uuid PRIMARY KEY DEFAULT gen_random_uuid(),"
                     " payload json, created_at timestamptz, ip_address varchar(64) NOT NULL DEFAULT '')")
        conn.execute("INSERT INTO auth.audit_log_entries (payload, created_at, ip_address) VALUES"
                     " ('{\"action\": \"login\", \"actor_username\": \"aiko@example.test\"}', %s, '93.184.216.34')", (at,))
        conn.execute('CREATE TABLE app."Login Events" ("Who" text, "From" inet, "OK" boolean, "When" timestamptz)')
        conn.execute('INSERT INTO app."Login Events" VALUES (\'bob\', \'93.184.216.35\', false, %s)', (at,))
        check_source(conn, "auth", SUPABASE_AUTH)
        (supabase,) = read_events(conn, SUPABASE_AUTH, at - timedelta(minutes=1), at + timedelta(minutes=1))
        quoted = SourceMapping(table="app.Login Events", time_column="When", fields={"user": "Who", "ip": "From", "success": "OK"})
        check_source(conn, "auth", quoted)
        (odd,) = read_events(conn, quoted, at - timedelta(minutes=1), at + timedelta(minutes=1))
        with pytest.raises(ConfigError, match="RUNBOOK_SECURITY__SOURCES__AUTH: .* no column for ip -> address"):
            check_source(conn, "auth", quoted.model_copy(update={"fields": {"ip": "address"}}))
        with pytest.raises(ConfigError, match="no table 'public.nope'"):
            check_source(conn, "auth", SourceMapping(table="nope", fields={"ip": "ip"}))
    assert supabase.fields == {"user": "aiko@example.test", "action": "login", "ip": "93.184.216.34"}
    assert odd.fields == {"user": "bob", "ip": "93.184.216.35", "success": False} and odd.at == at
