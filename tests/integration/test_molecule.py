"""Every role's Molecule scenarios (check, converge, idempotence, verify on lab rigs), run
from pytest so that `make test` runs them too. The playbooks end to end, on their own as AWX
runs them, are tests/integration/test_plays.py."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
# Each role's scenarios. Each is a group of one test, and such groups are the run's last
# (conftest.py); xdist hands them out in this order, a worker taking the next while it still
# has one or two to run. The longest, mining_restore's (its prepare half-converts two rigs;
# README has the suite's times), goes first, so the run does not end with one worker on a long
# scenario while the other has nothing left.
LONGEST = "roles/mining_restore/molecule/default"
SCENARIOS = sorted(
    REPO.glob("roles/*/molecule/*/molecule.yml"),
    key=lambda p: (str(p.parent.relative_to(REPO)) != LONGEST, str(p)),
)

pytestmark = pytest.mark.lab


@pytest.mark.parametrize(
    "scenario", SCENARIOS, ids=[str(p.parent.relative_to(REPO)) for p in SCENARIOS]
)
def test_role_scenario(scenario: Path):
    # molecule runs from the directory holding molecule/<scenario>/
    role_dir, name = scenario.parents[2], scenario.parent.name
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    env.pop("ANSIBLE_CONFIG", None)
    proc = subprocess.run(
        ["molecule", "test", "-s", name], cwd=role_dir, env=env,
        capture_output=True, text=True, timeout=1200,
    )  # fmt: skip
    assert proc.returncode == 0, (
        f"molecule test -s {name} in {role_dir.name} failed:\n{failure_excerpt(proc.stdout + proc.stderr)}"
    )


def failure_excerpt(output: str) -> str:
    """The failed tasks (with what they printed) and the end of the run: the tail alone
    often shows only the cleanup that followed the failure."""
    lines = output.splitlines()
    marks = [i for i, line in enumerate(lines) if "fatal: [" in line or "failed: [" in line]
    parts = ["\n".join(lines[max(i - 3, 0) : i + 40]) for i in marks[:4]]
    return "\n...\n".join([*parts, "\n".join(lines[-25:])])
