"""The reflash OS image booted under QEMU, the machine a lab container cannot be (it boots no
kernel). Two ways, as a rig boots it:

- `staged`: a reflashed rig's boot of its staged root. A "mining" disk whose ext4 root holds
  /rigpivot-reflash/root.img (given the rig's host key, as `rig-reflash.sh identity` does) and
  HiveOS's rig.conf; the kernel starts with `rigpivot.loop=/rigpivot-reflash/root.img`, so the
  image's initramfs mounts the image from the mining root.
- `disk`: the image's own GPT disk under UEFI (OVMF): firmware, GRUB on the EFI partition, the
  kernel. How a new disk boots.

This machine has no KVM: QEMU emulates the CPU (TCG). Each boot waits for sshd, logs in with
the host key checked against the one the disk was given, and reports what the booted OS says
of itself.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from toolkit import osimage
from toolkit.errors import LabError

# What the booted OS says of itself: its root and the mining root, its release, the mining
# identity it reaches, how long systemd took.
REPORT = (
    "findmnt -n -o SOURCE,TARGET /; findmnt -n -o SOURCE,TARGET /host; "
    ". /etc/os-release; echo $ID $VERSION_ID; "
    "cat /host/hive-config/rig.conf 2>/dev/null; systemd-analyze 2>&1 | head -1"
)
RIG_CONF = "RIG_ID=4242\nWORKER_NAME=rig07\n"
OVMF_CODE = Path("/usr/share/OVMF/OVMF_CODE.fd")
OVMF_VARS = Path("/usr/share/OVMF/OVMF_VARS.fd")


@dataclass(frozen=True)
class Boot:
    mode: str
    to_sshd_s: float  # from QEMU's start to sshd's banner
    report: list[str]  # REPORT's lines, as the booted OS printed them


def _run(argv: list[str], stdin: bytes | None = None) -> str:
    proc = subprocess.run(argv, input=stdin, capture_output=True, check=False)
    if proc.returncode != 0:
        raise LabError(f"{argv[0]} failed: {proc.stderr.decode(errors='replace').strip()}")
    return proc.stdout.decode(errors="replace")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _banner(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=2) as s:
            return s.recv(64).startswith(b"SSH-2.0")
    except OSError:
        return False


def _root_with_keys(image: Path, work: Path) -> Path:
    """A copy of the image's root with root's authorized key (the client's) and a host key of
    its own, written with debugfs (no mount)."""
    root = work / "root.img"
    _run(["cp", "--sparse=always", str(image / "root.img"), str(root)])
    for name, comment in (("client", "controller"), ("hostkey", "root@rig07")):
        _run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment,
              "-f", str(work / name)])  # fmt: skip
    script = "\n".join([
        "mkdir /root/.ssh",
        f"write {work}/client.pub /root/.ssh/authorized_keys",
        f"write {work}/hostkey /etc/ssh/ssh_host_ed25519_key",
        "sif /etc/ssh/ssh_host_ed25519_key mode 0100600",
        f"write {work}/hostkey.pub /etc/ssh/ssh_host_ed25519_key.pub",
    ]) + "\n"  # fmt: skip
    _run(["debugfs", "-w", "-f", "-", str(root)], stdin=script.encode())
    return root


def _qemu(port: int) -> list[str]:
    return [
        "qemu-system-x86_64", "-machine", "q35", "-m", "1024", "-smp", "2", "-nographic",
        "-netdev", f"user,id=n0,hostfwd=tcp:127.0.0.1:{port}-:22",
        "-device", "virtio-net-pci,netdev=n0",
    ]  # fmt: skip


def _staged_disk(root: Path, work: Path) -> tuple[list[str], Path]:
    tree = work / "mining"
    (tree / "rigpivot-reflash").mkdir(parents=True)
    (tree / "hive-config").mkdir()
    (tree / "hive-config/rig.conf").write_text(RIG_CONF)
    _run(["cp", "--sparse=always", str(root), str(tree / "rigpivot-reflash/root.img")])
    mining = work / "mining.img"
    _run(["mkfs.ext4", "-q", "-d", str(tree), str(mining), f"{osimage.ROOT_MIB + 512}M"])
    uuid = _run(["blkid", "-o", "value", "-s", "UUID", str(mining)]).strip()
    args = [
        "-append", f"root=UUID={uuid} rigpivot.loop=/rigpivot-reflash/root.img rw console=ttyS0",
        "-drive", f"file={mining},format=raw,if=virtio",
    ]  # fmt: skip
    return args, mining


def boot(image: Path, mode: str, limit: float = 600) -> Boot:
    """Boot `image` (osimage.build()'s folder) one way, wait for sshd, report, power off."""
    for tool in ("qemu-system-x86_64", "debugfs", "ssh"):
        if shutil.which(tool) is None:
            raise LabError(f"{tool} is not installed: run `make lab-deps`")
    with tempfile.TemporaryDirectory(prefix="rigpivot-vm-") as tmp:
        work = Path(tmp)
        root = _root_with_keys(image, work)
        port = _free_port()
        argv = _qemu(port)
        if mode == "staged":
            args, _ = _staged_disk(root, work)
            argv += ["-kernel", str(image / "vmlinuz"), "-initrd", str(image / "initrd.img"), *args]
        elif mode == "disk":
            disk, vars_ = work / "disk.img", work / "OVMF_VARS.fd"
            osimage.assemble_disk(image / "esp.img", root, disk)
            shutil.copyfile(OVMF_VARS, vars_)
            argv += [
                "-drive", f"if=pflash,format=raw,readonly=on,file={OVMF_CODE}",
                "-drive", f"if=pflash,format=raw,file={vars_}",
                "-drive", f"file={disk},format=raw,if=virtio",
            ]  # fmt: skip
        else:
            raise ValueError(mode)
        console = work / "console.log"
        t0 = time.monotonic()
        with console.open("wb") as log:
            vm = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT)
        try:
            while not _banner(port):
                if vm.poll() is not None or time.monotonic() - t0 > limit:
                    tail = console.read_text(errors="replace")[-3000:]
                    raise LabError(f"the {mode} boot reached no sshd; its console:\n{tail}")
                time.sleep(1)
            seconds = time.monotonic() - t0
            known = work / "known_hosts"
            known.write_text(f"[127.0.0.1]:{port} {(work / 'hostkey.pub').read_text()}")
            out = _run([
                "ssh", "-i", str(work / "client"), "-p", str(port), "-o", "BatchMode=yes",
                "-o", f"UserKnownHostsFile={known}", "-o", "StrictHostKeyChecking=yes",
                "root@127.0.0.1", REPORT,
            ])  # fmt: skip
        finally:
            vm.kill()
            vm.wait()
        return Boot(mode=mode, to_sshd_s=round(seconds, 1), report=out.splitlines())
