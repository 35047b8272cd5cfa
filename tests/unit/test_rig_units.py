"""rig_units (plugins/modules): several units brought to their wanted state in one call, with
systemd_service's order and rules. Here against a stand-in systemctl that keeps its units in
a JSON file and logs each verb; the roles' Molecule scenarios run it against real systemd."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from tests.unit.rig_modules import run_module, stand_in

SYSTEMCTL = """exec "$PYTHON" - "$@" <<'PY'
import json, os, sys
path = os.environ["UNITS"]
units = json.load(open(path))
verb, name = sys.argv[1], sys.argv[-1]
if verb == "show":
    u = units.get(name)
    print("LoadState=%s" % (u["load"] if u else "not-found"))
    print("ActiveState=%s" % (u["active"] if u else "inactive"))
    print("UnitFileState=%s" % (u["file"] if u else ""))
    sys.exit(0)
if verb == "list-unit-files":  # --state=masked
    for n, u in sorted(units.items()):
        if u["file"] == "masked":
            print("%s masked enabled" % n)
    sys.exit(0)
open(path + ".log", "a").write("%s %s\\n" % (verb, name))
if verb == "daemon-reload":
    sys.exit(0)
u = units[name]
if u.get("refuse") == verb:
    sys.stderr.write("Job for %s failed.\\n" % name)
    sys.exit(1)
effect = {"mask": ("file", "masked"), "unmask": ("file", "disabled"),
          "enable": ("file", "enabled"), "disable": ("file", "disabled"),
          "start": ("active", "active"), "restart": ("active", "active"),
          "stop": ("active", "inactive")}[verb]
u[effect[0]] = effect[1]
if verb in ("mask", "unmask"):  # systemctl reloads the daemon after either
    u["load"] = "masked" if verb == "mask" else "loaded"
json.dump(units, open(path, "w"))
PY
"""


def rig(tmp_path: Path, units: dict[str, dict[str, str]]) -> tuple[Path, Path]:
    state = tmp_path / "units.json"
    state.write_text(json.dumps(units))
    bin_dir = tmp_path / "bin"
    stand_in(
        bin_dir, "systemctl", f'export UNITS="{state}" PYTHON="{sys.executable}"\n' + SYSTEMCTL
    )
    return state, bin_dir


def unit(active: str = "inactive", file: str = "disabled", **kw: str) -> dict[str, str]:
    return {"load": "loaded", "active": active, "file": file, **kw}


def test_each_unit_gets_its_state_in_systemd_services_order_and_only_what_differs(tmp_path: Path):
    state, bin_dir = rig(tmp_path, {
        "miner.service": unit(),
        "hive-watchdog.service": unit("active", "enabled"),
        "autofan.service": unit("failed", "enabled"),
        "hello.service": unit(file="masked", load="masked"),
        "rigpivot-inference@0.service": unit("active", "enabled"),
    })  # fmt: skip
    wants = [
        {"name": "miner.service", "enabled": True, "state": "started"},
        {"name": "hive-watchdog.service", "enabled": True, "state": "started"},  # as it is
        {"name": "autofan.service", "enabled": False, "state": "stopped"},  # failed: not active
        {"name": "hello.service", "masked": False, "enabled": True},
        {"name": "rigpivot-inference@0.service", "state": "restarted"},
    ]
    result = run_module(tmp_path, "rig_units", {"units": wants}, stand_ins=bin_dir)
    assert result["changed"] is True, result
    assert result["units"] == [
        {"unit": "miner.service", "actions": ["enable", "start"]},
        {"unit": "autofan.service", "actions": ["disable"]},
        {"unit": "hello.service", "actions": ["unmask", "enable"]},
        {"unit": "rigpivot-inference@0.service", "actions": ["restart"]},
    ]
    assert (tmp_path / "units.json.log").read_text().splitlines() == [
        "enable miner.service", "start miner.service", "disable autofan.service",
        "unmask hello.service", "enable hello.service", "restart rigpivot-inference@0.service",
    ]  # fmt: skip
    now = json.loads(state.read_text())
    assert now["miner.service"]["active"] == "active" and now["hello.service"]["file"] == "enabled"
    # again: nothing to do but the restart, which is always done
    again = run_module(tmp_path, "rig_units", {"units": wants[:4]}, stand_ins=bin_dir)
    assert again["changed"] is False and again["units"] == []


def test_check_mode_says_what_would_change_and_runs_no_verb(tmp_path: Path):
    state, bin_dir = rig(tmp_path, {"miner.service": unit("active", "enabled")})
    wants = [{"name": "miner.service", "enabled": False, "state": "stopped"}]
    result = run_module(tmp_path, "rig_units", {"units": wants}, check=True, stand_ins=bin_dir)
    assert result["changed"] is True
    assert result["units"] == [{"unit": "miner.service", "actions": ["disable", "stop"]}]
    assert not (tmp_path / "units.json.log").exists()
    assert json.loads(state.read_text())["miner.service"]["active"] == "active"


def test_every_unit_is_tried_and_each_refusal_and_unknown_unit_is_named(tmp_path: Path):
    _, bin_dir = rig(tmp_path, {
        "a.service": unit(refuse="start"),
        "b.service": unit(),
    })  # fmt: skip
    wants = [{"name": "a.service", "state": "started"}, {"name": "gone.service", "state": "started"},
             {"name": "b.service", "state": "started"}]  # fmt: skip
    result = run_module(tmp_path, "rig_units", {"units": wants}, stand_ins=bin_dir)
    assert result["failed"] is True
    assert "systemctl start a.service exited 1: Job for a.service failed." in str(result["msg"])
    assert "gone.service: no such unit on this rig" in str(result["msg"])
    assert (tmp_path / "units.json.log").read_text().splitlines() == [
        "start a.service", "start b.service"]  # fmt: skip


def test_a_bad_request_is_refused_before_any_unit_changes(tmp_path: Path):
    _, bin_dir = rig(tmp_path, {"a.service": unit()})
    wants = [{"name": "a.service", "state": "started"}, {"name": "b.service", "state": "running"}]
    result = run_module(tmp_path, "rig_units", {"units": wants}, stand_ins=bin_dir)
    assert result["failed"] is True and "b.service: state must be one of" in str(result["msg"])
    assert not (tmp_path / "units.json.log").exists()


def test_names_share_one_wanted_state_and_missing_units_can_be_left_out(tmp_path: Path):
    state, bin_dir = rig(tmp_path, {"hive-agent.service": unit("active", "enabled")})
    args = {"names": ["hive-agent.service", "teleconsole.service"], "state": "stopped",
            "enabled": False, "skip_missing": True}  # fmt: skip
    result = run_module(tmp_path, "rig_units", args, stand_ins=bin_dir)
    assert result["units"] == [{"unit": "hive-agent.service", "actions": ["disable", "stop"]}]
    assert json.loads(state.read_text())["hive-agent.service"] == unit("inactive", "disabled")


def test_a_linked_unit_file_is_not_enabled_yet(tmp_path: Path):
    # HiveOS links its unit files into /etc/systemd/system: `is-enabled` says "linked", exit 1
    _, bin_dir = rig(tmp_path, {"hive-miner.service": unit(file="linked")})
    result = run_module(tmp_path, "rig_units", {"names": ["hive-miner.service"], "enabled": True},
                        stand_ins=bin_dir)  # fmt: skip
    assert result["units"] == [{"unit": "hive-miner.service", "actions": ["enable"]}]


def test_a_daemon_reload_comes_before_any_unit_is_acted_on(tmp_path: Path):
    _, bin_dir = rig(tmp_path, {"rigpivot-inference@0.service": unit()})
    args = {"names": ["rigpivot-inference@0.service"], "enabled": True, "state": "restarted",
            "daemon_reload": True}  # fmt: skip
    result = run_module(tmp_path, "rig_units", args, stand_ins=bin_dir)
    assert (tmp_path / "units.json.log").read_text().splitlines() == [
        "daemon-reload daemon-reload", "enable rigpivot-inference@0.service",
        "restart rigpivot-inference@0.service",
    ], result  # fmt: skip


def test_a_query_reports_the_units_and_every_mask_after_the_changes(tmp_path: Path):
    _, bin_dir = rig(tmp_path, {
        "hive-miner.service": unit("active", "enabled"),
        "hello.service": unit(file="masked", load="masked"),
        "autofan.service": unit("failed", "enabled"),
    })  # fmt: skip
    args = {"names": ["autofan.service"], "masked": True,
            "query": ["hive-miner.service", "autofan.service", "gone.service"]}  # fmt: skip
    result = run_module(tmp_path, "rig_units", args, stand_ins=bin_dir)
    assert result["now"] == {
        "units": {
            "hive-miner.service": {"active": True, "active_state": "active", "enabled": "enabled",
                                   "loaded": "loaded"},
            "autofan.service": {"active": False, "active_state": "failed", "enabled": "masked",
                                "loaded": "masked"},
            "gone.service": {"active": False, "active_state": "inactive", "enabled": "",
                             "loaded": "not-found"},
        },
        "masked": ["autofan.service", "hello.service"],
    }  # fmt: skip
    # a query alone changes nothing
    alone = run_module(tmp_path, "rig_units", {"query": ["hello.service"]}, stand_ins=bin_dir)
    assert (
        alone["changed"] is False and alone["now"]["units"]["hello.service"]["loaded"] == "masked"
    )
