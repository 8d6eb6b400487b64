"""The capacity review's pure rules (runbook/capacity.py): the least-squares trend and
every honest result, without I/O."""

from __future__ import annotations

import math
import random
from datetime import datetime, timedelta, timezone

import pytest

from runbook import capacity
from runbook.backups import BackupStatus, Manifest
from runbook.capacity import THRESHOLDS, fit_line, review_metric, review_window, scale_up_signal
from runbook.dr import GB, DrillRecord, Verdict
from runbook.settings import CapacitySettings

NOW = datetime(2026, 12, 1, tzinfo=timezone.utc)
POLICY = CapacitySettings()
DB80 = THRESHOLDS["database_size_gb"]


def series(days: int, start: float, per_day: float, *, noise: float = 0.0, every_hours: int = 6, seed: int = 7) -> list[tuple[datetime, float]]:
    """A sample every ``every_hours`` over the last ``days`` days, ending at NOW."""
    rng = random.Random(seed)
    steps = days * 24 // every_hours
    out = []
    for i in range(steps + 1):
        at = NOW - timedelta(days=days) + timedelta(hours=i * every_hours)
        out.append((at, start + per_day * i * every_hours / 24 + rng.uniform(-noise, noise)))
    return out


def test_the_fit_is_least_squares_with_slope_per_day_and_r2() -> None:
    points = [(NOW + timedelta(days=d), 10 + 2 * d) for d in range(5)]
    fit = fit_line(points)
    assert fit is not None and fit.slope_per_day == pytest.approx(2.0) and fit.intercept == pytest.approx(10.0)
    assert fit.r2 == pytest.approx(1.0)
    # y = 1, 3, 2 at x = 0, 1, 2: slope 0.5, r² 0.25 (by hand: sxy 1, sxx 2, syy 2)
    fit = fit_line([(NOW, 1.0), (NOW + timedelta(days=1), 3.0), (NOW + timedelta(days=2), 2.0)])
    assert fit is not None and fit.slope_per_day == pytest.approx(0.5) and fit.r2 == pytest.approx(0.25)
    assert fit_line([(NOW, 1.0)]) is None and fit_line([(NOW, 1.0), (NOW, 2.0)]) is None


def test_a_growing_database_reaches_80_gb_in_the_days_its_slope_says() -> None:
    review = review_metric("database_size_gb", "GB", series(30, 20.0, 0.5), DB80, NOW, POLICY)
    # at NOW the line is at 35 GB, growing 0.5 GB a day: 80 GB in 90 days
    assert review.status == "growing" and review.slope_per_day == pytest.approx(0.5)
    assert review.r2 == pytest.approx(1.0)
    (eta,) = review.etas
    assert eta.days == pytest.approx(90.0, abs=0.2) and eta.on is not None and abs((eta.on - (NOW + timedelta(days=90))).days) <= 1


def test_a_shrinking_metric_is_not_growing_never_a_negative_day_count() -> None:
    review = review_metric("disk_pct", "%", series(30, 70.0, -0.5), THRESHOLDS["disk_pct"], NOW, POLICY)
    assert review.status == "not growing" and all(e.status == "not growing" and e.days is None for e in review.etas)
    assert "shrinking" in review.detail


def test_a_flat_metric_is_not_growing_even_with_tiny_noise() -> None:
    review = review_metric("disk_pct", "%", series(30, 50.0, 0.0, noise=0.1), THRESHOLDS["disk_pct"], NOW, POLICY)
    assert review.status == "not growing" and "flat" in review.etas[0].detail
    exact = review_metric("disk_pct", "%", series(30, 50.0, 0.0), THRESHOLDS["disk_pct"], NOW, POLICY)
    assert exact.status == "not growing" and exact.r2 is None  # nothing varies: no r² to speak of


def test_a_noisy_metric_is_a_poor_fit_and_insufficient_data() -> None:
    review = review_metric("cpu_pct", "%", series(30, 40.0, 0.05, noise=25.0), THRESHOLDS["cpu_pct"], NOW, POLICY)
    assert review.r2 is not None and review.r2 < POLICY.min_r2
    assert review.status == "insufficient data" and "poor fit" in review.detail
    assert all(e.days is None for e in review.etas)


@pytest.mark.parametrize(("days", "every_hours"), [(3, 6), (30, 24 * 5)])  # too short a span; too few points
def test_too_little_history_is_insufficient_data(days: int, every_hours: int) -> None:
    review = review_metric("database_size_gb", "GB", series(days, 20.0, 1.0, every_hours=every_hours), DB80, NOW, POLICY)
    assert review.status == "insufficient data" and "MIN_POINTS" in review.detail
    assert review_metric("database_size_gb", "GB", [], DB80, NOW, POLICY).status == "insufficient data"


def test_a_metric_already_over_its_threshold_says_so_and_the_next_threshold_is_projected() -> None:
    review = review_metric("disk_pct", "%", series(30, 70.0, 0.5), THRESHOLDS["disk_pct"], NOW, POLICY)
    # at NOW 85 %: over the 80 % warning; the 90 % critical in 10 days
    warning, critical = review.etas
    assert warning.status == "over" and warning.days == 0
    assert critical.status == "growing" and critical.days == pytest.approx(10.0, abs=0.6)
    assert review.status == "over"
    # a day of history is too short to say anything, even "over" (one bad day is not a capacity trend)
    short = review_metric("disk_pct", "%", series(1, 95.0, 0.0), THRESHOLDS["disk_pct"], NOW, POLICY)
    assert short.status == "insufficient data"


def test_the_scale_up_signal_needs_cpu_and_memory_over_80() -> None:
    hot = review_metric("cpu_pct", "%", series(30, 85.0, 0.0), THRESHOLDS["cpu_pct"], NOW, POLICY)
    full = review_metric("memory_pct", "%", series(30, 84.0, 0.0), THRESHOLDS["memory_pct"], NOW, POLICY)
    cool = review_metric("memory_pct", "%", series(30, 60.0, 0.0), THRESHOLDS["memory_pct"], NOW, POLICY)
    assert scale_up_signal(hot, full).now is True
    signal = scale_up_signal(hot, cool)
    assert signal.now is False and signal.days is None and "not growing" in signal.detail
    rising = review_metric("memory_pct", "%", series(30, 50.0, 0.5), THRESHOLDS["memory_pct"], NOW, POLICY)  # 65 % now, 80 % in 30 days
    signal = scale_up_signal(hot, rising)
    assert signal.now is False and signal.days == pytest.approx(30.0, abs=0.6)
    assert scale_up_signal(None, full).now is None


def manifest(i: int, raw: int, seconds: float, status: BackupStatus = BackupStatus.DONE) -> Manifest:
    started = NOW - timedelta(hours=i)
    return Manifest(id=f"backup_{i}", status=status, database="d", started_at=started,
                    finished_at=started + timedelta(seconds=seconds), raw_bytes=raw, size_bytes=raw // 4)


def drill(restored: int, seconds: float) -> DrillRecord:
    verdict = Verdict(name="RPO", achieved_seconds=1, target_seconds=3600, ok=True, message="")
    return DrillRecord(run_id="r", mode="drill", database="d", backup_id="b", started_at=NOW, incident_at=NOW, outcome="passed",
                       rpo=verdict, phases=[], restored_bytes=restored, restore_seconds=seconds)


def test_throughputs_are_medians_of_what_the_runs_measured() -> None:
    backups = [manifest(1, 100_000_000, 2.0), manifest(2, 100_000_000, 4.0), manifest(3, 100_000_000, 1.0),
               manifest(4, 10**12, 1.0, BackupStatus.FAILED)]
    assert capacity.backup_throughput(backups).bytes_per_second == pytest.approx(50e6)
    assert capacity.backup_throughput([]).bytes_per_second is None
    assert capacity.restore_throughput([drill(200_000_000, 4.0), drill(0, 0)]).bytes_per_second == pytest.approx(50e6)
    assert "insufficient data" in capacity.restore_throughput([]).detail


def test_an_hourly_full_dump_of_1_tb_misses_the_rpo_and_the_review_says_when_the_database_gets_there() -> None:
    size = review_metric("database_size_gb", "GB", series(30, 20.0, 0.5), DB80, NOW, POLICY)  # 35 GB now, +0.5 GB a day
    rate = capacity.Throughput(kind="backup", runs=3, bytes_per_second=50e6, detail="50 MB/s")  # 180 GB an hour
    rpo = review_window(rate, timedelta(hours=1), size, NOW, POLICY)
    assert rpo.limit_bytes == pytest.approx(180 * GB)
    by_label = {d.label: d for d in rpo.at_sizes}
    assert by_label["now"].ok is True and by_label["§7.1 now"].ok is True
    assert by_label["§7.1 projected"].ok is False and by_label["§7.1 projected"].seconds == pytest.approx(20_000)
    assert rpo.missed == "growing" and rpo.days == pytest.approx(290.0, abs=1)  # (180 - 35) / 0.5
    assert "1,000 GB" in rpo.detail and "RPO 1 h" in rpo.detail
    # a restore at the same rate holds 720 GB in the RTO of 4 hours
    rto = review_window(rate.model_copy(update={"kind": "restore"}), timedelta(hours=4), size, NOW, POLICY)
    assert rto.limit_bytes == pytest.approx(720 * GB) and {d.label: d.ok for d in rto.at_sizes}["§7.1 projected"] is False
    # already too big, no trend, or no throughput at all
    slow = rate.model_copy(update={"bytes_per_second": 5e6})  # 18 GB an hour < 35 GB
    assert review_window(slow, timedelta(hours=1), size, NOW, POLICY).missed == "over"
    flat = review_metric("database_size_gb", "GB", series(30, 20.0, 0.0), DB80, NOW, POLICY)
    assert review_window(rate, timedelta(hours=1), flat, NOW, POLICY).missed == "not growing"
    none = review_window(capacity.Throughput(kind="backup", runs=0, bytes_per_second=None, detail="insufficient data: none"),
                         timedelta(hours=1), size, NOW, POLICY)
    assert none.missed is None and all(d.ok is None for d in none.at_sizes) and "insufficient data" in none.detail
    assert math.isclose(size.current or 0, 34.875, abs_tol=0.2)


def test_the_checks_warn_of_a_window_that_1_tb_would_miss_even_when_the_trend_is_far_from_it() -> None:
    flat = review_metric("database_size_gb", "GB", series(30, 20.0, 0.0), DB80, NOW, POLICY)
    fast = capacity.Throughput(kind="backup", runs=1, bytes_per_second=400e6, detail="400 MB/s")  # 1.44 TB an hour
    slow = fast.model_copy(update={"bytes_per_second": 50e6})
    scale = scale_up_signal(None, None)

    def rpo_ok(rate: capacity.Throughput) -> bool:
        window = review_window(rate, timedelta(hours=1), flat, NOW, POLICY)
        return {c.name: c.ok for c in capacity.review_checks([flat], scale, [window], POLICY.horizon_days)}["capacity:backup-rpo"]

    assert rpo_ok(fast) and not rpo_ok(slow)


def test_heavy_runs_longer_than_the_calendars_budget_are_named_and_the_backup_is_projected() -> None:
    budgets = {"backup": 20, "weekly-maintenance": 35, "monthly-maintenance": 35}
    durations = {"backup": [4.0, 5.5, 6.0], "weekly-maintenance": [30.0, 41.5, 33.0]}
    growing = review_metric("database_size_gb", "GB", series(30, 20.0, 0.5), DB80, NOW, POLICY)  # ~217 GB in a year
    rate = capacity.Throughput(kind="backup", runs=3, bytes_per_second=100e6, detail="100 MB/s")  # 6 GB a minute
    window = review_window(rate, timedelta(hours=1), growing, NOW, POLICY)
    found = {b.deployment: b for b in capacity.budget_reviews(durations, budgets, window, 30)}

    weekly = found["weekly-maintenance"]
    assert not weekly.ok and weekly.longest_minutes == 41.5 and "1 of the last 3" in weekly.detail and "HEAVY_MINUTES" in weekly.detail
    # the backup fits today (6 min of 20) but not at the size projected a year ahead (~217 GB: ~36 min)
    backup = found["backup"]
    assert backup.median_minutes == 5.5 and backup.projected_minutes == pytest.approx(36.3, abs=0.5)
    assert not backup.ok and "over its 20-minute budget" in backup.detail
    # no runs measured: said, and not a failure of the budget (nothing ran over it)
    monthly = found["monthly-maintenance"]
    assert monthly.ok and monthly.runs == 0 and "unchecked" in monthly.detail
    checks = {c.name: c for c in capacity.review_checks([], scale_up_signal(None, None), [], POLICY.horizon_days, list(found.values()))}
    assert not checks["calendar:weekly-maintenance"].ok and not checks["calendar:weekly-maintenance"].critical
    # a slow-growing database keeps the backup within its budget
    flat = review_metric("database_size_gb", "GB", series(30, 20.0, 0.0), DB80, NOW, POLICY)
    (fine,) = capacity.budget_reviews({"backup": [4.0]}, {"backup": 20}, review_window(rate, timedelta(hours=1), flat, NOW, POLICY), 30)
    assert fine.ok and fine.projected_minutes is None and "4.0 min" in fine.detail


def test_the_charts_kept_beside_the_backups_are_never_taken_for_orphans_of_a_backup() -> None:
    from runbook.backups import orphaned_keys

    keys = ["i/reports/capacity-review_20261201_000000.png", "i/reports/performance-report_week_20261201_000000.png",
            "i/backup_20261201_000000.dump"]
    assert orphaned_keys(keys) == ["i/backup_20261201_000000.dump"]  # only the dump without its manifest
