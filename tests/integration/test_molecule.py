"""Every role's Molecule scenarios (check, converge, idempotence, verify on lab rigs), run
from pytest so that `make test` runs them too."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
# Each role's scenarios, then the project's own (molecule/pivot: convert and rollback).
SCENARIOS = sorted(REPO.glob("roles/*/molecule/*/molecule.yml")) + sorted(
    REPO.glob("molecule/*/molecule.yml")
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
