"""``alert-test`` (runbook §2.3): "Production Alert Test" through every configured
channel, and each channel's result."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from prefect import flow
from prefect.runtime import flow_run
from pydantic import BaseModel, Field

from runbook.alerting.config import missing_parts
from runbook.alerting.model import CHANNELS, Message, Severity
from runbook.checks import CheckResult
from runbook.errors import ConfigError
from runbook.reports import artifact_key, conclude, expected_failures
from runbook.settings import load_settings
from runbook.target import resolve_target
from tasks.alerting import deliver_all, load_alerting, queue_notification, run_link


class AlertTestParameters(BaseModel):
    """Which channels to test (default: every configured one)."""

    channels: list[str] = Field(default_factory=list, description="slack, email, sms, phone, statuspage; empty: every configured channel.")


@flow(name="alert-test")
@expected_failures
def alert_test(params: AlertTestParameters = AlertTestParameters()) -> Any:
    """Send "Production Alert Test" (§2.3) through every configured channel (or those
    asked for), through the delivery ledger, and report each channel's result. Fails
    when a channel asked for is not configured or does not deliver."""
    settings = load_settings()
    unknown = [c for c in params.channels if c not in CHANNELS]
    if unknown:
        raise ConfigError(f"channels: unknown {', '.join(unknown)} (use {', '.join(CHANNELS)})")
    target = resolve_target(settings) if settings.alerts.state_database_url is None else None
    alerting = load_alerting(settings, target, need_chain=False)
    # the status page is public: tested only when asked for by name
    wanted = params.channels or [c for c in CHANNELS if c in alerting.usable and c != "statuspage"]
    checks: list[CheckResult] = []
    for channel in CHANNELS:
        if channel not in alerting.usable and (channel in params.channels or not params.channels):
            lacking = ", ".join(missing_parts(channel, alerting.alerts.channels, alerting.credentials))
            checks.append(CheckResult(name=f"channel:{channel}", ok=False, critical=channel in params.channels,
                                      detail=f"not configured: {lacking}"))
    now = datetime.now(timezone.utc)
    message = Message(kind="test", title="Production Alert Test", severity=Severity.warning, rule="alert-test",
                      summary="A test from runbook alert-test (§2.3): this channel works.", link=run_link(), at=now)
    usable = [c for c in wanted if c in alerting.usable]
    ids = queue_notification(alerting, f"test:{flow_run.id or now.isoformat()}", [(c, None) for c in usable], message, now)
    attempts, _ = deliver_all(alerting, now, ids=ids)
    for attempt in attempts:
        to = f" {attempt.recipient}" if attempt.recipient else ""
        checks.append(CheckResult(name=f"channel:{attempt.channel}", ok=attempt.ok, detail=f"{attempt.channel}{to}: {attempt.detail}"))
    results = [{"channel": a.channel, "recipient": a.recipient, "ok": a.ok, "detail": a.detail} for a in attempts]
    report = {"results": results, "configured": sorted(alerting.usable),
              "note": "" if "statuspage" in wanted else "the status page is public: tested only with --channel statuspage"}
    return conclude(
        checks, report, passed=f"Production Alert Test delivered on {', '.join(sorted({a.channel for a in attempts}))}",
        failed_as="alert test failed", artifact=(artifact_key("alert-test"), "Production Alert Test"),
    )
