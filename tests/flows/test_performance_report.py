"""performance-report as one real flow run on the seeded platform: the monitor's history
with known values, the seeded system_logs broken down by a configured field, the chart."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
from prefect.artifacts import Artifact

from flows.performance_report import PerformanceReportParameters, performance_report
from runbook.reports import artifact_key
from tasks import alertstate
from tests.conftest import ANCHOR, Platform
from tests.flows.test_log_report import percentile_cont, seeded_window


def test_a_week_against_the_previous_from_the_history_and_per_endpoint_from_the_logs(
    platform: Platform, monkeypatch: pytest.MonkeyPatch
) -> None:
    # the sandbox's rows carry no path: the action stands in for the endpoint field
    monkeypatch.setenv("RUNBOOK_PERFORMANCE__ENDPOINT", "context.action")
    hours = [ANCHOR - timedelta(hours=h) for h in range(1, 14 * 24 + 1)]  # two weeks, hourly, before the end
    this_week = [at for at in hours if at >= ANCHOR - timedelta(days=7)]
    last_week = [at for at in hours if at < ANCHOR - timedelta(days=7)]
    rows = ([("throughput_rps", at, 150.0) for at in this_week] + [("throughput_rps", at, 120.0) for at in last_week]
            + [("response_time_p95_ms", at, 400.0) for at in this_week] + [("response_time_p95_ms", at, 500.0) for at in last_week]
            + [("error_rate_pct", at, 0.5) for at in this_week] + [("error_rate_pct", at, 2.0) for at in last_week[:2]])
    with platform.connect() as conn:
        alertstate.ensure_schema(conn, "runbook_alerting")
        with conn.cursor() as cur:
            cur.executemany("INSERT INTO runbook_alerting.metric_history (metric, resource, at, value) VALUES (%s, 'api', %s, %s)", rows)

    state = performance_report(PerformanceReportParameters(period="week", end=ANCHOR), return_state=True)
    report = state.result()
    assert state.is_completed(), state.message

    history = report["history"]
    assert history["throughput_rps"]["mean"]["current"] == pytest.approx(150.0) and history["throughput_rps"]["mean"]["change"] == pytest.approx(30.0)
    assert history["response_time_p95_ms"]["mean"]["change_pct"] == pytest.approx(-20.0)
    assert history["error_rate_pct"]["mean"]["previous"] is None  # 2 samples last week: insufficient, not a figure
    assert history["response_time_p50_ms"]["status"].startswith("insufficient data: 0 samples")
    assert "above §7.1's minimum 100" in report["throughput"]

    # the log rows: all of them first, then each action, against the oracle of sandbox/seed.sql
    week = seeded_window(7 * 24)
    overall = report["endpoints"][0]
    assert overall["endpoint"] == "(all rows)" and overall["rows"] == len(week)
    times = [float(r["response_time"]) for r in week]
    assert overall["p95_ms"]["current"] == pytest.approx(percentile_cont(times, 0.95))
    assert overall["p50_ms"]["current"] == pytest.approx(percentile_cont(times, 0.5))
    by_action = {row["endpoint"]: row for row in report["endpoints"][1:]}
    assert set(by_action) == {"view", "alert.create", "alert.resolve", "login", "checkout"}
    login = [float(r["response_time"]) for r in week if r["action"] == "login"]
    assert by_action["login"]["rows"] == len(login) and by_action["login"]["p95_ms"]["current"] == pytest.approx(percentile_cont(login, 0.95))
    previous_week = len(seeded_window(14 * 24)) - len(week)
    assert overall["previous_rows"] == previous_week

    markdown = Artifact.get(artifact_key("performance-report", platform.database, "week"))
    assert markdown is not None and "data:image/png;base64," in str(markdown.data)
    assert Artifact.get(artifact_key("performance-endpoints", platform.database, "week")) is not None
    assert (Path(platform.store_url) / report["chart"]).read_bytes()[:4] == b"\x89PNG"


def test_without_an_endpoint_field_the_logs_give_the_totals_only(platform: Platform, monkeypatch: pytest.MonkeyPatch) -> None:
    """RUNBOOK_PERFORMANCE__ENDPOINT unset (none, the default): the all-rows figures, no breakdown, said so."""
    monkeypatch.delenv("RUNBOOK_PERFORMANCE__ENDPOINT", raising=False)
    state = performance_report(PerformanceReportParameters(period="day", end=ANCHOR), return_state=True)
    assert state.is_completed(), state.message
    report = state.result()
    day = seeded_window(24)
    assert [row["endpoint"] for row in report["endpoints"]] == ["(all rows)"]
    assert report["endpoints"][0]["rows"] == len(day)
    assert report["endpoints"][0]["p95_ms"]["current"] == pytest.approx(percentile_cont([float(r["response_time"]) for r in day], 0.95))
