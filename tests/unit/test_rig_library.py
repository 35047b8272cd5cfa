"""The rig-side library (plugins/module_utils/rigpivot_rig.py): one definition of a miner, one
systemd and nvidia-smi reader, shared by the probe, the snapshot and the drain."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from types import ModuleType

from toolkit.probe import MODULE, probe_payload

REPO = Path(__file__).resolve().parents[2]
LIBRARY = REPO / "plugins" / "module_utils" / "rigpivot_rig.py"


def library() -> ModuleType:
    spec = importlib.util.spec_from_file_location("rigpivot_rig", LIBRARY)
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_nvidia_smi_unknowns_are_none_and_numbers_are_numbers():
    lib = library()
    assert [lib.smi_value(v) for v in ("[N/A]", "[Not Supported]", "", "170.00", "12288")] == [
        None, None, None, 170.0, 12288,
    ]  # fmt: skip


def test_a_miner_process_is_found_by_its_program_name(tmp_path: Path):
    """A miner with no unit (started from a shell) is an orphan the drain signals itself."""
    xmrig = tmp_path / "xmrig"
    shutil.copy(shutil.which("sleep") or "/bin/sleep", xmrig)
    proc = subprocess.Popen([str(xmrig), "30"])
    try:
        time.sleep(0.2)
        found = library().find_miners(use_gpu=False)
    finally:
        proc.kill()
        proc.wait()
    mine = [m for m in found["miners"] if m["pid"] == proc.pid]
    assert mine and mine[0]["name"] == "xmrig" and mine[0]["exe"] == str(xmrig)
    assert mine[0]["by"] == ["name"]
    assert proc.pid in found["orphans"] or mine[0]["unit"]


def test_every_drained_miner_name_is_one_the_probe_knows():
    """The probe, the snapshot and the drain share one list: no role keeps its own."""
    names = set(library().MINER_NAMES)
    assert {"t-rex", "lolminer", "teamredminer", "nanominer", "excavator", "wildrig-multi"} <= names
    for defaults in REPO.glob("roles/*/defaults/main.yml"):
        assert "miner_names" not in defaults.read_text(), defaults


def test_the_probe_payload_is_one_file_that_runs_without_ansible(tmp_path: Path):
    payload = probe_payload()
    assert b"ansible.module_utils.rigpivot_rig" not in payload
    assert b"ansible_collections" not in payload
    assert b"\nPIPED = True\n" in payload
    script = tmp_path / "rig_facts.py"
    script.write_bytes(payload)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    out = subprocess.run(
        [sys.executable, "-I", "-", "--model-path=/tmp"], input=payload, capture_output=True,
        timeout=60, env=env, check=True,
    ).stdout  # fmt: skip
    facts = json.loads(out)
    assert facts["host"]["model_path"] == "/tmp" and "miners" in facts and facts["pivot"] is None


def test_the_module_imports_the_library_in_one_statement_the_probe_can_replace():
    text = MODULE.read_text()
    assert text.count("from ansible.module_utils.rigpivot_rig import") == 1


def test_cron_lines_that_start_a_miner_at_boot_are_found(tmp_path: Path):
    (tmp_path / "root").write_text(
        "@reboot /opt/lolminer/mine_etc.sh\n"  # lolMiner's wrapper, in lolMiner's folder
        "@reboot /usr/local/bin/backup\n"
        "0 * * * * /opt/xmrig/xmrig\n"  # not at boot
        "# @reboot /hive/miners/t-rex/t-rex\n"
        "@reboot sleep 30 && /hive/miners/t-rex/t-rex -c /hive/miners/t-rex/config.json\n"
    )
    found = library().miner_cron_lines(tables=(str(tmp_path / "*"),))
    assert [f["line"] for f in found] == [
        "@reboot /opt/lolminer/mine_etc.sh",
        "@reboot sleep 30 && /hive/miners/t-rex/t-rex -c /hive/miners/t-rex/config.json",
    ]
