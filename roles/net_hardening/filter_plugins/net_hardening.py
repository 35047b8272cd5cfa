"""Filters of the net_hardening role: CIDR checks with the standard library (no netaddr)."""

from __future__ import annotations

import ipaddress
from typing import Any


def _network(value: Any) -> ipaddress.IPv4Network | ipaddress.IPv6Network | None:
    if not isinstance(value, str) or not value.strip():
        return None
    try:
        return ipaddress.ip_network(value.strip(), strict=False)
    except ValueError:
        return None


def net_hardening_bad_cidrs(values: Any) -> list[str]:
    """The entries of a list that are not CIDR strings ("10.0.0.0/24", "192.0.2.7/32", "fd00::/8");
    a value that is not a list at all is returned whole."""
    if not isinstance(values, list):
        return [repr(values)]
    return [repr(v) for v in values if _network(v) is None]


def net_hardening_cidrs(values: list[Any], version: int) -> list[str]:
    """The networks of one IP version, canonical (host bits cleared), sorted, without duplicates."""
    nets = {n for n in (_network(v) for v in values) if n is not None and n.version == version}
    return [str(n) for n in sorted(nets)]  # type: ignore[type-var]


def net_hardening_in_networks(address: Any, values: list[Any]) -> bool:
    """Whether an address lies in one of the networks."""
    try:
        addr = ipaddress.ip_address(str(address).strip())
    except ValueError:
        return False
    return any(n is not None and addr in n for n in (_network(v) for v in values))


class FilterModule:
    def filters(self) -> dict[str, Any]:
        return {
            "net_hardening_bad_cidrs": net_hardening_bad_cidrs,
            "net_hardening_cidrs": net_hardening_cidrs,
            "net_hardening_in_networks": net_hardening_in_networks,
        }
