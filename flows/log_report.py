"""``log-report`` (runbook §2.4-§2.5, §8's daily error-log review): the platform's
``system_logs`` over a window (the last 24 h by default): rows per level, the error rows
grouped by action and message, the top errors, and response-time percentiles."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any

from prefect import flow
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from pydantic import BaseModel, Field

from runbook.checks import checks_markdown, outcome
from runbook.logs import group_rows, log_checks, masked, report_dict, report_markdown, resolve_shape, split_table
from runbook.reports import artifact_key, conclude, expected_failures
from runbook.target import prepare
from runbook.times import in_team_time
from tasks.logs import read_log_columns, summarise_logs
from tasks.shell import known_secrets


class LogReportParameters(BaseModel):
    """The window of log rows to read."""

    hours: int = Field(24, ge=1, le=24 * 90, description="How many hours back from the end (default 24: the daily review of §8).")
    end: datetime | None = Field(
        None, description="End of the window (default: now); without an offset, in RUNBOOK_TIMEZONE."
    )
    top: int | None = Field(None, ge=1, le=1000, description="Error groups and top errors shown (default RUNBOOK_LOGS__TOP, 10).")


@flow(name="log-report")
@expected_failures
def log_report(params: LogReportParameters = LogReportParameters()) -> Any:
    """Log analysis (§2.4-§2.5, §8's daily error-log review) of the platform's
    system_logs over the last 24 hours (or the window asked for): rows per level, the
    error rows grouped by action and message (numbers and ids normalised) with their
    count, first and last time, the top errors, and the p50/p90/p95/p99/max of
    response_time over the rows that carry one, all computed in PostgreSQL. The fields'
    places are RUNBOOK_LOGS__* settings, checked against the catalog before any row is
    read. Many errors or a slow p95 are warnings: the report itself never fails for them."""
    settings, target = prepare()
    logs = settings.logs
    end = in_team_time(params.end, settings.timezone) if params.end else datetime.now(timezone.utc)
    start = end - timedelta(hours=params.hours)
    columns = read_log_columns(target.dsn, split_table(logs.table), settings.connect_timeout)
    shape = resolve_shape(logs, columns)
    summary = summarise_logs(
        target.dsn, shape, start, end, params.top or logs.top, settings.connect_timeout, settings.statement_timeout
    )
    summary = masked(summary, known_secrets(settings))
    checks = log_checks(summary, shape, logs)
    report = {"instance": target.instance, "hours": params.hours, **report_dict(summary, shape, settings.timezone)}
    verdict = outcome(checks)
    create_markdown_artifact(
        key=artifact_key("log-report", target.instance),
        markdown=report_markdown(report, checks_markdown(checks), f"Log report of {target.instance}: {verdict}"),
        description=f"Errors, levels and response times in {shape.display}, last {params.hours} h",
    )
    create_table_artifact(
        key=artifact_key("log-report-errors", target.instance),
        table=group_rows(summary, settings.timezone) or [{"action": "-", "message": "no error rows", "rows": 0}],
        description=f"Error rows of {shape.display} by action and message, last {params.hours} h",
    )
    return conclude(
        checks, report,
        passed=f"log report of {shape.display}: {summary.rows} rows, {summary.errors} errors ({summary.error_pct:.1f} %): {verdict}",
        failed_as="log report found problems",
    )
