"""How long the reflash image takes to boot to sshd under QEMU, the two ways a rig boots it
(not a test: timings are printed, never asserted; the checks it makes are printed too).

1. `disk`: the image's own GPT disk under UEFI (OVMF): firmware → GRUB on the EFI partition →
   the kernel → sshd. The way a new disk, or a rig whose disk was written, boots.
2. `reflash`: the way a reflashed rig boots its staged root: a "mining" disk whose ext4 root
   holds /rigpivot-reflash/root.img (given a host key of its own, as `rig-reflash.sh identity`
   does), the kernel started with `rigpivot.loop=/rigpivot-reflash/root.img`: the initramfs
   mounts the image from the mining root. Checks: sshd presents the staged host key (strict
   known_hosts), / is the loop device, the mining root is at /host, the OS is Debian 12.

This machine has no KVM: QEMU emulates the CPU (TCG), so a boot is far slower than on a rig.

    sudo .venv/bin/python benchmarks/reflash_boot.py          # both
    sudo .venv/bin/python benchmarks/reflash_boot.py reflash  # one
"""

from __future__ import annotations

import argparse
import json
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from toolkit import osimage

# What the booted OS says of itself: its root and the mining root, its release, the mining
# identity it can reach, how long systemd took.
CHECKS = (
    "findmnt -n -o SOURCE,TARGET / /host 2>&1; . /etc/os-release; echo $ID $VERSION_ID; "
    "cat /host/hive-config/rig.conf 2>/dev/null; systemd-analyze 2>&1 | head -1"
)


def run(*argv: str | Path, stdin: bytes | None = None) -> str:
    proc = subprocess.run([str(a) for a in argv], input=stdin, capture_output=True, check=False)
    if proc.returncode != 0:
        sys.exit(f"{argv[0]} failed: {proc.stderr.decode(errors='replace')}")
    return proc.stdout.decode(errors="replace")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def banner(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=2) as s:
            return s.recv(64).startswith(b"SSH-2.0")
    except OSError:
        return False


def prepared_root(image: Path, work: Path) -> tuple[Path, Path]:
    """A copy of the image's root with root's authorized key and a host key of its own, written
    with debugfs (no mount); returns the root and the client key."""
    root = work / "root.img"
    run("cp", "--sparse=always", image / "root.img", root)
    run("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", work / "client")
    run("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "root@rig07", "-f", work / "hostkey")
    script = "\n".join([
        "mkdir /root/.ssh",
        f"write {work}/client.pub /root/.ssh/authorized_keys",
        f"write {work}/hostkey /etc/ssh/ssh_host_ed25519_key",
        "sif /etc/ssh/ssh_host_ed25519_key mode 0100600",
        f"write {work}/hostkey.pub /etc/ssh/ssh_host_ed25519_key.pub",
    ]) + "\n"  # fmt: skip
    run("debugfs", "-w", "-f", "-", root, stdin=script.encode())
    return root, work / "client"


def boot(
    argv: list[str], port: int, log: Path, limit: float
) -> tuple[subprocess.Popen[bytes], float]:
    t0 = time.monotonic()
    vm = subprocess.Popen(argv, stdout=log.open("wb"), stderr=subprocess.STDOUT)
    while time.monotonic() - t0 < limit:
        if vm.poll() is not None:
            sys.exit(f"QEMU exited ({vm.returncode}); its console: {log}")
        if banner(port):
            return vm, time.monotonic() - t0
        time.sleep(1)
    vm.kill()
    sys.exit(f"no sshd after {limit:.0f} s; the console: {log}")


def qemu(port: int) -> list[str]:
    return [
        "qemu-system-x86_64", "-machine", "q35", "-m", "1024", "-smp", "2", "-nographic",
        "-netdev", f"user,id=n0,hostfwd=tcp:127.0.0.1:{port}-:22",
        "-device", "virtio-net-pci,netdev=n0",
    ]  # fmt: skip


def ssh(work: Path, port: int, command: str) -> str:
    known = work / "known_hosts"
    known.write_text(f"[127.0.0.1]:{port} {(work / 'hostkey.pub').read_text()}")
    return run(
        "ssh", "-i", work / "client", "-p", str(port), "-o", f"UserKnownHostsFile={known}",
        "-o", "StrictHostKeyChecking=yes", "-o", "BatchMode=yes", "root@127.0.0.1", command,
    )  # fmt: skip


def measure(mode: str, image: Path, limit: float) -> None:
    with tempfile.TemporaryDirectory(prefix="reflash-boot-") as tmp:
        work = Path(tmp)
        root, _ = prepared_root(image, work)
        port = free_port()
        if mode == "disk":
            disk = work / "disk.img"
            osimage.assemble_disk(image / "esp.img", root, disk)
            vars_ = work / "OVMF_VARS.fd"
            shutil.copyfile("/usr/share/OVMF/OVMF_VARS.fd", vars_)
            argv = [
                *qemu(port),
                "-drive", "if=pflash,format=raw,readonly=on,file=/usr/share/OVMF/OVMF_CODE.fd",
                "-drive", f"if=pflash,format=raw,file={vars_}",
                "-drive", f"file={disk},format=raw,if=virtio",
            ]  # fmt: skip
        else:
            tree = work / "mining"
            (tree / "rigpivot-reflash").mkdir(parents=True)
            (tree / "hive-config").mkdir()
            (tree / "hive-config/rig.conf").write_text("RIG_ID=4242\n")
            run("cp", "--sparse=always", root, tree / "rigpivot-reflash/root.img")
            mining = work / "mining.img"
            run("mkfs.ext4", "-q", "-d", tree, mining, f"{osimage.ROOT_MIB + 512}M")
            uuid = run("blkid", "-o", "value", "-s", "UUID", mining).strip()
            argv = [
                *qemu(port),
                "-kernel", str(image / "vmlinuz"), "-initrd", str(image / "initrd.img"),
                "-append", f"root=UUID={uuid} rigpivot.loop=/rigpivot-reflash/root.img rw "
                           "console=ttyS0",
                "-drive", f"file={mining},format=raw,if=virtio",
            ]  # fmt: skip
        vm, seconds = boot(argv, port, work / "console.log", limit)
        try:
            checks = ssh(work, port, CHECKS)
        finally:
            vm.kill()
            vm.wait()
        print(
            json.dumps({"mode": mode, "to_sshd_s": round(seconds, 1), "checks": checks.split("\n")})
        )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("modes", nargs="*", default=["disk", "reflash"], choices=["disk", "reflash"])
    ap.add_argument("--limit", type=float, default=900, help="seconds to wait for sshd")
    args = ap.parse_args()
    for tool in ("qemu-system-x86_64", "debugfs"):
        if shutil.which(tool) is None:
            sys.exit(f"{tool} is not installed: run `make lab-deps`")
    image = osimage.build()
    for mode in args.modes:
        measure(mode, image, args.limit)


if __name__ == "__main__":
    main()
