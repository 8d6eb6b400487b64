"""What a notification says, channel-neutral, and what a delivery attempt gave.

A ``Message`` is rendered by each channel (Slack Block Kit, an e-mail, an SMS, a
phone call's spoken text, a status-page incident); a ``Delivery`` is the outcome the
ledger records: sent, or failed with the error, whether a retry may help, and how
long the channel asked us to wait (HTTP 429 Retry-After).
"""

from __future__ import annotations

from enum import Enum
from typing import Literal

from pydantic import AwareDatetime, BaseModel, Field


class Severity(str, Enum):
    warning = "warning"
    critical = "critical"


ChannelName = Literal["slack", "email", "sms", "phone", "statuspage"]
CHANNELS: tuple[str, ...] = ("slack", "email", "sms", "phone", "statuspage")
# A critical page none of whose channels delivered goes on down this list (§2.2, §9).
FALLBACK_ORDER: tuple[str, ...] = ("slack", "email", "sms", "phone")

MessageKind = Literal[
    "firing",  # an alert started firing (after its `for`)
    "repeat",  # still firing, repeat_interval later
    "resolved",  # it cleared
    "flapping",  # it flipped too often: one notice, then quiet until stable
    "stable",  # stable again after flapping (says whether it fires)
    "escalation",  # an incident's level is paged (§9)
    "ack-expired",  # an acknowledgement ran out while the alert still fires
    "test",  # runbook alert-test (§2.3: "Production Alert Test")
    "run-failed",  # a runbook flow run failed or crashed (automation)
    "incident-open",  # status page: open an incident
    "incident-update",  # status page: update it
    "incident-resolved",  # status page: resolve it
]


class Message(BaseModel):
    """One notification, before any channel renders it. Never holds a secret."""

    kind: MessageKind
    title: str = Field(description="One line, e.g. 'CRITICAL high-error-rate firing: api error rate 7.2 % >= 5 %'.")
    severity: Severity = Severity.warning
    rule: str = ""
    resource: str = ""
    value: float | None = None
    threshold: float | None = None
    comparison: str | None = None
    unit: str = ""
    summary: str = Field("", description="A few lines of context: what was seen, since when, what to do.")
    link: str | None = Field(None, description="URL of the Prefect run (or the incident) to open.")
    incident_id: int | None = None
    level: int | None = None
    at: AwareDatetime = Field(description="When it was seen, with its offset: every channel shows it so.")


class Delivery(BaseModel):
    """What one attempt to send a message on one channel gave."""

    ok: bool
    detail: str = Field("", description="'sent to #alerts-production', or the error's first line (no secret).")
    permanent: bool = Field(False, description="A retry cannot help (bad credentials, 4xx other than 429).")
    retry_after_seconds: float | None = Field(None, description="The channel asked us to wait this long (429 Retry-After).")
    external_id: str | None = Field(None, description="The id the channel gave (status-page incident id, Twilio SID, Slack ts).")


class Sample(BaseModel):
    """One observation of one signal on one resource, what rules evaluate.

    ``value`` None means the signal could not be read this time (the source did not
    answer): rules on it keep their state rather than resolve, and the source's
    ``signal_up`` sample says it is missing.
    """

    metric: str = Field(description="One of METRICS, e.g. error_rate_pct.")
    resource: str = Field(description="What it is about: 'api', the instance, a deployment's name, a source.")
    value: float | None
    detail: str = Field("", description="What was seen, for the notification (never a secret).")


# Every metric the collectors produce (tasks/signals.py), with its unit. Rules may
# only name these: an unknown metric is refused when the rules load.
METRICS: dict[str, str] = {
    "error_rate_pct": "%",  # /api/monitoring/metrics error_rate_pct (§2.1, §7.1)
    "response_time_p95_ms": "ms",  # /api/monitoring/metrics p95_ms (§7.1)
    "response_time_p50_ms": "ms",  # /api/monitoring/metrics p50_ms (the performance report's median, §4.1)
    "throughput_rps": "req/s",  # /api/monitoring/metrics requests_per_second (§7.1: minimum 100, target 1000)
    "cpu_pct": "%",  # /api/monitoring/metrics cpu_pct (§7.1)
    "memory_pct": "%",  # memory_pct (§7.1)
    "disk_pct": "%",  # disk_pct (§7.1)
    "health_up": "",  # 1 when GET /api/health answered 2xx, else 0
    "health_latency_ms": "ms",  # its latency
    "database_up": "",  # 1 when the platform's database answered SELECT 1, else 0 (§2.2 database-down)
    "database_connections_pct": "%",  # connections / max_connections (§7.4: 200)
    "database_size_gb": "GB",  # pg_database_size (§7.2: 80 GB)
    "backup_age_minutes": "min",  # age of the newest DONE backup of the instance (§6.3 RPO 1 h)
    "deployment_failed": "",  # 1 when the newest finished run of a scheduled deployment Failed/Crashed
    "signal_up": "",  # 1 when a source (metrics, health, database, backups, prefect) answered
    "security_critical_findings": "",  # security-watch: a critical detector's count for one group (§5.1)
    "security_warning_findings": "",  # security-watch: a warning detector's count for one group
}
