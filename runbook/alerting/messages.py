"""The words of each notification, built from the rule, the alert and the incident."""

from __future__ import annotations

from datetime import datetime

from runbook.alerting.engine import AlertState, Notice
from runbook.alerting.escalation import Level
from runbook.alerting.model import METRICS, Message, Severity
from runbook.alerting.rules import Rule

_VERB = {
    "firing": "firing",
    "repeat": "still firing",
    "resolved": "resolved",
    "flapping": "flapping",
}


def alert_message(rule: Rule, state: AlertState, notice: Notice, now: datetime, link: str | None) -> Message:
    """The message of one alert notice."""
    if notice.kind == "stable":
        verb = "stable again, " + notice.detail
    else:
        verb = _VERB[notice.kind]
    title = f"{state.severity.value.upper()} {rule.name} {verb} on {state.resource}: {rule.describe(state.last_value)}"
    lines = [state.last_detail] if state.last_detail else []
    if rule.summary:
        lines.append(rule.summary)
    if notice.detail and notice.kind != "stable":
        lines.append(notice.detail)
    if state.active_since is not None and notice.kind in ("firing", "repeat"):
        lines.append(f"signal since {state.active_since.isoformat(timespec='seconds')}")
    if notice.kind == "flapping":
        lines.append("Quiet until it is stable again.")
    return Message(
        kind=notice.kind, title=title, severity=state.severity, rule=rule.name, resource=state.resource,
        value=state.last_value, threshold=rule.threshold, comparison=rule.comparison, unit=METRICS.get(rule.metric, ""),
        summary="\n".join(lines), link=link, at=now,
    )


def escalation_message(
    incident_id: int, level: Level, rule: str, resource: str, severity: Severity, opened_at: datetime, now: datetime,
    link: str | None, *, resumed: bool = False,
) -> Message:
    what = "ack expired, still firing" if resumed else f"escalation level {level.level} ({level.name})"
    return Message(
        kind="ack-expired" if resumed else "escalation",
        title=f"{severity.value.upper()} incident #{incident_id} {rule} on {resource}: {what}",
        severity=severity, rule=rule, resource=resource,
        summary=f"Open since {opened_at.isoformat(timespec='seconds')}. Acknowledge: runbook ack {incident_id} --by NAME "
        f"(or the acknowledge deployment).",
        link=link, incident_id=incident_id, level=level.level, at=now,
    )


def statuspage_message(kind: str, incident_id: int, rule: str, resource: str, severity: Severity, now: datetime, note: str) -> Message:
    return Message(
        kind=kind,  # type: ignore[arg-type]
        title=f"{rule} on {resource}", severity=severity, rule=rule, resource=resource, summary=note,
        incident_id=incident_id, at=now,
    )


def run_failed_message(rule: Rule, detail: str, resource: str, link: str | None, now: datetime) -> Message:
    """A run started by hand failed: told once, no alert left firing."""
    return Message(kind="run-failed", severity=rule.severity, rule=rule.name, resource=resource,
                   title=f"{rule.severity.value.upper()} {detail}", summary=rule.summary, link=link, at=now)


def backup_unknown_message(instance: str, detail: str, link: str | None, now: datetime) -> Message:
    """No Completed backup run for 75 minutes, and the store cannot say how old the newest backup is."""
    return Message(kind="firing", severity=Severity.critical, rule="backup-stale", resource=instance,
                   title=f"CRITICAL backup-stale on {instance}: no Completed backup run for 75 minutes, and the store cannot be read",
                   summary=detail, link=link, at=now)
