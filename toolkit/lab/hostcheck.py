"""What the lab needs of the machine it runs on, checked before `lab up` builds or starts anything.

A new Debian 12 machine has none of it; `make lab-deps` (scripts/host-deps.sh) installs the
packages named here, and a unit test keeps the script and this table equal. Someone who runs
`rigpivot lab up` without `make` gets every missing piece named with its package and the one
command that installs them all.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from toolkit.errors import BadInputError

# Where podman looks for its helper binaries (containers.conf's helper_binaries_dir default).
PODMAN_HELPER_DIRS = (
    "/usr/local/libexec/podman",
    "/usr/local/lib/podman",
    "/usr/libexec/podman",
    "/usr/lib/podman",
)


@dataclass(frozen=True)
class Need:
    binary: str
    package: str
    why: str
    podman_helper: bool = False  # found where podman looks, not on PATH


NEEDS: tuple[Need, ...] = (
    Need("podman", "podman", "runs the lab's rigs and farm services"),
    Need("runc", "runc", "podman's container runtime here (crun fails on hybrid cgroup hosts)"),
    Need("netavark", "netavark", "podman's network backend (rigs resolve mirror.lab by name)",
         podman_helper=True),
    Need("aardvark-dns", "aardvark-dns", "answers the lab network's names", podman_helper=True),
    Need("iptables", "iptables", "netavark sets up every container network with it"),
    Need("newuidmap", "uidmap", "podman's user-namespace mapping"),
    Need("debootstrap", "debootstrap", "builds the rig image's Debian root (no registry here)"),
    Need("dpkg-scanpackages", "dpkg-dev", "indexes the farm mirror's apt repository"),
    Need("dpkg-deb", "dpkg", "builds the lab's driver and CUDA packages"),
    Need("tar", "tar", "imports the rig image's root into podman"),
    Need("gcc", "gcc", "compiles the simulated NVML library"),
    Need("g++", "g++", "builds the lab's llama.cpp wheel"),
    Need("ssh-keygen", "openssh-client", "makes the controller's key and the rigs' host keys"),
    Need("ssh", "openssh-client", "Ansible's connection to the rigs"),
    # A rig's disk on loop devices, for the reflash tests (tests/integration/test_reflash_disk.py)
    Need("sfdisk", "fdisk", "partitions the test rig's disk (GPT)"),
    Need("mkfs.vfat", "dosfstools", "formats the test rig's EFI partition"),
    Need("mkfs.ext4", "e2fsprogs", "formats root file systems and their images"),
    Need("debugfs", "e2fsprogs", "reads files out of a root image without mounting it"),
    Need("losetup", "mount", "puts a disk image on loop devices"),
    Need("unshare", "util-linux", "mounts in a private namespace, unseen by the machine"),
    Need("grub-editenv", "grub-common", "edits GRUB's environment block (one-shot boot)"),
    Need("curl", "curl", "downloads a staged image, as a rig does from the farm mirror"),
    Need("blkid", "util-linux", "reads a root image's UUID"),
    # The reflash OS image (toolkit/osimage.py, `rigpivot image build`) and its test
    Need("mcopy", "mtools", "writes GRUB into the image's EFI partition without mounting it"),
    Need("mdir", "mtools", "lists the image's EFI partition"),
    Need("qemu-system-x86_64", "qemu-system-x86", "boots the reflash image (toolkit/lab/vm.py)"),
)  # fmt: skip


def _find(need: Need, path: str | None) -> str | None:
    if need.podman_helper:
        for d in PODMAN_HELPER_DIRS:
            candidate = Path(d) / need.binary
            if os.access(candidate, os.X_OK):
                return str(candidate)
        return None
    return shutil.which(need.binary, path=path)


def missing_binaries(needs: Iterable[Need] = NEEDS, path: str | None = None) -> list[Need]:
    """The needs whose binary is not on `path` (default: $PATH), or where podman looks."""
    return [n for n in needs if _find(n, path) is None]


def cgroup2_supported(filesystems: Path = Path("/proc/filesystems")) -> bool:
    """The rigs' entrypoint mounts a cgroup2 hierarchy of their own for systemd."""
    try:
        return any(
            line.split()[-1:] == ["cgroup2"] for line in filesystems.read_text().splitlines()
        )
    except OSError:
        return False


def podman_network_backend(env: dict[str, str] | None = None) -> str | None:
    """The network backend podman reports with the lab's containers.conf (netavark or cni)."""
    from toolkit.lab.podman import podman_env

    try:
        proc = subprocess.run(
            ["podman", "info", "--format", "json"],
            env=env or podman_env(), capture_output=True, timeout=60, check=False,
        )  # fmt: skip
    except (OSError, subprocess.TimeoutExpired):
        return None
    if proc.returncode != 0:
        return None
    try:
        backend = json.loads(proc.stdout)["host"]["networkBackend"]
    except (ValueError, KeyError, TypeError):
        return None
    return str(backend) if backend else None


def problems(path: str | None = None) -> list[str]:
    """Everything the host lacks, each with what it is for; empty when the lab can run."""
    found: list[str] = []
    missing = missing_binaries(path=path)
    if missing:
        packages = sorted({n.package for n in missing})
        found += [f"{n.binary} (package {n.package}): {n.why}" for n in missing]
        found.append(
            f"install them: `make lab-deps`, or `sudo apt-get install --no-install-recommends "
            f"{' '.join(packages)}`"
        )
    if not cgroup2_supported():
        found.append(
            "the kernel has no cgroup2 filesystem: the rigs' systemd needs one (Linux >= 4.5 "
            "with cgroup2 enabled)"
        )
    if not any(n.binary == "podman" for n in missing):
        backend = podman_network_backend()
        if backend != "netavark":
            found.append(
                f"podman reports the network backend {backend or 'nothing (podman info failed)'}"
                ", not netavark: lab rigs could not resolve mirror.lab; install netavark and "
                "aardvark-dns (`make lab-deps`)"
            )
    return found


def require() -> None:
    """Refuse (exit 2, nothing built or started) when the host cannot run the lab."""
    found = problems()
    if found:
        raise BadInputError(
            "this machine cannot run the lab yet; nothing was built or started:\n  - "
            + "\n  - ".join(found)
        )
