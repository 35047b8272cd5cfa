#!/usr/bin/python3
"""Find the rig's miners by what they are, not by what their unit is called (read-only).

A miner is a process whose program name is a known miner's, or one that holds a GPU in
nvidia-smi's compute apps. Each is mapped to the systemd unit that runs it (its cgroup), so
the role can stop and disable the unit rather than kill a process a Restart= brings back.

Usage: find_miners.py NAMES IGNORED SHARED
  NAMES    comma-separated miner program names (case-insensitive)
  IGNORED  comma-separated unit patterns (fnmatch) whose processes are never miners: the USB
           watchdog pinger, the lab's hardware, rigpivot's own inference engine
  SHARED   unit patterns that host other things than the miner (ssh.service holds every
           shell on a rig without logind, cron.service every cron job): never stopped, the
           miner in them is signalled as if it had no unit
Prints one JSON object. Runs on the rig's python3 (3.6+ on old HiveOS images).
"""

import fnmatch
import json
import os
import re
import subprocess
import sys
import time


def read(path, mode="r"):
    try:
        with open(path, mode) as f:
            return f.read()
    except (OSError, ValueError):
        return None


def unit_of(pid):
    """The system unit running pid, or None (a login session, a user manager, a shell)."""
    for line in (read("/proc/%s/cgroup" % pid) or "").splitlines():
        _, controllers, path = (line.split(":", 2) + ["", ""])[:3]
        if controllers not in ("", "name=systemd"):
            continue
        m = re.match(r"^/system\.slice/(?:.*/)?([^/]+\.service)$", path.strip())
        if m:
            return m.group(1)
    return None


def program_names(pid):
    names = set()
    raw = read("/proc/%s/cmdline" % pid, "rb")
    if raw:
        argv = [a.decode("utf-8", "replace") for a in raw.split(b"\0") if a]
        # Interpreted miners and wrappers show the miner as argv[1] (python3 ./lolMiner).
        names.update(os.path.basename(a).lower() for a in argv[:2])
    comm = read("/proc/%s/comm" % pid)
    if comm:
        names.add(comm.strip().lower())
    return names


def gpu_pids():
    """Pids nvidia-smi lists as compute apps, and whether nvidia-smi answered at all."""
    try:
        p = subprocess.run(
            ["nvidia-smi", "--query-compute-apps=pid,process_name", "--format=csv,noheader"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            universal_newlines=True,
            timeout=30,
        )
    except (OSError, subprocess.TimeoutExpired) as e:
        return set(), "unavailable: %s" % e
    if p.returncode != 0:
        # "Driver/library version mismatch" after a driver upgrade: names still find miners.
        message = (p.stdout.strip() or p.stderr.strip() or "rc %d" % p.returncode).splitlines()[0]
        return set(), "failed: %s" % message
    pids = set()
    for line in p.stdout.splitlines():
        first = line.split(",")[0].strip()
        if first.isdigit():
            pids.add(int(first))
    return pids, "ok"


def unit_file_state(unit):
    """enabled, disabled, static, transient, ... ('' when systemctl cannot tell)."""
    for _ in range(3):  # systemd answers '' while it reloads its units
        try:
            p = subprocess.run(
                ["systemctl", "show", "-p", "UnitFileState", "--value", unit],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                universal_newlines=True,
                timeout=30,
            )
        except (OSError, subprocess.TimeoutExpired):
            continue
        if p.stdout.strip():
            return p.stdout.strip()
        time.sleep(1)
    return ""


def main():
    names = {n.strip().lower() for n in sys.argv[1].split(",") if n.strip()}
    ignored_units = [p.strip() for p in sys.argv[2].split(",") if p.strip()]
    shared_units = [p.strip() for p in sys.argv[3].split(",") if p.strip()]
    me = os.getpid()
    on_gpu, nvidia_smi = gpu_pids()
    miners, ignored = [], []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) in (me, os.getppid()):
            continue
        pid = int(entry)
        hits = sorted(program_names(pid) & names)
        if not hits and pid not in on_gpu:
            continue
        unit = unit_of(pid)
        found = {
            "pid": pid,
            "name": hits[0] if hits else (read("/proc/%s/comm" % pid) or "?").strip(),
            "unit": unit,
            "host": unit,
            "by": (["name"] if hits else []) + (["gpu"] if pid in on_gpu else []),
        }
        if unit and any(fnmatch.fnmatch(unit, p) for p in ignored_units):
            ignored.append(found)
            continue
        if unit and any(fnmatch.fnmatch(unit, p) for p in shared_units):
            found["unit"] = None
        if read("/proc/%s/cmdline" % pid) is not None:  # still there (not a race)
            miners.append(found)
    json.dump(
        {
            "nvidia_smi": nvidia_smi,
            "miners": miners,
            "units": [
                {"unit": u, "file_state": unit_file_state(u)}
                for u in sorted({m["unit"] for m in miners if m["unit"]})
            ],
            "orphans": sorted(m["pid"] for m in miners if not m["unit"]),
            "ignored": ignored,
            "shared": sorted({m["host"] for m in miners if m["host"] and not m["unit"]}),
        },
        sys.stdout,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
