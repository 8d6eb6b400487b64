"""``api-enable`` (runbook §5.4): turn the platform's APIs on again after an
``emergency-api-disable``, with the configured kill switch's enable call."""

from __future__ import annotations

from typing import Any

from prefect import flow
from pydantic import Field

from flows.approval import audit, run_action
from flows.emergency_api_disable import TARGET
from runbook.checks import CheckResult
from runbook.errors import ConfigError
from runbook.reports import artifact_key, conclude, expected_failures
from runbook.security.actions import ActionRequest, Preview
from runbook.settings import load_settings
from runbook.target import resolve_target
from tasks.killswitch import describe_call, load_switch, open_disable_task, record_switch_task
from tasks.secstate import security_state


class ApiEnableParameters(ActionRequest):
    """Who turns the APIs on again and why."""

    force: bool = Field(False, description="Call the enable switch although runbook recorded no disable (the reason says why).")


@flow(name="api-enable")
@expected_failures
def api_enable(params: ApiEnableParameters) -> Any:
    """Enable the platform's APIs again (the undo of emergency-api-disable). Refuses
    (exit 2) when runbook recorded no disable and the check does not show them off,
    unless forced; APIs the check reads as on, with nothing recorded, are a no-op.
    Previewed, approved, audited, and read back through the check."""
    settings = load_settings()
    switch = load_switch(settings, "enable")
    state = security_state(settings, resolve_target(settings).dsn)
    now = switch.read()
    recorded = open_disable_task(state)
    warnings = []
    if recorded is None and now != "enabled":
        if not params.force:
            raise ConfigError(f"api-enable: runbook recorded no emergency-api-disable (the check reads {now or 'nothing: none is configured'}); "
                              "nothing was changed; add --force, with the reason, to call the enable switch anyway")
        warnings.append("Forced: runbook recorded no disable; the enable switch is called anyway")
    by = f", disabled by {recorded['disabled_by']} at {recorded['disabled_at']:%Y-%m-%d %H:%M} UTC ({recorded['reason']})" if recorded else ""
    preview = Preview(
        action="api-enable", target=TARGET, summary=f"turn every API of the platform on again{by}",
        changes=[describe_call(switch.call), f"the check reads now: {now}" if now else "no check configured: nothing reads the state back"],
        warnings=warnings, undo="runbook emergency-api-disable --by NAME --reason TEXT --confirm",
        noop=recorded is None and now == "enabled",
        before={"state": now or "unknown (no check)", "open_disable": recorded["id"] if recorded else None},
    )

    def apply(p: Preview) -> dict[str, Any]:
        return {"called": switch.flip(), **record_switch_task(state, False, by=params.by)}

    result = run_action(params, preview, apply, state, timeout_s=settings.security.approval_timeout_seconds, secrets=switch.secrets)
    if result["outcome"] != "applied":
        return conclude([], result, passed="the APIs are enabled already: nothing to change" if result["outcome"] == "noop"
                        else "preview only: nothing was changed", failed_as="")
    result["after"]["state"] = after = switch.read()
    # the disable's own audit trail ends with its undo
    audit(state, params, preview.model_copy(update={"action": "emergency-api-disable"}), "undone", after=result["after"])
    checks = [CheckResult(name="check", ok=after == "enabled", detail=f"reads {after}") if after is not None else
              CheckResult(name="check", ok=True, critical=False, detail="no check configured: the call's success is the only proof")]
    return conclude(checks, result, passed="the APIs are enabled again",
                    failed_as="the enable was called, but the APIs do not read as enabled",
                    artifact=(artifact_key("api-enable"), "api-enable"))
