"""The probe's model-disk facts, read from a sysfs tree laid out as the kernel does."""

from __future__ import annotations

import os
from pathlib import Path

from plugins.modules.rig_facts import disk_facts, model_disk
from toolkit.models import DiskFacts


def _disk(sys: Path, devpath: str, name: str, rotational: str, removable: str = "0") -> Path:
    disk = sys / "devices" / devpath / "block" / name
    (disk / "queue").mkdir(parents=True)
    (disk / "queue" / "rotational").write_text(rotational + "\n")
    (disk / "removable").write_text(removable + "\n")
    return disk


def _partition(sys: Path, disk: Path, part: str, majmin: str) -> None:
    (disk / part).mkdir()
    (disk / part / "partition").write_text("1\n")
    (sys / "dev" / "block").mkdir(parents=True, exist_ok=True)
    os.symlink(disk / part, sys / "dev" / "block" / majmin)


def test_a_usb_stick_partition_is_a_usb_disk(tmp_path: Path) -> None:
    usb = "pci0000:00/0000:00:14.0/usb1/1-4/1-4:1.0/host6/target6:0:0/6:0:0:0"
    disk = _disk(tmp_path, usb, "sdb", rotational="1", removable="1")
    _partition(tmp_path, disk, "sdb1", "8:17")
    facts = DiskFacts.model_validate(disk_facts(8, 17, str(tmp_path)))
    assert (facts.device, facts.kind, facts.removable) == ("sdb", "usb", True)
    assert facts.sys_path and "/usb1/" in facts.sys_path


def test_nvme_sata_ssd_and_hard_disk(tmp_path: Path) -> None:
    nvme = _disk(tmp_path, "pci0000:00/0000:00:1d.0/0000:03:00.0/nvme/nvme0", "nvme0n1", "0")
    _partition(tmp_path, nvme, "nvme0n1p2", "259:2")
    ssd = _disk(tmp_path, "pci0000:00/0000:00:17.0/ata1/host0/target0:0:0/0:0:0:0", "sda", "0")
    _partition(tmp_path, ssd, "sda1", "8:1")
    hdd = _disk(tmp_path, "pci0000:00/0000:00:17.0/ata2/host1/target1:0:0/1:0:0:0", "sdc", "1")
    _partition(tmp_path, hdd, "sdc1", "8:33")
    assert disk_facts(259, 2, str(tmp_path))["kind"] == "nvme"
    assert disk_facts(8, 1, str(tmp_path))["kind"] == "ssd"
    assert disk_facts(8, 33, str(tmp_path))["kind"] == "hdd"


def test_lvm_is_followed_to_its_disk(tmp_path: Path) -> None:
    ssd = _disk(tmp_path, "pci0000:00/0000:00:17.0/ata1/host0/target0:0:0/0:0:0:0", "sda", "0")
    _partition(tmp_path, ssd, "sda3", "8:3")
    dm = tmp_path / "devices" / "virtual" / "block" / "dm-0"
    (dm / "slaves").mkdir(parents=True)
    os.symlink(ssd / "sda3", dm / "slaves" / "sda3")
    os.symlink(dm, tmp_path / "dev" / "block" / "253:0")
    assert disk_facts(253, 0, str(tmp_path))["device"] == "sda"


def test_no_block_device_is_unknown(tmp_path: Path) -> None:
    assert disk_facts(0, 51, str(tmp_path)) == {"device": None, "kind": "unknown"}
    # On this machine, whatever backs the temp dir: the probe answers without failing.
    assert DiskFacts.model_validate(model_disk(str(tmp_path))).kind in {
        "nvme", "ssd", "hdd", "usb", "mmc", "unknown"
    }  # fmt: skip
