#!/usr/bin/python3
"""rig_venvs: each inference engine in its own virtualenv, installed from the farm's wheelhouse,
in one module call.

What the role did per engine in five looped tasks (stat, a pip check, a removal, `python3 -m
venv`, pip install), for every engine at once: a virtualenv cut short (a power cut during
`python3 -m venv` leaves bin/python without a working pip) is removed and made again; a
missing one is made; then pip, run in the virtualenv, installs what is missing from the farm's
wheelhouse only (`--no-index --find-links`; the pip module would need python3-packaging on
the rig's own Python, which mining images rarely have). In check mode nothing is made or
removed and pip runs with --dry-run in the virtualenvs that exist.
"""

DOCUMENTATION = r"""
module: rig_venvs
short_description: Make each engine's virtualenv and install its packages from the farm's wheelhouse, in one call.
description:
  - Removes a virtualenv whose pip does not run, makes the missing ones, then runs pip install (no index, the wheelhouse only) in each.
author: rigpivot maintainers
options:
  venvs:
    type: list
    elements: dict
    required: true
    description: Each C(path) (the virtualenv) and C(packages) (pip requirement specifiers).
  find_links: {type: str, required: true, description: The farm's wheelhouse (pip --find-links).}
  trusted_host: {type: str, default: "", description: Host pip may fetch from over plain HTTP.}
  python: {type: str, default: python3, description: The Python that makes the virtualenvs.}
"""

import os
import shutil

from ansible.module_utils.basic import AnsibleModule


def _tail(out, err):
    lines = ((err or "") + (out or "")).strip().splitlines()
    return " | ".join(lines[-6:]) or "no output"


def ensure(module, venv, p):
    """What changed in `venv` ([] for nothing), or fail naming it."""
    changed = []
    python = os.path.join(venv["path"], "bin", "python")
    if os.path.exists(python):
        rc, _, _ = module.run_command([python, "-m", "pip", "--version"])
        if rc != 0:
            changed.append("removed (half-built)")
            if not module.check_mode:
                shutil.rmtree(venv["path"])
    if not os.path.exists(python) or (module.check_mode and changed):
        changed.append("made")
        if module.check_mode:
            return [*changed, "installed %s" % ", ".join(venv["packages"])]
        rc, out, err = module.run_command([p["python"], "-m", "venv", venv["path"]])
        if rc != 0:
            module.fail_json(
                msg="making the virtualenv %s failed: %s" % (venv["path"], _tail(out, err))
            )
    argv = [python, "-m", "pip", "install", "--disable-pip-version-check", "--no-input",
            "--no-index", "--find-links", p["find_links"]]  # fmt: skip
    if p["trusted_host"]:
        argv += ["--trusted-host", p["trusted_host"]]
    if module.check_mode:
        argv.append("--dry-run")
    rc, out, err = module.run_command(argv + list(venv["packages"]))
    if rc != 0:
        module.fail_json(
            msg="installing %s into %s from %s failed: %s"
            % (", ".join(venv["packages"]), venv["path"], p["find_links"], _tail(out, err)),
            changes={venv["path"]: changed},
        )
    if "Successfully installed" in out or "Would install" in out:
        changed.append("installed %s" % ", ".join(venv["packages"]))
    return changed


def main():
    module = AnsibleModule(
        argument_spec=dict(
            venvs=dict(
                type="list",
                elements="dict",
                required=True,
                options=dict(
                    path=dict(type="path", required=True),
                    packages=dict(type="list", elements="str", required=True),
                ),
            ),
            find_links=dict(type="str", required=True),
            trusted_host=dict(type="str", default=""),
            python=dict(type="str", default="python3"),
        ),
        supports_check_mode=True,
    )
    changes = {}
    for venv in module.params["venvs"]:
        done = ensure(module, venv, module.params)
        if done:
            changes[venv["path"]] = done
    module.exit_json(changed=bool(changes), changes=changes)


if __name__ == "__main__":
    main()
