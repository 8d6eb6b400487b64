"""Times as the team types them (CLI, the UI's form) and reads them (reports): without
an offset in RUNBOOK_TIMEZONE (Asia/Tokyo by default), shown with their offset."""

from __future__ import annotations

import argparse
from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest

from runbook.backups import BackupStatus, Manifest
from runbook.times import in_team_time, parse_time, show

TOKYO = ZoneInfo("Asia/Tokyo")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2026-11-29T07:00:00", datetime(2026, 11, 29, 7, 0)),
        ("2026-11-29 07:00", datetime(2026, 11, 29, 7, 0)),
        ("2026-11-29T07:00:00+09:00", datetime(2026, 11, 28, 22, 0, tzinfo=timezone.utc)),
        ("2026-11-28T22:00:00Z", datetime(2026, 11, 28, 22, 0, tzinfo=timezone.utc)),
    ],
)
def test_iso_times_parse_with_or_without_an_offset(text: str, expected: datetime) -> None:
    parsed = parse_time(text)
    assert parsed == expected and (parsed.tzinfo is None) == (expected.tzinfo is None)


@pytest.mark.parametrize("text", ["yesterday", "29/11/2026 07:00", ""])
def test_a_time_that_is_not_iso_is_refused_saying_what_would_do(text: str) -> None:
    with pytest.raises(ValueError, match="is not an ISO time such as 2026-11-29T07:00:00"):
        parse_time(text)


def test_a_time_without_an_offset_is_a_wall_clock_time_in_the_team_timezone() -> None:
    assert in_team_time(datetime(2026, 11, 29, 7, 0), "Asia/Tokyo") == datetime(2026, 11, 28, 22, 0, tzinfo=timezone.utc)
    assert in_team_time(datetime(2026, 11, 29, 7, 0), "UTC") == datetime(2026, 11, 29, 7, 0, tzinfo=timezone.utc)
    # a time with an offset keeps its instant; only how it is shown changes
    aware = datetime(2026, 11, 29, 7, 0, tzinfo=timezone.utc)
    assert in_team_time(aware, "Asia/Tokyo") == aware and in_team_time(aware, "Asia/Tokyo").utcoffset() == timedelta(hours=9)


def test_reports_show_times_in_the_team_timezone_with_the_offset() -> None:
    moment = datetime(2026, 11, 29, 2, 0, tzinfo=timezone.utc)
    assert show(moment, "Asia/Tokyo") == "2026-11-29T11:00:00+09:00"
    assert show(moment, "UTC") == "2026-11-29T02:00:00+00:00"


def test_the_cli_reads_times_without_an_offset_in_runbook_timezone(monkeypatch: pytest.MonkeyPatch) -> None:
    from runbook.procedures import parse_time as _parse_time, team_time as _team_time

    monkeypatch.delenv("RUNBOOK_TIMEZONE", raising=False)
    typed = _parse_time("2026-11-29T07:00:00")
    assert _team_time(typed) == datetime(2026, 11, 29, 7, 0, tzinfo=TOKYO)  # the default team timezone, not UTC
    assert _team_time(_parse_time("2026-11-29T07:00:00+00:00")) == datetime(2026, 11, 29, 7, 0, tzinfo=timezone.utc)
    monkeypatch.setenv("RUNBOOK_TIMEZONE", "Europe/Paris")
    assert _team_time(typed) == datetime(2026, 11, 29, 6, 0, tzinfo=timezone.utc)
    assert _team_time(None) is None
    with pytest.raises(argparse.ArgumentTypeError, match="not an ISO time"):
        _parse_time("tomorrow")


def _manifest(backup_id: str, snapshot_at: datetime) -> Manifest:
    return Manifest(id=backup_id, status=BackupStatus.DONE, database="platform", started_at=snapshot_at, snapshot_at=snapshot_at)


def test_disaster_recovery_reads_naive_at_and_incident_at_in_the_team_timezone(monkeypatch: pytest.MonkeyPatch) -> None:
    """Today a naive time from the UI's form is compared with aware backup times (a
    TypeError), or a naive incident time is taken as UTC."""
    from flows.disaster_recovery import DrParameters, Mode, check_parameters, choose_backup
    from runbook.settings import load_settings

    monkeypatch.delenv("RUNBOOK_TIMEZONE", raising=False)
    monkeypatch.setenv("RUNBOOK_RECOVERY_DATABASE_URL", "postgresql://app@recovery.example/platform")
    settings = load_settings()
    started = datetime(2026, 11, 29, 3, 0, tzinfo=timezone.utc)  # 12:00 in Tokyo
    early = _manifest("backup_20261128_220000", datetime(2026, 11, 28, 22, 0, tzinfo=timezone.utc))  # 07:00 Tokyo
    late = _manifest("backup_20261129_010000", datetime(2026, 11, 29, 1, 0, tzinfo=timezone.utc))  # 10:00 Tokyo

    drill = DrParameters(at=datetime(2026, 11, 29, 8, 0))  # 08:00 Tokyo: only the early one; as UTC it would be the late one
    assert choose_backup([early, late], drill, check_parameters(drill, settings, started), settings.timezone).id == early.id

    # 09:00 Tokyo (00:00 UTC): the late backup is after it; read as UTC (09:00Z) it would be before
    recover = DrParameters(mode=Mode.RECOVER, incident_at=datetime(2026, 11, 29, 9, 0))
    incident = check_parameters(recover, settings, started)
    assert incident == datetime(2026, 11, 29, 0, 0, tzinfo=timezone.utc) and incident.utcoffset() == timedelta(hours=9)
    assert choose_backup([early, late], recover, incident, settings.timezone).id == early.id

    # 11:30 naive is in the past in Tokyo (02:30Z) but would be in the future as UTC
    assert check_parameters(DrParameters(mode=Mode.RECOVER, incident_at=datetime(2026, 11, 29, 11, 30)), settings, started)
