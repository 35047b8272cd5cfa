#!/usr/bin/python3
"""The state of the rig's units now, for mining_restore to compare with the snapshot (read-only).

Usage: units_now.py UNITS STACK_PATTERNS
  UNITS           comma-separated units to report (the snapshot's)
  STACK_PATTERNS  comma-separated unit globs of the AI stack (rigpivot-*): every loaded unit
                  and unit file matching them is listed, instances included
Prints one JSON object:
  {"units": {unit: {"active", "active_state", "enabled", "loaded"}}, "masked": [units],
   "stack_units": [loaded units, templates left out], "stack_forgotten": [units whose
   file is gone but systemd remembers], "stack_templates": [template units]}
Runs on the rig's python3 (3.6+ on old HiveOS images).
"""

import json
import subprocess
import sys


def systemctl(*args):
    try:
        p = subprocess.run(
            ["systemctl", *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            universal_newlines=True,
            timeout=60,
        )
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return p.stdout


def unit_state(unit):
    props = {}
    for line in systemctl("show", "-p", "ActiveState,UnitFileState,LoadState", unit).splitlines():
        key, _, value = line.partition("=")
        props[key] = value
    return {
        "active": props.get("ActiveState") in ("active", "reloading", "activating"),
        "active_state": props.get("ActiveState", ""),
        "enabled": props.get("UnitFileState", ""),
        "loaded": props.get("LoadState", ""),
    }


def first_column(text):
    return [line.split()[0] for line in text.splitlines() if line.split()]


def main():
    units = [u for u in sys.argv[1].split(",") if u]
    stack = [p for p in sys.argv[2].split(",") if p]
    quiet = ["--no-legend", "--no-pager", "--full"]
    masked = first_column(systemctl("list-unit-files", "--state=masked", *quiet))
    stack_units = set()
    if stack:
        stack_units.update(
            first_column(systemctl("list-units", "--all", "--plain", *quiet, *stack))
        )
        stack_units.update(first_column(systemctl("list-unit-files", *quiet, *stack)))
    # A unit whose file is gone but that systemd still remembers (failed) is "not-found":
    # nothing to stop or disable, only to forget (reset-failed).
    instances = {u: unit_state(u) for u in stack_units if "@." not in u}
    json.dump(
        {
            "units": {u: unit_state(u) for u in units},
            "masked": sorted(masked),
            "stack_units": sorted(u for u, s in instances.items() if s["loaded"] != "not-found"),
            "stack_forgotten": sorted(u for u, s in instances.items() if s["loaded"] == "not-found"),
            "stack_templates": sorted(u for u in stack_units if "@." in u),
        },
        sys.stdout,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
