"""The capacity review (§7): trends fitted on the metric history, the days until each
threshold of §7.1-§7.2, the scale-up signal, and the backup and restore durations at
the projected size against the RPO and RTO of §6.3. Pure: points, manifests and drill
records come in as data; nothing here reads a database or a clock.

Honest results, in this order for each metric and threshold:

1. fewer than RUNBOOK_CAPACITY__MIN_POINTS points, or spread over fewer than
   __MIN_DAYS days: **insufficient data**;
2. the current value (mean of the last __RECENT_HOURS) already at the threshold: **over**;
3. the values all within __FLAT_TOLERANCE_PCT of their mean: **not growing** (flat);
4. a fit with r² below __MIN_R2: **insufficient data** (poor fit): a trend that
   explains little of the variation predicts nothing;
5. a slope of zero or less: **not growing** (shrinking), never a negative day count;
6. otherwise **growing**: the days until the fitted line reaches the threshold.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Literal

from pydantic import BaseModel

from runbook.dr import GB, SIZES_OF_7_1, human_duration

if TYPE_CHECKING:
    from runbook.backups import Manifest
    from runbook.checks import CheckResult
    from runbook.dr import DrillRecord
    from runbook.settings import CapacitySettings

DAY_S = 86400.0
Status = Literal["insufficient data", "over", "not growing", "growing"]


class Threshold(BaseModel):
    """One line a metric must not cross, and where the guide draws it."""

    value: float
    label: str  # "warning", "critical", "scale the database"
    source: str  # "§7.1"


# The thresholds of §7.1-§7.2 (and §7.4's connections) the review projects.
THRESHOLDS: dict[str, list[Threshold]] = {
    "database_size_gb": [Threshold(value=80, label="scale the database", source="§7.2")],
    "disk_pct": [Threshold(value=80, label="warning", source="§7.1"), Threshold(value=90, label="critical", source="§7.1")],
    "database_connections_pct": [Threshold(value=80, label="warning (of max_connections 200)", source="§7.4")],
    "cpu_pct": [Threshold(value=80, label="scale up (with memory)", source="§7.2"), Threshold(value=85, label="critical", source="§7.1")],
    "memory_pct": [Threshold(value=80, label="scale up (with CPU)", source="§7.2"), Threshold(value=90, label="critical", source="§7.1")],
}
SCALE_UP_PCT = 80.0  # §7.2: scale up when CPU > 80 % and memory > 80 %


class Fit(BaseModel):
    """A least-squares line through (days since ``origin``, value)."""

    origin: datetime
    slope_per_day: float
    intercept: float  # the value at ``origin``
    r2: float | None  # None when the values do not vary (nothing to explain)

    def at(self, moment: datetime) -> float:
        return self.intercept + self.slope_per_day * (moment - self.origin).total_seconds() / DAY_S

    def reaches(self, value: float) -> datetime | None:
        """When the line reaches ``value`` (None when it never does, going up)."""
        if self.slope_per_day <= 0:
            return None
        return self.origin + timedelta(days=(value - self.intercept) / self.slope_per_day)


def fit_line(points: Sequence[tuple[datetime, float]]) -> Fit | None:
    """Least squares of value on time; None with fewer than two distinct times."""
    if len(points) < 2:
        return None
    origin = min(at for at, _ in points)
    xs = [(at - origin).total_seconds() / DAY_S for at, _ in points]
    ys = [value for _, value in points]
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    sxx = sum((x - mx) ** 2 for x in xs)
    if sxx == 0:
        return None
    sxy = sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True))
    syy = sum((y - my) ** 2 for y in ys)
    slope = sxy / sxx
    intercept = my - slope * mx
    r2 = None if syy == 0 else max(0.0, min(1.0, (sxy * sxy) / (sxx * syy)))
    return Fit(origin=origin, slope_per_day=slope, intercept=intercept, r2=r2)


class Eta(BaseModel):
    """When one threshold is reached."""

    threshold: Threshold
    status: Status
    days: float | None = None  # growing: days from now; over: 0
    on: datetime | None = None
    detail: str = ""


class MetricReview(BaseModel):
    """One metric's history, its trend and the thresholds ahead."""

    metric: str
    unit: str
    points: int
    span_days: float
    current: float | None  # the mean of the last RECENT_HOURS of samples
    fit: Fit | None
    enough: bool  # enough points over enough days
    flat: bool
    status: Status
    detail: str
    etas: list[Eta]

    @property
    def slope_per_day(self) -> float | None:
        return self.fit.slope_per_day if self.fit else None

    @property
    def r2(self) -> float | None:
        return self.fit.r2 if self.fit else None


def _number(value: float, unit: str) -> str:
    return f"{value:,.2f}{' ' + unit if unit else ''}"


def current_value(points: Sequence[tuple[datetime, float]], recent: timedelta) -> float | None:
    """The mean of the samples within ``recent`` of the newest one (a single sample
    spikes: the scale-up signal and "over" read a day, not a quarter of an hour)."""
    if not points:
        return None
    newest = max(at for at, _ in points)
    return statistics.fmean(value for at, value in points if at >= newest - recent)


def threshold_eta(threshold: Threshold, review: "MetricReview", now: datetime, min_r2: float) -> Eta:
    """When the metric of ``review`` reaches ``threshold`` (the rules of the module docstring)."""
    unit, current, fit = review.unit, review.current, review.fit
    if not review.enough or current is None or fit is None:
        return Eta(threshold=threshold, status="insufficient data", detail=review.detail)
    if current >= threshold.value:
        return Eta(threshold=threshold, status="over", days=0.0, on=now,
                   detail=f"at {_number(current, unit)}, over the {threshold.label} threshold {_number(threshold.value, unit)}")
    if review.flat:
        return Eta(threshold=threshold, status="not growing", detail=f"flat at {_number(current, unit)}")
    if fit.r2 is None or fit.r2 < min_r2:
        return Eta(threshold=threshold, status="insufficient data",
                   detail=f"poor fit: r² {fit.r2 or 0:.2f} below RUNBOOK_CAPACITY__MIN_R2 {min_r2:g}")
    on = fit.reaches(threshold.value)
    if on is None:
        return Eta(threshold=threshold, status="not growing", detail=f"shrinking: {_number(fit.slope_per_day, unit)} a day (r² {fit.r2:.2f})")
    days = max(0.0, (on - now).total_seconds() / DAY_S)
    return Eta(threshold=threshold, status="growing", days=round(days, 1), on=max(on, now),
               detail=f"{_number(fit.slope_per_day, unit)} a day (r² {fit.r2:.2f}): {threshold.label} "
               f"{_number(threshold.value, unit)} in {days:.0f} days")


_ORDER: list[Status] = ["over", "growing", "insufficient data", "not growing"]


def review_metric(metric: str, unit: str, points: Sequence[tuple[datetime, float]], thresholds: Sequence[Threshold],
                  now: datetime, policy: "CapacitySettings") -> MetricReview:
    """The honest status of one metric and of each of its thresholds (module docstring);
    the metric's status is its most pressing threshold's."""
    ordered = sorted(points)
    span = (ordered[-1][0] - ordered[0][0]).total_seconds() / DAY_S if ordered else 0.0
    current = current_value(ordered, timedelta(hours=policy.recent_hours))
    fit = fit_line(ordered)
    enough = len(ordered) >= policy.min_points and span >= policy.min_days and fit is not None
    values = [value for _, value in ordered]
    mean = statistics.fmean(values) if values else 0.0
    flat = bool(values) and max(values) - min(values) <= policy.flat_tolerance_pct / 100 * max(abs(mean), 1e-12)
    if not enough:
        detail = (f"{len(ordered)} points over {span:.1f} days (needs {policy.min_points} points over "
                  f"{policy.min_days:g} days: RUNBOOK_CAPACITY__MIN_POINTS, __MIN_DAYS)")
    elif flat:
        detail = f"flat: every value within {policy.flat_tolerance_pct:g} % of {_number(mean, unit)}"
    else:
        assert fit is not None
        detail = f"{_number(fit.slope_per_day, unit)} a day, r² {fit.r2 or 0:.2f}"
    review = MetricReview(metric=metric, unit=unit, points=len(ordered), span_days=round(span, 2), current=current, fit=fit,
                          enough=enough, flat=flat, status="insufficient data", detail=detail, etas=[])
    etas = [threshold_eta(t, review, now, policy.min_r2) for t in thresholds]
    if etas:
        worst = min(etas, key=lambda e: (_ORDER.index(e.status), e.days if e.days is not None else math.inf))
        status, detail = worst.status, worst.detail
    elif not enough:
        status = "insufficient data"
    elif flat or (fit is not None and fit.slope_per_day <= 0):
        status = "not growing"
    elif fit is not None and (fit.r2 or 0) < policy.min_r2:
        status = "insufficient data"
    else:
        status = "growing"
    return review.model_copy(update={"etas": etas, "status": status, "detail": detail})


# --------------------------------------------------------------------------- the scale-up signal


class ScaleUp(BaseModel):
    """§7.2: scale up when CPU > 80 % and memory > 80 %."""

    now: bool | None  # None: no current CPU or memory value
    days: float | None = None  # when both trends are over 80 %
    detail: str


def scale_up_signal(cpu: MetricReview | None, memory: MetricReview | None) -> ScaleUp:
    """Now when both current values are over 80 %; otherwise when both growing trends
    will be (the later of the two), or why that cannot be said."""
    if cpu is None or memory is None or cpu.current is None or memory.current is None:
        return ScaleUp(now=None, detail="insufficient data: no CPU or memory history")
    if cpu.current > SCALE_UP_PCT and memory.current > SCALE_UP_PCT:
        return ScaleUp(now=True, days=0.0, detail=f"scale up now: CPU {cpu.current:.1f} % and memory {memory.current:.1f} % over {SCALE_UP_PCT:g} % (§7.2)")

    def eta(review: MetricReview) -> Eta | None:
        return next((e for e in review.etas if e.threshold.value == SCALE_UP_PCT), None)

    parts = [(name, review, eta(review)) for name, review in (("CPU", cpu), ("memory", memory))]
    days: list[float] = []
    for name, review, e in parts:
        if e is None or e.status in ("insufficient data", "not growing"):
            why = e.status if e else "no threshold"
            return ScaleUp(now=False, detail=f"not signalled: CPU {cpu.current:.1f} %, memory {memory.current:.1f} %; "
                           f"{name} {why}{': ' + e.detail if e and e.detail else ''}")
        days.append(e.days or 0.0)
    when = max(days)
    return ScaleUp(now=False, days=when, detail=f"not yet (CPU {cpu.current:.1f} %, memory {memory.current:.1f} %): "
                   f"both over {SCALE_UP_PCT:g} % in about {when:.0f} days by their trends")


# --------------------------------------------------------------------------- backup and restore against RPO and RTO


class Throughput(BaseModel):
    """Bytes per second measured by runs: the median of the last ones."""

    kind: Literal["backup", "restore"]
    runs: int
    bytes_per_second: float | None
    detail: str


def backup_throughput(manifests: Sequence["Manifest"], last: int = 10) -> Throughput:
    """The hourly backup's rate: uncompressed dump bytes over the run's duration
    (started to finished, upload included: what the hour must hold), of the last DONE
    backups. Applied to pg_database_size, which also counts indexes the dump does not
    hold, the projection errs on the long side."""
    rates = []
    for m in sorted(manifests, key=lambda m: m.started_at):
        if m.status.value != "DONE" or m.finished_at is None:
            continue
        size = m.raw_bytes or m.size_bytes or 0
        seconds = (m.finished_at - m.started_at).total_seconds()
        if size > 0 and seconds > 0:
            rates.append(size / seconds)
    rates = rates[-last:]
    if not rates:
        return Throughput(kind="backup", runs=0, bytes_per_second=None, detail="insufficient data: no finished backup with a size and a duration")
    rate = statistics.median(rates)
    return Throughput(kind="backup", runs=len(rates), bytes_per_second=rate,
                      detail=f"{rate / 1e6:,.2f} MB/s (median of the last {len(rates)} backups)")


def restore_throughput(drills: Sequence["DrillRecord"], last: int = 10) -> Throughput:
    """The restore's rate measured by dr-drill runs: restored database bytes over the restore phase."""
    rates = [d.restored_bytes / d.restore_seconds for d in sorted(drills, key=lambda d: d.started_at)
             if d.restored_bytes > 0 and d.restore_seconds > 0][-last:]
    if not rates:
        return Throughput(kind="restore", runs=0, bytes_per_second=None, detail="insufficient data: no drill measured a restore")
    rate = statistics.median(rates)
    return Throughput(kind="restore", runs=len(rates), bytes_per_second=rate,
                      detail=f"{rate / 1e6:,.2f} MB/s (median of the last {len(rates)} drills)")


class DurationAt(BaseModel):
    """A backup or restore at one data size, against its window."""

    label: str  # "now", "in 365 days", "§7.1 now", "§7.1 projected"
    size_bytes: float
    seconds: float | None
    window_seconds: float
    ok: bool | None  # None: no throughput measured


class WindowReview(BaseModel):
    """One window (RPO for the hourly full dump, RTO for the restore) over the sizes."""

    kind: Literal["backup", "restore"]
    window: str  # "RPO 1h", "RTO 4h"
    throughput: Throughput
    limit_bytes: float | None  # the size whose duration is the whole window
    at_sizes: list[DurationAt]
    missed: Status | None  # when the database reaches limit_bytes, as a threshold status
    days: float | None = None
    detail: str


def review_window(throughput: Throughput, window: timedelta, size: MetricReview, now: datetime, policy: "CapacitySettings") -> WindowReview:
    """The durations at the current size, the size projected RUNBOOK_CAPACITY__HORIZON_DAYS
    ahead and §7.1's 100 GB and 1 TB; and when the database grows past the size the
    window holds (a threshold on database_size_gb, with the same honest rules)."""
    kind = throughput.kind
    horizon = policy.horizon_days
    name = f"{'RPO' if kind == 'backup' else 'RTO'} {window.total_seconds() / 3600:g} h"
    what = "an hourly full dump" if kind == "backup" else "a restore"
    seconds_window = window.total_seconds()
    sizes: list[tuple[str, float]] = []
    if size.current is not None:
        sizes.append(("now", size.current * GB))
    growing = size.enough and size.fit is not None and not size.flat and (size.fit.r2 or 0) >= policy.min_r2 and size.fit.slope_per_day > 0
    if growing and size.fit is not None:
        sizes.append((f"in {horizon} days", max(size.fit.at(now + timedelta(days=horizon)), size.current or 0) * GB))
    sizes += [(f"§7.1 {label}", float(bytes_)) for label, bytes_ in SIZES_OF_7_1]
    rate = throughput.bytes_per_second
    at_sizes = [
        DurationAt(label=label, size_bytes=bytes_, seconds=bytes_ / rate if rate else None, window_seconds=seconds_window,
                   ok=(bytes_ / rate <= seconds_window) if rate else None)
        for label, bytes_ in sizes
    ]
    if not rate:
        return WindowReview(kind=kind, window=name, throughput=throughput, limit_bytes=None, at_sizes=at_sizes, missed=None,
                            detail=f"{what}: {throughput.detail}")
    limit = rate * seconds_window
    limit_gb = limit / GB
    eta = threshold_eta(Threshold(value=limit_gb, label=f"{name} missed", source="§6.3"), size, now, policy.min_r2)
    if eta.status == "over":
        detail = f"{what} of the database now ({size.current or 0:,.2f} GB) takes longer than the {name}"
    elif eta.status == "growing":
        detail = f"{what} misses the {name} from {limit_gb:,.1f} GB: in about {eta.days:.0f} days by the database's trend"
    else:
        detail = f"{what} fits the {name} up to {limit_gb:,.1f} GB; when the database gets there: {eta.status} ({eta.detail})"
    misses = [f"{d.label} ({d.size_bytes / GB:,.0f} GB: {human_duration(d.seconds or 0)})" for d in at_sizes if d.ok is False]
    if misses:
        detail += f". Longer than the {name}: {', '.join(misses)}"
    return WindowReview(kind=kind, window=name, throughput=throughput, limit_bytes=limit, at_sizes=at_sizes, missed=eta.status,
                        days=eta.days, detail=detail)


# --------------------------------------------------------------------------- the calendar's budgets


class RunBudget(BaseModel):
    """A heavy deployment's measured run durations against the minutes the calendar
    gives it (runbook/calendar.py HEAVY_MINUTES: the gap before the next heavy job)."""

    deployment: str
    budget_minutes: int
    runs: int
    longest_minutes: float | None
    median_minutes: float | None
    projected_minutes: float | None = None  # the backup at the size projected a horizon ahead
    ok: bool
    detail: str


def backup_minutes(manifests: Sequence["Manifest"], since: datetime, until: datetime, last: int = 10) -> list[float]:
    """Minutes from start to finish of the last finished backups started in [since, until), newest first."""
    done = [m for m in manifests if m.finished_at is not None and since <= m.started_at < until and m.status.value in ("DONE", "FAILED")]
    done.sort(key=lambda m: m.started_at, reverse=True)
    return [(m.finished_at - m.started_at).total_seconds() / 60 for m in done[:last]]  # type: ignore[operator]


def budget_reviews(durations: dict[str, list[float]], budgets: dict[str, int], backup: WindowReview | None,
                   since_days: int) -> list[RunBudget]:
    """Each heavy deployment's finished runs (minutes, start to end) against its budget:
    a run that took longer met the next heavy job's start (the database's slot made one
    of them wait). The backup is also projected: its duration at the size expected a
    horizon ahead, from the measured throughput. No runs measured is said, never a pass
    of the budget."""
    found = []
    for name, budget in budgets.items():
        runs = durations.get(name, [])
        projected = None
        if name == "backup" and backup is not None:
            ahead = [d for d in backup.at_sizes if d.label.startswith("in ") and d.seconds is not None]
            projected = ahead[0].seconds / 60 if ahead else None  # type: ignore[operator]
        if not runs:
            detail = f"no finished {name} run in the last {since_days} days on this Prefect server: its {budget}-minute budget is unchecked"
            found.append(RunBudget(deployment=name, budget_minutes=budget, runs=0, longest_minutes=None, median_minutes=None,
                                   projected_minutes=projected, ok=projected is None or projected <= budget,
                                   detail=detail + (_projected(projected, budget) if projected is not None else "")))
            continue
        longest, median = max(runs), statistics.median(runs)
        over = [r for r in runs if r > budget]
        if over:
            detail = (f"{len(over)} of the last {len(runs)} {name} runs took longer than its {budget}-minute budget (up to "
                      f"{longest:,.1f} min): they ran into the next heavy job's start; move the schedules apart and raise "
                      "its figure in runbook/calendar.py HEAVY_MINUTES (tests/test_schedules.py then says what meets)")
        else:
            detail = f"the last {len(runs)} {name} runs took {median:,.1f} min (median), up to {longest:,.1f} of its {budget}-minute budget"
        if projected is not None:
            detail += _projected(projected, budget)
        found.append(RunBudget(deployment=name, budget_minutes=budget, runs=len(runs), longest_minutes=longest,
                               median_minutes=median, projected_minutes=projected,
                               ok=not over and (projected is None or projected <= budget), detail=detail))
    return found


def _projected(minutes: float, budget: int) -> str:
    if minutes <= budget:
        return f"; at the projected size it would take {minutes:,.1f} min, within the budget"
    return f"; at the projected size it would take {minutes:,.1f} min, over its {budget}-minute budget"


# --------------------------------------------------------------------------- the report


# The metrics reviewed, their unit, and whose resource they are in the history:
# "instance" (the platform's database) or "api" (the platform's metrics endpoint).
REVIEWED: tuple[tuple[str, str, str], ...] = (
    ("database_size_gb", "GB", "instance"),
    ("database_connections_pct", "%", "instance"),
    ("disk_pct", "%", "api"),
    ("cpu_pct", "%", "api"),
    ("memory_pct", "%", "api"),
)


def table_rows(history: dict[str, list[tuple[datetime, float]]], now_sizes: dict[str, int], now: datetime,
               policy: "CapacitySettings") -> list[dict[str, object]]:
    """The largest tables now, with their growth per day when their recorded history holds a trend."""
    rows: list[dict[str, object]] = []
    for name, size in sorted(now_sizes.items(), key=lambda item: (-item[1], item[0]))[: policy.top_tables]:
        points = [(at, value / GB) for at, value in history.get(name, [])]
        review = review_metric(name, "GB", points, [], now, policy)
        growth = "-"
        if review.status == "growing" and review.fit is not None:
            growth = f"{review.fit.slope_per_day * 1000:,.2f} MB/day (r² {review.fit.r2 or 0:.2f})"
        rows.append({"table": name, "size_mb": round(size / 1e6, 2), "readings": review.points, "status": review.status,
                     "growth": growth, "detail": review.detail})
    return rows


def status_rows(reviews: Sequence[MetricReview], zone: str) -> list[dict[str, object]]:
    """The table artifact: one row per metric and threshold."""
    from runbook.times import show

    rows: list[dict[str, object]] = []
    for review in reviews:
        for eta in review.etas:
            rows.append({
                "metric": review.metric, "current": "-" if review.current is None else f"{review.current:,.2f} {review.unit}",
                "threshold": f"{eta.threshold.value:g} {review.unit} {eta.threshold.label} ({eta.threshold.source})",
                "status": eta.status,
                "days": "-" if eta.days is None else f"{eta.days:.0f}",
                "on": "-" if eta.on is None else show(eta.on, zone, "minutes")[:10],
                # a fit on too little data is no trend: not shown
                "slope_per_day": "-" if review.fit is None or not review.enough else f"{review.fit.slope_per_day:+.4g}",
                "r2": "-" if review.r2 is None or not review.enough else f"{review.r2:.2f}",
                "points": review.points, "detail": eta.detail,
            })
    return rows


def review_checks(reviews: Sequence[MetricReview], scale: ScaleUp, windows: Sequence[WindowReview], horizon_days: int,
                  budgets: Sequence[RunBudget] = ()) -> list["CheckResult"]:
    """Warnings only: a review that sees trouble coming has done its job."""
    from runbook.checks import CheckResult

    checks = []
    for review in reviews:
        soon = [e for e in review.etas if e.status == "over" or (e.status == "growing" and (e.days or 0) <= horizon_days)]
        checks.append(CheckResult(name=f"capacity:{review.metric}", ok=not soon, critical=False,
                                  detail=(soon[0].detail if soon else f"{review.status}: {review.detail}")))
    checks.append(CheckResult(name="capacity:scale-up", ok=not scale.now and not (scale.days is not None and scale.days <= horizon_days),
                              critical=False, detail=scale.detail))
    for window in windows:
        # §7.1's projected 1 TB counts too: the review must say a full dump will not fit before the database gets there
        at_risk = (window.missed == "over" or (window.missed == "growing" and (window.days or 0) <= horizon_days)
                   or any(d.ok is False for d in window.at_sizes))
        checks.append(CheckResult(name=f"capacity:{window.kind}-{window.window.split()[0].lower()}", ok=not at_risk,
                                  critical=False, detail=window.detail))
    for budget in budgets:
        checks.append(CheckResult(name=f"calendar:{budget.deployment}", ok=budget.ok, critical=False, detail=budget.detail))
    return checks


def review_markdown(report: dict[str, object], status_table: list[dict[str, object]], chart: str, checks_table: str) -> str:
    """The markdown artifact: the chart, the thresholds, the scale-up signal, the windows, the tables."""
    lines = [f"# Capacity review of {report['instance']}: {report.get('outcome', '')}", "",
             f"History from {report['since']} to {report['until']}; trends need {report['policy']}.", "", chart, "",
             "## Thresholds (§7.1-§7.2)", "", "| metric | current | threshold | status | days | on | slope/day | r² | points |",
             "|---|---:|---|---|---:|---|---:|---:|---:|"]
    for row in status_table:
        lines.append(f"| {row['metric']} | {row['current']} | {row['threshold']} | {row['status']} | {row['days']} | {row['on']} "
                     f"| {row['slope_per_day']} | {row['r2']} | {row['points']} |")
    lines += ["", f"**Scale-up signal (§7.2):** {report['scale_up']['detail']}", "", "## Backup and restore against RPO and RTO (§6.3)", ""]  # type: ignore[index]
    for window in report["windows"]:  # type: ignore[attr-defined]
        lines += [f"**{window['window']}** ({window['kind']}, {window['throughput']['detail']}): {window['detail']}", "",
                  "| size | GB | duration | within? |", "|---|---:|---:|---|"]
        for d in window["at_sizes"]:
            within = "-" if d["ok"] is None else ("yes" if d["ok"] else "**no**")
            lines.append(f"| {d['label']} | {d['size_bytes'] / GB:,.1f} | {'-' if d['seconds'] is None else human_duration(d['seconds'])} | {within} |")
        lines.append("")
    if report.get("calendar"):
        lines += ["## The calendar's budgets (heavy jobs, runbook/calendar.py)", "",
                  "| deployment | budget | runs | median | longest | projected | within? |", "|---|---:|---:|---:|---:|---:|---|"]
        for b in report["calendar"]:  # type: ignore[attr-defined]
            cells = ["-" if b[k] is None else f"{b[k]:,.1f} min" for k in ("median_minutes", "longest_minutes", "projected_minutes")]
            lines.append(f"| {b['deployment']} | {b['budget_minutes']} min | {b['runs']} | {' | '.join(cells)} | {'yes' if b['ok'] else '**no**'} |")
        lines.append("")
    lines += ["## Largest tables", "", "| table | MB | readings | growth |", "|---|---:|---:|---|"]
    for row in report["tables"]:  # type: ignore[attr-defined]
        lines.append(f"| `{row['table']}` | {row['size_mb']:,.2f} | {row['readings']} | {row['growth'] if row['status'] == 'growing' else row['status']} |")
    lines += ["", "## Checks", "", checks_table]
    return "\n".join(lines)
