"""What a snapshot captures (plugins/modules/rig_snapshot.py), run on this machine's files."""

from __future__ import annotations

import importlib.util
import json
import os
from pathlib import Path
from types import ModuleType

REPO = Path(__file__).resolve().parents[2]


def rig_snapshot() -> ModuleType:
    # tests/conftest.py makes the rig library importable as Ansible ships it.
    path = REPO / "plugins" / "modules" / "rig_snapshot.py"
    spec = importlib.util.spec_from_file_location("rig_snapshot", path)
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def params(**kw: object) -> dict[str, object]:
    return {"paths": [], "dirs": [], "watch_absent": [], "package_patterns": [], "miners": [],
            "platform": "linux", **kw}  # fmt: skip


def test_a_config_tree_is_captured_whole_dotfiles_subfolders_and_links_as_links(tmp_path: Path):
    conf = tmp_path / "hive-config"
    (conf / "network").mkdir(parents=True)
    (conf / "rig.conf").write_text("WORKER_NAME=rig01\n")
    (conf / ".hidden").write_text("x\n")
    (conf / "network" / "eth0.conf").write_text("dhcp\n")
    (conf / "note with space.txt").write_text("n\n")
    (tmp_path / "miners").mkdir()
    (conf / "miners").symlink_to(tmp_path / "miners")  # a link to a directory
    (conf / "gone").symlink_to(tmp_path / "nowhere")  # a dangling link
    os.mkfifo(conf / "pipe")  # neither copied nor ever removed
    snap = tmp_path / "snap"
    manifest = rig_snapshot().take(params(dirs=[str(conf)]), [], str(snap))
    files = manifest["files"]
    assert set(files) == {
        str(conf / "rig.conf"), str(conf / ".hidden"), str(conf / "network" / "eth0.conf"),
        str(conf / "note with space.txt"), str(conf / "miners"), str(conf / "gone"),
    }  # fmt: skip
    assert files[str(conf / "miners")] == {"link": str(tmp_path / "miners"), "sha256": None}
    assert files[str(conf / "gone")]["link"] == str(tmp_path / "nowhere")
    assert (
        snap / "files" / str(conf / "network" / "eth0.conf").lstrip("/")
    ).read_text() == "dhcp\n"
    assert os.readlink(snap / "files" / str(conf / "miners").lstrip("/")) == str(
        tmp_path / "miners"
    )


def test_a_file_whose_owner_has_no_name_is_recorded_by_number(tmp_path: Path):
    f = tmp_path / "lolMiner"
    f.write_text("#!/bin/sh\n")
    os.chown(f, 54321, 54322)  # tarballs unpack with the packer's ids
    manifest = rig_snapshot().take(params(paths=[str(f)]), [], str(tmp_path / "snap"))
    assert (manifest["files"][str(f)]["owner"], manifest["files"][str(f)]["group"]) == (
        "54321", "54322",
    )  # fmt: skip


def test_a_card_without_a_power_limit_is_recorded_as_unknown(tmp_path: Path, monkeypatch):
    fake = tmp_path / "nvidia-smi"
    fake.write_text("#!/bin/sh\necho '0, [N/A], Disabled'\necho '1, 170.00, Enabled'\n")
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ['PATH']}")
    assert rig_snapshot().power_state() == [
        {"index": 0, "limit_w": None, "persistence": False},
        {"index": 1, "limit_w": 170.0, "persistence": True},
    ]


def test_a_conversion_in_progress_reuses_the_snapshot_its_record_names(tmp_path: Path):
    from tests.unit.rig_modules import run_module

    (tmp_path / "etc").mkdir()
    (tmp_path / "etc" / "rig.conf").write_text("WORKER=rig07\n")
    record = tmp_path / "state.json"
    args = {"root": str(tmp_path / "snaps"), "dirs": [str(tmp_path / "etc")],
            "record": str(record)}  # fmt: skip
    first = run_module(tmp_path, "rig_snapshot", args)
    assert first["changed"] is True, first
    # the drain ran, then the run was cut short: the next run resumes with the same snapshot
    record.write_text(
        json.dumps({"state": "drained", "facts": {"snapshot_id": first["snapshot_id"]}})
    )
    (tmp_path / "etc" / "rig.conf").write_text("MAINTENANCE=1\n")
    resumed = run_module(tmp_path, "rig_snapshot", args)
    assert resumed["changed"] is False and resumed["snapshot_id"] == first["snapshot_id"]
    # a damaged record is named, not read as "mining" (a new snapshot of a drained rig)
    record.write_text("{not json")
    damaged = run_module(tmp_path, "rig_snapshot", args)
    assert damaged.get("failed") is True and "not valid JSON" in str(damaged["msg"]), damaged
