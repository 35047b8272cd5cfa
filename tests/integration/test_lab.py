"""The lab rack behaves like a mining rack: reachable over SSH, GPUs as the profile says,
mining traps armed, a farm mirror with driver packages."""

from __future__ import annotations

import json
import subprocess

import paramiko
import pytest

from tests.integration.conftest import Rack, wait_for
from toolkit.lab.catalog import build_rig, load_catalog

pytestmark = pytest.mark.lab

QUERY = "name,uuid,memory.total,pcie.link.width.current,pcie.link.gen.gpucurrent,power.limit"


@pytest.fixture(scope="module")
def rack(lab_factory) -> Rack:
    return lab_factory(6, "mixed")


def _spec(rack: Rack, rig: str):
    rec = next(r for r in rack.lab.state().rigs if r.name == rig)
    return build_rig(load_catalog(), rec.name, rec.rack, rec.profile, rack.lab.state().lab_id)


def test_every_rig_answers_ansible_through_the_generated_inventory(rack: Rack):
    proc = subprocess.run(
        ["ansible", "all", "-i", str(rack.lab.inventory), "-m", "ansible.builtin.ping", "-o"],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.count("SUCCESS") == 6


def test_inventory_groups_rigs_by_rack(rack: Rack):
    ini = rack.lab.inventory.read_text()
    assert "[rack1]" in ini and "[rack2]" in ini and "[farm:children]" in ini


def test_paramiko_connects_with_host_keys_checked_against_known_hosts(rack: Rack):
    key = paramiko.Ed25519Key.from_private_key_file(str(rack.lab.key))
    for rec in rack.lab.state().rigs:
        client = paramiko.SSHClient()
        client.load_host_keys(str(rack.lab.known_hosts))
        client.set_missing_host_key_policy(paramiko.RejectPolicy())
        client.connect("127.0.0.1", port=rec.port, username="root", pkey=key,
                       look_for_keys=False, allow_agent=False, timeout=10)  # fmt: skip
        _, out, _ = client.exec_command("hostname")
        assert out.read().decode().strip() == rec.name
        client.close()


def test_each_rig_has_its_own_host_key(rack: Rack):
    keys = [line.split()[2] for line in rack.lab.known_hosts.read_text().splitlines()]
    assert len(keys) == 6 and len(set(keys)) == 6


def test_nvidia_smi_reports_the_rigs_profile(rack: Rack):
    spec = _spec(rack, "rig01")  # hive-3060x6
    out = rack.ssh("rig01", f"nvidia-smi --query-gpu={QUERY} --format=csv,noheader,nounits")
    rows = [[c.strip() for c in line.split(",")] for line in out.strip().splitlines()]
    assert len(rows) == 6
    for row, gpu in zip(rows, spec.gpus, strict=True):
        assert row[0] == "NVIDIA GeForce RTX 3060"
        assert row[1] == gpu.uuid
        assert row[2] == "12288"
        assert row[3:5] == ["1", "1"]  # x1 riser, Gen1
        assert float(row[5]) == 170.0


def test_pynvml_on_the_rig_reports_the_profile(rack: Rack):
    script = (
        "import json, pynvml as n; n.nvmlInit(); "
        "h = [n.nvmlDeviceGetHandleByIndex(i) for i in range(n.nvmlDeviceGetCount())]; "
        "print(json.dumps([[n.nvmlDeviceGetName(x), n.nvmlDeviceGetMemoryInfo(x).total, "
        "list(n.nvmlDeviceGetCudaComputeCapability(x)), n.nvmlDeviceGetCurrPcieLinkWidth(x), "
        "n.nvmlDeviceGetPowerManagementLimit(x)] for x in h] + [n.nvmlSystemGetDriverVersion()]))"
    )
    out = json.loads(rack.ssh("rig04", f"python3 -c '{script}'"))  # hive-cmp90hx4
    *cards, driver = out
    assert driver == "535.183.01"
    assert cards == [["NVIDIA CMP 90HX", 10240 * 2**20, [8, 6], 4, 250_000]] * 4


def test_old_driver_cannot_report_compute_capability_through_nvidia_smi(rack: Rack):
    out = rack.ssh("rig02", "nvidia-smi --query-gpu=compute_cap --format=csv", check=False)
    assert 'Field "compute_cap" is not a valid field to query.' in out
    assert (
        rack.ssh(
            "rig02", "nvidia-smi --query-gpu=driver_version --format=csv,noheader"
        ).splitlines()[0]
        == "470.256.02"
    )


def test_amd_cards_are_visible_only_through_lspci(rack: Rack):
    lspci = rack.ssh("rig05", "lspci -nn")  # hive-rx580x6
    assert lspci.count("[1002:67df]") == 6
    assert "Radeon RX 470/480/570/570X/580/580X/590" in lspci
    assert rack.ssh("rig05", "command -v nvidia-smi", check=False) == ""


def test_mixed_rig_shows_nvidia_cards_to_nvidia_smi_and_all_cards_to_lspci(rack: Rack):
    names = rack.ssh("rig06", "nvidia-smi --query-gpu=name --format=csv,noheader").splitlines()
    assert names == ["NVIDIA GeForce RTX 3060"] * 2 + ["P106-100"] * 2
    lspci = rack.ssh("rig06", "lspci -nn -d ::0300; lspci -nn -d ::0302")
    assert lspci.count("[10de:") == 4 and lspci.count("[1002:67df]") == 2


def test_power_limit_holds_until_the_rig_reboots(rack: Rack):
    rack.ssh("rig04", "nvidia-smi -i 0 -pl 180")
    query = "nvidia-smi -i 0 --query-gpu=power.limit --format=csv,noheader,nounits"
    assert float(rack.ssh("rig04", query)) == 180.0
    rack.reboot("rig04")
    assert float(rack.ssh("rig04", query)) == 250.0


def test_hiveos_miner_is_hashing_after_boot(rack: Rack):
    wait_for(lambda: float(rack.ssh("rig01", "cat /run/hive/khs") or 0) > 0, 60, "hashrate")


def test_stopping_the_miner_without_maintenance_mode_makes_the_watchdog_reboot(rack: Rack):
    before = rack.restart_count("rig06")
    wait_for(lambda: float(rack.ssh("rig06", "cat /run/hive/khs") or 0) > 0, 60, "hashrate")
    rack.ssh("rig06", "/hive/bin/miner stop")
    wait_for(lambda: rack.restart_count("rig06") > before, 90, "the hashrate watchdog reboot")
    rack.wait_ready("rig06")
    log = rack.ssh("rig06", "cat /var/log/lab/reboots.log")
    assert "hashrate-watchdog" in log
    # After the reboot the miner is back: the rig keeps mining, as HiveOS intends.
    wait_for(lambda: float(rack.ssh("rig06", "cat /run/hive/khs") or 0) > 0, 60, "hashrate")


def test_maintenance_mode_keeps_the_watchdog_quiet(rack: Rack):
    before = rack.restart_count("rig01")
    rack.ssh("rig01", "sed -i 's/^MAINTENANCE=.*/MAINTENANCE=1/' /hive-config/rig.conf")
    rack.ssh("rig01", "/hive/bin/miner stop")
    spec = _spec(rack, "rig01")
    # WD_REBOOT is 3 lab minutes: wait twice that and the rig must still be up.
    try:
        wait_for(lambda: rack.restart_count("rig01") > before, 6 * spec.lab_minute_seconds + 5,
                 "a reboot that must not happen")  # fmt: skip
    except AssertionError:
        pass
    else:
        pytest.fail("the watchdog rebooted a rig in maintenance mode")
    assert rack.ssh("rig01", "cat /var/log/lab/reboots.log 2>/dev/null", check=False) == ""


def test_driver_package_from_the_farm_mirror_changes_driver_version(rack: Rack):
    rig = "rig02"  # P106 rig on the 470 branch
    rack.ssh(rig, "echo 'deb [trusted=yes] http://mirror.lab:8080/apt ./' "
                  "> /etc/apt/sources.list.d/farm.list && apt-get update -qq")  # fmt: skip
    rack.ssh(rig, "DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nvidia-driver-550")
    # The new library talks to the old kernel module until the rig reboots, as on real rigs.
    out = rack.ssh(rig, "nvidia-smi", check=False)
    assert "Driver/library version mismatch" in out
    rack.reboot(rig)
    version = rack.ssh(rig, "nvidia-smi --query-gpu=driver_version --format=csv,noheader")
    assert set(version.split()) == {"550.127.05"}
    installed = rack.ssh(
        rig, "dpkg-query -W -f='${db:Status-Abbrev} ${Package}\\n' 'nvidia-driver-*'"
    )
    assert [ln.split()[1] for ln in installed.splitlines() if ln.startswith("ii")] == [
        "nvidia-driver-550"
    ]
