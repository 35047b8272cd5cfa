"""preflight: read the farm file, check every rig's policy, probe, and judge. Nothing is changed."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from toolkit.errors import BadInputError
from toolkit.hardware import catalog_with, farm_catalog_path
from toolkit.hostkeys import host_key_checking_off
from toolkit.inventory import Host, load_inventory
from toolkit.models import FleetReport, RigVerdict
from toolkit.policy import Policy, judge_rig, policy_for
from toolkit.probe import ProbeOptions, ProbeResult, probe_fleet
from toolkit.rolevars import check_role_vars


def check_farm(inventory: Path, limit: str | None = None) -> tuple[list[Host], dict[str, Policy]]:
    """The farm file as every verb reads it, before any rig is contacted: the inventory, the
    --limit, each host's policy variables and role variables, and the farm's own model catalog
    (models.yml beside the farm file, from `rigpivot models add`) on top of the built-in one.
    Bad input raises BadInputError naming file, line and host, and nothing is touched."""
    hosts = load_inventory(inventory).select(limit)
    catalog = catalog_with(farm_catalog_path(inventory))
    policies = {h.name: policy_for(h, catalog) for h in hosts}
    for h in hosts:
        check_role_vars(h)
        if where := host_key_checking_off(h):
            raise BadInputError(
                f"{h.name}: the farm file turns SSH host key checking off ({where}); rigpivot "
                "always checks host keys (a changed key means a reinstalled rig or someone in "
                "the middle): remove it, and trust new keys with --accept-new-host-keys"
            )
    return hosts, policies


def run_preflight(
    inventory: Path,
    limit: str | None = None,
    opts: ProbeOptions | None = None,
    on_result: Callable[[ProbeResult], None] = lambda _r: None,
) -> FleetReport:
    # Every host's variables are checked before the first SSH connection: bad input touches
    # nothing.
    hosts, policies = check_farm(inventory, limit)
    return judge_fleet(inventory, hosts, policies, opts, on_result)


def judge_fleet(
    inventory: Path,
    hosts: list[Host],
    policies: dict[str, Policy],
    opts: ProbeOptions | None = None,
    on_result: Callable[[ProbeResult], None] = lambda _r: None,
) -> FleetReport:
    """Probe and judge hosts that `check_farm` has already read and checked."""
    results = probe_fleet(hosts, opts or ProbeOptions(), on_result)
    rigs: list[RigVerdict] = []
    for host, res in zip(hosts, results, strict=True):
        if res.facts is None:
            rigs.append(
                RigVerdict(
                    host=host.name,
                    address=f"{host.address}:{host.port}",
                    status="unreachable",
                    error=res.error,
                    verdict="unknown",
                    reasons=[res.error or "unreachable"],
                )
            )
        else:
            rigs.append(judge_rig(host, res.facts, policies[host.name]))
    return FleetReport(inventory=str(inventory), rigs=rigs)
