"""block-ip / unblock-ip decisions (§5.4), without I/O: how long a block lasts, what
Cloudflare can hold, the previews, and whether the read-back enforcement matches.

A block has two enforcement points: the blocklist table the platform reads (one
active row per network: ``lifted_at IS NULL``) and, when configured, a Cloudflare IP
Access Rule whose id the row keeps. A block lifts when it is unblocked or when it
expires; a lifted row is never made active again (a new block is a new row), so a ban
cannot come back after an unban.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from runbook.errors import ConfigError
from runbook.security.actions import Preview
from runbook.security.targets import Network

# What Cloudflare's IP Access Rules accept (the SDK's AccessRuleCIDRConfigurationParam):
# single addresses, IPv4 ranges /16 and /24, IPv6 ranges /32, /48 and /64.
CLOUDFLARE_RANGES = {4: (16, 24), 6: (32, 48, 64)}


def cloudflare_configuration(network: Network) -> dict[str, str]:
    """The rule's ``configuration`` for this network; a ConfigError for a prefix
    Cloudflare cannot hold (blocking it only in the table would be half a block)."""
    single = network.prefixlen == network.max_prefixlen
    if single:
        return {"target": "ip" if network.version == 4 else "ip6", "value": str(network.network_address)}
    if network.prefixlen in CLOUDFLARE_RANGES[network.version]:
        return {"target": "ip_range", "value": str(network)}
    accepted = ", ".join(f"/{p}" for p in CLOUDFLARE_RANGES[network.version])
    raise ConfigError(f"ip: Cloudflare IP Access Rules hold single addresses and IPv{network.version} ranges of {accepted} only, "
                      f"not {network}: block a network of one of these sizes (or several)")


def expiry(now: datetime, *, minutes: int | None, permanent: bool, default_minutes: int, max_minutes: int) -> datetime | None:
    """When the block lifts itself (None: permanent, only when asked for explicitly)."""
    if permanent and minutes is not None:
        raise ConfigError("minutes: a permanent block has no duration: give --minutes or --permanent, not both")
    if permanent:
        return None
    length = default_minutes if minutes is None else minutes
    if length < 1:
        raise ConfigError(f"minutes: a block lasts at least 1 minute, not {length}")
    if length > max_minutes:
        raise ConfigError(f"minutes: {length} is above RUNBOOK_SECURITY__BLOCK__MAX_MINUTES ({max_minutes}); "
                          "use --permanent for a block without an end")
    return now + timedelta(minutes=length)


def undo_command(network: Network | str) -> str:
    return f"runbook unblock-ip {network} --by <you> --reason <why>"


def is_enforced(row: dict[str, Any], now: datetime) -> bool:
    """An active row that has not expired: the platform refuses the network now."""
    return row["lifted_at"] is None and (row["expires_at"] is None or row["expires_at"] > now)


def block_preview(network: Network, *, now: datetime, expires_at: datetime | None, active: dict[str, Any] | None,
                  table: str, cloudflare: str | None, existing_rules: list[dict[str, Any]], overridden: list[str]) -> Preview:
    """What block-ip will change. ``active`` is the network's active row (if any),
    ``cloudflare`` the zone/account label (None: not configured), ``existing_rules`` the
    rules Cloudflare already has for the address, ``overridden`` the refusals --force
    overrides."""
    target = str(network)
    until = "permanently (no expiry)" if expires_at is None else f"until {expires_at.isoformat(timespec='seconds')}"
    if active is not None and is_enforced(active, now):
        ends = "permanent" if active["expires_at"] is None else f"until {active['expires_at'].isoformat(timespec='seconds')}"
        return Preview(action="block-ip", target=target, noop=True, undo=undo_command(network),
                       summary=f"{target} is already blocked (block #{active['id']}, {ends}, by {active['created_by']}): nothing to change",
                       before={"active_block": jsonable(active)}, samples=[jsonable(active)])
    changes = []
    if active is not None:  # active but expired: the lift did not run yet
        changes.append(f"lift the expired block #{active['id']} of {target} first (expired {active['expires_at'].isoformat(timespec='seconds')})")
    changes.append(f"insert an active row for {target} into {table}, {until}")
    warnings = [f"--force overrides: {why}" for why in overridden]
    if expires_at is None:
        warnings.append(f"a permanent block: {target} stays blocked until someone runs unblock-ip")
    rule = None
    if cloudflare is not None:
        blocking = [r for r in existing_rules if r["mode"] == "block"]
        if blocking:
            rule = blocking[0]
            changes.append(f"adopt the existing Cloudflare block rule {rule['id']} ({cloudflare}), made outside runbook: "
                           "unblock-ip will delete it")
        elif existing_rules:
            other = existing_rules[0]
            raise ConfigError(f"ip: Cloudflare already has a {other['mode']} rule {other['id']} for {target} ({cloudflare}): "
                              "runbook does not change it; remove or change it by hand first")
        else:
            changes.append(f"create a Cloudflare IP Access Rule (mode block) for {target} in {cloudflare}")
    else:
        changes.append("no Cloudflare rule (RUNBOOK_SECURITY__BLOCK__CLOUDFLARE__* not configured)")
    return Preview(
        action="block-ip", target=target, summary=f"Block {target} {until}", changes=changes,
        counts={"blocklist rows": 1, "cloudflare rules": 0 if cloudflare is None or rule else 1}, warnings=warnings,
        undo=undo_command(network),
        before={"active_block": None if active is None else jsonable(active), "cloudflare_rule": rule["id"] if rule else None,
                "expires_at": None if expires_at is None else expires_at.isoformat()},
    )


def unblock_preview(network: Network, *, active: dict[str, Any], table: str, cloudflare: str | None) -> Preview:
    """What unblock-ip will change: the active row lifted, its Cloudflare rule deleted."""
    target = str(network)
    changes = [f"mark block #{active['id']} of {target} lifted in {table}"]
    if active.get("cloudflare_rule_id"):
        changes.append(f"delete the Cloudflare rule {active['cloudflare_rule_id']}" + (f" ({cloudflare})" if cloudflare else ""))
    ends = "permanent" if active["expires_at"] is None else f"expires {active['expires_at'].isoformat(timespec='seconds')}"
    return Preview(
        action="unblock-ip", target=target, summary=f"Unblock {target} (block #{active['id']} by {active['created_by']}, {ends})",
        changes=changes, counts={"blocklist rows": 1, "cloudflare rules": 1 if active.get("cloudflare_rule_id") else 0},
        samples=[jsonable(active)], before={"active_block": jsonable(active)},
        undo=f"runbook block-ip {target} --by <you> --reason <why>",
    )


def no_active_block(network: Network, nearby: list[dict[str, Any]]) -> ConfigError:
    """unblock-ip of a network that is not blocked: name it and what is blocked near it."""
    listed = ", ".join(f"{r['network']} (#{r['id']})" for r in nearby)
    return ConfigError(f"ip: {network} has no active block; " + (f"blocked nearby: {listed}" if nearby else "nothing is blocked near it"))


def enforcement_problems(*, network: Network, row: dict[str, Any] | None, want_active: bool, rule_id: str | None,
                         rule: dict[str, Any] | None, cloudflare: str | None, table: str) -> list[str]:
    """Each enforcement point that does not hold what the action should have left:
    the table's row and the Cloudflare rule (read back)."""
    problems = []
    if want_active:
        if row is None or row["lifted_at"] is not None:
            problems.append(f"{table}: no active row for {network}")
        elif rule_id and row.get("cloudflare_rule_id") != rule_id:
            problems.append(f"{table}: the row of {network} keeps the Cloudflare rule {row.get('cloudflare_rule_id')}, not {rule_id}")
        if cloudflare is not None:
            want = cloudflare_configuration(network)
            if rule is None:
                problems.append(f"cloudflare ({cloudflare}): the rule {rule_id} does not exist")
            elif rule["mode"] != "block" or rule["value"] != want["value"]:
                problems.append(f"cloudflare ({cloudflare}): the rule {rule_id} is {rule['mode']} {rule['value']}, not block {want['value']}")
    else:
        if row is None or row["lifted_at"] is None:
            problems.append(f"{table}: the block of {network} is still active")
        if rule_id and rule is not None:
            problems.append(f"cloudflare ({cloudflare}): the rule {rule_id} still exists")
    return problems


def jsonable(row: dict[str, Any]) -> dict[str, Any]:
    return {k: (v.isoformat() if isinstance(v, datetime) else v if v is None or isinstance(v, (int, float, bool)) else str(v))
            for k, v in row.items()}
