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


# --------------------------------------------------------------------------- phases, checks, report

from runbook.checks import CheckResult  # noqa: E402
from runbook.dr import (  # noqa: E402
    DrillRecord,
    PhaseFailed,
    Timeline,
    drill_outcome,
    history_rows,
    performance_checks,
    report_markdown,
    security_checks,
)
from runbook.schema import SecurityPosture, TableSecurity  # noqa: E402


def ticking_clock(step_s: float = 1.0):  # type: ignore[no-untyped-def]
    now = [T0]

    def clock() -> datetime:
        now[0] += timedelta(seconds=step_s)
        return now[0]

    return clock


def test_a_failed_phase_stops_the_ones_after_it_and_says_why() -> None:
    timeline = Timeline(clock=ticking_clock())
    timeline.skip("shutdown", "a drill")
    assert timeline.run("restore", lambda: "restored")
    assert not timeline.run("verify", lambda: (_ for _ in ()).throw(PhaseFailed("row-count:users (9 != 10)")))
    timeline.skip("restore-services", "none configured")
    called = []
    assert not timeline.run("test-functions", lambda: called.append(1) or "ran")
    status = {p.name: (p.status, p.detail) for p in timeline.timings}
    assert status["shutdown"] == (PhaseStatus.SKIPPED, "a drill")
    assert status["restore"] == (PhaseStatus.OK, "restored")
    assert status["verify"] == (PhaseStatus.FAILED, "row-count:users (9 != 10)")
    assert status["restore-services"][0] is PhaseStatus.NOT_RUN
    assert status["test-functions"] == (PhaseStatus.NOT_RUN, "not run: verify failed")
    assert called == []
    assert timeline.phases["restore"].seconds == 1.0


POSTURE = SecurityPosture(
    tables={
        "public.users": TableSecurity(rls=True, policies=["own_rows"], grants=["platform_app:SELECT", "platform_app:UPDATE"]),
        "public.market_data": TableSecurity(grants=["PUBLIC:SELECT", "platform_readonly:SELECT"]),
    }
)


def test_an_identical_posture_passes_every_security_check() -> None:
    checks = security_checks(POSTURE, POSTURE, {"platform_app", "platform_readonly"})
    assert [c.name for c in checks if not c.ok] == []
    assert POSTURE.roles == ["platform_app", "platform_readonly"]


def test_lost_rls_policies_grants_roles_and_new_public_writes_are_each_named() -> None:
    restored = SecurityPosture(
        tables={
            "public.users": TableSecurity(rls=False, policies=[], grants=["platform_app:SELECT"]),
            "public.market_data": TableSecurity(grants=["PUBLIC:SELECT", "PUBLIC:INSERT", "platform_readonly:SELECT"]),
        }
    )
    checks = {c.name: c for c in security_checks(POSTURE, restored, {"platform_app"})}
    assert not checks["security:row-level-security"].ok and "public.users" in checks["security:row-level-security"].detail
    assert not checks["security:policies"].ok and "public.users.own_rows" in checks["security:policies"].detail
    assert not checks["security:roles"].ok and "platform_readonly" in checks["security:roles"].detail
    assert not checks["security:grants"].ok and "platform_app:UPDATE" in checks["security:grants"].detail
    assert not checks["security:no-new-public-writes"].ok and "PUBLIC:INSERT" in checks["security:no-new-public-writes"].detail
    assert all(c.critical for c in checks.values())


def test_a_public_write_grant_the_source_had_is_not_new() -> None:
    source = SecurityPosture(tables={"public.t": TableSecurity(grants=["PUBLIC:INSERT"])})
    assert all(c.ok for c in security_checks(source, source, set()))


def test_smoke_latency_is_flagged_only_when_much_slower_and_above_the_noise_floor() -> None:
    previous = {"a": 10.0, "b": 100.0, "c": 100.0}
    checks = {c.name: c for c in performance_checks({"a": 40.0, "b": 190.0, "c": 250.0, "d": 5.0}, previous, 100.0, 50.0)}
    assert checks["performance:a"].ok  # 4x slower but under the 50 ms floor: noise
    assert checks["performance:b"].ok  # +90 %: within the 100 % allowance
    assert not checks["performance:c"].ok and "+150 %" in checks["performance:c"].detail
    assert checks["performance:d"].ok and "new query" in checks["performance:d"].detail
    assert not any(c.critical for c in checks.values())
    assert performance_checks({"a": 1.0}, None, 100, 50)[0].detail == "no previous drill to compare with"


def _record(outcome: str = "passed", minutes_ago: int = 0) -> DrillRecord:
    rpo = judge("RPO", timedelta(minutes=20), timedelta(hours=1))
    rto = judge("RTO", timedelta(minutes=30), timedelta(hours=4))
    phases = [phase("shutdown", 0, 0, PhaseStatus.SKIPPED), phase("restore", 0, 20), phase("verify", 20, 25),
              phase("restore-services", 25, 25, PhaseStatus.SKIPPED), phase("test-functions", 25, 30)]
    return DrillRecord(
        run_id="drill_x", mode="drill", database="platform", backup_id="backup_20261129_020000",
        started_at=T0 - timedelta(minutes=minutes_ago), incident_at=T0, outcome=outcome, rpo=rpo, rto=rto, phases=phases,
        restored_bytes=10 * GB, restore_seconds=1200.0,
    )


def test_the_outcome_fails_on_a_failed_phase_a_critical_check_or_a_breached_target() -> None:
    record = _record()
    ok, warn, bad = CheckResult(name="x", ok=True), CheckResult(name="w", ok=False, critical=False), CheckResult(name="c", ok=False)
    assert drill_outcome(record.phases, [ok], record.rpo, record.rto) == "passed"
    assert drill_outcome(record.phases, [ok, warn], record.rpo, record.rto) == "passed-with-warnings"
    assert drill_outcome(record.phases, [bad], record.rpo, record.rto) == "failed"
    assert drill_outcome(record.phases, [ok], judge("RPO", timedelta(hours=2), timedelta(hours=1)), record.rto) == "failed"
    assert drill_outcome(record.phases, [ok], record.rpo, None) == "failed"
    broken = [*record.phases[:1], phase("restore", 0, 1, PhaseStatus.FAILED)]
    assert drill_outcome(broken, [ok], record.rpo, record.rto) == "failed"


def test_the_report_projects_the_rto_and_shows_the_last_drills_side_by_side() -> None:
    record, older = _record(), _record("failed", minutes_ago=60 * 24 * 30)
    text = report_markdown(record, [], [older], timedelta(hours=4), "runbook_drill_x", kept=False)
    # 10 GB in 20 min: 100 GB takes 3h20m (within 4 h), 1,000 GB 33h20m (beyond)
    assert "| now: 100 GB | 3h20m00s | yes |" in text
    assert "| projected: 1,000 GB | 33h20m00s | no: exceeds 4h00m00s |" in text
    assert "beyond about 120 GB" in text
    assert "Last runs side by side" in text and text.count("backup_20261129_020000") >= 3
    # times in the team's timezone, with their offset
    assert "- incident time 2026-11-29T03:00:00+00:00" in text
    tokyo = report_markdown(record, [], [older], timedelta(hours=4), "runbook_drill_x", kept=False, zone="Asia/Tokyo")
    assert "- incident time 2026-11-29T12:00:00+09:00" in tokyo and "| started (+09:00) |" in tokyo
    assert history_rows([record], "Asia/Tokyo")[0]["started"] == "2026-11-29 12:00:00+09:00"
    rows = history_rows([older, record])
    assert [r["outcome"] for r in rows] == ["passed", "failed"]  # newest first
    assert rows[0]["restore"] == "20m00s" and rows[0]["shutdown"] == "skipped"
    assert all(isinstance(v, (str, int, float)) for row in rows for v in row.values())


# --------------------------------------------------------------------------- where scratch restores go


def test_the_scratch_server_is_validated_like_the_other_dsns_and_chosen_first(monkeypatch: pytest.MonkeyPatch) -> None:
    from runbook.errors import ConfigError
    from runbook.settings import load_settings
    from tasks.restore import scratch_server

    for name in ("RUNBOOK_SCRATCH_DATABASE_URL", "RUNBOOK_RECOVERY_DATABASE_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("RUNBOOK_SCRATCH_DATABASE_URL", "mysql://scratch/db")
    with pytest.raises(ConfigError, match="RUNBOOK_SCRATCH_DATABASE_URL: expected a postgresql://"):
        load_settings()
    monkeypatch.delenv("RUNBOOK_SCRATCH_DATABASE_URL")

    production = "postgresql://app:pw@db.example/platform"
    assert scratch_server(load_settings(), production).source == "production"
    assert scratch_server(load_settings(), production).note is not None
    monkeypatch.setenv("RUNBOOK_RECOVERY_DATABASE_URL", "postgresql://app:pw@recovery.example/platform")
    server = scratch_server(load_settings(), production)
    assert server.source == "recovery" and "recovery.example" in server.dsn.get_secret_value()
    assert "dbname=postgres" in server.dsn.get_secret_value() and server.note is None
    monkeypatch.setenv("RUNBOOK_SCRATCH_DATABASE_URL", "postgresql://app:pw@scratch.example/scratch")
    server = scratch_server(load_settings(), production)
    assert server.source == "scratch" and server.dsn.get_secret_value() == "postgresql://app:pw@scratch.example/scratch"
