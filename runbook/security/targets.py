"""What ``block-ip`` may block (§5.4): a validated address or network, never one that
would lock out the team or everyone. Refused unless forced with a reason: loopback,
private, link-local and other special ranges, anything overlapping the allow-list,
the operator's own address, and networks broader than /16 (IPv4) or /32 (IPv6)."""

from __future__ import annotations

import ipaddress
from ipaddress import IPv4Network, IPv6Network

from runbook.errors import ConfigError

Network = IPv4Network | IPv6Network
BROADEST = {4: 16, 6: 32}


def parse_target(text: str) -> Network:
    """An address (a /32 or /128) or a network in CIDR form; host bits set in a network
    (10.1.2.3/8) are ambiguous and refused."""
    value = text.strip()
    try:
        return ipaddress.ip_network(value, strict=True)
    except ValueError as err:
        try:
            ipaddress.ip_network(value, strict=False)
        except ValueError:
            raise ConfigError(f"ip: {value!r} is not an IP address or CIDR network (e.g. 203.0.113.7 or 203.0.113.0/24)") from None
        raise ConfigError(f"ip: {value!r} has host bits set ({err}); did you mean {ipaddress.ip_network(value, strict=False)}?") from None


def refusals(network: Network, *, allow_list: list[str], operator_ip: str | None) -> list[str]:
    """Why blocking ``network`` could lock out the team or everyone (empty: it may be blocked)."""
    why = []
    special = [
        (network.is_loopback, "loopback"), (network.is_private, "a private range"), (network.is_link_local, "link-local"),
        (network.is_multicast, "multicast"), (network.is_unspecified, "unspecified"), (network.is_reserved, "reserved"),
    ]
    why += [f"{network} is {what}" for flag, what in special if flag]
    if network.prefixlen < BROADEST[network.version]:
        why.append(f"{network} is broader than /{BROADEST[network.version]}")
    for entry in allow_list:
        allowed = ipaddress.ip_network(entry, strict=False)
        if allowed.version == network.version and allowed.overlaps(network):
            why.append(f"{network} overlaps the allow-list entry {allowed}")
    if operator_ip:
        own = ipaddress.ip_address(operator_ip)
        if own.version == network.version and own in network:
            why.append(f"{network} holds the operator's own address {own}")
    return why


def check_target(text: str, *, allow_list: list[str], operator_ip: str | None, force: bool = False, reason: str = "") -> tuple[Network, list[str]]:
    """The network to block and the refusals overridden by ``force`` (with a reason);
    a ConfigError (exit 2) names what is wrong, before anything is touched."""
    network = parse_target(text)
    why = refusals(network, allow_list=allow_list, operator_ip=operator_ip)
    if why and not force:
        raise ConfigError(f"ip: refusing to block {network}: {'; '.join(why)} (use --force with --reason to block it anyway)")
    if why and not reason.strip():
        raise ConfigError(f"ip: --force needs --reason (blocking {network} overrides: {'; '.join(why)})")
    return network, why
