"""``block-ip`` (runbook §5.4): block an address or network. The block goes into the
blocklist table the platform reads and, when configured, becomes a Cloudflare IP
Access Rule whose id the row keeps. It lifts itself when it expires
(``tasks.blocklist.lift_expired_blocks``); ``unblock-ip`` lifts it by hand."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact
from prefect.states import Completed, Failed
from pydantic import Field

from flows.approval import run_action, run_id
from runbook.errors import ConfigError
from runbook.reports import artifact_key, expected_failures
from runbook.security.actions import ActionRequest, Preview
from runbook.security.blocking import cloudflare_configuration, expiry, is_enforced, jsonable
from runbook.security.targets import check_target
from runbook.settings import load_settings
from runbook.target import resolve_target
from tasks.blocklist import (
    Blocklist, blocklist, insert_block_task, lift_block, preview_block, read_active_block, read_enforcement,
)
from tasks.cloudflare import CloudflareScope, delete_rule_task, ensure_rule_task, resolve_cloudflare
from tasks.secstate import security_state
from tasks.shell import known_secrets


class BlockParameters(ActionRequest):
    """What to block, for how long, and who asks for it and why."""

    ip: str = Field(description="The address or CIDR network to block, e.g. 93.184.216.34 or 93.184.216.0/24.")
    minutes: int | None = Field(None, ge=1, description="How long the block lasts; unset: RUNBOOK_SECURITY__BLOCK__DEFAULT_MINUTES.")
    permanent: bool = Field(False, description="No expiry: blocked until someone runs unblock-ip.")
    force: bool = Field(False, description="Block even a private range, the allow-list or the operator's own address (needs the reason).")
    operator_ip: str | None = Field(None, description="Your own address, never blocked without force; unset: RUNBOOK_SECURITY__BLOCK__OPERATOR_IP.")


def utcnow() -> datetime:
    """The clock of blocks and their expiry (a function, so tests set the time)."""
    return datetime.now(timezone.utc)


def _operator_ip(value: str | None) -> str | None:
    import ipaddress

    if value is None or not value.strip():
        return None
    try:
        return str(ipaddress.ip_address(value.strip()))
    except ValueError:
        raise ConfigError(f"operator_ip: {value!r} is not an IP address") from None


@flow(name="block-ip")
@expected_failures
def block_ip(params: BlockParameters) -> Any:
    """Block an address or CIDR network (§5.4). Refuses loopback, private and special
    ranges, networks broader than /16 (IPv4) or /32 (IPv6), the allow-list and the
    operator's own address unless forced with a reason (exit 2, nothing touched). The
    preview shows the network, the expiry, the Cloudflare rule to create or adopt and
    the undo command; after the approval the row goes into the blocklist table (one
    active row per network: blocking twice changes nothing) and, when configured, a
    Cloudflare IP Access Rule is created. Both are read back."""
    settings = load_settings()
    block = settings.security.block
    platform = resolve_target(settings)
    network, overridden = check_target(params.ip, allow_list=block.allow_list,
                                       operator_ip=_operator_ip(params.operator_ip) or block.operator_ip,
                                       force=params.force, reason=params.reason)
    now = utcnow()
    expires_at = expiry(now, minutes=params.minutes, permanent=params.permanent, default_minutes=block.default_minutes,
                        max_minutes=block.max_minutes)
    scope = resolve_cloudflare(block.cloudflare)
    configuration = cloudflare_configuration(network) if scope is not None else None
    state = security_state(settings, platform.dsn)
    bl = blocklist(settings, state)

    preview = preview_block(bl, scope, network, now=now, expires_at=expires_at, overridden=overridden)

    def apply(approved: Preview) -> dict[str, Any]:
        return _apply_block(bl, scope, network, configuration, params, now=now, expires_at=expires_at)

    outcome = run_action(params, preview, apply, state, timeout_s=settings.security.approval_timeout_seconds,
                         secrets=known_secrets(settings))
    if outcome["outcome"] == "preview":
        message = f"preview of block-ip {network}: nothing was changed; add --confirm to apply"
        return Completed(message=message, data={**outcome, "detail": message})

    if outcome["outcome"] == "noop":
        row = preview.before["active_block"]
        block_id, rule_id = row["id"], row["cloudflare_rule_id"]
    else:
        block_id, rule_id = outcome["after"]["block"].get("id"), outcome["after"]["block"].get("cloudflare_rule_id")
    problems = read_enforcement(bl, scope, network, block_id, rule_id, want_active=True)
    outcome["verification"] = problems
    detail = (f"{network} was already blocked (block #{block_id}): nothing changed" if outcome["outcome"] == "noop"
              else f"{network} blocked (block #{block_id}" + (f", Cloudflare rule {rule_id}" if rule_id else "") + ")")
    report_action(preview, outcome, detail, problems)
    if problems:
        message = f"block-ip {network}: read back does not match: " + "; ".join(problems)
        return Failed(message=message, data={**outcome, "detail": detail, "message": message})
    get_run_logger().info(detail)
    return Completed(message=detail, data={**outcome, "detail": detail})


def _apply_block(bl: Blocklist, scope: CloudflareScope | None, network: Any, configuration: dict[str, str] | None,
                 params: BlockParameters, *, now: datetime, expires_at: datetime | None) -> dict[str, Any]:
    """The rule first (created, or adopted when it exists), then the row that keeps its
    id. Nothing is left half-applied: a refused rule writes no row, and a row that
    cannot be written deletes the rule this run created."""
    active = read_active_block(bl, network)
    if active is not None and is_enforced(active, now):
        # blocked by someone else while this run waited for its approval
        return {"block": jsonable(active), "cloudflare_rule": None, "already_blocked": True}
    if active is not None:
        lift_block(bl, scope, active, now=now)  # expired, not lifted yet: lifted as its expiry would
    rule = None
    if scope is not None and configuration is not None:
        notes = f"{scope.notes_prefix}: {params.reason} (by {params.by}, run {run_id()})"[:500]
        rule = ensure_rule_task(scope, configuration, notes)
    try:
        row = insert_block_task(bl, network=network, reason=params.reason, by=params.by, at=now, expires_at=expires_at,
                                rule_id=rule["id"] if rule else None, run_id=run_id())
    except Exception:
        if rule is not None and rule["created"]:
            delete_rule_task(scope, rule["id"])
        raise
    if row is None:  # another run blocked it between the read and the insert: its row stands
        if rule is not None and rule["created"]:
            delete_rule_task(scope, rule["id"])
        return {"block": jsonable(read_active_block(bl, network) or {}), "cloudflare_rule": None, "already_blocked": True}
    return {"block": jsonable(row), "cloudflare_rule": rule, "already_blocked": False}


def report_action(preview: Preview, outcome: dict[str, Any], detail: str, problems: list[str]) -> None:
    lines = [f"# {preview.action} {preview.target}", "", detail, "", "## Read back", ""]
    lines += [f"- **{p}**" for p in problems] or ["- every enforcement point holds"]
    lines += ["", "## Undo", "", f"`{preview.undo}`" if preview.undo else "**This cannot be undone.**"]
    create_markdown_artifact(key=artifact_key(preview.action, preview.target), markdown="\n".join(lines),
                             description=f"{preview.action} {preview.target}: {outcome['outcome']}")
