"""``notify-failure``: what Prefect's automations start when a runbook flow run fails or
crashes, or when no backup has completed for 75 minutes (prefect.yaml ``triggers``).
Server-side, so a run that dies with its process is still told; the notification goes
through the same alert states and ledger as the monitor's, so nothing is told twice."""

from __future__ import annotations

from datetime import datetime, timezone
from enum import Enum
from typing import Any

from prefect import flow, get_run_logger
from pydantic import BaseModel, Field

from runbook.alerting.messages import backup_unknown_message, run_failed_message
from runbook.alerting.model import Sample, Severity
from runbook.alerting.report import monitor_checks
from runbook.alerting.rules import ROUTING
from runbook.checks import CheckResult
from runbook.errors import ConfigError
from runbook.reports import artifact_key, conclude, expected_failures
from runbook.target import prepare
from tasks.alerting import (
    chain_problem,
    deliver_all,
    evaluate_event,
    load_alerting,
    queue_notification,
    run_link,
)
from tasks.alertstate import CycleReport
from tasks.runs import read_flow_run_summary
from tasks.signals import backup_age_task


class FailureSignal(str, Enum):
    flow_run = "flow-run"  # a runbook flow run Failed or Crashed
    backup_missing = "backup-missing"  # no Completed backup run for 75 minutes (a proactive trigger)


class FailureParameters(BaseModel):
    """What the automation saw."""

    signal: FailureSignal = FailureSignal.flow_run
    flow_run_id: str | None = Field(None, description="flow-run: the run, as its id or the event's prefect.flow-run.<id>.")


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


@flow(name="notify-failure")
@expected_failures
def notify_failure(params: FailureParameters = FailureParameters()) -> Any:
    """Tell the team that a runbook flow run failed or crashed (rule flow-run-failed, on
    the run's deployment), or that no backup completed for 75 minutes (rule
    backup-stale, checked against the store at once), through the delivery ledger."""
    logger = get_run_logger()
    settings, target = prepare()
    # a chain that could page nobody is reported (and fails this run), not a reason to stay quiet
    alerting = load_alerting(settings, target, need_chain=False)
    coverage = chain_problem(alerting)
    now = utcnow()
    if params.signal is FailureSignal.flow_run:
        if not params.flow_run_id:
            raise ConfigError("flow_run_id: the failed run is needed (the automation passes {{ event.resource.id }})")
        run = read_flow_run_summary(params.flow_run_id)
        resource = run["deployment"] or run["flow"] or "?"
        detail = f"run {run['name']} of {resource}: {run['state']}" + (f": {run['message']}" if run["message"] else "")
        logger.warning("%s", detail)
        if run["scheduled"]:
            # the alert the monitor resolves once a later run of this deployment completes
            cycle = evaluate_event(alerting, ["flow-run-failed"], [Sample(metric="deployment_failed", resource=resource, value=1,
                                                                          detail=detail)], now, run["url"])
        else:
            # a run started by hand (or by a pipeline): told once, no alert left firing
            rule = next(r for r in alerting.rules if r.name == "flow-run-failed")
            message = run_failed_message(rule, detail, resource, run["url"], now)
            queue_notification(alerting, f"run-failed:{run['id']}", [(c, None) for c in rule.routes()], message, now)
            cycle = None
    else:
        samples = backup_age_task(target.store_url, settings.s3_endpoint_url, target.instance, now, settings.monitor.store_timeout_seconds)
        age = next((s for s in samples if s.metric == "backup_age_minutes"), None)
        if age is None or age.value is None:
            # the store cannot say: page anyway, once an hour, rather than stay quiet
            message = backup_unknown_message(target.instance, age.detail if age else "", run_link(), now)
            queue_notification(alerting, f"backup-missing:{target.instance}:{now:%Y%m%d%H}",
                               [(c, None) for c in ROUTING[Severity.critical]], message, now)
            cycle = None
        else:
            cycle = evaluate_event(alerting, ["backup-stale"], [age], now, run_link())
    attempts, undelivered = deliver_all(alerting, now)
    cycle = cycle or CycleReport()
    checks = monitor_checks({}, cycle, attempts, undelivered, alerting.warnings)
    if coverage:
        checks.append(CheckResult(name="escalation", ok=False, detail=coverage))
    report = {"signal": params.signal.value, "notices": cycle.notices, "deliveries": [a.__dict__ for a in attempts],
              "undelivered": undelivered}
    told = ", ".join(n["title"] for n in cycle.notices) or "already told (the alert was firing)"
    return conclude(checks, report, passed=f"{params.signal.value}: {told}", failed_as="notifications not delivered",
                    artifact=(artifact_key("notify-failure", target.instance), "Failure notification"))
