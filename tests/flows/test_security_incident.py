"""security-incident as real flow runs: the six phases in the timeline, containment
offered from the watch's findings with previews, applied only by its typed phrase."""

from __future__ import annotations

import threading
from datetime import timedelta
from typing import Any

import psycopg
import pytest
from prefect.flow_runs import resume_flow_run

from runbook.security.incident import PHASES
from tests.conftest import ANCHOR
from tests.flows.test_security_watch import BRUTE, failures
from tests.paused import wait_paused

T = ANCHOR + timedelta(hours=1)


@pytest.fixture
def attacked(platform: Any, monkeypatch: pytest.MonkeyPatch) -> Any:
    """A brute force the watch has found (its finding stored), on the injected clock."""
    import flows.security_incident
    import flows.security_watch
    from flows.security_watch import WatchParameters, security_watch

    with platform.connect() as conn:
        failures(conn, BRUTE, ["admin@example.test"] * 40, ANCHOR + timedelta(minutes=5), timedelta(seconds=6))
    monkeypatch.setattr(flows.security_watch, "utcnow", lambda: T)
    monkeypatch.setattr(flows.security_incident, "utcnow", lambda: T + timedelta(minutes=3))
    monkeypatch.setenv("RUNBOOK_SECURITY__SPIKES", "[]")
    assert security_watch(WatchParameters(notify=False), return_state=True).is_completed()
    return platform


def _run(**params: Any) -> Any:
    from flows.security_incident import IncidentParameters, security_incident

    return security_incident(IncidentParameters(title="brute force on /login", by="ana", **params), return_state=True)


def _blocks(dsn: str) -> list[tuple]:
    with psycopg.connect(dsn) as conn:
        return conn.execute("SELECT network::text, reason, lifted_at FROM runbook_security.ip_blocklist").fetchall()


def test_all_six_phases_with_the_answers_given_apply_only_the_typed_phrase(attacked: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RUNBOOK_SECURITY__SESSIONS__IP_COLUMN", "ip")  # so ending the address's sessions is offered too
    state = _run(severity="high", scope="logins of admin accounts", contain=[f"block-ip {BRUTE}/32", "block-ip 8.8.8.8/32"],
                 root_cause="no rate limit on /login", lessons="add a rate limit")
    assert state.is_completed(), state.message
    result = state.result()
    assert result["offered"][0] == f"block-ip {BRUTE}/32" and result["unknown"] == ["block-ip 8.8.8.8/32"]
    assert len(result["offered"]) == 2 and result["offered"][1].startswith("invalidate-sessions")  # offered, not typed: not applied
    assert [a["ok"] for a in result["applied"]] == [True]
    assert result["undo"] and result["undo"][0].startswith(f"runbook unblock-ip {BRUTE}/32")
    assert [(n, r.startswith("security incident #1")) for n, r, _ in _blocks(attacked.dsn)] == [(f"{BRUTE}/32", True)]
    phases = [r["phase"] for r in result["timeline"]]
    assert list(dict.fromkeys(phases)) == list(PHASES)
    entries = " | ".join(r["entry"] for r in result["timeline"])
    assert "brute-force ip=93.184.216.34" in entries and "severity high" in entries and "refused 'block-ip 8.8.8.8/32'" in entries
    assert "root cause: no rate limit on /login" in entries and "lessons: add a rate limit" in entries
    with psycopg.connect(attacked.dsn) as conn:
        assert conn.execute("SELECT status, severity, closed_at IS NOT NULL FROM runbook_security.incident").fetchall() == [
            ("closed", "high", True)]
        # the action's own audit: approved within the incident, by its lead
        assert conn.execute("SELECT actor, phase FROM runbook_security.audit WHERE action = 'block-ip' ORDER BY id").fetchall() == [
            ("ana", "preview"), ("ana", "preview"), ("ana", "applied")]




def test_the_run_pauses_to_assess_and_contain_and_nothing_is_applied_untyped(attacked: Any) -> None:
    outcome: dict[str, Any] = {}
    worker = threading.Thread(target=lambda: outcome.update(state=_run(root_cause="weak password", lessons="MFA")))
    worker.start()
    resume_flow_run(wait_paused("the incident at assess", timeout=90, key="assess"), run_input={"severity": "critical", "scope": "one admin account"})
    run = wait_paused("the incident at contain", timeout=90, key="contain")
    assert _blocks(attacked.dsn) == []  # previews only, so far
    resume_flow_run(run, run_input={"apply": ""})
    worker.join(timeout=180)
    state = outcome["state"]
    assert state.is_completed(), state.message
    result = state.result()
    assert result["severity"] == "critical" and result["applied"] == [] and _blocks(attacked.dsn) == []
    assert any(r["entry"] == "no containment action applied" for r in result["timeline"])


def test_no_answer_in_time_ends_the_run_saying_where_and_the_incident_stays_open(attacked: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RUNBOOK_SECURITY__INCIDENT_WAIT_SECONDS", "10")  # the least it allows
    state = _run()
    # the run's own words, not the server's "paused and never resumed" (the question was its own run)
    assert state.is_failed() and "no answer at assess within 10 s: the incident stays open" in state.message, state.message
    with psycopg.connect(attacked.dsn) as conn:
        assert conn.execute("SELECT status FROM runbook_security.incident").fetchall() == [("open",)]
    assert _blocks(attacked.dsn) == []
