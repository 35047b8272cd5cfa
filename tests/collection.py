"""The collection rigpivot.farm as a user gets it: `ansible-galaxy collection build`, then
installed into a fresh collections path, run with nothing of the repository's Ansible setup
(no ansible.cfg, no library or module_utils path, no ANSIBLE_* variable of the caller's)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
# Each task's result as one JSON document at the end (tests/callback/results.py).
RESULTS = {
    "ANSIBLE_CALLBACK_PLUGINS": str(REPO / "tests" / "callback"),
    "ANSIBLE_STDOUT_CALLBACK": "results",
}


def ansible(
    cmd: str, *args: str, env: dict[str, str], cwd: Path, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN / cmd), *args], env=env, cwd=cwd, capture_output=True, text=True, timeout=timeout
    )


def build(out: Path) -> Path:
    """The collection's artifact, built into `out`."""
    proc = subprocess.run(
        [str(BIN / "ansible-galaxy"), "collection", "build", "--output-path", str(out), str(REPO)],
        capture_output=True, text=True, timeout=120, cwd=out,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    version = yaml.safe_load((REPO / "galaxy.yml").read_text())["version"]
    tarball = out / f"rigpivot-farm-{version}.tar.gz"
    assert tarball.is_file(), list(out.iterdir())
    return tarball


def install(artifact: Path, collections: Path, work: Path) -> dict[str, str]:
    """Install the artifact into `collections`; the environment of a machine that has only it,
    to run in `work`."""
    empty_cfg = work / "none.cfg"
    empty_cfg.write_text("")
    env = {k: v for k, v in os.environ.items() if not k.startswith("ANSIBLE_")}
    env.update(
        ANSIBLE_CONFIG=str(empty_cfg),  # not ~/.ansible.cfg nor /etc/ansible/ansible.cfg either
        ANSIBLE_COLLECTIONS_PATH=str(collections),
        ANSIBLE_LOCALHOST_WARNING="False",
        ANSIBLE_INVENTORY_UNPARSED_WARNING="False",
        ANSIBLE_NOCOLOR="1",
    )
    proc = ansible(
        "ansible-galaxy", "collection", "install", "-p", str(collections), str(artifact),
        env=env, cwd=work,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert (collections / "ansible_collections" / "rigpivot" / "farm" / "MANIFEST.json").is_file()
    return env
