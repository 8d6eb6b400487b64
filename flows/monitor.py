"""``monitor`` (runbook §2, §7.1-§7.2, §9), every minute: collect the signals, evaluate
the rules, notify, escalate, and say what could not be delivered."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact
from pydantic import BaseModel, Field

from runbook.alerting.report import incident_markdown, monitor_checks, monitor_markdown
from runbook.checks import CheckResult
from runbook.errors import TransientError
from runbook.reports import artifact_key, conclude, expected_failures
from runbook.target import prepare
from tasks.alerting import (
    deliver_all,
    emergency_notify,
    evaluate_alerts,
    incident_timelines,
    load_alerting,
    run_link,
    state_database,
    state_task,
)
from tasks.capacity import record_table_sizes_if_due
from tasks.signals import collect_signals


def utcnow() -> datetime:
    """The monitor's clock (tests replace it: escalation is tested on an injected clock)."""
    return datetime.now(timezone.utc)


class MonitorParameters(BaseModel):
    """One evaluation. The rules, channels and chain are settings (RUNBOOK_ALERTS__...)."""

    deliver: bool = Field(True, description="Deliver the notifications now (off: only evaluate and queue them in the ledger).")


@flow(name="monitor")
@expected_failures
def monitor(params: MonitorParameters = MonitorParameters()) -> Any:
    """Monitoring (§2, §7.1-§7.2) and escalation (§9): the platform's metrics, the health
    endpoint, the database, backup freshness and runbook's own scheduled runs, checked
    against the rules; a firing alert notifies once, repeats, resolves; a critical one
    opens an incident paged up the chain until acknowledged. Ends Failed when a
    notification could not be delivered, naming it."""
    logger = get_run_logger()
    settings, target = prepare()
    alerting = load_alerting(settings, target)
    now = utcnow()
    signals = collect_signals(settings, target, now=now)
    try:
        cycle = state_task(evaluate_alerts, alerting)(alerting, signals.samples, now, run_link())
    except TransientError as err:
        # The state database does not answer (by default it is the platform's own): page
        # directly, at most once per repeat interval, and fail the run.
        sent = emergency_notify(alerting, now, str(err))
        logger.error("Alert state unreachable: %s; direct page: %s", err, sent)
        raise
    attempts, undelivered = deliver_all(alerting, now) if params.deliver else ([], [])
    timelines = incident_timelines(alerting, cycle)
    checks = monitor_checks(signals.skipped, cycle, attempts, undelivered, alerting.warnings)
    table_sizes = record_sizes_when_due(settings, target, signals, now)
    if table_sizes is not None:
        checks.append(table_sizes)
    report = {
        "instance": target.instance, "evaluated": cycle.evaluated, "skipped": cycle.skipped,
        "firing": cycle.firing, "notices": cycle.notices, "pages": cycle.pages, "opened": cycle.opened, "resolved": cycle.resolved,
        "deliveries": [a.__dict__ for a in attempts], "undelivered": undelivered, "sources_skipped": signals.skipped,
        "table_sizes": table_sizes.detail if table_sizes else "off (RUNBOOK_CAPACITY__TABLE_SIZES_EVERY_HOURS=0)",
    }
    create_markdown_artifact(key=artifact_key("monitor", target.instance), markdown=monitor_markdown(report, settings.timezone),
                             description="Alerts firing, notifications, pages and deliveries of this evaluation")
    for incident_id, rows in timelines.items():
        create_markdown_artifact(key=artifact_key("incident", target.instance, str(incident_id)),
                                 markdown=incident_markdown(incident_id, rows, settings.timezone),
                                 description=f"Timeline of incident #{incident_id}")
    firing = len(cycle.firing)
    return conclude(
        checks, report,
        passed=f"{cycle.evaluated} evaluations, {firing} alert(s) firing, {len(attempts)} delivery attempt(s), all delivered"
        if not cycle.skipped else f"evaluation skipped ({cycle.skipped}); {len(attempts)} delivery attempt(s)",
        failed_as="notifications not delivered",
    )


def record_sizes_when_due(settings: Any, target: Any, signals: Any, now: datetime) -> CheckResult | None:
    """The tables' sizes for the capacity review (§7), once a day by default, after the
    alerts are out, and only when this cycle's database source found the database up.
    A failure here is a warning, tried again at the next run: it never holds up an alert."""
    every = settings.capacity.table_sizes_every_hours
    if not every:
        return None
    try:
        up = signals.value("database_up", target.instance) == 1.0
    except KeyError:
        up = False
    if not up:
        return CheckResult(name="table-sizes", ok=True, critical=False,
                           detail="not recorded: the database source did not find the database up in this run")
    try:
        done = record_table_sizes_if_due(
            target.dsn, state_database(settings, target), settings.alerts.state_schema, target.instance, now,
            timedelta(hours=every), settings.capacity.table_history_days, settings.connect_timeout, settings.statement_timeout,
        )
    except Exception as err:  # noqa: BLE001 - psycopg's errors too: a warning, never the monitor's failure
        why = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        return CheckResult(name="table-sizes", ok=False, critical=False, detail=f"table sizes not recorded: {why}")
    return CheckResult(name="table-sizes", ok=True, critical=False, detail=done)
