"""``silence`` (Alertmanager's silences, as leases): add, list or expire a silence."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from enum import Enum
from typing import Any

from prefect import flow, get_run_logger
from pydantic import BaseModel, Field

from runbook.alerting.silences import check_silence
from runbook.errors import ConfigError
from runbook.reports import expected_failures
from runbook.settings import load_settings
from runbook.target import resolve_target
from tasks.alerting import load_alerting, silences_task


class SilenceAction(str, Enum):
    add = "add"
    list = "list"
    expire = "expire"


class SilenceParameters(BaseModel):
    """A silence holds the notifications and pages of the alerts it matches until it ends
    (at most 7 days). It needs an author, a reason, and a rule or a resource."""

    action: SilenceAction = SilenceAction.list
    rule: str | None = Field(None, description="add: the rule to silence, or a prefix ending in '*'.")
    resource: str | None = Field(None, description="add: the resource (api, the instance, a deployment), or a prefix with '*'.")
    severity: str | None = Field(None, description="add: only this severity (warning or critical).")
    minutes: float | None = Field(None, gt=0, description="add: how long (at most 7 days).")
    author: str = Field("", description="add: who silences; expire: who ends it.")
    reason: str = Field("", description="add: why (kept with the silence and in the audit trail).")
    silence_id: int | None = Field(None, ge=1, description="expire: which silence.")
    include_ended: bool = Field(False, description="list: show ended silences too.")


@flow(name="silence")
@expected_failures
def silence(params: SilenceParameters = SilenceParameters()) -> Any:
    """Add a silence (a lease with an author, a reason and an end at most 7 days away,
    matching a rule or a resource, never everything), list them, or expire one now.
    Every change is audited; when a silence ends while its alert fires, the alert
    notifies at once."""
    settings = load_settings()
    target = resolve_target(settings) if settings.alerts.state_database_url is None else None
    alerting = load_alerting(settings, target, need_chain=False)
    now = datetime.now(timezone.utc)
    if params.action is SilenceAction.add:
        if params.minutes is None:
            raise ConfigError("silence add: --minutes (how long, at most 7 days) is needed: a silence must end")
        matchers = {k: v for k, v in {"rule": params.rule, "resource": params.resource, "severity": params.severity}.items() if v}
        new = check_silence(matchers, params.author, params.reason, now, now + timedelta(minutes=params.minutes))
        result = silences_task(alerting, "add", now, silence=new)
    elif params.action is SilenceAction.expire:
        if params.silence_id is None or not params.author.strip():
            raise ConfigError("silence expire: the silence's id and --author (who ends it) are needed")
        result = silences_task(alerting, "expire", now, silence_id=params.silence_id, by=params.author.strip())
    else:
        result = silences_task(alerting, "list", now, include_ended=params.include_ended)
    get_run_logger().info("%s", result.get("detail", ""))
    return result
