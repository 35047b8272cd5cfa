"""preflight: read the farm file, check every rig's policy, probe, and judge. Nothing is changed.

The CLI probes the fleet over paramiko (toolkit/probe.py); a play probes each rig with the
rig_facts module and judges it through the farm_plan action (plugins/action/farm_plan.py),
with the same rules: `play_host`, `play_policy` and `judge_and_plan` below.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from toolkit.errors import BadInputError
from toolkit.hardware import catalog_with, farm_catalog_path
from toolkit.hostkeys import SSH_SETTING_VARS, host_key_checking_off
from toolkit.inventory import Host, load_inventory
from toolkit.models import FleetReport, RigFacts, RigVerdict
from toolkit.plan import RigPlan, plan_conversion
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
        _refuse_unchecked_keys(h)
    return hosts, policies


def _refuse_unchecked_keys(h: Host) -> None:
    if where := host_key_checking_off(h):
        raise BadInputError(
            f"{h.name}: the farm file turns SSH host key checking off ({where}); rigpivot "
            "always checks host keys (a changed key means a reinstalled rig or someone in "
            "the middle): remove it, and trust new keys with --accept-new-host-keys"
        )


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
            rigs.append(unreachable(host, res.error))
        else:
            rigs.append(judge_rig(host, res.facts, policies[host.name]))
    return FleetReport(inventory=str(inventory), rigs=rigs)


def unreachable(host: Host, error: str | None) -> RigVerdict:
    return RigVerdict(
        host=host.name,
        address=f"{host.address}:{host.port}",
        status="unreachable",
        error=error,
        verdict="unknown",
        reasons=[error or "unreachable"],
    )


# -- the same, inside a play ----------------------------------------------------------------

# Variables the plays themselves set (from the CLI, an AWX survey or extra vars), never policy.
_PLAY_VAR_PREFIXES = ("rigpivot_plan_", "rigpivot_lease_", "rigpivot__")
_PLAY_VARS = {"rigpivot_batch_size", "rigpivot_max_fail_percent", "rigpivot_run_id",
              "rigpivot_report_dir"}  # fmt: skip
# What a rig's policy and its SSH settings are read from.
PLAY_HOST_VARS = ("ansible_host", "ansible_port", "ansible_user", *SSH_SETTING_VARS)


def wanted_in_play(var: str) -> bool:
    """The variables of a rig a play hands to `play_host`."""
    if var in PLAY_HOST_VARS:
        return True
    return var.startswith("rigpivot_") and not (
        var in _PLAY_VARS or var.startswith(_PLAY_VAR_PREFIXES)
    )


def play_host(name: str, variables: dict[str, Any]) -> Host:
    """A rig as a play sees it: its policy and SSH variables (`wanted_in_play`), from the
    inventory, group and host vars or extra vars alike."""
    return Host(name=name, vars={k: v for k, v in variables.items() if wanted_in_play(k)})


def play_policy(host: Host, inventory_file: Path | None) -> Policy:
    """The rig's policy, with the farm's model catalog (models.yml beside the farm file) as the
    CLI reads it. Bad input raises BadInputError naming the host and the variable."""
    catalog = catalog_with(farm_catalog_path(inventory_file) if inventory_file else None)
    policy = policy_for(host, catalog)
    _refuse_unchecked_keys(host)
    return policy


def judge_and_plan(host: Host, facts: dict[str, Any], policy: Policy) -> tuple[RigVerdict, RigPlan]:
    """One rig's verdict and its plan (convert, return, already-ai, untouched, ...) from the
    facts rig_facts returned, as `rigpivot convert` plans it."""
    verdict = judge_rig(host, RigFacts.model_validate(facts), policy)
    plan = plan_conversion(FleetReport(inventory="", rigs=[verdict]), 1)
    return verdict, plan.rigs[0]
