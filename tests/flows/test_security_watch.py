"""security-watch as real flow runs on a real PostgreSQL: generated attacks in the seeded
normal traffic, findings routed as alerts to the Slack stand-in, the checkpoint, repeat
offenders, replays, configured sources (a quoted table with a json payload, a JSON-lines
file) and the refusals of a bad configuration. The clock is injected."""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest

from tests.conftest import ANCHOR
from tests.standins import StandIns

T = ANCHOR + timedelta(hours=1)  # the run's clock; the seed's traffic ends at ANCHOR
BRUTE, STUFFER, SLOW = "93.184.216.34", "1.2.3.4", "5.6.7.8"


def at(monkeypatch: pytest.MonkeyPatch, moment: datetime) -> None:
    import flows.security_watch

    monkeypatch.setattr(flows.security_watch, "utcnow", lambda: moment)


def run_watch(**params: Any) -> tuple[Any, dict[str, Any]]:
    from flows.security_watch import WatchParameters, security_watch

    state = security_watch(WatchParameters(**params), return_state=True)
    return state, state.result(raise_on_failure=False)


def failures(conn: psycopg.Connection, ip: str, users: list[str], start: datetime, every: timedelta) -> None:
    with conn.cursor() as cur:
        cur.executemany("INSERT INTO auth_events (email, ip, success, user_agent, created_at) VALUES (%s, %s, false, 'curl', %s)",
                        [(u, ip, start + i * every) for i, u in enumerate(users)])


def attacks(conn: psycopg.Connection, base: datetime) -> None:
    failures(conn, BRUTE, ["admin@example.test"] * 40, base + timedelta(minutes=5), timedelta(seconds=6))
    failures(conn, STUFFER, [f"victim{i}@example.test" for i in range(30)], base + timedelta(minutes=10), timedelta(seconds=50))
    # just under brute force's 20 in 10 minutes, for 50 minutes: must not fire
    failures(conn, SLOW, ["root@example.test"] * 95, base, timedelta(minutes=10) / 19 + timedelta(seconds=1))
    with conn.cursor() as cur:
        cur.executemany("INSERT INTO api_requests (api_key, ip, path, status, created_at) VALUES (%s, %s, '/api/market/prices', 200, %s)",
                        [("key-abuse", f"198.51.100.{i % 50}", base + timedelta(minutes=30, milliseconds=80 * i)) for i in range(700)])
        cur.execute("INSERT INTO security_events (severity, type, details, created_at) VALUES ('CRITICAL', 'admin_takeover', %s, %s)",
                    (json.dumps({"ip": BRUTE}), base + timedelta(minutes=40)))


@pytest.fixture
def watched(platform: Any, standins: StandIns, monkeypatch: pytest.MonkeyPatch) -> Any:
    for name, value in standins.settings_env().items():
        monkeypatch.setenv(name, value)
    return platform


def slack_texts(standins: StandIns) -> list[str]:
    return [json.dumps(body) for body in standins.slack.accepted]


def test_the_seeded_normal_traffic_alone_finds_nothing(platform: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    at(monkeypatch, ANCHOR)
    state, result = run_watch(since=ANCHOR - timedelta(days=1), until=ANCHOR, notify=False)
    assert state.is_completed(), state.message
    assert result["findings"] == []


def test_attacks_are_found_with_evidence_routed_once_and_resolved(watched: Any, standins: StandIns,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    with watched.connect() as conn:
        attacks(conn, ANCHOR)
    at(monkeypatch, T)
    state, result = run_watch()
    assert state.is_completed(), state.message
    found = {f["resource"]: f for f in result["findings"]}
    assert set(found) == {
        f"brute-force ip={BRUTE}", f"credential-stuffing ip={STUFFER}", "api-abuse-key key=key-abuse",
        "critical-security-event type=admin_takeover", "auth-failure-spike window=60m",
    }
    brute = found[f"brute-force ip={BRUTE}"]
    assert brute["count"] >= 20 and brute["severity"] == "critical" and len(brute["samples"]) == 5
    assert all(s["ip"] == BRUTE for s in brute["samples"])
    assert found[f"credential-stuffing ip={STUFFER}"]["count"] >= 10
    assert "offence 1: suggested `runbook block-ip 93.184.216.34 --minutes 15" in brute["detail"]
    texts = slack_texts(standins)
    assert any(f"brute-force ip={BRUTE}" in t for t in texts) and any("api-abuse-key" in t for t in texts)
    assert not any(SLOW in t for t in texts)
    told = len(standins.slack.accepted)

    # five minutes later the address is at it again, the rest has stopped: the brute force
    # is not told twice (the same alert, still firing); the others are kept firing for
    # their rule's keep_firing_minutes (warnings 30, critical 90: past the §9 chain's
    # last level), so an attack that stopped before anyone acknowledged still pages up
    with watched.connect() as conn:
        failures(conn, BRUTE, ["admin@example.test"] * 25, T, timedelta(seconds=10))
    at(monkeypatch, T + timedelta(minutes=5))
    state, result = run_watch()
    assert state.is_completed(), state.message
    found = {f["resource"]: f for f in result["findings"]}
    assert set(found) == {f"brute-force ip={BRUTE}", "auth-failure-spike window=60m"}  # the spike's window is an hour
    assert "offence 2: suggested `runbook block-ip 93.184.216.34 --minutes 30" in found[f"brute-force ip={BRUTE}"]["detail"]
    assert slack_texts(standins)[told:] == []  # nothing resolved, nothing told twice
    # then it stops too; 35 minutes on, the warning that stopped at 5 has been quiet for 30: resolved, the critical ones not
    at(monkeypatch, T + timedelta(minutes=10))
    state, result = run_watch()
    assert state.is_completed() and [f["resource"] for f in result["findings"]] == ["auth-failure-spike window=60m"]
    at(monkeypatch, T + timedelta(minutes=36))
    state, _ = run_watch()
    # the credential stuffing stopped at the first run, and nobody acknowledged: its incident went on up the chain
    pages = [str(r.body) for r in standins.twilio.received]
    assert any("escalation level 3" in b and f"credential-stuffing ip={STUFFER}" in b for b in pages), pages
    assert state.is_completed(), state.message
    resolved = [t for t in slack_texts(standins)[told:] if "resolved" in t.lower()]
    assert any("api-abuse-key" in t for t in resolved)
    assert not any(c in t for t in resolved for c in ("brute-force", "credential-stuffing", "critical-security-event"))
    # hours on, every alert has resolved, each once (the spike, judged on the last hour, last found at 36 minutes)
    for hours in (2, 4):
        at(monkeypatch, T + timedelta(hours=hours))
        state, result = run_watch()
        assert state.is_completed(), state.message
    assert result["findings"] == []
    resolved = [t for t in slack_texts(standins)[told:] if "resolved" in t.lower()]
    for res in found | {f"credential-stuffing ip={STUFFER}": 1, "api-abuse-key key=key-abuse": 1,
                        "critical-security-event type=admin_takeover": 1}:
        assert sum(res in t for t in resolved) == 1, (res, resolved)
    with watched.connect() as conn:
        assert conn.execute("SELECT until FROM runbook_security.watch_checkpoint").fetchone()[0] == T + timedelta(hours=4)
        assert conn.execute("SELECT count(*) FROM runbook_security.finding").fetchone()[0] >= 5


def test_a_repeat_offender_gets_double_the_block_and_offences_decay(platform: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    with platform.connect() as conn:
        failures(conn, BRUTE, ["admin@example.test"] * 30, ANCHOR + timedelta(minutes=5), timedelta(seconds=5))
    at(monkeypatch, T)
    _, first = run_watch(notify=False)
    assert "offence 1: suggested `runbook block-ip 93.184.216.34 --minutes 15" in first["findings"][0]["detail"]
    with platform.connect() as conn:  # it comes back after a quiet hour: a second offence
        failures(conn, BRUTE, ["admin@example.test"] * 30, T + timedelta(minutes=20), timedelta(seconds=5))
    at(monkeypatch, T + timedelta(hours=1))
    _, second = run_watch(notify=False)
    (brute,) = [f for f in second["findings"] if f["resource"].startswith("brute-force")]
    assert "offence 2: suggested `runbook block-ip 93.184.216.34 --minutes 30" in brute["detail"]
    with platform.connect() as conn:  # three quiet days later, the count has decayed: a first offence again
        failures(conn, BRUTE, ["admin@example.test"] * 30, T + timedelta(days=3), timedelta(seconds=5))
    at(monkeypatch, T + timedelta(days=3, minutes=30))
    _, third = run_watch(notify=False)
    (brute,) = [f for f in third["findings"] if f["resource"].startswith("brute-force")]
    assert "offence 1:" in brute["detail"]


def test_a_replay_gives_the_same_findings_and_leaves_the_checkpoint(platform: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    with platform.connect() as conn:
        attacks(conn, ANCHOR)
    at(monkeypatch, T + timedelta(days=2))  # the clock is not what the windows are judged on
    one = run_watch(since=ANCHOR, until=T, notify=False)[1]["findings"]
    two = run_watch(since=ANCHOR, until=T, notify=False)[1]["findings"]
    assert one == two and len(one) == 5
    with platform.connect() as conn:
        assert conn.execute("SELECT count(*) FROM runbook_security.watch_checkpoint").fetchone()[0] == 0


def test_configured_sources_a_quoted_table_with_json_and_a_log_file(platform: Any, tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    with platform.connect() as conn:
        conn.execute('CREATE SCHEMA "Auth Log"; CREATE TABLE "Auth Log"."Audit Entries" (id uuid DEFAULT gen_random_uuid() PRIMARY KEY,'
                     ' payload json NOT NULL, ip_address varchar(64) NOT NULL, "When" timestamptz NOT NULL)')
        with conn.cursor() as cur:
            cur.executemany('INSERT INTO "Auth Log"."Audit Entries" (payload, ip_address, "When") VALUES (%s, %s, %s)',
                            [(json.dumps({"action": "login_failed", "actor_username": f"u{i}"}), BRUTE, ANCHOR + timedelta(seconds=i))
                             for i in range(25)]
                            + [(json.dumps({"action": "login", "actor_username": "ok"}), STUFFER, ANCHOR + timedelta(seconds=i))
                               for i in range(25)])
    log = tmp_path / "security.jsonl"
    log.write_text("\n".join([json.dumps({"ts": (ANCHOR + timedelta(minutes=3)).isoformat(), "level": "CRITICAL", "kind": "key_leak"}),
                              "not json", json.dumps({"ts": (ANCHOR + timedelta(minutes=4)).isoformat(), "level": "LOW", "kind": "x"})]))
    monkeypatch.setenv("RUNBOOK_SECURITY__SOURCES", json.dumps({
        "auth": {"table": "Auth Log.Audit Entries", "time_column": "When",
                 "fields": {"user": "payload.actor_username", "action": "payload.action", "ip": "ip_address"}},
        "security": {"file": str(log), "time_column": "ts", "fields": {"severity": "level", "type": "kind"}},
    }))
    monkeypatch.setenv("RUNBOOK_SECURITY__DETECTORS", json.dumps([
        {"name": "failed-logins", "source": "auth", "where": {"action": "login_failed"}, "group_by": ["ip"], "window_minutes": 5,
         "threshold": 20, "severity": "critical"},
        {"name": "critical-event", "source": "security", "where": {"severity": "CRITICAL"}, "group_by": ["type"],
         "window_minutes": 5, "threshold": 1, "severity": "critical"},
    ]))
    monkeypatch.setenv("RUNBOOK_SECURITY__SPIKES", "[]")
    at(monkeypatch, T)
    state, result = run_watch(notify=False)
    assert state.is_completed(), state.message
    assert [f["resource"] for f in result["findings"]] == [f"failed-logins ip={BRUTE}", "critical-event type=key_leak"]


@pytest.mark.parametrize("env, problem", [
    ({"RUNBOOK_SECURITY__DETECTORS": json.dumps([{"name": "x", "source": "auth", "group_by": ["country"], "window_minutes": 5,
                                                   "threshold": 3}])}, "reads country, which source 'auth'"),
    ({"RUNBOOK_SECURITY__SOURCES": json.dumps({"auth": {"table": "public.no_such_log", "fields": {"ip": "ip", "user": "email", "success": "success"}},
                                               "api": {"table": "api_requests", "fields": {"key": "api_key", "ip": "ip", "status": "status"}},
                                               "security": {"table": "security_events", "fields": {"severity": "severity", "type": "type"}}}),
      }, "RUNBOOK_SECURITY__SOURCES__AUTH__TABLE: no table 'public.no_such_log'"),
])
def test_a_bad_configuration_is_refused_before_anything_is_read(platform: Any, monkeypatch: pytest.MonkeyPatch, env: dict[str, str],
                                                                problem: str) -> None:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("RUNBOOK_SECURITY__SPIKES", "[]")
    at(monkeypatch, T)
    state, _ = run_watch(notify=False)
    assert state.is_failed() and problem in state.message
    with platform.connect() as conn:
        assert conn.execute("SELECT to_regclass('runbook_security.watch_checkpoint')").fetchone()[0] is None or \
            conn.execute("SELECT count(*) FROM runbook_security.watch_checkpoint").fetchone()[0] == 0


def test_the_watch_lifts_expired_blocks(platform: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    import flows.block_ip
    from flows.block_ip import BlockParameters, block_ip

    monkeypatch.setattr(flows.block_ip, "utcnow", lambda: ANCHOR)
    state = block_ip(BlockParameters(ip=BRUTE, minutes=5, by="ana", reason="brute force", confirm=True), return_state=True)
    assert state.is_completed(), state.message
    at(monkeypatch, ANCHOR + timedelta(minutes=4))
    assert run_watch(notify=False)[1]["blocks_lifted"] == []
    at(monkeypatch, ANCHOR + timedelta(minutes=6))
    state, result = run_watch(notify=False)
    assert state.is_completed() and result["blocks_lifted"] == [f"{BRUTE}/32"]
    with platform.connect() as conn:
        assert conn.execute("SELECT lift_reason FROM runbook_security.ip_blocklist").fetchall() == [("expired",)]
