"""rig_venvs (plugins/modules): engines' virtualenvs made and filled from a wheelhouse in one
call, on this machine (real `python -m venv` and pip, a local wheelhouse of one tiny wheel)."""

from __future__ import annotations

import base64
import hashlib
import shutil
import sys
import zipfile
from pathlib import Path

from tests.unit.rig_modules import run_module

WHEEL = "rigpivot_probe-1.0-py3-none-any.whl"


def digest(data: bytes) -> str:
    """A wheel RECORD's hash: urlsafe base64 of the sha256, unpadded."""
    return base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()


def wheelhouse(tmp_path: Path) -> Path:
    """A folder holding one pure-Python wheel (rigpivot-probe 1.0), as the farm's mirror would."""
    house = tmp_path / "wheels"
    house.mkdir()
    files = {
        "rigpivot_probe/__init__.py": b"VERSION = '1.0'\n",
        "rigpivot_probe-1.0.dist-info/METADATA":
            b"Metadata-Version: 2.1\nName: rigpivot-probe\nVersion: 1.0\n",
        "rigpivot_probe-1.0.dist-info/WHEEL":
            b"Wheel-Version: 1.0\nGenerator: hand\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    }  # fmt: skip
    record = [f"{name},sha256={digest(data)},{len(data)}" for name, data in files.items()]
    record.append("rigpivot_probe-1.0.dist-info/RECORD,,")
    with zipfile.ZipFile(house / WHEEL, "w") as z:
        for name, data in files.items():
            z.writestr(name, data)
        z.writestr("rigpivot_probe-1.0.dist-info/RECORD", "\n".join(record) + "\n")
    return house


def venvs(tmp_path: Path, packages: list[str]) -> dict[str, object]:
    return {"venvs": [{"path": str(tmp_path / "opt" / "llama.cpp"), "packages": packages}],
            "find_links": str(wheelhouse(tmp_path) if not (tmp_path / "wheels").exists()
                              else tmp_path / "wheels"),
            "python": sys.executable}  # fmt: skip


def test_makes_installs_changes_nothing_then_remakes_one_cut_short(tmp_path: Path):
    args = venvs(tmp_path, ["rigpivot-probe==1.0"])
    checked = run_module(tmp_path, "rig_venvs", args, check=True)
    assert checked["changed"] is True and not (tmp_path / "opt").exists(), checked
    first = run_module(tmp_path, "rig_venvs", args)
    venv = tmp_path / "opt" / "llama.cpp"
    assert first["changed"] is True, first
    assert first["changes"] == {str(venv): ["made", "installed rigpivot-probe==1.0"]}
    assert list(venv.glob("lib/python*/site-packages/rigpivot_probe/__init__.py"))
    again = run_module(tmp_path, "rig_venvs", args)
    assert again["changed"] is False, again
    for pip in venv.glob("lib/python*/site-packages/pip"):
        shutil.rmtree(pip)  # bin/python there, pip gone: a power cut during `python -m venv`
    result = run_module(tmp_path, "rig_venvs", args)
    assert result["changes"] == {
        str(venv): ["removed (half-built)", "made", "installed rigpivot-probe==1.0"]
    }, result


def test_a_package_the_wheelhouse_lacks_fails_naming_it_and_the_wheelhouse(tmp_path: Path):
    args = venvs(tmp_path, ["rigpivot-probe==2.0"])
    result = run_module(tmp_path, "rig_venvs", args)
    assert result.get("failed") is True
    msg = str(result["msg"])
    assert "installing rigpivot-probe==2.0 into" in msg and str(tmp_path / "wheels") in msg, msg
