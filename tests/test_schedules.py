"""The calendar of prefect.yaml (§4): over the next year, no two heavy deployments start
while another is expected to be running (runbook/calendar.py HEAVY_MINUTES). Pure: the
occurrences come from Prefect's own schedule objects, nothing runs."""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta, timezone
from pathlib import Path

import yaml
from prefect.server.schemas.schedules import CronSchedule

from runbook.calendar import HEAVY_MINUTES, meetings

ROOT = Path(__file__).resolve().parent.parent
DEPLOYMENTS = {d["name"]: d for d in yaml.safe_load((ROOT / "prefect.yaml").read_text())["deployments"]}
START = datetime(2027, 1, 1, tzinfo=timezone.utc)
YEAR = timedelta(days=366)


def occurrences(cron: str, zone: str, start: datetime = START, span: timedelta = YEAR) -> list[datetime]:
    """Every start of the schedule in [start, start + span), as Prefect's scheduler computes
    them (timezone and DST included); Prefect returns at most 1,000 per call."""
    schedule = CronSchedule(cron=cron, timezone=zone)
    end, found = start + span, []
    while True:
        batch = [d for d in asyncio.run(schedule.get_dates(n=1000, start=start, end=end)) if d < end]
        found += batch
        if len(batch) < 1000:
            return found
        start = batch[-1] + timedelta(seconds=1)


def heavy_starts(deployments: dict[str, dict]) -> dict[str, list[datetime]]:
    starts: dict[str, list[datetime]] = {}
    for name in HEAVY_MINUTES:
        for schedule in deployments[name].get("schedules") or []:
            if schedule.get("active", True):
                starts.setdefault(name, []).extend(occurrences(schedule["cron"], schedule["timezone"]))
    return starts


def test_no_two_heavy_jobs_meet_on_the_database_within_a_year() -> None:
    starts = heavy_starts(DEPLOYMENTS)
    assert set(starts) == set(HEAVY_MINUTES)  # every heavy deployment is scheduled
    assert len(starts["backup"]) == 366 * 24 and len(starts["weekly-maintenance"]) in (52, 53)
    found = meetings(starts, HEAVY_MINUTES)
    assert not found, "\n".join(f"{a} ({sa:%Y-%m-%d %H:%M}) still runs when {b} starts at {sb:%Y-%m-%d %H:%M}" for a, sa, b, sb in found[:5])


def test_the_old_calendar_would_have_met_and_the_test_says_where() -> None:
    """Backup hourly at :00, db-maintenance Sunday 04:00 and data-cleanup on the 2nd 04:00."""
    old = {
        "backup": occurrences("0 * * * *", "Asia/Tokyo"),
        "db-maintenance": occurrences("0 4 * * 0", "Asia/Tokyo"),
        "data-cleanup": occurrences("0 4 2 * *", "Asia/Tokyo"),
    }
    found = meetings(old, {"backup": 20, "db-maintenance": 35, "data-cleanup": 35})
    assert {(a, b) for a, _, b, _ in found} >= {("backup", "db-maintenance"), ("backup", "data-cleanup")}


def test_a_period_too_long_for_its_gap_is_found() -> None:
    starts = heavy_starts(DEPLOYMENTS)
    found = meetings(starts, {**HEAVY_MINUTES, "weekly-maintenance": 41})  # 04:20 + 41 min passes the 05:00 backup
    assert found and all((a, b) == ("weekly-maintenance", "backup") for a, _, b, _ in found)
    assert len(found) in (52, 53)


def test_the_procedures_the_periods_run_have_no_schedule_of_their_own() -> None:
    """They would run twice: once alone and once inside their period."""
    from runbook.calendar import DEFAULT_PLANS

    run_by_periods = {i.procedure for plan in DEFAULT_PLANS.values() for i in plan.items if i.procedure}
    for name in run_by_periods & set(DEPLOYMENTS):
        assert not DEPLOYMENTS[name].get("schedules"), name
    for period in ("daily", "weekly", "monthly"):
        (schedule,) = DEPLOYMENTS[f"{period}-maintenance"]["schedules"]
        assert schedule["timezone"] == "Asia/Tokyo"
