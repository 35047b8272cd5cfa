#!/usr/bin/python3
"""rig_stack: remove the AI stack a conversion installed, in one module call.

What mining_restore did in a dozen tasks (each a module run on the rig and a task on the
controller, several of them a loop of one call per path): the stack's units found by their
patterns (loaded units and unit files, template instances included) are stopped and disabled,
the slices systemd gave their templates stopped, their unit files, drop-ins and enablement
links removed (then systemd reloads), the failed ones forgotten (reset-failed); then the
stack's paths are removed, the downloaded models (a models folder that is a mount point, a
models disk, stays: only its contents go), and the system users the conversion created with
their groups. Every step is tried; the task fails at the end naming what could not be done.
Check mode reports what would be removed and changes nothing.
"""

DOCUMENTATION = r"""
module: rig_stack
short_description: Remove the AI stack a conversion installed (units, files, models, users) in one call.
description:
  - Stops and disables the units matching C(unit_patterns) and their template slices, removes their unit files, drop-ins and links, reloads systemd and forgets failed units.
  - Removes C(paths), the models under C(models_dir) (the folder itself unless it is a mount point or C(keep_models)), and C(users) with their groups.
author: rigpivot maintainers
options:
  state: {type: str, default: absent, choices: [absent], description: The stack removed.}
  unit_patterns: {type: list, elements: str, default: [rigpivot-*], description: Unit globs of the stack.}
  unit_dirs:
    type: list
    elements: path
    default: [/etc/systemd/system, /lib/systemd/system, /usr/lib/systemd/system]
    description: Where the stack's unit files, drop-ins and links are looked for (recursively).
  paths: {type: list, elements: path, default: [], description: Files or folders removed whole.}
  models_dir: {type: path, description: The downloaded models' folder.}
  keep_models: {type: bool, default: false, description: Leave the models where they are.}
  users: {type: list, elements: str, default: [], description: System users removed with their groups.}
"""

import fnmatch
import os
import re
import shutil

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

QUIET = ["--no-legend", "--no-pager", "--full", "--plain"]


def first_column(text):
    return [line.split()[0] for line in text.splitlines() if line.split()]


def stack_units(patterns):
    """The stack's units systemd knows (loaded or with a unit file), templates left out:
    (loaded, forgotten), forgotten being those whose file is gone but that systemd remembers."""
    found = set(first_column(run(["systemctl", "list-units", "--all", *QUIET, *patterns])[1]))
    found.update(first_column(run(["systemctl", "list-unit-files", *QUIET, *patterns])[1]))
    loaded, forgotten = [], []  # type: list[tuple[str, dict[str, str]]], list[tuple[str, dict[str, str]]]
    for unit in sorted(u for u in found if "@." not in u):
        now = unit_state(unit)
        (forgotten if now["LoadState"] in ("", "not-found") else loaded).append((unit, now))
    return loaded, forgotten


def template_slices(patterns):
    """The active slices systemd gave the stack's template units (system-rigpivot\\x2d...):
    they stay active after their instances stop."""
    globs = ["system-" + re.sub(r"[-*].*$", "*", p) for p in patterns]
    out = run(["systemctl", "list-units", *QUIET, "--state=active", "--type=slice", *globs])[1]
    return first_column(out)


def unit_files(dirs, patterns):
    """Paths under `dirs` whose name matches a pattern (files, links, drop-in folders); a path
    inside a folder that is itself listed is left out (removed with it)."""
    found, walked = [], set()
    for root in dirs:
        # /lib is /usr/lib on a merged-/usr system (Debian 12): each folder is read once
        if not os.path.isdir(root) or os.path.realpath(root) in walked:
            continue
        walked.add(os.path.realpath(root))
        for top, subdirs, files in os.walk(root):
            for name in sorted(subdirs + files):
                if any(fnmatch.fnmatchcase(name, p) for p in patterns):
                    found.append(os.path.join(top, name))
            # a matching folder goes whole: no need to look inside it
            subdirs[:] = [
                d for d in subdirs if not any(fnmatch.fnmatchcase(d, p) for p in patterns)
            ]
    return sorted(found)


def remove(path):
    if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path)
    else:
        os.unlink(path)


def exists(kind, name):
    return run(["getent", kind, name])[0] == 0


def main():
    module = AnsibleModule(
        argument_spec=dict(
            state=dict(type="str", default="absent", choices=["absent"]),
            unit_patterns=dict(type="list", elements="str", default=["rigpivot-*"]),
            unit_dirs=dict(
                type="list",
                elements="path",
                default=["/etc/systemd/system", "/lib/systemd/system", "/usr/lib/systemd/system"],
            ),
            paths=dict(type="list", elements="path", default=[]),
            models_dir=dict(type="path"),
            keep_models=dict(type="bool", default=False),
            users=dict(type="list", elements="str", default=[]),
        ),
        supports_check_mode=True,
    )
    p = module.params
    check = module.check_mode
    failed, removed, users = [], [], []  # type: list[str], list[str], list[str]
    units = []  # type: list[dict[str, object]]

    def systemctl(*args):
        if check:
            return
        rc, out, err = run(["systemctl", *args], timeout=300)
        if rc != 0:
            failed.append("systemctl %s exited %d: %s" % (" ".join(args), rc, (err or out).strip()))

    def remove_path(path):
        if not os.path.lexists(path):
            return
        removed.append(path)
        if check:
            return
        try:
            remove(path)
        except OSError as e:
            failed.append("could not remove %s: %s" % (path, e))

    patterns = p["unit_patterns"]
    loaded, forgotten = stack_units(patterns) if patterns else ([], [])
    for unit, now in loaded:
        todo = unit_actions({"enabled": False, "state": "stopped"}, now)
        if todo:
            units.append({"unit": unit, "actions": todo})
        for verb in todo:
            systemctl(verb, unit)
    slices = template_slices(patterns) if patterns else []
    for piece in slices:
        systemctl("stop", piece)
    files = unit_files(p["unit_dirs"], patterns) if patterns else []
    for path in files:
        remove_path(path)
    if files:
        systemctl("daemon-reload")
    if loaded or forgotten:
        for pattern in patterns:
            systemctl("reset-failed", pattern)

    for path in p["paths"]:
        remove_path(path)
    # Farms often give the models a disk of their own mounted there: its contents go, the
    # mount point stays (removing it would fail with "Device or resource busy").
    models = p["models_dir"]
    if models and not p["keep_models"] and os.path.isdir(models):
        for name in sorted(os.listdir(models)):
            remove_path(os.path.join(models, name))
        if not os.path.ismount(models):
            remove_path(models)

    for user in p["users"]:
        for kind, program in (("passwd", "userdel"), ("group", "groupdel")):
            # userdel removes the user's own group where USERGROUPS_ENAB says so: asked again
            if not exists(kind, user):
                continue
            users.append("%s %s" % (program, user))
            if check:
                continue
            rc, out, err = run([program, user], timeout=60)
            if rc != 0:
                failed.append("%s %s exited %d: %s" % (program, user, rc, (err or out).strip()))

    result = dict(
        units=units, slices=slices, removed=removed, users=users,
        forgotten=[unit for unit, _ in forgotten],
    )  # fmt: skip
    result["changed"] = any(result.values())
    if failed:
        module.fail_json(msg="; ".join(failed), **result)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
