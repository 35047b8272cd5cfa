"""The lab's HiveOS config renderer: what a lab HiveOS rig's /hive-config says at first boot,
and what its "dashboard" copy says at every boot after (the same bytes).

The files are read back the way HiveOS reads them, by sourcing them in bash.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

from toolkit.lab.catalog import build_rig, load_catalog

RENDERER = (
    Path(__file__).resolve().parents[2] / "toolkit/lab/image/overlay/usr/lib/lab/hive_render.py"
)


def _load_renderer():
    spec = importlib.util.spec_from_file_location("hive_render", RENDERER)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


hive_render = _load_renderer()


def sourced(text: str, tmp_path: Path) -> dict[str, str]:
    """The variables bash sees after `. file`, as HiveOS's scripts load rig.conf."""
    conf = tmp_path / "sourced.conf"
    conf.write_text(text)
    out = subprocess.run(
        ["bash", "-c", 'set -a; . "$1"; env -0', "bash", str(conf)],
        capture_output=True,
        check=True,
        env={},
    ).stdout.decode()
    return dict(item.split("=", 1) for item in out.split("\0") if "=" in item)


def spec_of(profile: str) -> dict:
    return build_rig(load_catalog(), "rig01", "rack1", profile, "test").model_dump(mode="json")


@pytest.fixture
def spec() -> dict:
    return spec_of("hive-3060x6")


def test_rig_conf_identifies_the_rig_to_the_dashboard(spec, tmp_path):
    rig = sourced(hive_render.render(spec)["rig.conf"], tmp_path)
    assert rig["RIG_ID"] == str(spec["hive"]["rig_id"])
    assert rig["RIG_PASSWD"] == spec["hive"]["rig_passwd"]
    assert rig["FARM_HASH"] == spec["hive"]["farm_hash"]
    assert rig["HIVE_HOST_URL"] == spec["hive"]["hive_host_url"]
    assert rig["WORKER_NAME"] == "rig01"
    assert rig["MINER"] == "t-rex"


def test_rig_conf_starts_out_of_maintenance_with_the_hashrate_watchdog_armed(spec, tmp_path):
    rig = sourced(hive_render.render(spec)["rig.conf"], tmp_path)
    assert rig["MAINTENANCE"] == "0"
    assert rig["WD_ENABLED"] == "1"
    assert (rig["WD_MINER"], rig["WD_REBOOT"]) == ("1", "3")  # lab minutes


def test_rig_conf_is_one_assignment_per_line_for_lineinfile(spec):
    lines = hive_render.render(spec)["rig.conf"].splitlines()
    assert "MAINTENANCE=0" in lines
    assert "WD_ENABLED=1" in lines


def test_wallet_conf_points_the_miner_at_the_pool_with_the_rig_wallet(spec, tmp_path):
    text = hive_render.render(spec)["wallet.conf"]
    wallet = sourced(text, tmp_path)
    assert wallet["TREX_URL"] == "stratum+tcp://pool.lab:4444"
    assert wallet["TREX_TEMPLATE"] == f"{spec['miner']['wallet']}.%WORKER_NAME%"
    assert wallet["TREX_PASS"] == "x"
    assert wallet["TREX_ALGO"] == "etchash"
    assert spec["miner"]["wallet"] in text


def test_teamredminer_rig_gets_its_own_flight_sheet_keys(tmp_path):
    amd = spec_of("hive-rx580x6")
    wallet = sourced(hive_render.render(amd)["wallet.conf"], tmp_path)
    assert wallet["TEAMREDMINER_URL"] == amd["miner"]["pool_url"]
    assert wallet["TEAMREDMINER_TEMPLATE"].startswith(amd["miner"]["wallet"])


def test_oc_files_hold_one_value_per_card_of_their_vendor(tmp_path):
    files = hive_render.render(spec_of("hive-mixed6"))  # 2x 3060, 2x P106, 2x RX 580
    nvidia = sourced(files["nvidia-oc.conf"], tmp_path)
    amd = sourced(files["amd-oc.conf"], tmp_path)
    assert nvidia["PLIMIT"].split() == ["120", "120", "90", "90"]
    assert len(nvidia["CLOCK"].split()) == len(nvidia["MEM"].split()) == 4
    assert len(amd["CORE_CLOCK"].split()) == len(amd["MEM_CLOCK"].split()) == 2


def test_an_nvidia_only_rig_has_no_amd_oc_file(spec):
    assert "amd-oc.conf" not in hive_render.render(spec)


def test_autofan_is_enabled(spec, tmp_path):
    assert sourced(hive_render.render(spec)["autofan.conf"], tmp_path)["ENABLED"] == "1"


def test_rendering_is_byte_for_byte_repeatable_so_the_dashboard_copy_matches(spec):
    assert hive_render.render(spec) == hive_render.render(spec_of("hive-3060x6"))


def test_a_plain_linux_rig_is_refused():
    with pytest.raises(ValueError):
        hive_render.render(spec_of("linux-3090x2"))


def test_cli_writes_the_config_dir(spec, tmp_path):
    rig_json = tmp_path / "rig.json"
    rig_json.write_text(json.dumps(spec))
    out = tmp_path / "hive-config"
    subprocess.run([sys.executable, str(RENDERER), str(rig_json), str(out)], check=True)
    assert sorted(p.name for p in out.iterdir()) == [
        "autofan.conf",
        "nvidia-oc.conf",
        "rig.conf",
        "wallet.conf",
    ]
    assert (out / "rig.conf").read_text() == hive_render.render(spec)["rig.conf"]
