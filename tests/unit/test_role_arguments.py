"""role_arguments (plugins/action): the roles a play imports checked against their argument
specs in one task, as each role's own check would, through ansible-playbook on this machine."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

SPEC = {"argument_specs": {"main": {"options": {
    "power_limit_percent": {"type": "int", "required": True},
    "engine": {"type": "str", "choices": ["llama.cpp", "vllm"]},
}}}}  # fmt: skip


def play(tmp_path: Path, extra: dict[str, object]) -> subprocess.CompletedProcess[str]:
    for name in ("power", "serve"):
        role = tmp_path / "roles" / name
        (role / "meta").mkdir(parents=True, exist_ok=True)
        (role / "meta" / "argument_specs.yml").write_text(json.dumps(SPEC))
        (role / "defaults").mkdir(exist_ok=True)
        (role / "defaults" / "main.yml").write_text(json.dumps({"engine": "llama.cpp"}))
        (role / "tasks").mkdir(exist_ok=True)
        (role / "tasks" / "main.yml").write_text(
            json.dumps([{"ansible.builtin.debug": {"msg": f"{name} ran"}}])
        )
    tasks = [{"role_arguments": {"roles": ["power", "serve"]}}] + [
        {"ansible.builtin.import_role": {"name": n, "rolespec_validate": False}}
        for n in ("power", "serve")
    ]
    (tmp_path / "play.yml").write_text(
        json.dumps([{"hosts": "localhost", "gather_facts": False, "tasks": tasks}])
    )
    env = dict(os.environ, ANSIBLE_ACTION_PLUGINS=str(REPO / "plugins" / "action"),
               ANSIBLE_ROLES_PATH=str(tmp_path / "roles"), ANSIBLE_LOCALHOST_WARNING="False",
               ANSIBLE_INVENTORY_UNPARSED_WARNING="False")  # fmt: skip
    return subprocess.run(
        [str(Path(sys.executable).parent / "ansible-playbook"), "-c", "local", "-i", "localhost,",
         "-e", json.dumps(extra), str(tmp_path / "play.yml")],
        env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip


def test_every_role_and_argument_that_is_wrong_is_named_before_any_role_runs(tmp_path: Path):
    proc = play(tmp_path, {"power_limit_percent": "lots", "engine": "ollama"})
    assert proc.returncode == 2, proc.stdout
    out = proc.stdout
    assert "power: argument 'power_limit_percent' is of type str" in out, out
    assert "serve: value of engine must be one of: llama.cpp, vllm, got: ollama" in out, out
    assert "power ran" not in out


def test_arguments_that_pass_let_the_roles_run(tmp_path: Path):
    proc = play(tmp_path, {"power_limit_percent": 70})
    assert proc.returncode == 0, proc.stdout
    assert "power ran" in proc.stdout and "serve ran" in proc.stdout
