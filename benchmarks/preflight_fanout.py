"""Benchmarks for preflight (not tests: timings are printed, never asserted).

1. `compare`: preflight of a lab rack vs `ansible all -m setup` on the same rigs, same
   concurrency; prints both wall times and their ratio (one run, same machine, same moment).
2. `fanout`: how the probe's cost grows with the number of rigs. A farm of N synthetic rigs
   is made by pointing N inventory entries, round robin, at the lab rigs' real sshd endpoints
   (each probe is a full SSH connection, key auth and probe run). The rigs share this
   machine's cores with the controller, so the numbers are pessimistic for a real farm.

    .venv/bin/python benchmarks/preflight_fanout.py compare --inventory inventories/lab/farm.ini
    .venv/bin/python benchmarks/preflight_fanout.py fanout --inventory inventories/lab/farm.ini \
        --sizes 50,200,1000 --concurrency 64
"""

from __future__ import annotations

import argparse
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from toolkit.inventory import load_inventory
from toolkit.probe import ProbeOptions, probe_fleet


def compare(inventory: Path, concurrency: int) -> None:
    hosts = load_inventory(inventory).select(None)
    t0 = time.perf_counter()
    results = probe_fleet(hosts, ProbeOptions(concurrency=concurrency))
    t_probe = time.perf_counter() - t0
    bad = [r.host for r in results if r.facts is None]
    t0 = time.perf_counter()
    proc = subprocess.run(
        [str(Path(sys.executable).parent / "ansible"), "all", "-i", str(inventory),
         "-m", "ansible.builtin.setup", "-f", str(concurrency), "-o"],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    t_setup = time.perf_counter() - t0
    print(f"rigs: {len(hosts)}  (probe failures: {bad or 'none'}; setup rc {proc.returncode})")
    print(f"rigpivot probe (paramiko, GPU+host+mining facts): {t_probe:6.2f} s")
    print(f"ansible -m setup (host facts only):                 {t_setup:6.2f} s")
    print(f"ratio setup / probe: {t_setup / t_probe:.1f}x")


def fanout(inventory: Path, sizes: list[int], concurrency: int) -> None:
    real = load_inventory(inventory).select(None)
    common = {k: v for k, v in real[0].vars.items() if not k.startswith("ansible_port")}
    print(f"{'rigs':>6} {'wall s':>8} {'per rig ms':>11} {'failures':>9}")
    for n in sizes:
        lines = ["[farm]"]
        for i in range(n):
            r = real[i % len(real)]
            lines.append(f"rig{i:05d} ansible_host={r.address} ansible_port={r.port}")
        lines.append("[farm:vars]")
        lines += [f"{k}={shlex.quote(str(v))}" for k, v in common.items() if k != "ansible_host"]
        with tempfile.NamedTemporaryFile("w", suffix=".ini", delete=False) as f:
            f.write("\n".join(lines) + "\n")
        hosts = load_inventory(Path(f.name)).select(None)
        t0 = time.perf_counter()
        res = probe_fleet(hosts, ProbeOptions(concurrency=concurrency, timeout=60))
        wall = time.perf_counter() - t0
        fails = sum(r.facts is None for r in res)
        print(f"{n:>6} {wall:>8.2f} {1000 * wall / n:>11.1f} {fails:>9}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("mode", choices=["compare", "fanout"])
    ap.add_argument("--inventory", type=Path, default=Path("inventories/lab/farm.ini"))
    ap.add_argument("--concurrency", type=int, default=32)
    ap.add_argument("--sizes", default="50,200,1000")
    a = ap.parse_args()
    if a.mode == "compare":
        compare(a.inventory, a.concurrency)
    else:
        fanout(a.inventory, [int(s) for s in a.sizes.split(",")], a.concurrency)


if __name__ == "__main__":
    sys.exit(main())
