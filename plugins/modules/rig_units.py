#!/usr/bin/python3
"""rig_units: bring several systemd units to a wanted state in one module call.

What a loop of `ansible.builtin.systemd_service` tasks did one call (and one Python on the
rig, one task on the controller) per unit: for each unit, in the order given, masked or
unmasked first, then enabled or disabled, then started, stopped or restarted, with the same
rules (a unit counts as enabled when `systemctl is-enabled` would say so; `started` leaves an
active or activating unit alone; `stopped` stops one that is active, activating or
deactivating; `restarted` always restarts). Every unit is tried; the task fails at the end
naming each unit systemd refused, with what it said. Check mode reports what would change.
"""

DOCUMENTATION = r"""
module: rig_units
short_description: Mask, enable or disable, start, stop or restart several systemd units at once.
description:
  - Applies C(masked), then C(enabled), then C(state) to each unit in turn, as ansible.builtin.systemd_service does for one.
  - Fails after trying every unit, naming those systemd refused.
author: rigpivot maintainers
options:
  units:
    type: list
    elements: dict
    default: []
    description:
      - Each a mapping with C(name) and any of C(masked) (bool), C(enabled) (bool) and C(state) (started, stopped, restarted).
  names:
    type: list
    elements: str
    default: []
    description: Units that all get C(masked), C(enabled) and C(state) below (after C(units)).
  masked: {type: bool, description: For C(names).}
  enabled: {type: bool, description: For C(names).}
  state: {type: str, choices: [started, stopped, restarted], description: For C(names).}
  skip_missing:
    type: bool
    default: false
    description: Leave out units this rig does not have, instead of failing.
  daemon_reload:
    type: bool
    default: false
    description: Reload systemd's units first (a unit file changed), as systemd_service's C(daemon_reload).
  query:
    type: list
    elements: str
    default: []
    description:
      - Units to report on after the changes, in C(now) (read-only when nothing else is asked).
      - C(now.units) maps each to C(active) (bool), C(active_state), C(enabled) (its UnitFileState) and C(loaded); C(now.masked) lists every masked unit file.
"""

from ansible.module_utils.basic import AnsibleModule

# The library path (ansible.cfg `library`/`module_utils`: the CLI, the roles run from the
# repository) first; an installed collection (rigpivot.farm) when that is not there.
try:
    from ansible.module_utils.rigpivot_rig import run, unit_actions, unit_state
except ImportError:
    from ansible_collections.rigpivot.farm.plugins.module_utils.rigpivot_rig import (
        run,
        unit_actions,
        unit_state,
    )

STATES = ("started", "stopped", "restarted")
KEYS = {"name", "masked", "enabled", "state"}


def report(units):
    """The units' state now, and every masked unit file (what mining_restore compares with
    its snapshot)."""
    states = {}
    for name in units:
        now = unit_state(name)
        states[name] = {
            "active": now["ActiveState"] in ("active", "reloading", "activating"),
            "active_state": now["ActiveState"],
            "enabled": now["UnitFileState"],
            "loaded": now["LoadState"],
        }
    _, out, _ = run(["systemctl", "list-unit-files", "--state=masked", "--no-legend",
                      "--no-pager", "--full"])  # fmt: skip
    masked = sorted(line.split()[0] for line in out.splitlines() if line.split())
    return {"units": states, "masked": masked}


def check_wants(units):
    bad = []
    for i, want in enumerate(units):
        if not want.get("name"):
            bad.append("unit %d has no name" % (i + 1))
        elif want.get("state") not in (None, *STATES):
            bad.append("%s: state must be one of %s" % (want["name"], ", ".join(STATES)))
        elif set(want) - KEYS:
            bad.append("%s: unknown keys %s" % (want["name"], sorted(set(want) - KEYS)))
    return bad


def main():
    module = AnsibleModule(
        argument_spec=dict(
            units=dict(type="list", elements="dict", default=[]),
            names=dict(type="list", elements="str", default=[]),
            masked=dict(type="bool"),
            enabled=dict(type="bool"),
            state=dict(type="str", choices=list(STATES)),
            skip_missing=dict(type="bool", default=False),
            daemon_reload=dict(type="bool", default=False),
            query=dict(type="list", elements="str", default=[]),
        ),
        supports_check_mode=True,
    )
    p = module.params
    common = {k: p[k] for k in ("masked", "enabled", "state") if p[k] is not None}
    units = list(p["units"]) + [dict(common, name=name) for name in p["names"]]
    bad = check_wants(units)
    if bad:
        module.fail_json(msg="rig_units: " + "; ".join(bad))
    changed, failed = [], []
    if p["daemon_reload"]:
        changed.append({"unit": "", "actions": ["daemon-reload"]})
        if not module.check_mode:
            rc, out, err = run(["systemctl", "daemon-reload"], timeout=300)
            if rc != 0:
                module.fail_json(
                    msg="systemctl daemon-reload exited %d: %s" % (rc, (err or out).strip())
                )
    for want in units:
        name = want["name"]
        now = unit_state(name)
        if now["LoadState"] in ("", "not-found") and want.get("masked") is not True:
            if not p["skip_missing"]:
                failed.append("%s: no such unit on this rig" % name)
            continue
        todo = unit_actions(want, now)
        if todo:
            changed.append({"unit": name, "actions": todo})
        if module.check_mode:
            continue
        for verb in todo:
            rc, out, err = run(["systemctl", verb, name], timeout=300)
            if rc != 0:
                said = (err or out).strip()
                failed.append("systemctl %s %s exited %d: %s" % (verb, name, rc, said))
                break
    result = {"changed": bool(changed), "units": changed}
    if p["query"]:
        result["now"] = report(p["query"])
    if failed:
        module.fail_json(msg="; ".join(failed), **result)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
