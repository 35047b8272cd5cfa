"""rig_stack (plugins/modules): the AI stack a conversion installed, removed in one call. Here
against stand-in systemctl, getent, userdel and groupdel (a JSON file of units and users, each
verb logged) and unit folders in a temporary directory; mining_restore's Molecule scenario and
the round trips run it on real rigs."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from tests.unit.rig_modules import run_module, stand_in

SYSTEMCTL = """exec "$PYTHON" - "$@" <<'PY'
import fnmatch, json, os, sys
path = os.environ["RIG"]
rig = json.load(open(path))
units = rig["units"]
args = [a for a in sys.argv[1:] if not a.startswith("--")]
opts = [a for a in sys.argv[1:] if a.startswith("--")]
verb, rest = args[0], args[1:]
def matching(only_files=False):
    for name, u in sorted(units.items()):
        if rest and not any(fnmatch.fnmatchcase(name, p) for p in rest):
            continue
        if only_files and not u["file"]:
            continue
        if "--type=slice" in opts and not name.endswith(".slice"):
            continue
        if "--state=active" in opts and u["active"] != "active":
            continue
        yield name, u
if verb == "show":
    u = units.get(rest[-1])
    print("LoadState=%s" % (u["load"] if u else "not-found"))
    print("ActiveState=%s" % (u["active"] if u else "inactive"))
    print("UnitFileState=%s" % (u["file"] if u else ""))
    sys.exit(0)
if verb == "list-units":
    for name, u in matching():
        print("%s %s %s" % (name, u["load"], u["active"]))
    sys.exit(0)
if verb == "list-unit-files":
    for name, u in matching(only_files=True):
        print("%s %s" % (name, u["file"]))
    sys.exit(0)
open(path + ".log", "a").write("systemctl %s\\n" % " ".join(sys.argv[1:]))
if verb == "daemon-reload":  # units whose file is gone: forgotten, unless they failed
    for name, u in list(units.items()):
        if u.get("path") and not os.path.exists(u["path"]):
            if u["active"] == "failed":
                u["load"] = "not-found"
            elif u["active"] == "inactive":
                del units[name]
elif verb == "reset-failed":
    for name, u in list(units.items()):
        if fnmatch.fnmatchcase(name, rest[0]) and u["load"] == "not-found":
            del units[name]
json.dump(rig, open(path, "w"))
if verb in ("daemon-reload", "reset-failed"):
    sys.exit(0)
u = units[rest[0]]
u.update({"stop": {"active": "inactive"}, "disable": {"file": "disabled"}}[verb])
json.dump(rig, open(path, "w"))
PY
"""

USERS = """exec "$PYTHON" - "$0" "$@" <<'PY'
import json, os, sys
path = os.environ["RIG"]
rig = json.load(open(path))
program, args = os.path.basename(sys.argv[1]), sys.argv[2:]
if program == "getent":
    sys.exit(0 if args[1] in rig[args[0]] else 2)
open(path + ".log", "a").write("%s %s\\n" % (program, args[0]))
if program == "userdel":
    rig["passwd"].remove(args[0])
    if args[0] in rig["group"]:  # USERGROUPS_ENAB: the user's own group goes with it
        rig["group"].remove(args[0])
else:
    rig["group"].remove(args[0])
json.dump(rig, open(path, "w"))
PY
"""


def unit(active: str = "inactive", file: str = "disabled", load: str = "loaded",
         path: Path | None = None) -> dict[str, str]:  # fmt: skip
    return {"load": load, "active": active, "file": file, **({"path": str(path)} if path else {})}


def rig(tmp_path: Path) -> tuple[Path, Path, dict[str, object]]:
    """A converted rig: two inference instances (one running), the power unit, the slice of
    the instances' template, a failed instance whose file is gone, an operator's unit; unit
    files, a drop-in folder and enablement links; the engine, models and the instances' user."""
    state = tmp_path / "rig.json"
    etc = tmp_path / "etc-systemd"
    lib = tmp_path / "lib-systemd"
    template, power = lib / "rigpivot-inference@.service", etc / "rigpivot-power.service"
    state.write_text(json.dumps({
        "units": {
            "rigpivot-inference@0.service": unit("active", "enabled", path=template),
            "rigpivot-inference@1.service": unit("inactive", "enabled", path=template),
            "rigpivot-inference@.service": unit(file="indirect", path=template),
            "rigpivot-inference@2.service": unit("failed", "", "not-found"),
            "rigpivot-power.service": unit("inactive", "enabled", path=power),
            "system-rigpivot\\x2dinference.slice": unit("active", ""),
            "hive-miner.service": unit("inactive", "enabled"),
        },
        "passwd": ["root", "rigpivot-inference"],
        "group": ["root", "rigpivot-inference"],
    }))  # fmt: skip
    bins = tmp_path / "bin"
    env = f'export RIG="{state}" PYTHON="{sys.executable}"\n'
    stand_in(bins, "systemctl", env + SYSTEMCTL)
    for program in ("getent", "userdel", "groupdel"):
        stand_in(bins, program, env + USERS)
    wants = etc / "multi-user.target.wants"
    for folder in (wants, lib, etc / "rigpivot-inference@.service.d"):
        folder.mkdir(parents=True)
    (lib / "rigpivot-inference@.service").write_text("[Service]\n")
    (etc / "rigpivot-power.service").write_text("[Service]\n")
    (etc / "rigpivot-inference@.service.d" / "gpu.conf").write_text("[Service]\n")
    (wants / "rigpivot-power.service").symlink_to(etc / "rigpivot-power.service")
    (wants / "hive-miner.service").symlink_to("/hive/etc/hive-miner.service")
    (etc / "hive-miner.service").write_text("[Service]\n")
    engine, conf, models = tmp_path / "opt-rigpivot", tmp_path / "etc-rigpivot", tmp_path / "models"
    for folder in (engine / "venv", conf, models / "tiny"):
        folder.mkdir(parents=True)
    (models / "tiny" / "model.gguf").write_bytes(b"GGUF")
    (models / ".partial").write_bytes(b"")
    args = {
        "unit_patterns": ["rigpivot-*"],
        "unit_dirs": [str(etc), str(lib)],
        "paths": [str(engine), str(conf)],
        "models_dir": str(models),
        "users": ["rigpivot-inference"],
    }
    return state, bins, args


def log(tmp_path: Path) -> list[str]:
    path = tmp_path / "rig.json.log"
    return path.read_text().splitlines() if path.exists() else []


def test_the_stack_goes_in_one_call_and_nothing_of_the_operators(tmp_path: Path):
    state, bins, args = rig(tmp_path)
    result = run_module(tmp_path, "rig_stack", args, stand_ins=bins)
    assert result["changed"] is True, result
    assert result["units"] == [
        {"unit": "rigpivot-inference@0.service", "actions": ["disable", "stop"]},
        {"unit": "rigpivot-inference@1.service", "actions": ["disable"]},
        {"unit": "rigpivot-power.service", "actions": ["disable"]},
    ]
    assert result["slices"] == ["system-rigpivot\\x2dinference.slice"]
    assert result["forgotten"] == ["rigpivot-inference@2.service"]
    assert log(tmp_path) == [
        "systemctl disable rigpivot-inference@0.service",
        "systemctl stop rigpivot-inference@0.service",
        "systemctl disable rigpivot-inference@1.service",
        "systemctl disable rigpivot-power.service",
        "systemctl stop system-rigpivot\\x2dinference.slice",
        "systemctl daemon-reload",
        "systemctl reset-failed rigpivot-*",
        "userdel rigpivot-inference",
    ]  # the user's group went with it: no groupdel
    left = sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*")
                  if "systemd" in p.parts[len(tmp_path.parts)])  # fmt: skip
    assert left == ["etc-systemd", "etc-systemd/hive-miner.service", "etc-systemd/multi-user.target.wants",
                    "etc-systemd/multi-user.target.wants/hive-miner.service",
                    "lib-systemd"]  # fmt: skip
    for gone in ("opt-rigpivot", "etc-rigpivot", "models"):
        assert not (tmp_path / gone).exists()
    rig_now = json.loads(state.read_text())
    assert sorted(rig_now["units"]) == ["hive-miner.service", "system-rigpivot\\x2dinference.slice"]
    assert rig_now["units"]["hive-miner.service"] == unit("inactive", "enabled")
    assert rig_now["passwd"] == rig_now["group"] == ["root"]
    # again: nothing left to do
    again = run_module(tmp_path, "rig_stack", args, stand_ins=bins)
    assert again["changed"] is False, again


def test_check_mode_names_what_would_go_and_changes_nothing(tmp_path: Path):
    state, bins, args = rig(tmp_path)
    # merged /usr: /lib is a link to /usr/lib, so /lib/systemd/system and
    # /usr/lib/systemd/system are one folder (neither of them a link itself)
    (tmp_path / "usr").symlink_to(tmp_path)
    args["unit_dirs"] = [*args["unit_dirs"], str(tmp_path / "usr" / "lib-systemd")]  # type: ignore[misc]
    before = state.read_text()
    result = run_module(tmp_path, "rig_stack", args, check=True, stand_ins=bins)
    assert result["changed"] is True
    removed = result["removed"]
    assert isinstance(removed, list)
    real = {
        os.path.join(os.path.realpath(os.path.dirname(p)), os.path.basename(p)) for p in removed
    }
    assert len(real) == len(removed), removed
    assert str(tmp_path / "etc-systemd" / "rigpivot-power.service") in result["removed"]
    assert "userdel rigpivot-inference" in result["users"]
    assert log(tmp_path) == [] and state.read_text() == before
    assert (tmp_path / "models" / "tiny" / "model.gguf").exists()


def test_kept_models_stay(tmp_path: Path):
    _, bins, args = rig(tmp_path)
    kept = run_module(tmp_path, "rig_stack", {**args, "keep_models": True}, stand_ins=bins)
    models = str(args["models_dir"])
    assert not any(p.startswith(models) for p in kept["removed"])  # type: ignore[union-attr]
    assert (tmp_path / "models" / "tiny" / "model.gguf").exists()
    assert not (tmp_path / "opt-rigpivot").exists()


def test_what_cannot_be_done_is_named_after_everything_else_was_tried(tmp_path: Path):
    _, bins, args = rig(tmp_path)
    stand_in(
        bins,
        "userdel",
        "echo 'userdel: user rigpivot-inference is currently used by process 42' >&2; exit 8\n",
    )
    result = run_module(tmp_path, "rig_stack", args, stand_ins=bins)
    assert result["failed"] is True
    assert (
        "userdel rigpivot-inference exited 8: userdel: user rigpivot-inference is currently used"
        in str(result["msg"])
    )
    assert not (tmp_path / "opt-rigpivot").exists()  # the rest went
