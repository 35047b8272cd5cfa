"""The controller_cache callback (plugins/callback): a module built by one ansible-playbook run
is sent again by the next without being rebuilt, and a change to a module or to a module_util
it imports is never answered from the old build."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent

MODULE = """#!/usr/bin/python
from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.cache_probe_util import ANSWER

def main():
    module = AnsibleModule(argument_spec={})
    module.exit_json(changed=False, answer=ANSWER + "SUFFIX")

if __name__ == "__main__":
    main()
"""
PLAY = """- hosts: localhost
  gather_facts: false
  tasks:
    - name: Ask the probe.
      cache_probe:
      register: probe
    - name: Show the answer.
      ansible.builtin.debug:
        msg: "ANSWER={{ probe.answer }}"
"""


@pytest.fixture
def project(tmp_path: Path) -> Path:
    (tmp_path / "library").mkdir()
    (tmp_path / "module_utils").mkdir()
    (tmp_path / "play.yml").write_text(PLAY)
    write(tmp_path / "library" / "cache_probe.py", MODULE.replace("SUFFIX", ""))
    write(tmp_path / "module_utils" / "cache_probe_util.py", 'ANSWER = "one"\n')
    return tmp_path


def write(path: Path, text: str) -> None:
    """Write a file and move its modification time on: an editor's save within the same clock
    tick as the last one still counts as a change."""
    before = path.stat().st_mtime_ns if path.exists() else 0
    path.write_text(text)
    os.utime(path, ns=(before + 10**9, before + 10**9))


def run(project: Path) -> str:
    env = {
        "PATH": os.environ["PATH"],
        "HOME": str(project),
        "ANSIBLE_LIBRARY": str(project / "library"),
        "ANSIBLE_MODULE_UTILS": str(project / "module_utils"),
        "ANSIBLE_CALLBACK_PLUGINS": str(REPO / "plugins" / "callback"),
        "ANSIBLE_CALLBACKS_ENABLED": "controller_cache",
        "RIGPIVOT_ANSIBALLZ_CACHE": str(project / "cache"),
        "ANSIBLE_LOCAL_TEMP": str(project / "tmp"),
        "ANSIBLE_PYTHON_INTERPRETER": sys.executable,
        "ANSIBLE_LOCALHOST_WARNING": "false",
        "ANSIBLE_INVENTORY_UNPARSED_WARNING": "false",
    }
    proc = subprocess.run(
        [str(BIN / "ansible-playbook"), "-c", "local", "play.yml"],
        cwd=project, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "Skipping callback" not in proc.stdout + proc.stderr, proc.stdout + proc.stderr
    return json.loads(proc.stdout.split('"msg": ', 1)[1].split("\n", 1)[0]).split("=", 1)[1]


def builds(project: Path) -> dict[str, int]:
    """Each kept build of the probe -> its file's inode (a rebuild makes a new file)."""
    return {
        f"{d.name}/{f.name}": f.stat().st_ino
        for d in (project / "cache").iterdir()
        for f in d.iterdir()
        if "cache_probe" in f.name and not f.name.endswith(".lock")
    }


def test_a_build_is_reused_by_the_next_run(project: Path):
    assert run(project) == "one"
    first = builds(project)
    assert len(first) == 1, first
    assert run(project) == "one"
    assert builds(project) == first
    # the run's private temporary folder is gone, the kept build is not
    assert list((project / "tmp").iterdir()) == []


def test_a_changed_module_or_module_util_is_built_again(project: Path):
    assert run(project) == "one"
    write(project / "library" / "cache_probe.py", MODULE.replace("SUFFIX", " and two"))
    assert run(project) == "one and two"
    write(project / "module_utils" / "cache_probe_util.py", 'ANSWER = "three"\n')
    assert run(project) == "three and two"
    assert len(builds(project)) == 3
