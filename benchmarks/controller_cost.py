"""Benchmark: what a rack conversion costs the controller (not a test: printed, never asserted).

For each rack size N it brings up a lab of N one-GPU HiveOS rigs, runs `rigpivot convert` and
then `rigpivot rollback` on it, and prints for each verb:

- wall time;
- controller CPU: user + system of `rigpivot` and every process it waited for
  (ansible-playbook and its forks), from getrusage(RUSAGE_CHILDREN);
- rig CPU: what the lab's containers spent (rigs, and the farm's mirror and pool serving them),
  the work that runs on the rigs and the farm's servers on a real farm, not on the controller;
- the tasks executed per rig (ok, changed or failed results in the runs' job events) and the
  controller CPU per rig and per executed task.

The rigs share this machine's cores with the controller, so wall times are pessimistic;
controller CPU per rig is the number a farm's controller size follows.

With `--baseline REV`, the same rack is converted and rolled back a second time by rigpivot as
it was at git revision REV (checked out in a temporary worktree, run with this virtualenv),
so before and after come from one machine in one run. A rack's first round trip costs more
than the next (apt lists to fetch, the model to download, and the machine the busier for it,
which inflates the controller's CPU time too: this code's convert read 17.2 s per rig first on
a fresh rack and 10.6 s after one round trip), so with a baseline the rack first makes one
round trip that is not counted.

    .venv/bin/python benchmarks/controller_cost.py --sizes 1,4,8
    .venv/bin/python benchmarks/controller_cost.py --sizes 1,4 --baseline 58005a0
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from toolkit.lab import podman as pm
from toolkit.lab.rack import Lab

REPO = Path(__file__).resolve().parents[1]
PROFILE = "hive-3060x1"
EXECUTED = {"runner_on_ok", "runner_on_failed", "runner_on_unreachable", "runner_item_on_ok",
            "runner_item_on_failed"}  # fmt: skip


@dataclass
class Cost:
    code: str  # "this" or the baseline's revision
    verb: str
    rigs: int
    wall: float
    controller_cpu: float
    rig_cpu: float
    tasks: int  # executed task results, all rigs

    def row(self) -> str:
        per_rig = self.controller_cpu / self.rigs
        tasks_per_rig = self.tasks / self.rigs
        per_task = self.controller_cpu / self.tasks if self.tasks else float("nan")
        return (f"{self.code:8} {self.verb:8} {self.rigs:4} {self.wall:8.1f} "
                f"{self.controller_cpu:9.1f} {per_rig:8.1f} {self.rig_cpu:8.1f} "
                f"{tasks_per_rig:9.0f} {per_task:9.3f}")  # fmt: skip


HEADER = (f"{'code':8} {'verb':8} {'rigs':>4} {'wall s':>8} {'ctl cpu':>9} {'cpu/rig':>8} "
          f"{'rig cpu':>8} {'tasks/rig':>9} {'cpu/task':>9}")  # fmt: skip


def lab_cpu_seconds(lab: Lab) -> float:
    """CPU the lab's containers (rigs and farm services) have used so far: their parent
    cgroup's account (cgroup v1 cpuacct or v2 cpu.stat), which outlives a rig's reboot. Other
    containers under the same parent count too: run the benchmark alone."""
    info = pm.inspect(f"{lab.prefix}-{lab.state().rigs[0].name}")
    assert info is not None
    parent = Path(str(info["State"].get("CgroupPath", ""))).parent.as_posix().lstrip("/")
    v1 = Path("/sys/fs/cgroup/cpuacct") / parent / "cpuacct.usage"
    v2 = Path("/sys/fs/cgroup") / parent / "cpu.stat"
    if v1.is_file():
        return int(v1.read_text()) / 1e9
    if v2.is_file():
        stat = dict(line.split() for line in v2.read_text().splitlines())
        return int(stat["usage_usec"]) / 1e6
    raise SystemExit(f"no CPU accounting for the lab's containers at {v1} or {v2}")


def executed_tasks(journal: Path) -> int:
    count = 0
    for event in journal.glob("*/ansible/*/artifacts/*/job_events/*.json"):
        if json.loads(event.read_text()).get("event") in EXECUTED:
            count += 1
    return count


@contextlib.contextmanager
def checkout(rev: str) -> Iterator[Path]:
    """The repository at `rev`, in a temporary git worktree."""
    with tempfile.TemporaryDirectory(prefix="rigpivot-bench-code-") as tmp:
        tree = Path(tmp) / "rigpivot"
        subprocess.run(["git", "-C", str(REPO), "worktree", "add", "--detach", "-q", str(tree),
                        rev], check=True)  # fmt: skip
        try:
            yield tree
        finally:
            subprocess.run(["git", "-C", str(REPO), "worktree", "remove", "--force", str(tree)],
                           check=False)  # fmt: skip


def measure(code: str, tree: Path, verb: str, lab: Lab, args: list[str]) -> Cost:
    """`rigpivot <verb>` of the code in `tree`, run the same way for every tree: this
    virtualenv's Python with `tree` first on the import path (its playbooks and roles follow
    its toolkit package)."""
    # One journal root per code and verb, beside the lab: they share the snapshot store there.
    journal = lab.state_dir / f"runs-{code}-{verb}"
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    rig_before = lab_cpu_seconds(lab)
    t0 = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-c", "import sys; from toolkit.cli import main; sys.exit(main())",
         verb, "-i", str(lab.inventory), "--yes", "--journal", str(journal), *args],
        capture_output=True, text=True, check=False, cwd=tree,
        env={**os.environ, "PYTHONPATH": str(tree)},
    )  # fmt: skip
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        raise SystemExit(f"{verb} exited {proc.returncode}:\n{proc.stdout[-3000:]}"
                         f"{proc.stderr[-3000:]}")  # fmt: skip
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    rigs = len(lab.state().rigs)
    return Cost(
        code, verb, rigs, wall, cpu, lab_cpu_seconds(lab) - rig_before, executed_tasks(journal)
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--sizes", default="1,4,8", help="rack sizes, comma-separated")
    ap.add_argument("--profile", default=PROFILE, help="lab rig profile")
    ap.add_argument("--batch-size", type=int, default=0, help="convert batch size (0: whole rack)")
    ap.add_argument("--baseline", default="", help="git revision to measure too, on the same racks")
    opts = ap.parse_args()
    rows: list[Cost] = []
    with contextlib.ExitStack() as stack:
        codes = [("this", REPO)]
        if opts.baseline:
            codes.append((opts.baseline[:8], stack.enter_context(checkout(opts.baseline))))
        for n in (int(s) for s in opts.sizes.split(",")):
            with tempfile.TemporaryDirectory(prefix="rigpivot-bench-lab-") as tmp:
                lab = Lab(Path(tmp), name=f"bench{n}", rack_size=max(n, 1))
                try:
                    lab.up(n, opts.profile)
                    batch = ["--batch-size", str(opts.batch_size or n)]
                    if opts.baseline:  # the uncounted first round trip
                        measure("warm-up", REPO, "convert", lab, batch)
                        measure("warm-up", REPO, "rollback", lab, [])
                    for code, tree in codes:
                        rows.append(measure(code, tree, "convert", lab, batch))
                        print(HEADER if len(rows) == 1 else "", rows[-1].row(), sep="\n",
                              flush=True)  # fmt: skip
                        rows.append(measure(code, tree, "rollback", lab, []))
                        print(rows[-1].row(), flush=True)
                finally:
                    lab.down()
    print("\n" + HEADER)
    for row in rows:
        print(row.row())
    if opts.baseline:
        print("\ncontroller CPU per rig, this code / the baseline's:")
        base = {(r.verb, r.rigs): r for r in rows if r.code != "this"}
        for r in rows:
            if r.code == "this" and (b := base.get((r.verb, r.rigs))):
                ratio = r.controller_cpu / b.controller_cpu
                print(f"  {r.verb:8} {r.rigs:2} rigs: {b.controller_cpu / b.rigs:5.1f} s -> "
                      f"{r.controller_cpu / r.rigs:5.1f} s ({ratio:.2f})")  # fmt: skip


if __name__ == "__main__":
    main()
