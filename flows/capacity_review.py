"""``capacity-review`` (runbook §7, §4.3's monthly capacity-plan review, §8): the trends
of the database size, connections, disk, CPU and memory in the monitor's history; the
days until each threshold of §7.1-§7.2; the scale-up signal; the backup and restore
durations at the projected size against the RPO and RTO of §6.3; the tables' sizes,
recorded so that their history builds up."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from pydantic import BaseModel, Field

from runbook import capacity
from runbook.calendar import HEAVY_MINUTES
from runbook.charts import capacity_chart, image_markdown
from runbook.checks import checks_markdown, outcome
from runbook.dr import DEFAULT_RPO, DEFAULT_RTO
from runbook.reports import artifact_key, conclude, expected_failures
from runbook.target import prepare
from runbook.times import in_team_time, show
from tasks.alerting import state_database
from tasks.backups import read_catalog_task, read_drill_history
from tasks.capacity import read_metric_history, read_platform_sizes, record_table_sizes
from tasks.runs import read_run_durations
from tasks.store import open_backup_store, store_report


BUDGET_DAYS = 35  # the heavy runs whose durations are held against the calendar: a month's, and the monthly run's


class CapacityReviewParameters(BaseModel):
    """When the review looks from."""

    end: datetime | None = Field(None, description="Review as of this time (default: now); without an offset, in RUNBOOK_TIMEZONE.")


@flow(name="capacity-review")
@expected_failures
def capacity_review(params: CapacityReviewParameters = CapacityReviewParameters()) -> Any:
    """Capacity-plan review (§7, §4.3 monthly, §8): least-squares trends (slope per day,
    r²) of database_size_gb, database_connections_pct, disk_pct, cpu_pct and memory_pct
    from the monitor's metric history; the days until 80 GB (§7.2), disk 80/90 %,
    connections 80 %, CPU/memory 80 % (§7.1-§7.2); the scale-up signal (CPU and memory
    over 80 %); the hourly full dump and the restore at the projected size against the
    1 h RPO and 4 h RTO (§6.3), from the throughputs the backups and drills measured.
    The heavy jobs' recent run durations (and the backup's at the projected size)
    against the minutes the calendar gives each (runbook/calendar.py HEAVY_MINUTES).
    Too few points or a poor fit is "insufficient data", a shrinking metric "not
    growing". Table sizes are read now and recorded (runbook's table_size_history). A
    chart (also in the backup store) and a status table are left on the run; what it
    finds ahead are warnings: the review itself never fails for them."""
    settings, target = prepare()
    policy = settings.capacity
    logger = get_run_logger()
    now = in_team_time(params.end, settings.timezone) if params.end else datetime.now(timezone.utc)
    since = now - timedelta(days=policy.history_days)
    state_dsn, schema = state_database(settings, target), settings.alerts.state_schema

    resources = {"instance": target.instance, "api": "api"}
    history = read_metric_history(
        state_dsn, schema, {m: resources[r] for m, _, r in capacity.REVIEWED}, since, now, settings.connect_timeout
    ).metrics
    sizes = read_platform_sizes(target.dsn, now, settings.connect_timeout, settings.statement_timeout)
    table_history = record_table_sizes(state_dsn, schema, target.instance, sizes, policy.table_history_days,
                                       now - timedelta(days=policy.history_days), settings.connect_timeout)

    store = None
    manifests, drills = [], []
    if target.store is not None:
        store = open_backup_store(target.store, settings.s3_endpoint_url, settings.backup.part_size_mb)
        manifests, _ = read_catalog_task(store, target.instance)
        drills = read_drill_history(store, target.instance, 50)
    else:
        logger.warning("No backup store (%s): no measured throughput", target.store_problem)

    reviews = [capacity.review_metric(m, unit, history.get(m, []), capacity.THRESHOLDS[m], now, policy) for m, unit, _ in capacity.REVIEWED]
    by_metric = {r.metric: r for r in reviews}
    scale = capacity.scale_up_signal(by_metric["cpu_pct"], by_metric["memory_pct"])
    backup_rate = capacity.backup_throughput(manifests)
    restore_rate = capacity.restore_throughput(drills)
    if store is None:
        reason = f"insufficient data: no backup store ({target.store_problem})"
        backup_rate = backup_rate.model_copy(update={"detail": reason})
        restore_rate = restore_rate.model_copy(update={"detail": reason})
    size = by_metric["database_size_gb"]
    windows = [capacity.review_window(backup_rate, DEFAULT_RPO, size, now, policy),
               capacity.review_window(restore_rate, DEFAULT_RTO, size, now, policy)]
    # the calendar's budgets: the backups' own durations from their manifests, the periods' from the server's runs
    durations = read_run_durations([n for n in HEAVY_MINUTES if n != "backup"], now - timedelta(days=BUDGET_DAYS), now)
    durations["backup"] = capacity.backup_minutes(manifests, now - timedelta(days=BUDGET_DAYS), now)
    budgets = capacity.budget_reviews(durations, HEAVY_MINUTES, windows[0], BUDGET_DAYS)
    checks = capacity.review_checks(reviews, scale, windows, policy.horizon_days, budgets)

    png = capacity_chart(reviews, history, now, policy.horizon_days)
    chart_key = None
    if store is not None:
        chart_key = store_report(store, f"{target.instance}/reports/capacity-review_{now.astimezone(timezone.utc):%Y%m%d_%H%M%S}.png", png)

    zone = settings.timezone
    status = capacity.status_rows(reviews, zone)
    report: dict[str, Any] = {
        "instance": target.instance,
        "since": show(since, zone), "until": show(now, zone),
        "policy": f"at least {policy.min_points} points over {policy.min_days:g} days and r² {policy.min_r2:g}",
        "metrics": {r.metric: {"status": r.status, "current": r.current, "points": r.points, "span_days": r.span_days,
                               "slope_per_day": r.slope_per_day, "r2": r.r2, "detail": r.detail,
                               "thresholds": [{"value": e.threshold.value, "label": e.threshold.label, "status": e.status,
                                               "days": e.days, "on": show(e.on, zone) if e.on else None} for e in r.etas]}
                    for r in reviews},
        "scale_up": scale.model_dump(),
        "windows": [w.model_dump() for w in windows],
        "database_bytes": sizes.database_bytes,
        "tables": capacity.table_rows(table_history, sizes.tables, now, policy),
        "calendar": [b.model_dump() for b in budgets],
        "chart": chart_key,
    }
    report["outcome"] = outcome(checks)
    create_markdown_artifact(
        key=artifact_key("capacity-review", target.instance),
        markdown=capacity.review_markdown(report, status, image_markdown(png, "capacity: history, trend and thresholds"),
                                          checks_markdown(checks))
        + (f"\n\nThe chart is also in the backup store: `{chart_key}`." if chart_key else ""),
        description=f"Capacity review of {target.instance}: trends, thresholds, RPO/RTO projections and the chart",
    )
    create_table_artifact(
        key=artifact_key("capacity-status", target.instance), table=status,
        description=f"Each metric's status against its §7.1-§7.2 thresholds ({target.instance})",
    )
    statuses = ", ".join(f"{r.metric} {r.status}" for r in reviews)
    return conclude(checks, report, passed=f"capacity review of {target.instance}: {statuses}", failed_as="capacity review failed")
