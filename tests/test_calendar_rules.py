"""The operations calendar's pure decisions (runbook/calendar.py): the default periods
cover §4 and §8, the checklist is ticked from item outcomes and answers (never done
without one), the plans refuse inconsistencies."""

from __future__ import annotations

import argparse
from datetime import datetime, timedelta, timezone

import pytest
from pydantic import ValidationError

from runbook.calendar import (
    DEFAULT_PLANS,
    Answer,
    ItemOutcome,
    ItemStatus,
    PeriodPlan,
    Tick,
    backup_fresh,
    critical_failures,
    meetings,
    tick_checklist,
)

NOW = datetime(2027, 3, 1, 9, 0, tzinfo=timezone.utc)

# §8, word for word: every item of each period is on its checklist
SECTION_8 = {
    "daily": ["system up", "error-log review", "performance figures", "security alerts", "backup ran", "external API limits",
              "user-support inquiries"],
    "weekly": ["detailed performance report", "security scan", "dependency vulnerabilities", "capacity use", "database optimisation",
               "feature-usage statistics", "user-feedback analysis"],
    "monthly": ["full security audit", "DR test", "capacity plan review", "SLA performance review", "cost review",
                "technical-debt review", "team training"],
}
# §4: what each period runs
SECTION_4 = {
    "daily": {"diagnose", "performance-report", "security-scan", "log-report", "backup-list", "log-rotation", "cache-clear",
              "workers-export"},
    "weekly": {"security-scan", "db-maintenance", "backup-verify", "performance-report", "deploy-verify"},
    "monthly": {"cert-check", "data-cleanup", "capacity-review", "dr-drill", "security-scan"},
}


@pytest.mark.parametrize("period", ["daily", "weekly", "monthly"])
def test_the_default_periods_run_section_4_and_check_every_item_of_section_8(period: str) -> None:
    plan = DEFAULT_PLANS[period]
    assert [e.text for e in plan.checklist] == SECTION_8[period]
    assert {i.procedure or i.edge for i in plan.items} == SECTION_4[period]
    people = {e.text for e in plan.people()}
    assert {"user-support inquiries", "feature-usage statistics", "user-feedback analysis", "cost review", "team training"} & people


def _outcome(name: str, status: ItemStatus, message: str = "", result: object = None, critical: bool = True) -> ItemOutcome:
    return ItemOutcome(name=name, kind=name, status=status, message=message, result=result, critical=critical)


def test_the_checklist_is_ticked_from_the_outcomes_with_the_reason_when_not() -> None:
    plan = DEFAULT_PLANS["daily"]
    outcomes = {i.name: _outcome(i.name, ItemStatus.COMPLETED, "fine") for i in plan.items}
    outcomes["health-check"] = _outcome("health-check", ItemStatus.COMPLETED, result={"components": {"external-apis": "failed"}})
    outcomes["performance-report"] = _outcome("performance-report", ItemStatus.NOT_AVAILABLE, "not available (no such procedure)")
    outcomes["backups"] = _outcome("backups", ItemStatus.COMPLETED, result={"backups": [
        {"status": "FAILED", "time": (NOW - timedelta(hours=1)).isoformat()},
        {"status": "DONE", "time": (NOW - timedelta(hours=30)).isoformat()},
    ]})
    lines = {l.text: l for l in tick_checklist(plan, outcomes, {"user_support_inquiries": Answer.DONE}, by="ana", unanswered="x", now=NOW)}
    assert lines["system up"].tick is Tick.DONE  # the health check completed
    assert lines["external API limits"].tick is Tick.NOT_DONE and lines["external API limits"].reason == "external-apis: failed"
    assert lines["performance figures"].tick is Tick.NOT_DONE and "not available" in lines["performance figures"].reason
    assert lines["backup ran"].tick is Tick.NOT_DONE and "30.0 h old (more than 25 h)" in lines["backup ran"].reason
    assert lines["user-support inquiries"].tick is Tick.DONE and lines["user-support inquiries"].by == "ana"
    assert lines["security alerts"].tick is Tick.NOT_CONFIRMED and lines["security alerts"].reason == "x"  # never done unanswered


def test_a_fresh_backup_is_one_done_within_the_hours() -> None:
    assert backup_fresh([{"status": "DONE", "time": (NOW - timedelta(minutes=50)).isoformat()}], 25, NOW) == (
        True, "the newest DONE backup is 0.8 h old")
    assert backup_fresh([], 25, NOW) == (False, "no DONE backup in the store")


def test_only_a_failed_critical_item_fails_the_run() -> None:
    outcomes = [
        _outcome("a", ItemStatus.FAILED, critical=False),
        _outcome("b", ItemStatus.NOT_AVAILABLE),
        _outcome("c", ItemStatus.NOT_CONFIGURED),
        _outcome("d", ItemStatus.FAILED),
    ]
    assert [o.name for o in critical_failures(outcomes)] == ["d"]


def test_a_plan_refuses_unknown_items_duplicates_and_mixed_kinds() -> None:
    with pytest.raises(ValidationError, match="items the period does not run: nope"):
        PeriodPlan(items=[], checklist=[{"text": "x", "item": "nope"}])
    with pytest.raises(ValidationError, match="unique: a"):
        PeriodPlan(items=[{"name": "a", "procedure": "backup"}, {"name": "a", "edge": "cache-clear"}])
    with pytest.raises(ValidationError, match="exactly one of procedure or edge"):
        PeriodPlan(items=[{"name": "a", "procedure": "backup", "edge": "cache-clear"}])


def test_meetings_are_half_open_and_between_different_deployments() -> None:
    t = datetime(2027, 1, 3, 4, 0, tzinfo=timezone.utc)
    starts = {"backup": [t, t + timedelta(hours=1)], "weekly": [t + timedelta(minutes=20)]}
    assert meetings(starts, {"backup": 20, "weekly": 40}) == []  # 04:20 is when the backup is expected done; 05:00 when weekly is
    assert meetings(starts, {"backup": 21, "weekly": 40}) == [("backup", t, "weekly", t + timedelta(minutes=20))]


def test_a_recovery_from_the_cli_records_its_acceptance_test_or_says_it_was_not_given() -> None:
    from runbook.procedures import _recovery_parameters

    base = dict(backup_id=None, at=None, rto_minutes=240.0, rpo_minutes=60.0, confirm="db", replace=False, incident_at=None)
    params = _recovery_parameters(argparse.Namespace(**base, accepted_by=None, tried=None, not_accepted=False))["params"]
    assert params.acceptance is None and params.ask_acceptance is False  # the CLI cannot pause
    params = _recovery_parameters(argparse.Namespace(**base, accepted_by="qa", tried="login", not_accepted=True))["params"]
    assert params.acceptance.model_dump() == {"accepted": False, "accepted_by": "qa", "tried": "login"}


def test_the_default_items_parameters_fit_their_procedures_forms() -> None:
    """A default that the procedure's form refuses would fail its item on every run."""
    from runbook.procedures import PROCEDURES

    for plan in DEFAULT_PLANS.values():
        for item in plan.items:
            procedure = PROCEDURES.get(item.procedure or "")
            if procedure is None:
                assert item.edge or item.procedure in ("performance-report", "capacity-review"), item.name  # being built
                continue
            model = procedure.parameter_model()
            if model is None:
                assert not item.parameters, item.name
            else:
                model.model_validate({**item.parameters, **procedure.mode})
