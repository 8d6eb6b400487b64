"""``invalidate-sessions`` (§5.4), the pure part: which sessions an invalidation is about.

A scope is all sessions, one user's or one address's (an IP or a CIDR). Invalidating
sets a session's expiry to the time of the action; nothing is deleted, and it cannot be
undone (the users log in again). Which columns hold the user and the address is the
platform's configuration (RUNBOOK_SECURITY__SESSIONS__*): it is never guessed.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Literal

from runbook.errors import ConfigError

ScopeKind = Literal["all", "user", "ip"]
SETTING = "RUNBOOK_SECURITY__SESSIONS__"


@dataclass(frozen=True)
class Scope:
    """Whose sessions: ``all``, ``user`` (value: the user as the user column holds it)
    or ``ip`` (value: a canonical network, 192.0.2.7/32, 2001:db8::/48)."""

    kind: ScopeKind
    value: str | None = None

    @property
    def target(self) -> str:
        """The preview's target, also the approval phrase's: all, user=42, ip=192.0.2.7/32."""
        return "all" if self.kind == "all" else f"{self.kind}={self.value}"

    @property
    def single_address(self) -> bool:
        if self.kind != "ip" or self.value is None:
            return False
        network = ipaddress.ip_network(self.value)
        return network.num_addresses == 1

    @property
    def address(self) -> str:
        """The address of a one-address scope, without the prefix length."""
        assert self.value is not None
        return str(ipaddress.ip_network(self.value).network_address)


def session_scope(kind: str, user: str | None = None, ip: str | None = None) -> Scope:
    """The scope asked for, validated (ConfigError naming the parameter: exit 2)."""
    user = user.strip() if user and user.strip() else None
    ip = ip.strip() if ip and ip.strip() else None
    if kind == "all":
        if user or ip:
            raise ConfigError("scope all: give no user and no ip (they would be ignored)")
        return Scope("all")
    if kind == "user":
        if ip:
            raise ConfigError("scope user: give a user, not an ip")
        if not user:
            raise ConfigError("scope user: the user is required (the value of the sessions' user column)")
        return Scope("user", user)
    if kind == "ip":
        if user:
            raise ConfigError("scope ip: give an ip, not a user")
        if not ip:
            raise ConfigError("scope ip: the ip is required (an address or a CIDR)")
        try:
            network = ipaddress.ip_network(ip, strict=True)
        except ValueError as err:
            raise ConfigError(f"ip: {ip!r} is not an IP address or a CIDR network ({err})") from None
        return Scope("ip", str(network))
    raise ConfigError(f"scope: {kind!r} is not all, user or ip")


def required_columns(scope: Scope, *, user_column: str | None, ip_column: str | None, admin_configured: bool) -> None:
    """Refuse a scope whose column is not configured, naming the setting; never assume one."""
    if scope.kind == "user" and not user_column:
        raise ConfigError(f"{SETTING}USER_COLUMN: not set: name the sessions' user column to invalidate by user")
    if scope.kind == "ip" and not ip_column:
        raise ConfigError(f"{SETTING}IP_COLUMN: not set: name the sessions' client address column to invalidate by IP")
    if admin_configured and not user_column:
        raise ConfigError(f"{SETTING}USER_COLUMN: not set: admin sessions are recognised by their user")
