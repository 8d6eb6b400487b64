"""Alert rules as data (§2.2, §7.1-§7.2) and the routing by severity (§2.2).

A rule names a metric (one of ``METRICS``), a comparison, a threshold and a
severity; ``for`` is how many consecutive evaluations must breach before it fires (a
blip shorter than that sends nothing); ``channels`` default to the §2.2 routing of its
severity. ``load_rules`` refuses an unknown metric, a bad comparison, an unknown
channel or a rule none of whose channels can send.
"""

from __future__ import annotations

import operator
import re
from collections.abc import Callable
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from runbook.alerting.model import CHANNELS, METRICS, Severity
from runbook.errors import ConfigError

Comparison = Literal[">", ">=", "<", "<=", "==", "!="]
COMPARE: dict[str, Callable[[float, float], bool]] = {
    ">": operator.gt,
    ">=": operator.ge,
    "<": operator.lt,
    "<=": operator.le,
    "==": operator.eq,
    "!=": operator.ne,
}

# §2.2: critical -> slack, email, sms; warning -> slack, email (database-down adds phone).
ROUTING: dict[Severity, tuple[str, ...]] = {
    Severity.critical: ("slack", "email", "sms"),
    Severity.warning: ("slack", "email"),
}

NAME = re.compile(r"[a-z0-9][a-z0-9-]{0,62}")


class Rule(BaseModel):
    """One alert rule."""

    model_config = ConfigDict(populate_by_name=True, frozen=True)

    name: str = Field(description="kebab-case name, e.g. high-error-rate.")
    metric: str = Field(description="One of the collected metrics, e.g. error_rate_pct.")
    comparison: Comparison
    threshold: float
    severity: Severity
    for_: int = Field(1, alias="for", ge=1, le=1440, description="Consecutive breaching evaluations before it fires.")
    keep_firing_minutes: int = Field(
        0, ge=0, le=7 * 1440,
        description="Once firing, it keeps firing until the signal has been clear this long (Prometheus' keep_firing_for): "
        "an incident stays open, and its escalation goes on, after a short burst ends.",
    )
    channels: tuple[str, ...] | None = Field(None, description="Where it notifies; unset: the §2.2 routing of its severity.")
    resource: str | None = Field(None, description="Only this resource (unset: every resource the metric reports).")
    inhibited_by: tuple[str, ...] = Field((), description="Rules that, firing on the same resource, keep this one quiet.")
    inhibit_any_resource: bool = Field(
        False, description="inhibited_by applies whatever resource the other rule fires on (the API's health under database-down).")
    summary: str = Field("", description="What it means and what to do, for the notification.")

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not NAME.fullmatch(value):
            raise ValueError(f"rule name {value!r}: use lowercase letters, digits and dashes")
        return value

    def routes(self) -> tuple[str, ...]:
        return self.channels if self.channels is not None else ROUTING[self.severity]

    def breached(self, value: float) -> bool:
        return COMPARE[self.comparison](value, self.threshold)

    def describe(self, value: float | None) -> str:
        unit = METRICS.get(self.metric, "")
        seen = "no value" if value is None else f"{value:g}{(' ' + unit) if unit else ''}"
        return f"{self.metric} {seen} {self.comparison} {self.threshold:g}{(' ' + unit) if unit else ''}"


def _rule(name: str, metric: str, comparison: str, threshold: float, severity: str, for_: int = 1, **extra: object) -> Rule:
    return Rule.model_validate({"name": name, "metric": metric, "comparison": comparison, "threshold": threshold,
                                "severity": severity, "for": for_, **extra})


# The three rules of §2.2, the thresholds of §7.1-§7.2, and what runbook itself must
# watch (health, database connections, backup freshness against the 1 h RPO, its own
# scheduled runs). §7.1's 5000 ms "critical" response time is §2.2's high-response-time,
# whose severity §2.2 sets to warning.
DEFAULT_RULES: tuple[Rule, ...] = (
    _rule("high-error-rate", "error_rate_pct", ">=", 5, "critical", 2, channels=("slack", "email", "sms"),
          summary="§2.2: 5 % or more of requests fail. Look at the error logs (log-report) and the last deploy."),
    _rule("high-response-time", "response_time_p95_ms", ">=", 5000, "warning", 3, channels=("slack", "email"),
          summary="§2.2: p95 response time 5 s or more. §3.1: time the requests (diagnose --component api)."),
    _rule("database-down", "database_up", "<=", 0, "critical", 1, channels=("slack", "email", "sms", "phone"),
          summary="§2.2: the database does not answer. §3.2: its health, the pool settings, RLS."),
    _rule("error-rate-warning", "error_rate_pct", ">=", 1, "warning", 3, inhibited_by=("high-error-rate",),
          summary="§7.1: error rate at the warning level (1 %)."),
    _rule("response-time-warning", "response_time_p95_ms", ">=", 3000, "warning", 3, inhibited_by=("high-response-time",),
          summary="§7.1: p95 response time at the warning level (3 s)."),
    _rule("cpu-warning", "cpu_pct", ">=", 70, "warning", 5, inhibited_by=("cpu-critical",), summary="§7.1: CPU 70 %."),
    _rule("cpu-critical", "cpu_pct", ">=", 85, "critical", 5, summary="§7.1: CPU 85 %. §7.2: scale up."),
    _rule("memory-warning", "memory_pct", ">=", 80, "warning", 5, inhibited_by=("memory-critical",), summary="§7.1: memory 80 %."),
    _rule("memory-critical", "memory_pct", ">=", 90, "critical", 5, summary="§7.1: memory 90 %. §7.2: scale up."),
    _rule("disk-warning", "disk_pct", ">=", 80, "warning", 3, inhibited_by=("disk-critical",), summary="§7.1: disk 80 %."),
    _rule("disk-critical", "disk_pct", ">=", 90, "critical", 3, summary="§7.1: disk 90 %."),
    _rule("health-endpoint-down", "health_up", "<=", 0, "critical", 2, inhibited_by=("database-down",), inhibit_any_resource=True,
          summary="§1.4: GET /api/health does not answer 2xx."),
    _rule("health-latency", "health_latency_ms", ">=", 3000, "warning", 3, summary="§7.1: the health endpoint answers slowly."),
    _rule("database-connections", "database_connections_pct", ">=", 80, "warning", 3, inhibited_by=("database-down",),
          summary="§7.4: connections near max_connections (200). §3.2: the pool settings."),
    _rule("database-size", "database_size_gb", ">", 80, "warning", 1, summary="§7.2: database over 80 GB: scale the database."),
    _rule("backup-stale", "backup_age_minutes", ">", 75, "critical", 1, inhibited_by=("database-down",),
          summary="§6.3: no DONE backup for 75 minutes: the 1 h RPO is at risk. Look at the backup deployment's runs."),
    _rule("flow-run-failed", "deployment_failed", ">=", 1, "warning", 1,
          summary="The newest run of a runbook deployment failed or crashed: open it in the Prefect UI."),
    # an attack that stops before anyone acknowledges still pages up the §9 chain (5, 15, 30, 60 min)
    _rule("security-critical", "security_critical_findings", ">=", 1, "critical", 1, keep_firing_minutes=90,
          summary="§5.1: security-watch found an attack (brute force, credential stuffing, a CRITICAL event). §5.3: assess, "
                  "then contain (runbook block-ip ...); the evidence is in the security-watch run."),
    _rule("security-warning", "security_warning_findings", ">=", 1, "warning", 1, keep_firing_minutes=30,
          summary="§5.1: security-watch found suspicious traffic (API abuse, refused requests, a failure spike): look at the "
                  "evidence in the security-watch run."),
    _rule("signal-missing", "signal_up", "<=", 0, "warning", 3, inhibited_by=("database-down",), inhibit_any_resource=True,
          summary="A monitoring source does not answer: the rules on its metrics keep their last state."),
)


def load_rules(rules: list[Rule] | tuple[Rule, ...], configured: set[str] | None = None) -> list[Rule]:
    """The rules, checked: known metrics, known channels, unique names, inhibitions that
    name rules; with ``configured`` (the channels that can send), a rule none of whose
    channels can send is refused too. A ConfigError names RUNBOOK_ALERTS__RULES."""
    problems: list[str] = []
    names = [r.name for r in rules]
    for duplicate in sorted({n for n in names if names.count(n) > 1}):
        problems.append(f"rule {duplicate!r} is defined twice")
    for rule in rules:
        if rule.metric not in METRICS:
            problems.append(f"rule {rule.name!r}: unknown metric {rule.metric!r} (known: {', '.join(sorted(METRICS))})")
        unknown = [c for c in rule.routes() if c not in CHANNELS]
        if unknown:
            problems.append(f"rule {rule.name!r}: unknown channel {', '.join(map(repr, unknown))} (known: {', '.join(CHANNELS)})")
        elif not rule.routes():
            problems.append(f"rule {rule.name!r}: no channel")
        elif configured is not None and not set(rule.routes()) & configured:
            problems.append(
                f"rule {rule.name!r}: none of its channels ({', '.join(rule.routes())}) is configured; configured: "
                f"{', '.join(sorted(configured)) or 'none'}"
            )
        for other in rule.inhibited_by:
            if other not in names:
                problems.append(f"rule {rule.name!r}: inhibited_by names no rule {other!r}")
    if problems:
        raise ConfigError("RUNBOOK_ALERTS__RULES: " + "; ".join(problems))
    return list(rules)
