"""Security events read from a real PostgreSQL through a column mapping: the sandbox's
tables, Supabase's auth.audit_log_entries, and a quoted table in another schema."""

from __future__ import annotations

import json
from collections import defaultdict
from datetime import datetime, timedelta, timezone
from math import ceil

import pytest

from runbook.errors import ConfigError
from runbook.security.detectors import DEFAULT_DETECTORS, Detector, Event, detect
from runbook.security.sources import DEFAULT_SOURCES, SUPABASE_AUTH, SourceMapping
from tasks.security import candidate_events, check_source, read_events
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


def _matches(event: Event, where: dict[str, object]) -> bool:
    return all(event.fields.get(k) in v if isinstance(v, list) else event.fields.get(k) == v for k, v in where.items())


def _could_fire(detector: Detector, events: list[Event], since: datetime) -> list[Event]:
    """The reference for candidate_events, in Python over every row of the range: the
    events of the groups meeting the threshold's necessary condition with one at or after
    ``since``."""
    groups: dict[tuple[object, ...], list[Event]] = defaultdict(list)
    for e in events:
        if _matches(e, detector.where) and all(e.fields.get(k) is not None for k in detector.group_by):
            groups[tuple(e.fields.get(k) for k in detector.group_by)].append(e)
    out = []
    for group in groups.values():
        size = len({e.fields.get(detector.distinct) for e in group} - {None}) if detector.distinct else len(group)
        hits = sum(_matches(e, detector.ratio_where) for e in group)
        if (size >= detector.threshold and max(e.at for e in group) >= since
                and (detector.ratio is None or hits >= ceil(detector.threshold * detector.ratio))):
            out += group
    return out


def _rows(events: list[Event]) -> list[tuple[datetime, str]]:
    return sorted((e.at, json.dumps(e.fields, sort_keys=True, default=str)) for e in events)


JSON_SECURITY = SourceMapping(table="public.security_events", fields={"severity": "severity", "type": "type", "ip": "details.ip"})


@pytest.mark.parametrize(("source", "detector"), [
    ("auth", BY_NAME["brute-force"]),
    ("auth", BY_NAME["credential-stuffing"]),
    ("api", BY_NAME["api-refused-ratio"]),
    ("api", BY_NAME["api-abuse-ip"].model_copy(update={"threshold": 3, "window_minutes": 60})),
    ("json", Detector(name="high-per-ip", source="security", where={"severity": ["HIGH", "CRITICAL"]}, group_by=("ip", "type"),
                      window_minutes=60, threshold=2)),
])
def test_candidate_events_are_the_events_of_the_groups_that_could_fire(platform: Platform, source: str,
                                                                        detector: Detector) -> None:
    """The filter and the threshold's necessary condition in PostgreSQL keep exactly the
    events a Python pass over every row keeps, and judging them finds what judging every
    row finds (the query was rewritten for speed: bench/security_watch.py)."""
    mapping = JSON_SECURITY if source == "json" else DEFAULT_SOURCES[source]
    since, until = ANCHOR - timedelta(hours=2), ANCHOR + timedelta(hours=1)
    lo = since - detector.window
    with platform.connect() as conn:
        # attacks across since: a burst before it (not new), a stuffer and an abusive key in the span
        conn.execute("INSERT INTO auth_events (email, ip, success, created_at) SELECT 'admin@example.test', '93.184.216.34', false,"
                     " %s + make_interval(secs => i * 5) FROM generate_series(1, 30) i", (since - timedelta(minutes=5),))
        conn.execute("INSERT INTO auth_events (email, ip, success, created_at) SELECT 'v' || i || '@example.test', '1.2.3.4', false,"
                     " %s + make_interval(secs => i * 20) FROM generate_series(1, 40) i", (since + timedelta(minutes=1),))
        conn.execute("INSERT INTO api_requests (api_key, ip, path, status, created_at) SELECT 'key-bad', '5.6.7.8', '/api/x',"
                     " (ARRAY[401, 429, 200])[1 + i %% 3], %s + make_interval(secs => i) FROM generate_series(1, 300) i", (since,))
        conn.execute("INSERT INTO security_events (severity, type, details, created_at) SELECT (ARRAY['HIGH', 'LOW'])[1 + i %% 2],"
                     " 'admin_login', jsonb_build_object('ip', '9.9.9.' || (i %% 4)), %s + make_interval(mins => i)"
                     " FROM generate_series(1, 40) i", (since - timedelta(minutes=20),))
        everything = read_events(conn, mapping, lo, until)
        candidates, judged = candidate_events(conn, mapping, detector, lo, until, since)
    expected = _could_fire(judged, everything, since)
    assert expected and _rows(candidates) == _rows(expected)
    assert [c.at for c in candidates] == sorted(c.at for c in candidates)
    found = [f for f in detect(judged, candidates) if f.last_at >= since]
    assert found == [f for f in detect(judged, everything) if f.last_at >= since]
