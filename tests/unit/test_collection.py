"""The repository is the Ansible collection rigpivot.farm (galaxy.yml): `ansible-galaxy collection
build`, installed into a fresh collections path, and its modules and playbooks run by their
collection names with nothing of the repository's Ansible setup (no ansible.cfg, no library or
module_utils path): the modules find their library inside the collection."""

from __future__ import annotations

import json
import tarfile
from pathlib import Path

import pytest

from tests.collection import REPO, RESULTS, ansible, build, install

MODULES = sorted(p.stem for p in (REPO / "plugins" / "modules").glob("rig_*.py"))


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build(tmp_path_factory.mktemp("build"))


@pytest.fixture(scope="module")
def installed(built: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, str], Path]:
    """(the environment of a machine that has only the installed collection, a folder to run in)."""
    work = tmp_path_factory.mktemp("work")
    return install(built, tmp_path_factory.mktemp("collections"), work), work


def test_the_artifact_is_the_collection_and_nothing_of_the_controller(built: Path):
    with tarfile.open(built) as tar:
        members = tar.getmembers()
    names = {m.name for m in members}
    assert all(m.isfile() or m.isdir() for m in members)  # real files: no symlinks
    assert {f"plugins/modules/{m}.py" for m in MODULES} <= names
    assert len(MODULES) == 13
    assert "plugins/module_utils/rigpivot_rig.py" in names
    assert {"meta/runtime.yml", "README.md", "playbooks/tasks/lease.yml"} <= names
    for playbook in ("convert", "rollback", "status", "lease", "preflight"):
        assert f"playbooks/{playbook}.yml" in names
    actions = {p.name for p in (REPO / "plugins" / "action").glob("*.py")}
    assert {"farm_plan.py", "private_fetch.py", "role_arguments.py"} <= actions
    assert {f"plugins/action/{a}" for a in actions} <= names
    roles = {p.name for p in (REPO / "roles").iterdir() if (p / "tasks" / "main.yml").is_file()}
    assert {f"roles/{r}/tasks/main.yml" for r in roles} <= names
    top = {n.split("/")[0] for n in names}
    assert top == {"FILES.json", "MANIFEST.json", "README.md", "CHANGELOG.md", "docs", "meta",
                   "playbooks", "plugins", "roles"}  # fmt: skip
    assert not [n for n in names if "/molecule" in n or "__pycache__" in n or n.endswith(".png")]
    assert built.stat().st_size < 512 * 1024


def test_ansible_doc_reads_the_modules_by_their_collection_names(installed):
    env, work = installed
    proc = ansible("ansible-doc", "--json", "rigpivot.farm.rig_state", env=env, cwd=work)
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)["rigpivot.farm.rig_state"]["doc"]
    assert doc["collection"] == "rigpivot.farm" and "force" in doc["options"]
    listed = ansible("ansible-doc", "--list", "--json", "rigpivot.farm", env=env, cwd=work)
    assert sorted(json.loads(listed.stdout)) == [f"rigpivot.farm.{m}" for m in MODULES]


def test_the_modules_run_by_their_collection_names_with_the_collections_library(installed):
    """No module_utils path names rigpivot_rig: rig_lease and rig_state import it from the
    installed collection (their import of the library path is optional to Ansible)."""
    env, work = installed
    record = work / "state.json"
    play = work / "play.yml"
    tasks = [
        {"rigpivot.farm.rig_lease": {"path": str(record), "run": "run-a", "holder": "pytest",
                                     "controller": "ctl-1"}},
        {"rigpivot.farm.rig_state": {"path": str(record), "state": "snapshotted", "step": "test",
                                     "facts": {"snapshot_id": "20261122T001500Z"}}},
    ]  # fmt: skip
    play.write_text(json.dumps([{"hosts": "localhost", "gather_facts": False, "tasks": tasks}]))
    proc = ansible(
        "ansible-playbook", "-c", "local", "-i", "localhost,", str(play),
        env={**env, **RESULTS}, cwd=work,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr
    results = [t["hosts"]["localhost"] for t in json.loads(proc.stdout)["plays"][0]["tasks"]]
    assert [r.get("failed", False) for r in results] == [False, False]
    saved = json.loads(record.read_text())
    assert saved["state"] == "snapshotted" and saved["lease"]["run"] == "run-a"
    assert saved["facts"]["snapshot_id"] == "20261122T001500Z"


def test_the_playbooks_run_by_their_collection_names(installed):
    """convert, rollback, lease and preflight pass a syntax check (their roles and short names
    resolve inside the collection, tasks/lease.yml is found beside them); status runs (rig_facts,
    read-only, on this machine)."""
    env, work = installed
    for playbook in ("convert", "rollback", "lease", "status", "preflight"):
        proc = ansible(
            "ansible-playbook", "-i", "localhost,", "--syntax-check", f"rigpivot.farm.{playbook}",
            env=env, cwd=work,
        )  # fmt: skip
        assert proc.returncode == 0, (playbook, proc.stdout + proc.stderr)
    proc = ansible(
        "ansible-playbook", "-c", "local", "-i", "localhost,", "rigpivot.farm.status",
        env={**env, **RESULTS}, cwd=work,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr
    facts = json.loads(proc.stdout)["plays"][0]["tasks"][0]["hosts"]["localhost"]
    assert "rig_facts" in facts["ansible_facts"]
