"""The alert state, ledger and escalation on a real PostgreSQL, on an injected clock."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone

import psycopg
import pytest

from runbook.alerting.engine import Policy
from runbook.alerting.escalation import DEFAULT_CHAIN, Level
from runbook.alerting.model import Delivery, Message, Sample
from runbook.alerting.rules import DEFAULT_RULES
from runbook.alerting.silences import check_silence
from tasks import alertstate
from tasks.postgres import with_database

T0 = datetime(2026, 12, 1, 3, 0, tzinfo=timezone.utc)
MIN = timedelta(minutes=1)
SCHEMA = "runbook_alerting"


@pytest.fixture
def state_dsn(pg_admin_dsn: str, empty_database: str) -> str:
    """An empty database of its own for the alert state."""
    return with_database(pg_admin_dsn, empty_database)


def recipients(channel: str, to: str | None) -> list[str | None]:
    if to:
        return [to]
    return {"slack": [None], "email": [None], "sms": ["+81900000001"], "phone": ["+81900000001"], "statuspage": [None]}[channel]


def config(**kw: object) -> alertstate.CycleConfig:
    base = dict(schema=SCHEMA, rules=list(DEFAULT_RULES), policy=Policy(), chain=[lv.model_copy() for lv in DEFAULT_CHAIN],
                ack_ttl=timedelta(minutes=30), min_interval=timedelta(seconds=30), recipients=recipients)
    return alertstate.CycleConfig(**{**base, **kw})  # type: ignore[arg-type]


def db_down(value: float = 0) -> list[Sample]:
    return [Sample(metric="database_up", resource="db", value=value)]


@pytest.fixture
def conn(state_dsn: str) -> Iterator[psycopg.Connection]:
    with psycopg.connect(state_dsn, autocommit=True) as c:
        alertstate.ensure_schema(c, SCHEMA)
        yield c


def ledger_rows(conn: psycopg.Connection, where: str = "true") -> list[tuple]:
    return conn.execute(f"SELECT kind, channel, recipient, page_key, status FROM runbook_alerting.outbox WHERE {where} ORDER BY id").fetchall()


def pages_by_minute(conn: psycopg.Connection, cfg: alertstate.CycleConfig, minutes: range, samples=db_down) -> dict[int, list[int]]:
    paged: dict[int, list[int]] = {}
    for m in minutes:
        report = alertstate.run_cycle(conn, cfg, samples(), T0 + m * MIN)
        if report.pages:
            paged[m] = [p["level"] for p in report.pages]
    return paged


def test_escalation_pages_at_0_15_30_60_minutes(conn: psycopg.Connection) -> None:
    paged = pages_by_minute(conn, config(), range(0, 70))
    assert paged == {0: [1], 15: [2], 30: [3], 60: [4]}
    rows = ledger_rows(conn, "kind = 'escalation'")
    assert [(r[1], r[3]) for r in rows] == [
        ("slack", "esc:1:0:1"), ("phone", "esc:1:0:2"), ("sms", "esc:1:0:2"), ("email", "esc:1:0:3"), ("sms", "esc:1:0:3"),
        ("email", "esc:1:0:4")]
    # level 1's status-page contact opened the status-page incident, later levels updated it
    assert [r[0] for r in ledger_rows(conn, "channel = 'statuspage'")] == ["incident-open"]
    # database-down notifies its four channels once, at once
    assert sorted(r[1] for r in ledger_rows(conn, "kind = 'firing'")) == ["email", "phone", "slack", "sms"]


def test_an_ack_at_level_2_stops_levels_3_and_4_and_expiry_resumes(conn: psycopg.Connection) -> None:
    cfg = config()
    assert pages_by_minute(conn, cfg, range(0, 20)) == {0: [1], 15: [2]}
    result = alertstate.acknowledge(conn, SCHEMA, 1, "aiko", "looking", T0 + 20 * MIN, timedelta(minutes=30), recipients)
    assert result["acknowledged"] and result["expires_at"] == T0 + 50 * MIN
    # held until minute 50; then round 1 pages level 2 again at once, level 3 15 minutes later
    assert pages_by_minute(conn, cfg, range(20, 80)) == {50: [2], 65: [3]}
    kinds = [r["kind"] for r in alertstate.timeline(conn, SCHEMA, 1)]
    assert kinds == ["opened", "paged", "paged", "acknowledged", "ack-expired", "paged", "paged"]


def test_a_restart_in_the_middle_sends_nothing_twice(conn: psycopg.Connection, state_dsn: str) -> None:
    cfg = config()
    pages_by_minute(conn, cfg, range(0, 16))
    before = ledger_rows(conn)
    # a new process: new connection, the same minute evaluated again, and the next ones
    with psycopg.connect(state_dsn, autocommit=True) as again:
        alertstate.ensure_schema(again, SCHEMA)
        report = alertstate.run_cycle(again, cfg, db_down(), T0 + 15 * MIN + timedelta(seconds=40))
        assert report.pages == [] and report.notices == []
        assert pages_by_minute(again, cfg, range(17, 29)) == {}
    assert ledger_rows(conn) == before


def test_concurrent_cycles_never_double_send(conn: psycopg.Connection, state_dsn: str) -> None:
    cfg = config()
    reports = []

    def one() -> None:
        with psycopg.connect(state_dsn, autocommit=True) as c:
            reports.append(alertstate.run_cycle(c, cfg, db_down(), T0))

    threads = [threading.Thread(target=one) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert sum(1 for r in reports if r.skipped is None) == 1
    assert len(ledger_rows(conn, "kind = 'firing'")) == 4  # slack, email, sms, phone: once each


def test_a_resolve_beats_an_ack_and_cancels_pending_pages(conn: psycopg.Connection) -> None:
    cfg = config()
    pages_by_minute(conn, cfg, range(0, 1))
    report = alertstate.run_cycle(conn, cfg, db_down(1), T0 + MIN)
    assert report.resolved == [1]
    assert [r[4] for r in ledger_rows(conn, "kind = 'escalation'")] == ["cancelled"]
    result = alertstate.acknowledge(conn, SCHEMA, 1, "aiko", "", T0 + 2 * MIN, timedelta(minutes=30))
    assert result["acknowledged"] is False and "already resolved" in result["detail"]
    assert [r[0] for r in ledger_rows(conn, "channel = 'statuspage'")] == ["incident-open", "incident-resolved"]


def test_an_open_incident_keeps_its_chain(conn: psycopg.Connection) -> None:
    pages_by_minute(conn, config(), range(0, 1))
    quick = [Level(level=1, name="bot", after_minutes=0, contacts=[{"channel": "slack"}]),
             Level(level=2, name="everyone", after_minutes=1, contacts=[{"channel": "email", "to": "all@example.test"}])]
    assert pages_by_minute(conn, config(chain=quick), range(1, 16)) == {15: [2]}  # the old chain's 15 minutes
    assert ledger_rows(conn, "recipient = 'all@example.test'") == []


def test_silence_holds_pages_and_its_end_notifies_at_once(conn: psycopg.Connection) -> None:
    cfg = config()
    silence = check_silence({"rule": "database-down"}, "aiko", "migration", T0, T0 + 10 * MIN)
    saved = alertstate.add_silence(conn, SCHEMA, silence, T0)
    assert pages_by_minute(conn, cfg, range(0, 10)) == {}
    assert ledger_rows(conn) == []
    report = alertstate.run_cycle(conn, cfg, db_down(), T0 + 10 * MIN)
    assert [n["kind"] for n in report.notices] == ["firing"] and report.opened == [1]
    trail = alertstate.audit_trail(conn, SCHEMA)
    assert trail[0]["action"] == "silence.add" and trail[0]["object"] == f"silence #{saved.id}"


def test_deliveries_retry_fall_back_and_record_the_error(conn: psycopg.Connection) -> None:
    cfg = config(rules=[r for r in DEFAULT_RULES if r.name == "high-error-rate"])
    alertstate.run_cycle(conn, cfg, [Sample(metric="error_rate_pct", resource="api", value=9)], T0)
    alertstate.run_cycle(conn, cfg, [Sample(metric="error_rate_pct", resource="api", value=9)], T0 + MIN)
    down = {"slack", "email", "sms"}

    def send(channel: str, recipient: str | None, message: Message, external_id: str | None) -> Delivery:
        if channel in down:
            return Delivery(ok=False, detail=f"{channel}: connection refused")
        return Delivery(ok=True, detail=f"sent on {channel}")

    rows = alertstate.claim(conn, SCHEMA, T0 + MIN, timedelta(minutes=5), ids=None)
    attempts = alertstate.deliver_rows(conn, SCHEMA, [r for r in rows if r["kind"] == "firing"], send, T0 + MIN, 12)
    assert {a.channel: a.status for a in attempts} == {"slack": "failed", "email": "failed", "sms": "failed"}
    new, undelivered = alertstate.plan_fallbacks(conn, SCHEMA, attempts, ["slack", "email", "sms", "phone"], T0 + MIN)
    assert len(new) == 1 and undelivered == []
    fallback = alertstate.claim(conn, SCHEMA, T0 + MIN, timedelta(minutes=5), ids=new)
    again = alertstate.deliver_rows(conn, SCHEMA, fallback, send, T0 + MIN, 12)
    assert [(a.channel, a.ok, a.fallback) for a in again] == [("phone", True, True)]
    # the failed rows stay in the ledger with their error, and are retried later
    failed = conn.execute("SELECT channel, attempts, last_error, next_attempt_at FROM runbook_alerting.outbox"
                          " WHERE status = 'failed' ORDER BY id").fetchall()
    assert [(f[0], f[1], f[2]) for f in failed] == [("slack", 1, "slack: connection refused"), ("email", 1, "email: connection refused"),
                                                    ("sms", 1, "sms: connection refused")]
    assert alertstate.claim(conn, SCHEMA, T0 + MIN + timedelta(seconds=30), timedelta(minutes=5)) == []
    assert len(alertstate.claim(conn, SCHEMA, T0 + 2 * MIN, timedelta(minutes=5))) == 3


def test_an_ack_updates_the_status_page_incident(conn: psycopg.Connection) -> None:
    pages_by_minute(conn, config(), range(0, 1))
    alertstate.acknowledge(conn, SCHEMA, 1, "aiko", "on it", T0 + 2 * MIN, timedelta(minutes=30), recipients)
    assert [r[0] for r in ledger_rows(conn, "channel = 'statuspage'")] == ["incident-open", "incident-update"]
    trail = alertstate.audit_trail(conn, SCHEMA)
    assert (trail[0]["actor"], trail[0]["action"], trail[0]["object"]) == ("aiko", "incident.acknowledge", "incident #1")


def test_an_incident_whose_rule_was_removed_is_resolved_not_paged_forever(conn: psycopg.Connection) -> None:
    pages_by_minute(conn, config(), range(0, 1))
    without = config(rules=[r for r in DEFAULT_RULES if r.name != "database-down"])
    report = alertstate.run_cycle(conn, without, db_down(), T0 + 15 * MIN)
    assert report.resolved == [1] and report.pages == []
    assert "no longer configured" in alertstate.timeline(conn, SCHEMA, 1)[-1]["detail"]


def test_the_metric_history_keeps_one_sample_per_interval_and_forgets_old_ones(conn: psycopg.Connection) -> None:
    from runbook.alerting.model import Sample

    cfg = config(history_every=timedelta(minutes=15), history_keep=timedelta(days=2))
    samples = [Sample(metric="database_size_gb", resource="db-1", value=12.5),
               Sample(metric="cpu_pct", resource="api", value=None)]  # no value: nothing to keep
    for minute in range(0, 46):  # a monitor run each minute for 45 minutes
        alertstate.run_cycle(conn, cfg, samples, T0 + timedelta(minutes=minute))
    kept = alertstate.read_history(conn, "runbook_alerting", "database_size_gb", T0, T0 + timedelta(days=1))
    assert [at for _, at, _ in kept] == [T0 + timedelta(minutes=m) for m in (0, 15, 30, 45)]
    assert alertstate.read_history(conn, "runbook_alerting", "cpu_pct", T0, T0 + timedelta(days=1)) == []
    alertstate.run_cycle(conn, cfg, samples, T0 + timedelta(days=3))  # two days later the old samples are gone
    assert [at for _, at, _ in alertstate.read_history(conn, "runbook_alerting", "database_size_gb", T0, T0 + timedelta(days=4))] == [
        T0 + timedelta(days=3)]
    # an event's evaluation (not the monitor's) keeps nothing
    alertstate.run_cycle(conn, cfg, samples, T0 + timedelta(days=3, hours=1), scheduled=False)
    assert len(alertstate.read_history(conn, "runbook_alerting", "database_size_gb", T0, T0 + timedelta(days=4))) == 1
