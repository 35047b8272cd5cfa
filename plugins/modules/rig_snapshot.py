#!/usr/bin/python3
"""rig_snapshot: copy everything rollback needs into /var/lib/rigpivot/snapshots/<id>/.

Layout and manifest: docs/roles.md ("The snapshot on the rig"). One snapshot per conversion,
taken as the rig is when the conversion starts: operators change rigs between cycles, and an
old snapshot would put back old wallets and drop their new files. A conversion that resumes
passes its own snapshot's id (`reuse`), which is then reused, never overwritten. The snapshot
is written to a temporary directory and renamed into place, so a rig that loses power
mid-snapshot has either a whole snapshot or none.
"""

DOCUMENTATION = r"""
module: rig_snapshot
short_description: Take (once) the snapshot of a mining rig that rollback restores from.
description:
  - Copies everything rollback needs into /var/lib/rigpivot/snapshots/<id>/ (changing nothing else), written to a temporary directory and renamed into place.
  - One snapshot per conversion; a conversion that resumes passes its snapshot's id (C(reuse)).
author: rigpivot maintainers
options:
  root: {type: path, default: /var/lib/rigpivot/snapshots, description: Where snapshots live.}
  paths: {type: list, elements: str, default: [], description: Files or shell globs to copy.}
  dirs:
    type: list
    elements: str
    default: []
    description: Directories copied whole; rollback removes files added to them since.
  watch_absent:
    type: list
    elements: str
    default: []
    description: Paths conversion may create; those missing now are recorded as absent.
  units: {type: list, elements: str, default: [], description: Units whose state to record.}
  package_patterns: {type: list, elements: str, default: [], description: dpkg-query patterns.}
  platform: {type: str, default: none, description: hiveos, linux or none (from rig_facts).}
  miners: {type: list, elements: dict, default: [], description: Miner processes (rig_facts).}
  reuse:
    type: str
    default: ""
    description: The id of the snapshot the conversion in progress took; reused when whole.
  record:
    type: path
    default: ""
    description: >-
      The pivot record: without C(reuse), a rig part-way through a conversion (its state not
      mining) reuses the snapshot the record names.
"""

import datetime
import fnmatch
import glob
import json
import os
import shutil
import stat
import subprocess
import tempfile

from ansible.module_utils.basic import AnsibleModule

# The library path (ansible.cfg `library`/`module_utils`: the CLI, the roles run from the
# repository) first; an installed collection (rigpivot.farm) when that is not there.
try:
    from ansible.module_utils.rigpivot_rig import (
        DamagedRecord,
        exec_paths,
        load_record,
        miner_stats,
        owner_names,
        sha256,
        smi_power_draw,
        smi_query,
        smi_value,
        unit_show,
    )
except ImportError:
    from ansible_collections.rigpivot.farm.plugins.module_utils.rigpivot_rig import (
        DamagedRecord,
        exec_paths,
        load_record,
        miner_stats,
        owner_names,
        sha256,
        smi_power_draw,
        smi_query,
        smi_value,
        unit_show,
    )

# Unit files under these belong to packages (HiveOS's own or Debian's): not operator config.
PACKAGE_UNIT_DIRS = ("/lib/systemd/", "/usr/lib/systemd/")
SCRIPT_DIRS = ("/opt/", "/etc/", "/usr/local/", "/home/", "/root/", "/srv/")


def run(args):
    p = subprocess.run(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    return p.returncode, p.stdout


def unit_info(unit):
    props = unit_show(unit, ["UnitFileState", "ActiveState", "FragmentPath", "ExecStart"])
    return (
        {
            "enabled": props.get("UnitFileState") or "unknown",
            "active": props.get("ActiveState") == "active",
        },
        props.get("FragmentPath") or "",
        exec_paths(props.get("ExecStart", "")),
    )


def power_state():
    """Each card's power limit and persistence mode; a limit nvidia-smi reads as [N/A] (cards
    without power management) is recorded as unknown (None), and restored as nothing."""
    if not shutil.which("nvidia-smi"):
        return []
    try:
        rows = smi_query("gpu", ["index", "power.limit", "persistence_mode"])
    except RuntimeError:
        return []
    return [
        {
            "index": int(r["index"]),
            "limit_w": smi_value(r["power.limit"]) if r["power.limit"] else None,
            "persistence": r["persistence_mode"] == "Enabled",
        }
        for r in rows
        if r["index"].isdigit()
    ]


def mining_measured(miners):
    """What the rig earns mining, measured as the conversion starts (before the drain): each
    card's power draw (nvidia-smi) and each miner's figures from its API. advise reads them
    back for a rig that now serves AI (rig_facts: pivot.mining_measured)."""
    draw = smi_power_draw() if shutil.which("nvidia-smi") else {}
    return {
        "taken": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "power_draw_w": draw,
        "miner_stats": miner_stats([m for m in miners if m.get("name") and m.get("pid")]),
    }


def driver_version():
    if not shutil.which("nvidia-smi"):
        return None
    try:
        rows = smi_query("gpu", ["driver_version"])
    except RuntimeError:
        return None
    return rows[0]["driver_version"] if rows else None


def packages(patterns):
    found = {}
    if patterns:
        rc, out = run(
            ["dpkg-query", "-W", "-f", "${db:Status-Abbrev} ${Package} ${Version}\n", *patterns]
        )
        for line in out.splitlines():
            parts = line.split()
            if len(parts) == 3 and parts[0].startswith("i"):
                found[parts[1]] = parts[2]
    rc, out = run(["apt-mark", "showhold"])
    held = sorted(p for p in out.split() if any(fnmatch.fnmatch(p, pat) for pat in patterns))
    return found, held


def collect_files(params, units):
    files = set()  # type: set[str]
    for pattern in params["paths"]:
        files.update(p for p in glob.glob(pattern) if os.path.isfile(p))
    for d in params["dirs"]:
        for base, subdirs, names in os.walk(d):
            # os.walk lists a symlink to a directory among the directories and does not follow
            # it: it is kept as the link it is, like a link to a file or a dangling one.
            for n in names + subdirs:
                path = os.path.join(base, n)
                if os.path.islink(path) or os.path.isfile(path):
                    files.add(path)
    unit_state = {}
    for unit in units:
        info, fragment, scripts = unit_info(unit)
        if info["enabled"] in ("", "unknown") and not info["active"]:
            continue
        unit_state[unit] = info
        for path in [fragment, *scripts]:
            if (
                path
                and path.startswith(SCRIPT_DIRS)
                and not path.startswith(PACKAGE_UNIT_DIRS)
                and os.path.isfile(path)
            ):
                files.add(path)
    return sorted(files), unit_state


def take(params, units, snap_dir):
    files, unit_state = collect_files(params, units)
    manifest_files = {}
    for path in files:
        st = os.lstat(path)
        dest = os.path.join(snap_dir, "files", path.lstrip("/"))
        os.makedirs(os.path.dirname(dest), exist_ok=True)
        if os.path.islink(path):
            # HiveOS links /etc/environment into /hive/etc: restore a link, not a copy. A link
            # to a directory or to nothing is a link too.
            os.symlink(os.readlink(path), dest)
            target_is_file = os.path.isfile(path)
            manifest_files[path] = {
                "link": os.readlink(path),
                "sha256": sha256(path) if target_is_file else None,
            }
            continue
        if not stat.S_ISREG(st.st_mode):
            continue
        shutil.copy2(path, dest)
        owner, group = owner_names(st)
        manifest_files[path] = {
            "sha256": sha256(path),
            "mode": "%04o" % (st.st_mode & 0o7777),
            "owner": owner,
            "group": group,
        }
    pkgs, held = packages(params["package_patterns"])
    if shutil.which("nft"):
        rc, out = run(["nft", "list", "ruleset"])
        with open(os.path.join(snap_dir, "nftables.ruleset"), "w") as f:
            f.write(out if rc == 0 else "")
    return {
        "files": manifest_files,
        "dirs": sorted(params["dirs"]),
        "absent": sorted(p for p in params["watch_absent"] if not os.path.lexists(p)),
        "units": unit_state,
        "packages": pkgs,
        "held": held,
        "driver_version": driver_version(),
        "power": power_state(),
        "miners": [{"name": m.get("name"), "unit": m.get("unit")} for m in params["miners"]],
        "platform": params["platform"],
        "measured": mining_measured(params["miners"]),
    }


def main():
    module = AnsibleModule(
        argument_spec=dict(
            root=dict(type="path", default="/var/lib/rigpivot/snapshots"),
            paths=dict(type="list", elements="str", default=[]),
            dirs=dict(type="list", elements="str", default=[]),
            watch_absent=dict(type="list", elements="str", default=[]),
            units=dict(type="list", elements="str", default=[]),
            package_patterns=dict(type="list", elements="str", default=[]),
            platform=dict(type="str", default="none"),
            miners=dict(type="list", elements="dict", default=[]),
            reuse=dict(type="str", default=""),
            record=dict(type="path", default=""),
        ),
        supports_check_mode=True,
    )
    p = module.params
    if not p["reuse"] and p["record"]:
        try:
            record = load_record(p["record"])
        except DamagedRecord as e:
            module.fail_json(msg=str(e))
        if record.get("state", "mining") != "mining":
            p["reuse"] = (record.get("facts") or {}).get("snapshot_id") or ""
    latest = os.path.join(p["root"], "latest")
    manifest_path = os.path.join(p["root"], p["reuse"], "manifest.json") if p["reuse"] else ""
    if manifest_path and os.path.isfile(manifest_path):
        with open(manifest_path) as f:
            manifest = json.load(f)
        module.exit_json(
            changed=False,
            snapshot_id=manifest["id"],
            path=os.path.dirname(manifest_path),
            manifest=manifest,
        )
    units = sorted(set(p["units"]) | {m["unit"] for m in p["miners"] if m.get("unit")})
    snap_id = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    if os.path.lexists(os.path.join(p["root"], snap_id)):  # two conversions in one second
        snap_id += "-%d" % os.getpid()
    if module.check_mode:
        files, unit_state = collect_files(p, units)
        module.exit_json(changed=True, snapshot_id=snap_id, would_copy=files, units=unit_state)
    os.makedirs(p["root"], mode=0o700, exist_ok=True)
    tmp = tempfile.mkdtemp(dir=p["root"], prefix=".taking-")
    try:
        manifest = take(p, units, tmp)
        manifest.update({"id": snap_id, "created": snap_id})
        with open(os.path.join(tmp, "manifest.json"), "w") as f:
            json.dump(manifest, f, indent=2, sort_keys=True)
        final = os.path.join(p["root"], snap_id)
        os.rename(tmp, final)
    except Exception as e:  # leave no half snapshot behind
        shutil.rmtree(tmp, ignore_errors=True)
        module.fail_json(msg="snapshot failed: %s" % e)
    # The archive holds wallets and rig passwords: owner-only, like the directory it sits in.
    old_umask = os.umask(0o077)
    try:
        subprocess.run(["tar", "-czf", final + ".tar.gz", "-C", p["root"], snap_id], check=True)
    finally:
        os.umask(old_umask)
    link_tmp = latest + ".tmp"
    if os.path.lexists(link_tmp):
        os.unlink(link_tmp)
    os.symlink(snap_id, link_tmp)
    os.replace(link_tmp, latest)
    module.exit_json(changed=True, snapshot_id=snap_id, path=final, manifest=manifest)


if __name__ == "__main__":
    main()
