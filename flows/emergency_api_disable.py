"""``emergency-api-disable`` (runbook §5.4 disable all APIs): the configured kill switch
(a command, or an HTTP call such as a Cloudflare Worker route or a KV flag) turns every
API of the platform off; ``api-enable`` turns them on again."""

from __future__ import annotations

from typing import Any

from prefect import flow

from flows.approval import run_action, run_id
from runbook.checks import CheckResult
from runbook.reports import artifact_key, conclude, expected_failures
from runbook.security.actions import ActionRequest, Preview
from runbook.settings import load_settings
from runbook.target import resolve_target
from tasks.killswitch import describe_call, load_switch, open_disable_task, record_switch_task
from tasks.secstate import security_state

TARGET = "all-apis"


class ApiDisableParameters(ActionRequest):
    """Who turns every API off and why (RUNBOOK_SECURITY__KILL_SWITCH__DISABLE)."""


@flow(name="emergency-api-disable")
@expected_failures
def emergency_api_disable(params: ApiDisableParameters) -> Any:
    """Disable every API of the platform with the configured kill switch (§5.4).
    Previewed (what is called, the state the check reads now), approved by the typed
    phrase, audited; a switch that is off already is a no-op. The disable is recorded
    so that api-enable knows what runbook turned off; the check reads the state back."""
    settings = load_settings()
    switch = load_switch(settings, "disable")
    state = security_state(settings, resolve_target(settings).dsn)
    now = switch.read()
    recorded = open_disable_task(state)
    preview = Preview(
        action="emergency-api-disable", target=TARGET,
        summary=f"turn every API of the platform off: {describe_call(switch.call)}",
        changes=[describe_call(switch.call), f"the check reads now: {now}" if now else "no check configured: nothing reads the state back"],
        warnings=["Every API answers as disabled (users, the dashboard, webhooks) until runbook api-enable"],
        undo="runbook api-enable --by NAME --reason TEXT --confirm",
        noop=now == "disabled" or (now is None and recorded is not None),
        before={"state": now or "unknown (no check)", "open_disable": recorded["id"] if recorded else None},
    )

    def apply(p: Preview) -> dict[str, Any]:
        called = switch.flip()
        record = record_switch_task(state, True, by=params.by, reason=params.reason, run_id=run_id(), state_before=p.before["state"])
        return {"called": called, **record}

    result = run_action(params, preview, apply, state, timeout_s=settings.security.approval_timeout_seconds, secrets=switch.secrets)
    if result["outcome"] != "applied":
        return conclude([], result, passed="the APIs are disabled already: nothing to change" if result["outcome"] == "noop"
                        else "preview only: nothing was changed", failed_as="")
    result["after"]["state"] = after = switch.read()
    checks = [CheckResult(name="check", ok=after == "disabled", detail=f"reads {after}") if after is not None else
              CheckResult(name="check", ok=True, critical=False, detail="no check configured: the call's success is the only proof")]
    return conclude(checks, result, passed="every API is disabled; undo: runbook api-enable",
                    failed_as="the disable was called, but the APIs do not read as disabled",
                    artifact=(artifact_key("emergency-api-disable"), "emergency-api-disable"))
