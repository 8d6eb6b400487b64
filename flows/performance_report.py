"""``performance-report`` (runbook §4.1 daily, §8's weekly detailed report, §7.1): a day,
week or month against the one before: the platform-wide error rate, p50/p95 response
time and requests per second from the monitor's metric history, and p50/p95 and the
error share per endpoint from the log table, with a chart of both periods."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from prefect import flow
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from pydantic import BaseModel, Field

from runbook import performance
from runbook.charts import image_markdown, period_chart
from runbook.checks import checks_markdown, outcome
from runbook.logs import resolve_endpoint, resolve_shape, split_table
from runbook.masking import mask_forms, secret_forms_sorted
from runbook.reports import artifact_key, conclude, expected_failures
from runbook.target import prepare
from runbook.times import in_team_time, show
from tasks.alerting import state_database
from tasks.capacity import read_metric_history
from tasks.logs import read_endpoint_figures, read_log_columns
from tasks.shell import known_secrets
from tasks.store import open_backup_store, store_report


class PerformanceReportParameters(BaseModel):
    """The period to report on."""

    period: performance.Period = Field(performance.Period.week, description="day, week or month (30 days), against the one before.")
    end: datetime | None = Field(None, description="End of the period (default: now); without an offset, in RUNBOOK_TIMEZONE.")


@flow(name="performance-report")
@expected_failures
def performance_report(params: PerformanceReportParameters = PerformanceReportParameters()) -> Any:
    """Performance report (§4.1, §8, §7.1) of a day, week or month against the previous
    one: mean/median/max of the error rate, p50 and p95 response time and requests per
    second (against §7.1's minimum 100 and target 1000 req/s) from the monitor's metric
    history; p50/p95 and the error share of the log rows, overall and per endpoint
    (RUNBOOK_PERFORMANCE__ENDPOINT; none: no breakdown), computed in PostgreSQL. Too
    few samples or rows is "insufficient data", never a figure. A chart of both periods
    (in the run's artifact and the backup store). §7.1's warning levels warn; the
    report itself never fails for them."""
    settings, target = prepare()
    perf, logs = settings.performance, settings.logs
    end = in_team_time(params.end, settings.timezone) if params.end else datetime.now(timezone.utc)
    current, previous = performance.windows(end, params.period)

    history = read_metric_history(state_database(settings, target), settings.alerts.state_schema,
                                  {m: "api" for m in performance.HISTORY_METRICS}, previous.start, end, settings.connect_timeout).metrics
    columns = read_log_columns(target.dsn, split_table(logs.table), settings.connect_timeout)
    shape = resolve_shape(logs, columns)
    assert columns is not None
    endpoint = resolve_endpoint(perf.endpoint, logs, columns)
    figures = {
        name: read_endpoint_figures(target.dsn, shape, endpoint, window.start, window.end, perf.top_endpoints,
                                    settings.connect_timeout, settings.statement_timeout)
        for name, window in (("current", current), ("previous", previous))
    }
    forms = secret_forms_sorted(known_secrets(settings))  # a path in a log row may hold a token
    for rows in figures.values():
        for row in rows:
            row.endpoint = mask_forms(row.endpoint, forms) if row.endpoint and forms else row.endpoint

    figures_by_history = performance.history_figures(history, current, previous, perf.min_samples)
    endpoints = performance.endpoint_rows(figures["current"], figures["previous"], perf.min_rows)
    overall = endpoints[0] if endpoints else None
    checks = performance.performance_checks(figures_by_history, overall)

    png = period_chart(performance.chart_series(history, current, previous), params.period.value,
                       {"throughput_rps": [(performance.THROUGHPUT_MINIMUM, "§7.1 minimum 100 req/s"),
                                           (performance.THROUGHPUT_TARGET, "§7.1 target 1000 req/s")]})
    chart_key = None
    if target.store is not None:
        store = open_backup_store(target.store, settings.s3_endpoint_url, settings.backup.part_size_mb)
        stamp = f"{end.astimezone(timezone.utc):%Y%m%d_%H%M%S}"
        chart_key = store_report(store, f"{target.instance}/reports/performance-report_{params.period.value}_{stamp}.png", png)

    zone = settings.timezone
    report: dict[str, Any] = {
        "instance": target.instance, "period": params.period.value,
        "start": show(current.start, zone), "end": show(end, zone), "previous_start": show(previous.start, zone),
        "history": figures_by_history,
        "throughput": performance.throughput_verdict(figures_by_history["throughput_rps"]),
        "log_table": shape.display,
        "endpoint_field": endpoint.display if endpoint else None,
        "response_time_field": shape.response_time.display if shape.response_time else None,
        "endpoints": endpoints,
        "chart": chart_key,
    }
    report["outcome"] = outcome(checks)
    create_markdown_artifact(
        key=artifact_key("performance-report", target.instance, params.period.value),
        markdown=performance.report_markdown(report, image_markdown(png, f"this {params.period.value} against the previous"),
                                             checks_markdown(checks))
        + (f"\n\nThe chart is also in the backup store: `{chart_key}`." if chart_key else ""),
        description=f"Performance of {target.instance}, this {params.period.value} against the previous",
    )
    create_table_artifact(
        key=artifact_key("performance-endpoints", target.instance, params.period.value),
        table=[{"endpoint": r["endpoint"], "rows": r["rows"], "p50_ms": performance.Change(**r["p50_ms"]).text,
                "p95_ms": performance.Change(**r["p95_ms"]).text, "error_pct": performance.Change(**r["error_pct"]).text,
                "note": r["note"]} for r in endpoints],
        description=f"p50/p95 and error share per endpoint, this {params.period.value} against the previous",
    )
    return conclude(
        checks, report,
        passed=f"performance report of {target.instance} ({params.period.value}): "
        f"p95 {performance.Change(**figures_by_history['response_time_p95_ms']['mean']).text} ms, "
        f"errors {performance.Change(**figures_by_history['error_rate_pct']['mean']).text} %",
        failed_as="performance report failed",
    )
