"""What the plays are told about each rig, beyond the farm file: written as an inventory layered
under it (`-i <this> -i farm.ini`: the farm file's own values win).

- convert: the plan's choices (engine, model, GPUs per card) as host variables the roles'
  defaults fall back to, the SSH settings preflight checked the host key with, and where the
  private store is (snapshots and API keys are fetched there, never into the journal);
- rollback: the SSH settings, and for a rig whose pivot record is damaged, the private store's
  copy of its snapshot to restore from.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from toolkit.hostkeys import ssh_vars
from toolkit.inventory import Host
from toolkit.journal import private_dir
from toolkit.plan import Plan
from toolkit.probe import ProbeOptions


def _write(path: Path, hosts: dict[str, dict[str, Any]]) -> Path:
    path.write_text(yaml.safe_dump({"all": {"hosts": hosts}}, sort_keys=True))
    return path


def convert_inventory(
    journal: Path, plan: Plan, farm: dict[str, Host], store: Path, probe: ProbeOptions | None,
    check: bool,
) -> Path:  # fmt: skip
    """The plan-inventory of a convert run (--check fetches nothing: no store folders)."""
    hosts: dict[str, dict[str, Any]] = {
        r.host: r.role_vars() for r in plan.of("convert") + plan.of("return")
    }
    if not check:
        private_dir(store)
    for name, v in hosts.items():
        v.update(ssh_vars(farm[name], probe))
        v["mining_snapshot_fetch_dir"] = str(store)
        v["inference_server_api_key_fetch_dir"] = str(store)
        if not check:
            private_dir(store / name)
    return _write(journal / "plan-inventory.yml", hosts)


def rollback_inventory(
    journal: Path, hosts: list[Host], stored: dict[str, Path | None], probe: ProbeOptions | None
) -> Path:
    """The inventory of a rollback run: `stored` names, for each rig whose record is damaged,
    the private store's snapshot archive to restore it from."""
    found: dict[str, dict[str, Any]] = {h.name: dict(ssh_vars(h, probe)) for h in hosts}
    for name, archive in stored.items():
        if archive is not None and name in found:
            found[name].update(
                mining_restore_replace_damaged_record=True,
                rigpivot_lease_set_aside_damaged=True,
                mining_restore_snapshot_id=archive.name.removesuffix(".tar.gz"),
                mining_restore_snapshot_archive=str(archive),
            )
    return _write(journal / "ssh-inventory.yml", found)
