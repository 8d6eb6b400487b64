"""The performance report (§4.1-§4.2, §7.1, §8): a period (day, week, month) against the
previous one, from the monitor's metric history (platform-wide error rate, p50/p95
response time, requests per second) and from the log table (p50/p95 and error rate
overall and per endpoint, when RUNBOOK_PERFORMANCE__ENDPOINT names where a row's
endpoint is). Pure: the samples and the aggregates come in as data.

Too little data is said, never a figure: a period with fewer than
RUNBOOK_PERFORMANCE__MIN_SAMPLES monitor samples, or an endpoint with fewer than
__MIN_ROWS log rows carrying a response time, is "insufficient data".
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from datetime import datetime, timedelta
from enum import Enum
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel

if TYPE_CHECKING:
    from runbook.checks import CheckResult

INSUFFICIENT = "insufficient data"
THROUGHPUT_MINIMUM = 100.0  # §7.1: req/s
THROUGHPUT_TARGET = 1000.0  # §7.1: req/s
ERROR_RATE_WARNING = 1.0  # §7.1: %
RESPONSE_WARNING_MS = 3000.0  # §7.1


class Period(str, Enum):
    day = "day"
    week = "week"
    month = "month"


LENGTHS = {Period.day: timedelta(days=1), Period.week: timedelta(days=7), Period.month: timedelta(days=30)}

# The monitor's metrics the report reads (resource "api"), with their unit.
HISTORY_METRICS: dict[str, str] = {
    "response_time_p50_ms": "ms",
    "response_time_p95_ms": "ms",
    "error_rate_pct": "%",
    "throughput_rps": "req/s",
}


class Window(BaseModel):
    start: datetime
    end: datetime


def windows(end: datetime, period: Period) -> tuple[Window, Window]:
    """This period, ending at ``end``, and the one before it (a month is 30 days)."""
    length = LENGTHS[period]
    return Window(start=end - length, end=end), Window(start=end - 2 * length, end=end - length)


class SampleStats(BaseModel):
    """One metric's samples in one period."""

    samples: int
    mean: float | None = None
    median: float | None = None
    min: float | None = None
    max: float | None = None

    @property
    def enough(self) -> bool:
        return self.mean is not None


def sample_stats(points: Sequence[tuple[datetime, float]], window: Window, min_samples: int) -> SampleStats:
    values = [value for at, value in points if window.start <= at < window.end]
    if len(values) < min_samples:
        return SampleStats(samples=len(values))
    return SampleStats(samples=len(values), mean=statistics.fmean(values), median=statistics.median(values),
                       min=min(values), max=max(values))


class Change(BaseModel):
    """A figure this period against the previous one."""

    current: float | None
    previous: float | None
    change: float | None = None  # current - previous
    change_pct: float | None = None

    @property
    def text(self) -> str:
        if self.current is None:
            return INSUFFICIENT
        if self.previous is None:
            return f"{self.current:,.2f} (previous: {INSUFFICIENT})"
        pct = f", {self.change_pct:+.1f} %" if self.change_pct is not None else ""
        return f"{self.current:,.2f} ({self.change:+,.2f}{pct} vs {self.previous:,.2f})"


def compare(current: float | None, previous: float | None) -> Change:
    if current is None or previous is None:
        return Change(current=current, previous=previous)
    return Change(current=current, previous=previous, change=current - previous,
                  change_pct=100.0 * (current - previous) / previous if previous else None)


class EndpointFigures(BaseModel):
    """What the log table says about one endpoint (or all rows: endpoint None) in one period."""

    endpoint: str | None
    rows: int
    errors: int
    timed: int  # rows with a numeric response time
    p50: float | None = None
    p95: float | None = None

    @property
    def error_pct(self) -> float | None:
        return 100.0 * self.errors / self.rows if self.rows else None


def sufficient(figures: EndpointFigures | None, min_rows: int) -> EndpointFigures | None:
    """The figures with their percentiles dropped when too few rows carry a response time."""
    if figures is None:
        return None
    if figures.timed < min_rows:
        return figures.model_copy(update={"p50": None, "p95": None})
    return figures


def endpoint_rows(current: Sequence[EndpointFigures], previous: Sequence[EndpointFigures], min_rows: int) -> list[dict[str, Any]]:
    """One row per endpoint of this period (the busiest first), against the previous period."""
    before = {f.endpoint: f for f in previous}
    rows = []
    for now in current:
        then = sufficient(before.get(now.endpoint), min_rows)
        now = sufficient(now, min_rows)  # type: ignore[assignment]
        assert now is not None
        rows.append({
            "endpoint": now.endpoint if now.endpoint is not None else "(all rows)",
            "rows": now.rows, "previous_rows": then.rows if then else 0,
            "p50_ms": compare(now.p50, then.p50 if then else None).model_dump(),
            "p95_ms": compare(now.p95, then.p95 if then else None).model_dump(),
            "error_pct": compare(now.error_pct, then.error_pct if then else None).model_dump(),
            "timed_rows": now.timed,
            "note": "" if now.p95 is not None else f"{INSUFFICIENT}: {now.timed} rows with a response time (needs {min_rows})",
        })
    return rows


def history_figures(points: dict[str, list[tuple[datetime, float]]], current: Window, previous: Window,
                    min_samples: int) -> dict[str, dict[str, Any]]:
    """Per monitor metric: this period's and the previous one's sample statistics, compared on the mean."""
    out: dict[str, dict[str, Any]] = {}
    for metric, unit in HISTORY_METRICS.items():
        now = sample_stats(points.get(metric, []), current, min_samples)
        then = sample_stats(points.get(metric, []), previous, min_samples)
        out[metric] = {"unit": unit, "current": now.model_dump(), "previous": then.model_dump(),
                       "mean": compare(now.mean, then.mean).model_dump(),
                       "status": "ok" if now.enough else f"{INSUFFICIENT}: {now.samples} samples (needs {min_samples})"}
    return out


def throughput_verdict(stats: dict[str, Any]) -> str:
    """The period's requests per second against §7.1's minimum 100 and target 1000."""
    now = stats["current"]
    if now["mean"] is None:
        return f"{INSUFFICIENT}: {now['samples']} throughput samples (RUNBOOK_MONITOR__METRIC_FIELDS__THROUGHPUT_RPS: does the platform report one?)"
    peak, mean = now["max"], now["mean"]
    if peak >= THROUGHPUT_TARGET:
        level = f"reached §7.1's target {THROUGHPUT_TARGET:g} req/s"
    elif peak >= THROUGHPUT_MINIMUM:
        level = f"above §7.1's minimum {THROUGHPUT_MINIMUM:g}, below the target {THROUGHPUT_TARGET:g} req/s"
    else:
        level = f"below §7.1's minimum {THROUGHPUT_MINIMUM:g} req/s (the traffic never asked for more: only a load test shows the capacity)"
    return f"mean {mean:,.1f}, peak {peak:,.1f} req/s: {level}"


def performance_checks(history: dict[str, dict[str, Any]], overall: dict[str, Any] | None) -> list["CheckResult"]:
    """Warnings only (§7.1's warning levels; the monitor pages): a report never fails for them."""
    from runbook.checks import CheckResult

    checks = []
    error = history["error_rate_pct"]["current"]["mean"]
    p95 = history["response_time_p95_ms"]["current"]["mean"]
    checks.append(CheckResult(name="performance:error-rate", critical=False, ok=error is None or error < ERROR_RATE_WARNING,
                              detail=INSUFFICIENT if error is None else f"mean {error:.2f} % (warning from {ERROR_RATE_WARNING:g} %, §7.1)"))
    checks.append(CheckResult(name="performance:p95", critical=False, ok=p95 is None or p95 < RESPONSE_WARNING_MS,
                              detail=INSUFFICIENT if p95 is None else f"mean p95 {p95:,.0f} ms (warning from {RESPONSE_WARNING_MS:g} ms, §7.1)"))
    rps = history["throughput_rps"]["current"]
    checks.append(CheckResult(name="performance:throughput", critical=False, ok=rps["max"] is None or rps["max"] >= THROUGHPUT_MINIMUM,
                              detail=throughput_verdict(history["throughput_rps"])))
    if overall is not None:
        logged = overall["p95_ms"]["current"]
        checks.append(CheckResult(name="performance:logged-p95", critical=False, ok=logged is None or logged < RESPONSE_WARNING_MS,
                                  detail=overall["note"] or f"p95 {logged:,.0f} ms over {overall['timed_rows']} log rows"))
    return checks


def chart_series(points: dict[str, list[tuple[datetime, float]]], current: Window, previous: Window) -> dict[str, tuple[list[tuple[float, float]], list[tuple[float, float]]]]:
    """Per metric: (hours from the period's start, value) for this period and the previous one."""
    def hours(window: Window, metric: str) -> list[tuple[float, float]]:
        return [((at - window.start).total_seconds() / 3600, value) for at, value in points.get(metric, []) if window.start <= at < window.end]

    return {metric: (hours(current, metric), hours(previous, metric)) for metric in HISTORY_METRICS}


def report_markdown(report: dict[str, Any], chart: str, checks_table: str) -> str:
    """The markdown artifact: the chart, the monitor's figures, the log table's per endpoint."""
    def cell(change: dict[str, Any]) -> str:
        return Change(**change).text

    lines = [f"# Performance report of {report['instance']} ({report['period']}): {report.get('outcome', '')}", "",
             f"This {report['period']}: {report['start']} to {report['end']}; the previous: {report['previous_start']} to {report['start']}.",
             "", chart, "", "## The monitor's history (platform-wide)", "",
             "| metric | samples | mean (vs previous) | median | max |", "|---|---:|---|---:|---:|"]
    for metric, figures in report["history"].items():
        now = figures["current"]
        if now["mean"] is None:
            lines.append(f"| {metric} | {now['samples']} | {figures['status']} | - | - |")
        else:
            lines.append(f"| {metric} ({figures['unit']}) | {now['samples']} | {cell(figures['mean'])} | {now['median']:,.2f} | {now['max']:,.2f} |")
    lines += ["", f"**Throughput (§7.1):** {report['throughput']}", "", f"## Log rows ({report['log_table']})", ""]
    if report["endpoint_field"] is None:
        lines.append("No per-endpoint breakdown: RUNBOOK_PERFORMANCE__ENDPOINT is `none` (name the column or json path of a row's endpoint).")
        lines.append("")
    if report["response_time_field"] is None:
        lines.append("RUNBOOK_LOGS__RESPONSE_TIME is `none`: the rows carry no response time.")
    lines += ["| endpoint | rows | p50 ms | p95 ms | error % | note |", "|---|---:|---|---|---|---|"]
    for row in report["endpoints"]:
        name = str(row["endpoint"]).replace("|", "\\|").replace("`", "'")[:120]
        lines.append(f"| `{name}` | {row['rows']} | {cell(row['p50_ms'])} | {cell(row['p95_ms'])} | {cell(row['error_pct'])} | {row['note']} |")
    lines += ["", "## Checks", "", checks_table]
    return "\n".join(lines)
