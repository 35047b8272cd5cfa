"""The reflash OS image (`rigpivot image build`, toolkit/osimage.py): built once per set of
inputs from the Debian mirror, it is what a rig stages (root image, kernel, initramfs, checked
by the manifest) and a GPT disk that boots on its own under UEFI. Read here without mounting:
the partition table with sfdisk, the EFI partition with mtools, the root with debugfs."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from toolkit import osimage

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0, reason="debootstrap and chroot need root (CI runs as root)"
)


def run(*argv: str | Path) -> str:
    proc = subprocess.run([str(a) for a in argv], capture_output=True, text=True, check=False)
    assert proc.returncode == 0, f"{argv}: {proc.stderr}"
    return proc.stdout


@pytest.fixture(scope="module")
def image() -> Path:
    return osimage.build()


def test_the_manifest_names_what_a_rig_stages_with_their_checksums(image: Path):
    lines = (image / "manifest.sha256").read_text().splitlines()
    sums = {name: digest for digest, name in (ln.split() for ln in lines)}
    assert sorted(sums) == ["initrd.img", "root.img", "vmlinuz"]
    for name, digest in sums.items():
        assert osimage.sha256(image / name) == digest, name
    # An x86 boot image: the "HdrS" signature of the boot protocol at 0x202.
    assert (image / "vmlinuz").read_bytes()[0x202:0x206] == b"HdrS"


def test_the_root_is_debian_12_with_sshd_python_and_no_host_keys_of_its_own(image: Path):
    root = image / "root.img"
    info = json.loads((image / "image.json").read_text())
    assert run("blkid", "-o", "value", "-s", "UUID", root).strip() == info["root_uuid"]

    def cat(path: str) -> str:
        return run("debugfs", "-R", f"cat {path}", root)

    assert 'VERSION_ID="12"' in cat("/usr/lib/os-release")  # /etc/os-release links to it
    listing = run("debugfs", "-R", "ls -l /usr/sbin", root) + run(
        "debugfs", "-R", "ls /usr/bin", root
    )
    assert "sshd" in listing and "python3" in listing
    ssh = run("debugfs", "-R", "ls /etc/ssh", root)
    assert "ssh_host_" not in ssh, "every rig would share the image's host keys"
    assert cat("/etc/machine-id") == "", "each rig keeps its own machine-id"
    assert "PasswordAuthentication no" in cat("/etc/ssh/sshd_config.d/10-rigpivot.conf")
    # The initramfs part of a reflash: root on an image file of the rig's old root.
    assert "rigpivot.loop=" in cat("/etc/initramfs-tools/scripts/local-bottom/rigpivot-loop")
    grub = cat("/boot/grub/grub.cfg")
    assert 'set default="${next_entry}"' in grub and f"root=UUID={info['root_uuid']}" in grub
    assert cat("/boot/grub/grubenv").startswith("# GRUB Environment Block")


def test_the_disk_is_gpt_with_an_efi_partition_that_boots_grub_and_the_root(image: Path):
    disk = image / "disk.img"
    table = json.loads(run("sfdisk", "--json", disk))["partitiontable"]
    assert table["label"] == "gpt"
    esp, root = table["partitions"]
    assert esp["type"] == "C12A7328-F81F-11D2-BA4B-00A0C93EC93B"  # EFI system partition
    assert root["type"] == "0FC63DAF-8483-4772-8E79-3D69D8477DE4"  # Linux file system
    sector = table.get("sectorsize", 512)
    esp_at = f"{disk}@@{esp['start'] * sector}"
    assert "BOOTX64  EFI" in run("mdir", "-i", esp_at, "::/EFI/BOOT")
    # The root partition holds the same file system as root.img, byte for byte.
    with disk.open("rb") as f, (image / "root.img").open("rb") as r:
        f.seek(root["start"] * sector)
        for _ in range(64):
            block = r.read(1024 * 1024)
            assert f.read(len(block)) == block
