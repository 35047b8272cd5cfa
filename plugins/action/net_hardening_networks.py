"""net_hardening_networks: the net_hardening role's network lists checked and made canonical on
the controller, with the standard library (no netaddr). An action, not a filter: a role inside
a collection finds its collection's actions by their short names, never its filters.

    networks: {name: [CIDR strings], ...}
    address: an IP address (optional)

returns, for each name: `bad` (the entries that are not CIDR strings, repr'd; a value that is
not a list at all, whole), `v4` and `v6` (the networks of each IP version, host bits cleared,
sorted, without duplicates), and `has_address` (whether `address` lies in one of them).
Nothing on the rig is read or changed."""

from __future__ import annotations

import ipaddress
from typing import Any

from ansible.plugins.action import ActionBase

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def _network(value: Any) -> Network | None:
    if not isinstance(value, str) or not value.strip():
        return None
    try:
        return ipaddress.ip_network(value.strip(), strict=False)
    except ValueError:
        return None


def bad_cidrs(values: Any) -> list[str]:
    if not isinstance(values, list):
        return [repr(values)]
    return [repr(v) for v in values if _network(v) is None]


def cidrs(values: Any, version: int) -> list[str]:
    found = [_network(v) for v in values] if isinstance(values, list) else []
    nets = {n for n in found if n is not None and n.version == version}
    return [str(n) for n in sorted(nets, key=lambda n: (n.network_address, n.prefixlen))]


def in_networks(address: Any, values: Any) -> bool:
    try:
        addr = ipaddress.ip_address(str(address).strip())
    except ValueError:
        return False
    nets = [_network(v) for v in values] if isinstance(values, list) else []
    return any(n is not None and addr in n for n in nets)


def describe(values: Any, address: Any = None) -> dict[str, Any]:
    return {"bad": bad_cidrs(values), "v4": cidrs(values, 4), "v6": cidrs(values, 6),
            "has_address": address is not None and in_networks(address, values)}  # fmt: skip


class ActionModule(ActionBase):  # type: ignore[misc]
    TRANSFERS_FILES = False
    _VALID_ARGS = frozenset(("networks", "address"))
    _requires_connection = False

    def run(self, tmp: Any = None, task_vars: dict[str, Any] | None = None) -> dict[str, Any]:
        result: dict[str, Any] = super().run(tmp, task_vars)
        networks = self._task.args.get("networks")
        if not isinstance(networks, dict):
            return {**result, "failed": True, "msg": "networks must be a mapping of lists"}
        address = self._task.args.get("address")
        described = {str(k): describe(v, address) for k, v in networks.items()}
        return {**result, "changed": False, **described}
