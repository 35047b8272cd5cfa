#!/usr/bin/python3
"""rig_dpkg_recover: finish what an interrupted dpkg left half done, before any apt work.

A rig that lost power or was reset while dpkg ran (a killed conversion, a rollback cut short)
refuses every apt operation until `dpkg --configure -a` finishes the job. This runs it only
when dpkg has something to finish: its journal (`<admindir>/updates`) holds entries, or
`dpkg --audit` names half-installed or half-configured packages. Best effort: a package whose
own script fails stays as it is, for apt to fix or name; the module never fails. Changed only
when it ran and dpkg's state moved; in check mode it says whether it would run.
"""

DOCUMENTATION = r"""
module: rig_dpkg_recover
short_description: Run `dpkg --configure -a` when an interrupted dpkg left work half done (best effort).
description:
  - Runs C(dpkg --configure -a) only when an interrupted dpkg left work to finish (its journal or C(dpkg --audit)). Best effort - never fails.
author: rigpivot maintainers
options:
  admindir:
    description: dpkg's database directory.
    type: path
    default: /var/lib/dpkg
  query:
    description: Package name patterns (dpkg-query's) whose packages to read afterwards, into C(packages).
    type: list
    elements: str
    default: []
"""

RETURN = r"""
pending: {description: Whether dpkg had something to finish before this ran, type: bool}
ran: {description: Whether `dpkg --configure -a` ran, type: bool}
configure_rc: {description: "Its exit code (null when it did not run; not `rc`, which Ansible would read as the task failing)", type: int}
stdout: {description: What it printed, type: str}
stderr: {description: Its errors, type: str}
audit: {description: "`dpkg --audit` before the run", type: str}
packages:
  description: "The packages dpkg knows matching C(query), after the run: name, version and status (dpkg's db:Status-Abbrev, e.g. ii, hi, rc)"
  type: list
  elements: dict
"""

import os

from ansible.module_utils.basic import AnsibleModule

# The library path (ansible.cfg `library`/`module_utils`: the CLI, the roles run from the
# repository) first; an installed collection (rigpivot.farm) when that is not there.
try:
    from ansible.module_utils.rigpivot_rig import run
except ImportError:
    from ansible_collections.rigpivot.farm.plugins.module_utils.rigpivot_rig import run


def unfinished(admindir):
    """(journal entries, `dpkg --audit` text): what dpkg has left to finish."""
    try:
        journal = sorted(n for n in os.listdir(os.path.join(admindir, "updates")) if n.isdigit())
    except OSError:
        journal = []
    # --audit exits 1 when it finds something (newer dpkg): its text is the answer.
    _, out, _ = run(["dpkg", "--admindir=%s" % admindir, "--audit"], timeout=120)
    return journal, out.strip()


def packages(admindir, patterns):
    """[{name, version, status}] of the packages dpkg knows matching `patterns`."""
    if not patterns:
        return []
    fmt = "${Package}\\t${Version}\\t${db:Status-Abbrev}\\n"
    # 1: some pattern matches no package (yet)
    _, out, _ = run(["dpkg-query", "--admindir=%s" % admindir, "-W", "--showformat=" + fmt,
                     *patterns])  # fmt: skip
    found = []
    for line in out.splitlines():
        f = line.split("\t")
        if len(f) == 3:
            found.append({"name": f[0], "version": f[1], "status": f[2].strip()})
    return found


def main():
    module = AnsibleModule(
        argument_spec=dict(
            admindir=dict(type="path", default="/var/lib/dpkg"),
            query=dict(type="list", elements="str", default=[]),
        ),
        supports_check_mode=True,
    )
    admindir = module.params["admindir"]
    before = unfinished(admindir)
    pending = bool(before[0] or before[1])
    result = dict(
        pending=pending, ran=False, configure_rc=None, stdout="", stderr="", audit=before[1]
    )
    changed = pending
    if pending and not module.check_mode:
        rc, out, err = run(["dpkg", "--admindir=%s" % admindir, "--configure", "-a"], timeout=3600)
        result.update(ran=True, configure_rc=rc, stdout=out, stderr=err)
        changed = rc == 0 or unfinished(admindir) != before
    result["packages"] = packages(admindir, module.params["query"])
    module.exit_json(changed=changed, **result)


if __name__ == "__main__":
    main()
