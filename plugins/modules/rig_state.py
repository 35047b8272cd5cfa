#!/usr/bin/python3
"""rig_state: the rig's place in the pivot, kept on the rig in /var/lib/rigpivot/state.json.

Convert moves a rig forward through the states below; a step that already happened is never
undone by re-running an earlier step (so a second `convert` changes nothing), except with
force=true, which rollback uses to put the rig back to `mining` or `quarantined`, and to mark
it `restoring` while it works (so a rollback cut short is recorded as such).

The record is also the conversion's ledger: a step names the paths it is about to create
(`created`) before it creates them, and those that do not exist yet are kept in the record's
`created` list (likewise the packages apt is about to add, `created_packages`, and the system
users, `created_users`). Rollback removes exactly those (and restores what the snapshot holds),
so it never deletes a file, package or user the operator made. `retire` ends a conversion: its snapshot id moves to
`retired_snapshots` (never restored again) and the ledger is emptied.
"""

DOCUMENTATION = r"""
module: rig_state
short_description: Record a rig's pivot state (mining, snapshotted, ..., ai) on the rig.
description:
  - The rig's place in the pivot, kept on the rig in the pivot record (/var/lib/rigpivot/state.json). States move forward only; C(force) moves back (rollback, quarantine, restoring).
  - The record is also the conversion's ledger - paths and packages a step is about to create join it, and rollback removes exactly those.
author: rigpivot maintainers
options:
  state:
    description: The state the rig has reached; omit it to record facts only.
    type: str
    choices: [mining, snapshotted, drained, hardened, stack_installed, serving, ai, quarantined, restoring]
  step:
    description: The role or step that reached it (or recorded the facts).
    type: str
    required: true
  facts:
    description: Facts to merge into the record (snapshot id, versions, reason...).
    type: dict
    default: {}
  add_to_facts:
    description: >-
      Lists to add to the record's facts of the same name, keeping what earlier runs recorded
      there (a sorted union: the units every drain of this conversion stopped).
    type: dict
    default: {}
  force:
    description: Allow moving to an earlier state (rollback, quarantine).
    type: bool
    default: false
  created:
    description: Paths the step is about to create; those missing now join the ledger.
    type: list
    elements: str
    default: []
  installing:
    description: >-
      Packages (apt specs) the step is about to install; every package apt would newly
      install for them (dependencies too, as `apt-get -s install` lists them) joins the ledger's
      `created_packages`, which rollback purges.
    type: list
    elements: str
    default: []
  users:
    description: >-
      System users the step is about to create; those the rig has no passwd entry for now join
      the ledger's `created_users`, which rollback removes (with their group).
    type: list
    elements: str
    default: []
  retire:
    description: End the conversion (with rollback's state mining) - retire its snapshot, empty the ledger.
    type: bool
    default: false
  set_aside_damaged:
    description: >-
      When the record is damaged (not JSON), move it aside (state.json.damaged-<time>) and start
      a new one instead of failing: rollback does this for a rig it restores from the
      controller's copy of its snapshot.
    type: bool
    default: false
  path:
    description: Where the record lives.
    type: path
    default: /var/lib/rigpivot/state.json
"""

import json
import os
import pwd
import re

from ansible.module_utils.basic import AnsibleModule

# The library path (ansible.cfg `library`/`module_utils`: the CLI, the roles run from the
# repository) first; an installed collection (rigpivot.farm) when that is not there.
try:
    from ansible.module_utils.rigpivot_rig import (
        DamagedRecord,
        load_record_or_set_aside,
        record_locked,
        renew_lease,
        run,
        save_record,
        utc_now,
        utc_text,
    )
except ImportError:
    from ansible_collections.rigpivot.farm.plugins.module_utils.rigpivot_rig import (
        DamagedRecord,
        load_record_or_set_aside,
        record_locked,
        renew_lease,
        run,
        save_record,
        utc_now,
        utc_text,
    )

# Hardening comes before the engines: no inference port listens before the firewall is in force.
ORDER = ["mining", "snapshotted", "drained", "hardened", "stack_installed", "serving", "ai"]


def new_packages(specs):
    """The packages apt would newly install for `specs` (not upgrades: those were there)."""
    if not specs:
        return []
    rc, out, _ = run(["apt-get", "-s", "-o", "Debug::NoLocking=1", "install", *specs], timeout=120)
    if rc == 0:
        # "Inst name (version ...)" is a new package; "Inst name [old] (new ...)" an upgrade.
        return [line.split()[1] for line in out.splitlines() if re.match(r"^Inst \S+ \(", line)]
    # apt cannot say (lists not fetched yet): the packages named, where dpkg has none.
    names = [re.split(r"[=<>]", spec)[0] for spec in specs]
    return [n for n in names if not installed(n)]


def installed(name):
    rc, out, _ = run(["dpkg-query", "-W", "-f=${db:Status-Abbrev}", name])
    return rc == 0 and out[1:2] == "i"


def has_user(name):
    try:
        pwd.getpwnam(name)
    except KeyError:
        return False
    return True


def rank(state):
    return ORDER.index(state) if state in ORDER else -1


def update(before, p, check_mode):
    """The record after this step, and whether it changed."""
    after = json.loads(json.dumps(before))
    moved = False
    current = before.get("state", "mining")
    wanted = p["state"] or current
    if wanted != current and (p["force"] or rank(wanted) > rank(current)):
        after["state"], after["step"], moved = wanted, p["step"], True
    merged = dict(before.get("facts") or {})
    merged.update(p["facts"])
    for key, values in p["add_to_facts"].items():
        merged[key] = sorted(set(merged.get(key) or []) | set(values))
    ledger = list(before.get("created") or [])
    ledger += [c for c in p["created"] if c not in ledger and not os.path.lexists(c)]
    pkg_ledger = list(before.get("created_packages") or [])
    if p["installing"] and not check_mode:
        pkg_ledger += [n for n in new_packages(p["installing"]) if n not in pkg_ledger]
    user_ledger = list(before.get("created_users") or [])
    user_ledger += [u for u in p["users"] if u not in user_ledger and not has_user(u)]
    if p["retire"]:
        # The conversion's facts (drained units, ports, versions) end with it: the next
        # conversion records its own. What stays is which snapshots were restored.
        retired = list(merged.get("retired_snapshots") or [])
        if merged.get("snapshot_id") and merged["snapshot_id"] not in retired:
            retired.append(merged["snapshot_id"])
        merged = dict(p["facts"], retired_snapshots=retired, snapshot_id=None)
        ledger, pkg_ledger, user_ledger = [], [], []
    after["facts"] = merged
    if ledger or "created" in before:
        after["created"] = ledger
    if pkg_ledger or "created_packages" in before:
        after["created_packages"] = pkg_ledger
    if user_ledger or "created_users" in before:
        after["created_users"] = user_ledger
    changed = (
        moved
        or merged != (before.get("facts") or {})
        or ledger != list(before.get("created") or [])
        or pkg_ledger != list(before.get("created_packages") or [])
        or user_ledger != list(before.get("created_users") or [])
    )
    if changed:
        now = utc_now()
        after["updated"] = utc_text(now)
        # The run that holds the rig's lease is alive while it writes: the lease runs again.
        renew_lease(after, now)
        if moved:
            after.setdefault("history", []).append(
                {"state": p["state"], "step": p["step"], "at": utc_text(now)}
            )
    return after, changed


def main():
    module = AnsibleModule(
        argument_spec=dict(
            state=dict(type="str", required=False, choices=[*ORDER, "quarantined", "restoring"]),
            step=dict(type="str", required=True),
            facts=dict(type="dict", default={}),
            add_to_facts=dict(type="dict", default={}),
            force=dict(type="bool", default=False),
            created=dict(type="list", elements="str", default=[]),
            installing=dict(type="list", elements="str", default=[]),
            users=dict(type="list", elements="str", default=[]),
            retire=dict(type="bool", default=False),
            set_aside_damaged=dict(type="bool", default=False),
            path=dict(type="path", default="/var/lib/rigpivot/state.json"),
        ),
        supports_check_mode=True,
    )
    p = module.params
    with record_locked(p["path"], write=not module.check_mode):
        try:
            before, set_aside = load_record_or_set_aside(p["path"], p["set_aside_damaged"])
        except DamagedRecord as e:
            module.fail_json(msg=str(e))
        after, changed = update(before, p, module.check_mode)
        if set_aside and not module.check_mode:
            os.rename(p["path"], set_aside)
            changed = True
        if changed and not module.check_mode:
            save_record(p["path"], after)
    current = before.get("state", "mining")
    diff = {"before": {"state": current}, "after": {"state": after["state"]}}
    module.exit_json(
        changed=changed, state=after["state"], record=after, diff=diff, set_aside=set_aside
    )


if __name__ == "__main__":
    main()
