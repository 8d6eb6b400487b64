"""The performance report's pure rules (runbook/performance.py): periods, statistics,
comparison, insufficient data and §7.1's throughput levels, without I/O."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from runbook import performance
from runbook.performance import EndpointFigures, Period, compare, endpoint_rows, history_figures, sample_stats, windows

END = datetime(2026, 12, 1, tzinfo=timezone.utc)


def hourly(window: performance.Window, value: float) -> list[tuple[datetime, float]]:
    hours = int((window.end - window.start).total_seconds() // 3600)
    return [(window.start + timedelta(hours=h), value) for h in range(hours)]


def test_a_period_and_the_one_before_it() -> None:
    current, previous = windows(END, Period.week)
    assert (current.start, current.end, previous.start, previous.end) == (
        END - timedelta(days=7), END, END - timedelta(days=14), END - timedelta(days=7))
    assert windows(END, Period.month)[0].start == END - timedelta(days=30)


def test_statistics_of_a_period_and_too_few_samples() -> None:
    current, _ = windows(END, Period.day)
    stats = sample_stats([(current.start, 1.0), (current.start + timedelta(hours=1), 3.0), (END, 99.0)], current, 2)
    assert (stats.samples, stats.mean, stats.median, stats.max) == (2, 2.0, 2.0, 3.0)  # the end is not in the period
    assert sample_stats([(current.start, 1.0)], current, 2).mean is None


def test_the_comparison_and_what_it_says_when_a_side_is_missing() -> None:
    change = compare(400.0, 500.0)
    assert change.change == -100 and change.change_pct == pytest.approx(-20.0)
    assert "-20.0 %" in change.text
    assert compare(None, 500.0).text == "insufficient data" and "previous: insufficient data" in compare(1.0, None).text


def test_history_figures_and_the_throughput_levels_of_7_1() -> None:
    current, previous = windows(END, Period.week)
    points = {"throughput_rps": hourly(current, 150.0) + hourly(previous, 120.0), "error_rate_pct": hourly(current, 0.5)[:3]}
    figures = history_figures(points, current, previous, 4)
    assert figures["throughput_rps"]["mean"]["change"] == pytest.approx(30.0)
    assert figures["error_rate_pct"]["current"]["mean"] is None and "insufficient data: 3 samples" in figures["error_rate_pct"]["status"]
    assert "above §7.1's minimum 100" in performance.throughput_verdict(figures["throughput_rps"])
    low = history_figures({"throughput_rps": hourly(current, 40.0)}, current, previous, 4)["throughput_rps"]
    assert "below §7.1's minimum 100" in performance.throughput_verdict(low)
    high = history_figures({"throughput_rps": hourly(current, 1200.0)}, current, previous, 4)["throughput_rps"]
    assert "reached §7.1's target 1000" in performance.throughput_verdict(high)
    none = history_figures({}, current, previous, 4)["throughput_rps"]
    assert performance.throughput_verdict(none).startswith("insufficient data")
    checks = {c.name: c for c in performance.performance_checks(figures, None)}
    assert checks["performance:throughput"].ok and checks["performance:error-rate"].ok
    slow = history_figures({"throughput_rps": hourly(current, 40.0)}, current, previous, 4)
    assert not {c.name: c for c in performance.performance_checks(slow, None)}["performance:throughput"].ok


def test_endpoints_with_too_few_timed_rows_have_no_percentiles() -> None:
    current = [EndpointFigures(endpoint=None, rows=100, errors=5, timed=100, p50=10, p95=50),
               EndpointFigures(endpoint="/api/health", rows=5, errors=0, timed=5, p50=1, p95=2)]
    previous = [EndpointFigures(endpoint=None, rows=80, errors=8, timed=80, p50=20, p95=40)]
    overall, health = endpoint_rows(current, previous, 20)
    assert overall["endpoint"] == "(all rows)" and overall["p95_ms"]["change"] == 10 and overall["error_pct"]["change"] == pytest.approx(-5.0)
    assert health["p95_ms"]["current"] is None and health["note"].startswith("insufficient data: 5 rows")
    assert health["previous_rows"] == 0


def test_the_endpoint_field_is_checked_against_the_log_table_and_none_means_no_breakdown() -> None:
    from runbook.errors import ConfigError
    from runbook.logs import resolve_endpoint
    from runbook.settings import LogsSettings

    columns = {"level": "text", "message": "text", "context": "jsonb", "path": "text", "created_at": "timestamp with time zone"}
    logs = LogsSettings()
    assert resolve_endpoint("none", logs, columns) is None
    assert resolve_endpoint("path", logs, columns).display == "path"  # type: ignore[union-attr]
    assert resolve_endpoint("context.request.path", logs, columns).path == ("request", "path")  # type: ignore[union-attr]
    with pytest.raises(ConfigError, match="RUNBOOK_PERFORMANCE__ENDPOINT: public.system_logs has no column 'route'"):
        resolve_endpoint("route", logs, columns)
