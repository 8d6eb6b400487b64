"""Times as the on-call team types and reads them: a time without an offset (from the
CLI or the Prefect UI's form) is read in the team's timezone (RUNBOOK_TIMEZONE), and
reports show times with their offset in that timezone. Pure; no I/O."""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo


def parse_time(text: str) -> datetime:
    """An ISO 8601 time, with or without an offset (ValueError naming the expected form)."""
    try:
        return datetime.fromisoformat(text.strip())
    except ValueError:
        raise ValueError(f"{text!r} is not an ISO time such as 2026-11-29T07:00:00+09:00") from None


def in_team_time(moment: datetime, zone: str) -> datetime:
    """``moment`` made aware: a naive one is a wall-clock time in ``zone``; an aware
    one keeps its instant (only how it is shown changes)."""
    tz = ZoneInfo(zone)
    return moment.replace(tzinfo=tz) if moment.tzinfo is None else moment.astimezone(tz)


def maybe_team_time(moment: datetime | None, zone: str) -> datetime | None:
    return None if moment is None else in_team_time(moment, zone)


def show(moment: datetime, zone: str, timespec: str = "seconds") -> str:
    """ISO 8601 in the team's timezone with its offset: 2026-11-29T11:00:00+09:00."""
    return in_team_time(moment, zone).isoformat(timespec=timespec)
