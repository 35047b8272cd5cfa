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


def play(
    tmp_path: Path, extra: dict[str, object], collection: bool = False
) -> subprocess.CompletedProcess[str]:
    """The play importing two roles, from a roles path, or as a playbook of a collection
    (ns.farm) whose roles it imports by their short names."""
    base = tmp_path / "ansible_collections" / "ns" / "farm" if collection else tmp_path
    for name in ("power", "serve"):
        role = base / "roles" / name
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
    (base / "playbooks").mkdir(parents=True, exist_ok=True)
    (base / "playbooks" / "play.yml").write_text(
        json.dumps([{"hosts": "localhost", "gather_facts": False, "tasks": tasks}])
    )
    if collection:
        (base / "galaxy.yml").write_text("namespace: ns\nname: farm\nversion: 1.0.0\n")
    env = dict(os.environ, ANSIBLE_ACTION_PLUGINS=str(REPO / "plugins" / "action"),
               ANSIBLE_ROLES_PATH=str(tmp_path / "roles"), ANSIBLE_LOCALHOST_WARNING="False",
               ANSIBLE_COLLECTIONS_PATH=str(tmp_path),
               ANSIBLE_INVENTORY_UNPARSED_WARNING="False")  # fmt: skip
    return subprocess.run(
        [str(Path(sys.executable).parent / "ansible-playbook"), "-c", "local", "-i", "localhost,",
         "-e", json.dumps(extra),
         "ns.farm.play" if collection else str(base / "playbooks" / "play.yml")],
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


def test_a_collection_s_playbook_names_its_roles_as_the_roles_path_does(tmp_path: Path):
    proc = play(tmp_path, {"power_limit_percent": 70}, collection=True)
    assert proc.returncode == 0, proc.stdout
    assert "power ran" in proc.stdout and "serve ran" in proc.stdout
    bad = play(tmp_path, {"power_limit_percent": "lots"}, collection=True)
    assert "power: argument 'power_limit_percent' is of type str" in bad.stdout, bad.stdout
