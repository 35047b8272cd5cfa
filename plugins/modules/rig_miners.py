#!/usr/bin/python3
"""rig_miners: find the rig's miners by what they are, not by what their unit is called.

Read-only. The definition of a miner is module_utils/rigpivot_rig.py's, the one preflight's
probe and the snapshot use too: a process whose program name is a known miner's, or one that
holds a GPU in nvidia-smi's compute apps. Each is mapped to the systemd unit that runs it (its
cgroup), so the drain can stop and disable the unit rather than kill a process a Restart=
brings back.
"""

DOCUMENTATION = r"""
module: rig_miners
short_description: Find a rig's miners (by program name and GPU use) and the units running them.
description:
  - Read-only. The rig's miners by program name and GPU use (the definition preflight's probe and the snapshot share), each mapped to the systemd unit that runs it, and the cron lines that start one at boot.
author: rigpivot maintainers
options:
  units:
    description: Units to look for (the drain's HiveOS units); those systemd knows are returned in C(units_present).
    type: list
    elements: str
    default: []
  paths:
    description: Paths to look for (HiveOS's rig.conf); those that exist are returned in C(paths_present).
    type: list
    elements: path
    default: []
"""

RETURN = r"""
miners: {description: Every miner process (pid, name, exe, unit, host, by), type: list}
units: {description: Units running miners, with their unit file state, type: list}
orphans: {description: Pids of miners without a unit of their own, type: list}
shared: {description: Units that host a miner but are never stopped (ssh, cron), type: list}
ignored: {description: GPU processes of never-miner units (USB watchdog, rigpivot's engine), type: list}
nvidia_smi: {description: ok, or why nvidia-smi could not list compute apps, type: str}
cron: {description: "@reboot lines of the cron tables that start a miner ({path, line})", type: list}
units_present: {description: The units of C(units) systemd knows (a unit file, masked or not), type: list}
paths_present: {description: The paths of C(paths) that exist, type: list}
"""

import os

from ansible.module_utils.basic import AnsibleModule

# The library path (ansible.cfg `library`/`module_utils`: the CLI, the roles run from the
# repository) first; an installed collection (rigpivot.farm) when that is not there.
try:
    from ansible.module_utils.rigpivot_rig import find_miners, miner_cron_lines, unit_show
except ImportError:
    from ansible_collections.rigpivot.farm.plugins.module_utils.rigpivot_rig import (
        find_miners,
        miner_cron_lines,
        unit_show,
    )


def main():
    module = AnsibleModule(
        argument_spec=dict(
            units=dict(type="list", elements="str", default=[]),
            paths=dict(type="list", elements="path", default=[]),
        ),
        supports_check_mode=True,
    )
    found = find_miners()
    found["units"] = [
        {"unit": u, "file_state": unit_show(u, ["UnitFileState"]).get("UnitFileState", "")}
        for u in found["units"]
    ]
    found["cron"] = miner_cron_lines()
    found["units_present"] = [
        u
        for u in module.params["units"]
        if unit_show(u, ["LoadState"]).get("LoadState", "not-found") != "not-found"
    ]
    found["paths_present"] = [p for p in module.params["paths"] if os.path.lexists(p)]
    module.exit_json(changed=False, **found)


if __name__ == "__main__":
    main()
