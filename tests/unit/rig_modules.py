"""Run one of the rig-side modules (plugins/modules) or controller-side actions (plugins/action)
through ansible-playbook on this machine, with the rig library beside it as Ansible ships it,
and return its result."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def run_module(
    workdir: Path, module: str, args: dict[str, object], *, check: bool = False,
    stand_ins: Path | None = None, diff: bool = False,
) -> dict[str, object]:  # fmt: skip
    """`module` with `args` in a one-task play; `stand_ins` (a folder of stand-in programs)
    goes first on PATH."""
    env = dict(
        os.environ,
        ANSIBLE_LIBRARY=str(REPO / "plugins" / "modules"),
        ANSIBLE_MODULE_UTILS=str(REPO / "plugins" / "module_utils"),
        ANSIBLE_ACTION_PLUGINS=str(REPO / "plugins" / "action"),
        # this machine's Python for the "rig" side (interpreter discovery could pick a
        # python3.x shim here that does not run)
        ANSIBLE_PYTHON_INTERPRETER=sys.executable,
        ANSIBLE_LOCALHOST_WARNING="False",
        ANSIBLE_INVENTORY_UNPARSED_WARNING="False",
        ANSIBLE_CALLBACK_PLUGINS=str(REPO / "tests" / "callback"),
        ANSIBLE_STDOUT_CALLBACK="results",
    )
    if stand_ins is not None:
        env["PATH"] = f"{stand_ins}{os.pathsep}{env['PATH']}"
    play = workdir / "play.yml"
    task = {module: args, "register": "r"}
    play.write_text(json.dumps([{"hosts": "localhost", "gather_facts": False, "tasks": [task]}]))
    proc = subprocess.run(
        [str(Path(sys.executable).parent / "ansible-playbook"), "-c", "local", "-i", "localhost,",
         *(["--check"] if check else []),
         *(["--diff"] if diff else []), str(play)],
        env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    result = json.loads(proc.stdout)["plays"][0]["tasks"][0]["hosts"]["localhost"]
    return dict(result)


def stand_in(folder: Path, name: str, script: str) -> Path:
    """A stand-in program `name` in `folder` (a shell script)."""
    folder.mkdir(exist_ok=True)
    path = folder / name
    path.write_text("#!/bin/sh\n" + script)
    path.chmod(0o755)
    return path
