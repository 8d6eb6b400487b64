"""Disaster-recovery arithmetic (§6.3): RPO and RTO against targets, projections to §7.1."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from runbook.dr import (
    GB,
    PhaseStatus,
    PhaseTiming,
    achieved_rpo,
    achieved_rto,
    human_duration,
    judge,
    largest_restorable,
    project_restore,
    run_labels,
    run_tags,
)

T0 = datetime(2026, 11, 29, 3, 0, tzinfo=timezone.utc)


def phase(name: str, start_min: float, end_min: float, status: PhaseStatus = PhaseStatus.OK) -> PhaseTiming:
    return PhaseTiming(
        name=name, status=status, started_at=T0 + timedelta(minutes=start_min), finished_at=T0 + timedelta(minutes=end_min)
    )


@pytest.mark.parametrize(
    ("seconds", "text"), [(42.5, "42.5s"), (60, "1m00s"), (3725, "1h02m05s"), (4 * 3600, "4h00m00s")]
)
def test_durations_read_like_a_clock(seconds: float, text: str) -> None:
    assert human_duration(seconds) == text


def test_rpo_is_the_age_of_the_backup_at_the_incident() -> None:
    rpo = judge("RPO", achieved_rpo(T0, T0 - timedelta(minutes=40)), timedelta(hours=1))
    assert rpo.ok and rpo.achieved_seconds == 2400
    assert rpo.message == "RPO 40m00s within the 1h00m00s target (20m00s to spare)"
    late = judge("RPO", achieved_rpo(T0, T0 - timedelta(hours=1, minutes=12)), timedelta(hours=1))
    assert not late.ok
    assert late.message == "RPO 1h12m00s breaches the 1h00m00s target by 12m00s"


def test_the_target_itself_is_met() -> None:
    assert judge("RTO", timedelta(hours=4), timedelta(hours=4)).ok


def test_a_backup_after_the_incident_is_refused() -> None:
    with pytest.raises(ValueError, match="cannot be negative"):
        judge("RPO", achieved_rpo(T0, T0 + timedelta(minutes=1)), timedelta(hours=1))


def test_rto_runs_to_the_end_of_the_last_phase_and_only_if_it_finished() -> None:
    phases = [phase("shutdown", 0, 1), phase("restore", 1, 30), phase("verify", 30, 35), phase("services", 35, 36), phase("functions", 36, 40)]
    assert achieved_rto(T0, phases, "functions") == timedelta(minutes=40)
    phases[-1] = phase("functions", 36, 40, PhaseStatus.FAILED)
    assert achieved_rto(T0, phases, "functions") is None


def test_restore_time_projects_to_the_sizes_of_7_1() -> None:
    # 1 GB restored in 15 s: 100 GB in 25 min, 1,000 GB in about 4 h 10 min
    projections = {p.label: p for p in project_restore(1 * GB, 15.0, timedelta(hours=4))}
    assert projections["now"].restore_seconds == pytest.approx(1500)
    assert not projections["now"].exceeds_rto
    assert projections["projected"].restore_seconds == pytest.approx(15000)
    assert projections["projected"].exceeds_rto
    assert largest_restorable(1 * GB, 15.0, timedelta(hours=4)) == 960 * GB
    assert project_restore(0, 15.0, timedelta(hours=4)) == []


def test_labels_are_scalars_and_tags_say_ok_or_breached() -> None:
    rpo = judge("RPO", timedelta(minutes=30), timedelta(hours=1))
    rto = judge("RTO", timedelta(hours=5), timedelta(hours=4))
    labels = run_labels(backup_id="backup_20261129_020000", outcome="failed", rto=rto, rpo=rpo, phases=[phase("restore", 1, 30)])
    assert all(isinstance(value, (str, int, float, bool)) for value in labels.values())
    assert labels["rto_seconds"] == 18000 and labels["rto_ok"] is False
    assert labels["phase_restore_seconds"] == 1740
    assert run_tags(rto, rpo) == ["rpo-ok", "rto-breached"]
    assert run_tags(None, rpo) == ["rpo-ok", "rto-breached"]  # no RTO: the recovery did not finish
