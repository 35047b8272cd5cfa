"""rigpivot reads the farm file exactly as Ansible does: for every host of the example farm,
the lab's farm and farms written the tricky ways, each variable rigpivot sees equals what
`ansible-inventory` prints for that host."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.unit.test_lab_hive_api import Lab, LabState, RigRecord
from toolkit.inventory import load_inventory

REPO = Path(__file__).resolve().parents[2]
ANSIBLE_INVENTORY = Path(sys.executable).parent / "ansible-inventory"


def ansible_inventory(path: Path, *args: str) -> dict[str, Any]:
    out = subprocess.run(
        [str(ANSIBLE_INVENTORY), "-i", str(path), *args],
        capture_output=True, text=True, check=True, cwd=REPO, timeout=120,
    )  # fmt: skip
    return dict(json.loads(out.stdout))


def assert_parity(path: Path) -> None:
    ours = load_inventory(path)
    listed = ansible_inventory(path, "--list")
    theirs = listed["_meta"]["hostvars"]
    assert sorted(ours.hosts) == sorted(
        {h for g in listed.values() if isinstance(g, dict) for h in g.get("hosts", [])}
    )
    for name, host in ours.hosts.items():
        assert host.vars == theirs.get(name, {}), name
    # --list and --host are one function in ansible-inventory: tie them on one rig anyway.
    first = next(iter(ours.hosts))
    assert ours.hosts[first].vars == ansible_inventory(path, "--host", first)


def test_the_example_farm_reads_as_ansible_reads_it():
    assert_parity(REPO / "inventories" / "example" / "farm.ini")
    rig = load_inventory(REPO / "inventories" / "example" / "farm.ini").hosts["rig01"]
    assert rig.vars["net_hardening_admin_networks"] == ["10.20.0.5/32", "10.20.9.0/24"]


def test_the_lab_farm_reads_as_ansible_reads_it(tmp_path):
    lab = Lab(tmp_path, name="unit")
    lab.key.write_text("")
    Path(f"{lab.key}.pub").write_text("ssh-ed25519 AAAA lab\n")
    state = LabState(name="unit", lab_id="x", subnet="10.89.3.0/24", admin_network="10.89.3.1/32",
                     rigs=[RigRecord(name=f"rig0{i}", rack=f"rack{1 + i // 3}",
                                     profile="hive-3060x6", port=2220 + i, container=f"c{i}")
                           for i in range(1, 6)])  # fmt: skip
    (tmp_path / "lab.json").write_text(state.model_dump_json())
    lab.write_controller_files()
    assert_parity(lab.inventory)
    rig = load_inventory(lab.inventory).hosts["rig04"]
    assert rig.vars["net_hardening_admin_networks"] == ["10.89.3.1/32"]
    assert rig.port == 2224


TRICKY = """\
[rack1]
rig[01:03] ansible_host=10.0.1.1
rig04 ansible_host=10.0.1.4 mining_restore_skip_reboot=False inference_server_base_port=8000 net_hardening_admin_networks='["10.20.0.5/32","10.20.9.0/24"]'
rig05:2222 net_hardening_admin_networks=[10.20.0.5/32,10.20.9.0/24] x="two words"

[rack2]
big ansible_host=10.0.2.1

[farm:children]
rack1
rack2

[rack1:vars]
mining_restore_skip_reboot=false
net_hardening_admin_networks=[10.20.0.5/32,10.20.9.0/24]
templated={{ inventory_hostname }}

[farm:vars]
ansible_user=root
net_hardening_inference_allowed_networks=["10.30.0.0/16"]
nvidia_driver_skip_reboot=true
"""


def test_tricky_ini_values_group_vars_and_host_vars_read_as_ansible_reads_them(tmp_path):
    inv = tmp_path / "farm.ini"
    inv.write_text(TRICKY)
    (tmp_path / "group_vars").mkdir()
    (tmp_path / "group_vars" / "rack2.yml").write_text("mining_restore_skip_reboot: false\n")
    (tmp_path / "host_vars" / "big").mkdir(parents=True)
    (tmp_path / "host_vars" / "big" / "net.yml").write_text("net_hardening_admin_networks: [a]\n")
    assert_parity(inv)
    hosts = load_inventory(inv).hosts
    # what Ansible reads, not what a reader (or YAML) would
    assert hosts["rig01"].vars["net_hardening_admin_networks"] == "[10.20.0.5/32,10.20.9.0/24]"
    assert hosts["rig01"].vars["mining_restore_skip_reboot"] == "false"
    assert hosts["rig04"].vars["mining_restore_skip_reboot"] is False
    assert hosts["rig04"].vars["net_hardening_admin_networks"] == ["10.20.0.5/32", "10.20.9.0/24"]
    assert hosts["rig05"].port == 2222 and hosts["big"].vars["net_hardening_admin_networks"] == [
        "a"
    ]
    assert hosts["big"].vars["nvidia_driver_skip_reboot"] == "true"
    # and where each value was set
    assert hosts["rig01"].origin["mining_restore_skip_reboot"] == f"{inv}:14"
    assert hosts["rig04"].origin["mining_restore_skip_reboot"] == f"{inv}:3"
    assert (
        hosts["big"]
        .origin["mining_restore_skip_reboot"]
        .startswith(str(tmp_path / "group_vars" / "rack2.yml:1"))
    )
    assert (
        hosts["big"]
        .origin["net_hardening_admin_networks"]
        .startswith(str(tmp_path / "host_vars" / "big" / "net.yml:1"))
    )


YAML_FARM = """\
all:
  vars:
    ansible_user: root
    net_hardening_admin_networks: [10.20.0.5/32, 10.20.9.0/24]
  children:
    rack1:
      hosts:
        rig[01:02]:
          ansible_host: 10.0.1.1
        rig03:
          mining_restore_skip_reboot: "false"
      vars:
        mining_restore_skip_reboot: false
"""


@pytest.mark.parametrize("suffix", [".yml", ".yaml"])
def test_a_yaml_farm_reads_as_ansible_reads_it(tmp_path, suffix):
    inv = tmp_path / f"farm{suffix}"
    inv.write_text(YAML_FARM)
    assert_parity(inv)
    hosts = load_inventory(inv).hosts
    assert list(hosts) == ["rig01", "rig02", "rig03"]
    assert hosts["rig02"].vars["net_hardening_admin_networks"] == ["10.20.0.5/32", "10.20.9.0/24"]
    assert hosts["rig01"].vars["mining_restore_skip_reboot"] is False
    assert hosts["rig03"].origin["mining_restore_skip_reboot"].startswith(f"{inv}:11")
