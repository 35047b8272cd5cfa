"""Benchmark: a convert and a rollback run in the execution environment (not a test: printed,
never asserted), as an AWX job or an operator with ansible-navigator runs them.

It builds the EE image (toolkit/lab/ee.py: execution-environment.yml on the lab's own Debian
base; cached by its inputs), brings up a lab of two rigs (a one-card HiveOS rig and a plain-Linux
RTX 3090 rig), then runs, each in the image through podman:

    ansible-navigator run rigpivot.farm.convert  --eei <image> --mode stdout ...
    ansible-navigator run rigpivot.farm.rollback --eei <image> --mode stdout ...

and prints each run's wall time, exit code, each rig's outcome (the job's artifact data:
set_stats) and its pivot record's state afterwards, read over SSH.

    .venv/bin/python benchmarks/ee_convert.py

ansible-navigator needs the host's POSIX message queues at /dev/mqueue (Debian has them; a
sandbox may not: `mkdir /dev/mqueue && mount -t mqueue mqueue /dev/mqueue`). The EE reaches
the lab's rigs on their published loopback ports: its container shares the host's network.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from toolkit.lab.ee import ensure_ee_image
from toolkit.lab.podman import podman_env
from toolkit.lab.rack import Lab

PROFILE = "hive-3060x1,linux-3090x1"


def navigator(
    playbook: str, lab: Lab, image: str, work: Path, *extra: str
) -> tuple[float, int, dict[str, dict[str, str]]]:
    """(wall seconds, exit code, each rig's outcome from the job's stats) of one run."""
    cmd = [
        str(Path(sys.executable).parent / "ansible-navigator"), "run", f"rigpivot.farm.{playbook}",
        "-i", str(lab.inventory), "--eei", str(image), "--pull-policy", "never",
        "--mode", "stdout", "--container-engine", "podman",
        "--container-options=--network=host",
        # navigator mounts its working folder (`work`) at the same path: the lab's inventory,
        # key and known hosts are in it, and the snapshot folder (no other controller files:
        # the EE has the collection and the rigpivot package).
        "--set-environment-variable", "ANSIBLE_SHOW_CUSTOM_STATS=True",
        "--playbook-artifact-enable", "false", "--log-file", str(work / "navigator.log"),
        "-e", f"mining_snapshot_fetch_dir={work / 'snapshots'}", *extra,
    ]  # fmt: skip
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=work, env=podman_env(), capture_output=True, text=True)
    wall = time.perf_counter() - t0
    (work / f"{playbook}.out").write_text(proc.stdout + proc.stderr)
    stats = re.search(r"^\s*RUN: (\{.*\})\s*$", proc.stdout, re.M)
    outcomes = json.loads(stats.group(1)).get("rigpivot_outcomes", {}) if stats else {}
    return wall, proc.returncode, dict(outcomes)


def states(lab: Lab) -> dict[str, str]:
    out = {}
    for rig in (r.name for r in lab.state().rigs):
        proc = subprocess.run(
            ["ssh", "-F", str(lab.ssh_config), rig,
             "cat /var/lib/rigpivot/state.json 2>/dev/null || echo '{}'"],
            capture_output=True, text=True, check=False,
        )  # fmt: skip
        out[rig] = json.loads(proc.stdout or "{}").get("state", "mining")
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.parse_args()
    if not Path("/dev/mqueue").is_dir():
        raise SystemExit("ansible-navigator needs /dev/mqueue: "
                         "mkdir /dev/mqueue && mount -t mqueue mqueue /dev/mqueue")  # fmt: skip
    t0 = time.perf_counter()
    image = ensure_ee_image()
    print(f"EE image {image}: ready in {time.perf_counter() - t0:.0f} s", flush=True)
    with tempfile.TemporaryDirectory(prefix="rigpivot-bench-ee-") as tmp:
        work = Path(tmp)
        lab = Lab(work / "lab", name="benchee", rack_size=2)
        try:
            lab.up(2, PROFILE)
            for playbook, extra in (("convert", ["-e", "rigpivot_batch_size=2"]),
                                    ("rollback", [])):  # fmt: skip
                wall, rc, data = navigator(playbook, lab, image, work, *extra)
                print(f"{playbook:8} wall {wall:6.1f} s  exit {rc}  outcomes "
                      f"{json.dumps({h: o['outcome'] for h, o in data.items()})}  "
                      f"rigs {states(lab)}", flush=True)  # fmt: skip
                if rc != 0:
                    print((work / f"{playbook}.out").read_text()[-4000:])
                    break
        finally:
            lab.down()


if __name__ == "__main__":
    main()
