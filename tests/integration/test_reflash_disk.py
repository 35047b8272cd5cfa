"""The rig side of a reflash (roles/reflash/files/rig-reflash.sh) on loop devices: a GPT disk
like a mining rig's (an EFI partition, an ext4 root with HiveOS's identity files and GRUB's
environment block), its backup and restore checked by checksum, a target root image staged
from a farm folder, the rig's identity put into it, the one-shot boot entry armed, committed
and removed again, leaving the root as it was.

Mounts happen in a private mount namespace per step (`unshare --mount`), so nothing of the
test shows in the machine's mount table; loop devices are detached at the end."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "roles/reflash/files/rig-reflash.sh"
MIB = 1024 * 1024

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0, reason="loop devices and mounts need root (CI runs as root)"
)


def run(
    *argv: str | Path, stdin: bytes | None = None, check: bool = True
) -> subprocess.CompletedProcess[bytes]:
    proc = subprocess.run([str(a) for a in argv], input=stdin, capture_output=True, timeout=120)
    if check and proc.returncode != 0:
        raise AssertionError(f"{argv} failed ({proc.returncode}): {proc.stderr.decode()}")
    return proc


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(MIB), b""):
            h.update(block)
    return h.hexdigest()


def attach(image: Path, offset: int = 0, size: int = 0) -> str:
    argv = ["losetup", "--find", "--show"]
    if size:
        argv += ["--offset", str(offset), "--sizelimit", str(size)]
    return run(*argv, image).stdout.decode().strip()


@dataclass
class Rig:
    """A mining rig's disk on loop devices: `disk` the whole disk, `root` its root partition."""

    disk: str
    root: str
    mnt: Path

    def sh(self, command: str, stdin: bytes | None = None, check: bool = True):
        """A shell in a private mount namespace with the rig's root mounted at self.mnt."""
        script = f"mount {self.root} {self.mnt} && {command}"
        return run("unshare", "--mount", "--propagation", "private", "sh", "-c", script,
                   stdin=stdin, check=check)  # fmt: skip

    def reflash(self, *args: str, stdin: bytes | None = None, check: bool = True):
        return self.sh(f"sh {SCRIPT} --root {self.mnt} " + " ".join(args), stdin, check)

    def facts(self) -> dict[str, str]:
        out = self.reflash("facts").stdout.decode()
        return dict(line.split("=", 1) for line in out.splitlines())

    def read(self, rel: str) -> bytes:
        return self.sh(f"cat {self.mnt}/{rel}").stdout

    def inventory(self) -> str:
        """Every path of the root with its type, mode and owner, and every file's sha256."""
        return self.sh(
            f"cd {self.mnt} && find . -path ./lost+found -prune -o -printf '%p %y %m %U:%G\\n' "
            "| sort && find . -path ./lost+found -prune -o -type f -print0 | sort -z "
            "| xargs -0 sha256sum"
        ).stdout.decode()


OPERATOR_CUSTOM_CFG = b"# the farm's own entry\nset timeout=3\n"


def mining_root(tree: Path) -> None:
    """The files a HiveOS rig is known by, and GRUB's configuration folder."""
    for rel, content in {
        "etc/hostname": b"rig07\n",
        "etc/hosts": b"127.0.0.1 localhost\n127.0.1.1 rig07\n",
        "etc/machine-id": b"0123456789abcdef0123456789abcdef\n",
        "etc/network/interfaces": b"auto eth0\niface eth0 inet dhcp\n",
        "root/.ssh/authorized_keys": b"ssh-ed25519 AAAAC3Nza... admin@farm\n",
        "hive-config/rig.conf": b"RIG_ID=4242\nRIG_PASSWD=secret\nWORKER_NAME=rig07\n",
        "hive-config/network/net.conf": b"DHCP=yes\n",
        "boot/grub/grub.cfg": b"# made by update-grub\n",
        "boot/grub/custom.cfg": OPERATOR_CUSTOM_CFG,
        "hive/bin/miner": b"#!/bin/sh\nexec sleep infinity\n",
    }.items():
        (tree / rel).parent.mkdir(parents=True, exist_ok=True)
        (tree / rel).write_bytes(content)
    (tree / "root/.ssh").chmod(0o700)
    (tree / "etc/ssh").mkdir(parents=True)
    run("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "root@rig07",
        "-f", tree / "etc/ssh/ssh_host_ed25519_key")  # fmt: skip
    run("grub-editenv", tree / "boot/grub/grubenv", "create")


@pytest.fixture(scope="module")
def rig(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Rig]:
    work = tmp_path_factory.mktemp("rigdisk")
    image = work / "disk.img"
    with image.open("wb") as f:
        f.truncate(160 * MIB)
    run("sfdisk", "--quiet", image, stdin=b"label: gpt\nsize=16MiB, type=U\ntype=L\n")
    table = json.loads(run("sfdisk", "--json", image).stdout)["partitiontable"]
    sector = table.get("sectorsize", 512)
    esp, root = ((p["start"] * sector, p["size"] * sector) for p in table["partitions"])
    tree = work / "tree"
    mining_root(tree)
    loops = [attach(image), attach(image, *esp), attach(image, *root)]
    try:
        run("mkfs.vfat", "-n", "EFI", loops[1])
        run("mkfs.ext4", "-q", "-L", "rigroot", "-d", tree, loops[2])
        mnt = work / "mnt"
        mnt.mkdir()
        yield Rig(disk=loops[0], root=loops[2], mnt=mnt)
    finally:
        for loop in loops:
            run("losetup", "--detach", loop, check=False)


@pytest.fixture(scope="module")
def farm(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The farm mirror's folder for the target OS: a root image, its kernel and initrd."""
    farm = tmp_path_factory.mktemp("farm")
    tree = tmp_path_factory.mktemp("newroot")
    (tree / "etc/ssh").mkdir(parents=True)
    (tree / "etc/os-release").write_text('ID=debian\nVERSION_ID="12"\n')
    (tree / "etc/hostname").write_text("debian\n")
    run("mkfs.ext4", "-q", "-d", tree, farm / "root.img", "24M")
    (farm / "vmlinuz").write_bytes(os.urandom(4096))
    (farm / "initrd.img").write_bytes(os.urandom(8192))
    (farm / "manifest.sha256").write_text(
        "".join(f"{sha256(farm / n)}  {n}\n" for n in ("root.img", "vmlinuz", "initrd.img"))
    )
    return farm


def test_facts_name_the_root_its_file_system_and_grubs_environment(rig: Rig):
    facts = rig.facts()
    assert facts["root_fstype"] == "ext4"
    assert facts["root_device"] == rig.root
    assert len(facts["root_uuid"]) == 36
    assert facts["grubenv"] == f"{rig.mnt}/boot/grub/grubenv"
    assert facts["grubenv_writable_at_boot"] == "yes"
    assert int(facts["free_mib"]) > 100
    assert (facts["staged"], facts["armed"], facts["committed"]) == ("no", "no", "no")


def test_backup_streams_the_disk_with_its_checksum_and_restore_writes_it_back(rig: Rig, tmp_path):
    before = hashlib.sha256(Path(rig.disk).read_bytes()).hexdigest()
    proc = run("sh", SCRIPT, "backup", rig.disk)
    backup = tmp_path / "disk.img.gz"
    backup.write_bytes(proc.stdout)
    report = proc.stderr.decode().strip()
    assert report == f"rigpivot-backup bytes={160 * MIB} sha256={before}"
    raw = run("gzip", "-dc", backup).stdout
    assert hashlib.sha256(raw).hexdigest() == before
    assert len(proc.stdout) < len(raw) // 4, "the backup is compressed"

    # The disaster case: the disk's first MiB is lost; the backup puts every byte back.
    with open(rig.disk, "r+b") as dev:
        dev.write(b"\0" * MIB)
    assert hashlib.sha256(Path(rig.disk).read_bytes()).hexdigest() != before
    proc = run("sh", SCRIPT, "restore", rig.disk, before, stdin=backup.read_bytes())
    assert hashlib.sha256(Path(rig.disk).read_bytes()).hexdigest() == before
    assert f"sha256={before}" in proc.stderr.decode()
    # A backup that does not match the checksum asked for is reported, naming both.
    bad = run("sh", SCRIPT, "restore", rig.disk, "0" * 64, stdin=backup.read_bytes(), check=False)
    assert bad.returncode != 0
    assert f"has sha256 {before}, the backup's is {'0' * 64}" in bad.stderr.decode()


def test_a_mounted_root_is_frozen_while_it_is_read_and_thawed_after(rig: Rig, tmp_path):
    """--freeze: the root file system takes no write while dd reads it (a consistent image),
    and takes writes again once the backup is done."""
    out = tmp_path / "root.img.gz"
    proc = rig.sh(
        f"sh {SCRIPT} backup {rig.root} --freeze {rig.mnt} > {out} && "
        f"touch {rig.mnt}/written-after && echo thawed"
    )
    assert proc.stdout.decode().strip() == "thawed"
    digest = proc.stderr.decode().split("sha256=")[1].strip()
    assert hashlib.sha256(run("gzip", "-dc", out).stdout).hexdigest() == digest
    rig.sh(f"rm {rig.mnt}/written-after")


def test_stage_refuses_without_the_room_and_a_corrupt_download(rig: Rig, farm: Path, tmp_path):
    before = rig.inventory()
    proc = rig.reflash("stage", f"file://{farm}", "100000", check=False)
    assert proc.returncode != 0
    assert "MiB free on the root file system, the image needs 100000 MiB" in proc.stderr.decode()
    assert rig.inventory() == before, "a refused stage wrote nothing"

    corrupt = tmp_path / "farm"
    shutil.copytree(farm, corrupt)
    (corrupt / "vmlinuz").write_bytes(b"not the kernel the manifest names")
    proc = rig.reflash("stage", f"file://{corrupt}", check=False)
    assert proc.returncode != 0
    assert f"file://{corrupt}/vmlinuz has sha256 " in proc.stderr.decode()
    assert rig.facts()["staged"] == "no"
    proc = rig.reflash("arm", check=False)
    assert proc.returncode != 0 and "nothing is staged" in proc.stderr.decode()
    rig.reflash("disarm")
    assert rig.inventory() == before


def test_a_stage_cut_short_is_finished_by_the_next(rig: Rig, farm: Path):
    rig.reflash("stage", f"file://{farm}")
    # As after a power cut mid-download: the kernel whole, the root image half written.
    rig.sh(f"rm {rig.mnt}/rigpivot-reflash/staged && "
           f"head -c 1000 {farm}/root.img > {rig.mnt}/rigpivot-reflash/root.img.part && "
           f"rm {rig.mnt}/rigpivot-reflash/root.img")  # fmt: skip
    assert rig.facts()["staged"] == "no"
    rig.reflash("stage", f"file://{farm}")
    assert rig.facts()["staged"] == "yes"
    assert rig.read("rigpivot-reflash/root.img") == (farm / "root.img").read_bytes()
    assert "root.img.part" not in rig.sh(f"ls {rig.mnt}/rigpivot-reflash").stdout.decode()


def test_identity_arm_commit_and_disarm(rig: Rig, farm: Path, tmp_path):
    rig.reflash("disarm")
    before = rig.inventory()
    grubenv = rig.read("boot/grub/grubenv")
    rig.reflash("stage", f"file://{farm}")

    rig.reflash("identity")
    staged = tmp_path / "root.img"
    staged.write_bytes(rig.read("rigpivot-reflash/root.img"))

    def in_image(rel: str) -> bytes:
        return run("debugfs", "-R", f"cat /{rel}", staged).stdout

    for rel in ("etc/hostname", "etc/hosts", "etc/machine-id", "etc/network/interfaces",
                "etc/ssh/ssh_host_ed25519_key", "etc/ssh/ssh_host_ed25519_key.pub",
                "root/.ssh/authorized_keys", "hive-config/rig.conf",
                "hive-config/network/net.conf"):  # fmt: skip
        assert in_image(rel) == rig.read(rel), f"{rel} differs in the staged root"
    mode = run("debugfs", "-R", "stat /etc/ssh/ssh_host_ed25519_key", staged).stdout.decode()
    assert "Mode:  0600" in mode, "the host key stays private"
    assert in_image("etc/os-release").startswith(b"ID=debian"), "the rest is the new OS"

    rig.reflash("arm")
    facts = rig.facts()
    assert (facts["armed"], facts["committed"]) == ("yes", "no")
    (tmp_path / "grubenv").write_bytes(rig.read("boot/grub/grubenv"))
    env = run("grub-editenv", tmp_path / "grubenv", "list").stdout.decode()
    assert env.splitlines() == ["next_entry=rigpivot-reflash"]
    custom = rig.read("boot/grub/custom.cfg")
    assert custom.startswith(OPERATOR_CUSTOM_CFG), "the operator's lines stay first, as they were"
    block = custom[len(OPERATOR_CUSTOM_CFG) :].decode()
    uuid = facts["root_uuid"]
    assert "menuentry 'rigpivot: the reflashed OS' --id rigpivot-reflash {" in block
    assert f"search --no-floppy --fs-uuid --set=root {uuid}" in block
    assert (f"linux /rigpivot-reflash/vmlinuz root=UUID={uuid} "
            "rigpivot.loop=/rigpivot-reflash/root.img rw") in block  # fmt: skip
    assert "set default" not in block, "armed is once only: the mining OS stays the default"

    proc = rig.reflash("stage", f"file://{farm}", check=False)
    assert proc.returncode != 0 and "disarm it before staging another" in proc.stderr.decode()

    rig.reflash("commit")
    facts = rig.facts()
    assert (facts["armed"], facts["committed"]) == ("no", "yes")
    assert "  set default=rigpivot-reflash\n" in rig.read("boot/grub/custom.cfg").decode()

    rig.reflash("disarm")
    assert rig.read("boot/grub/custom.cfg") == OPERATOR_CUSTOM_CFG
    assert rig.read("boot/grub/grubenv") == grubenv
    assert rig.inventory() == before, "disarm left the root as it was before the stage"


def test_disarm_removes_a_custom_cfg_it_created(rig: Rig, farm: Path):
    rig.reflash("disarm")
    rig.sh(f"rm {rig.mnt}/boot/grub/custom.cfg")
    before = rig.inventory()
    rig.reflash("stage", f"file://{farm}")
    rig.reflash("arm")
    assert rig.read("boot/grub/custom.cfg").startswith(b"### BEGIN rigpivot-reflash")
    rig.reflash("disarm")
    assert rig.inventory() == before
