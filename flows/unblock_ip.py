"""``unblock-ip`` (runbook §5.4): lift the active block of exactly one network, the
undo of ``block-ip``. Its Cloudflare rule is deleted by the id the row keeps, the row
is marked lifted (it is never made active again: a ban does not come back after an
unban), and both are read back."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from prefect import flow, get_run_logger
from prefect.states import Completed, Failed
from pydantic import Field

from flows.approval import run_action
from flows.block_ip import report_action
from runbook.reports import expected_failures
from runbook.security.actions import ActionRequest, Preview
from runbook.security.blocking import jsonable
from runbook.security.targets import parse_target
from runbook.settings import load_settings
from runbook.target import resolve_target
from tasks.blocklist import blocklist, mark_lifted_task, preview_unblock, read_enforcement
from tasks.cloudflare import delete_rule_task, resolve_cloudflare
from tasks.secstate import security_state
from tasks.shell import known_secrets


class UnblockParameters(ActionRequest):
    """Which block to lift, and who asks for it and why."""

    ip: str = Field(description="The blocked address or network, exactly as blocked, e.g. 93.184.216.34 or 93.184.216.0/24.")


def utcnow() -> datetime:
    """The clock of the lift (a function, so tests set the time)."""
    return datetime.now(timezone.utc)


@flow(name="unblock-ip")
@expected_failures
def unblock_ip(params: UnblockParameters) -> Any:
    """Lift the active block of exactly this network (§5.4), the undo of block-ip. A
    network without an active block is refused (exit 2) naming it and what is blocked
    near it. After the approval the Cloudflare rule is deleted by the id the block
    keeps and the row is marked lifted (audited 'undone'); both are read back."""
    settings = load_settings()
    platform = resolve_target(settings)
    network = parse_target(params.ip)
    scope = resolve_cloudflare(settings.security.block.cloudflare)
    state = security_state(settings, platform.dsn)
    bl = blocklist(settings, state)

    preview = preview_unblock(bl, scope, network)
    active = preview.before["active_block"]
    rule_id = active["cloudflare_rule_id"]

    def apply(approved: Preview) -> dict[str, Any]:
        deleted = delete_rule_task(scope, rule_id) if scope is not None and rule_id else None
        lifted = mark_lifted_task(bl, active["id"], at=utcnow(), by=params.by, reason=params.reason)
        # None: lifted meanwhile (its expiry); it stays lifted either way
        return {"lifted_block": None if lifted is None else jsonable(lifted), "cloudflare_rule_deleted": deleted}

    outcome = run_action(params, preview, apply, state, timeout_s=settings.security.approval_timeout_seconds,
                         secrets=known_secrets(settings), applied_phase="undone")
    if outcome["outcome"] == "preview":
        message = f"preview of unblock-ip {network}: nothing was changed; add --confirm to apply"
        return Completed(message=message, data={**outcome, "detail": message})
    problems = read_enforcement(bl, scope, network, active["id"], rule_id, want_active=False)
    outcome["verification"] = problems
    detail = f"{network} unblocked (block #{active['id']} lifted" + (f", Cloudflare rule {rule_id} deleted" if rule_id else "") + ")"
    report_action(preview, outcome, detail, problems)
    if problems:
        message = f"unblock-ip {network}: read back does not match: " + "; ".join(problems)
        return Failed(message=message, data={**outcome, "detail": detail, "message": message})
    get_run_logger().info(detail)
    return Completed(message=detail, data={**outcome, "detail": detail})
