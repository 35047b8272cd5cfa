"""The OS image a reflash stages on a rig (docs/reflash.md): Debian 12 from the farm's Debian
mirror, debootstrapped, with a kernel, sshd, Python for Ansible and an initramfs that can mount
its root from an image file on the rig's old root file system.

`build(out)` writes into `out`:
  root.img         the root file system (ext4), what a rig stages and boots from a file
  vmlinuz, initrd.img  its kernel and initramfs, which GRUB on the rig loads
  disk.img         a whole GPT disk (EFI system partition + the same root) that boots on its own
                   under UEFI: for a new disk, and for booting the image under QEMU
  esp.img          that disk's EFI system partition (GRUB at the removable-media path)
  manifest.sha256  the checksums a rig's stage checks (root.img, vmlinuz, initrd.img)
  image.json       what was built from what (suite, mirror, packages, the root's UUID)

Building needs root (debootstrap, chroot) and the host tools named in scripts/host-deps.sh.
Every image is built once per set of inputs and kept under ~/.cache/rigpivot/osimage/.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
import re
import shutil
import subprocess
import tempfile
import uuid as uuidlib
from collections.abc import Iterator
from pathlib import Path

from toolkit.errors import RigpivotError

log = logging.getLogger(__name__)

SUITE = "bookworm"
PACKAGES = (
    "linux-image-amd64", "initramfs-tools", "busybox", "systemd-sysv", "udev", "kmod",
    "openssh-server", "python3", "sudo", "iproute2", "iputils-ping", "curl", "ca-certificates",
    "e2fsprogs", "util-linux", "grub-efi-amd64-bin", "grub-common",
)  # fmt: skip
ROOT_MIB = 2048
ESP_MIB = 64
STAGED = ("root.img", "vmlinuz", "initrd.img")
DEFAULT_DEBIAN_MIRROR = "http://deb.debian.org/debian"
# The initramfs's part of a reflash: with rigpivot.loop=PATH on the kernel's command line, the
# root the kernel was given (the rig's old root) moves to /host and PATH on it becomes /.
LOOP_ROOT_SCRIPT = """#!/bin/sh
# rigpivot: root on an image file of the rig's old root (rigpivot.loop=PATH)
case $1 in prereqs) exit 0 ;; esac
. /scripts/functions
for arg in $(cat /proc/cmdline); do
    case $arg in rigpivot.loop=*) LOOP=${arg#rigpivot.loop=} ;; esac
done
[ -n "${LOOP:-}" ] || exit 0
mkdir -p /host
mount -n -o move "${rootmnt}" /host
modprobe loop
if ! mount -o loop -t ext4 "/host/${LOOP#/}" "${rootmnt}"; then
    panic "rigpivot: cannot mount /host/${LOOP#/} as the root"
fi
mkdir -p "${rootmnt}/host"
mount -n -o move /host "${rootmnt}/host"
"""
# util-linux's mount in the initramfs (klibc's cannot mount through a loop device).
LOOP_ROOT_HOOK = """#!/bin/sh
case $1 in prereqs) exit 0 ;; esac
. /usr/share/initramfs-tools/hook-functions
copy_exec /bin/mount /bin
copy_exec /sbin/losetup /sbin
"""
# GRUB's configuration in the image: the one-shot logic every grub-mkconfig header has
# (next_entry, used once), then the image's own entry.
GRUB_CFG = """\
if [ -s $prefix/grubenv ]; then
  load_env
fi
if [ "${{next_entry}}" ] ; then
   set default="${{next_entry}}"
   set next_entry=
   save_env next_entry
   set boot_once=true
else
   set default="0"
fi
set timeout=1
menuentry 'Debian 12 (rigpivot)' --id rigpivot-debian {{
  search --no-floppy --fs-uuid --set=root {uuid}
  linux /boot/{kernel} root=UUID={uuid} ro console=ttyS0,115200 console=tty0
  initrd /boot/{initrd}
}}
if [ -f $prefix/custom.cfg ]; then
  source $prefix/custom.cfg
fi
"""


class ImageError(RigpivotError):
    """Building the reflash OS image failed."""

    exit_code = 4


def debian_mirror(suite: str = SUITE) -> str:
    """The Debian mirror this host's apt uses (RIGPIVOT_DEBIAN_MIRROR overrides it)."""
    if env := os.environ.get("RIGPIVOT_DEBIAN_MIRROR"):
        return env
    sources = [Path("/etc/apt/sources.list"), *sorted(Path("/etc/apt/sources.list.d").glob("*"))]
    for src in sources:
        try:
            text = src.read_text()
        except OSError:
            continue
        # deb822 stanzas and one-line entries alike: the first main archive of the suite wins.
        for stanza in re.split(r"\n\s*\n", text):
            if "security" in stanza or suite not in stanza:
                continue
            if m := re.search(r"^URIs:\s*(\S+)", stanza, re.M):
                return m.group(1)
            if m := re.search(rf"^deb\s+(?:\[[^\]]*\]\s+)?(\S+)\s+{suite}\s", stanza, re.M):
                return m.group(1)
    return DEFAULT_DEBIAN_MIRROR


def cache_root() -> Path:
    root = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "rigpivot" / "osimage"
    root.mkdir(parents=True, exist_ok=True)
    return root


def image_key(mirror: str) -> str:
    """The hash of everything an image is built from: same inputs, same image, built once."""
    h = hashlib.sha256()
    for part in (SUITE, mirror, ",".join(PACKAGES), str(ROOT_MIB), str(ESP_MIB),
                 Path(__file__).read_bytes().decode()):  # fmt: skip
        h.update(part.encode() + b"\0")
    return h.hexdigest()[:16]


def _run(argv: list[str], what: str, **kw: object) -> subprocess.CompletedProcess[bytes]:
    proc = subprocess.run(argv, capture_output=True, check=False, **kw)  # type: ignore[call-overload]
    if proc.returncode != 0:
        out = (proc.stdout + proc.stderr).decode(errors="replace").strip().splitlines()
        raise ImageError(
            f"{what} failed ({argv[0]} exited {proc.returncode}):\n" + "\n".join(out[-15:])
        )
    return proc  # type: ignore[no-any-return]


def _in_root(rootfs: Path, command: str, what: str) -> None:
    """A command chrooted into the image's root, with /proc, /sys and /dev of its own
    mount namespace (nothing shows in the machine's mount table)."""
    script = (
        f"mount -t proc proc {rootfs}/proc && mount -t sysfs sys {rootfs}/sys && "
        f"mount --bind /dev {rootfs}/dev && chroot {rootfs} sh -c '{command}'"
    )
    _run(["unshare", "--mount", "--propagation", "private", "sh", "-c", script], what)


def _configure(rootfs: Path) -> None:
    """The image's own settings: a name, DHCP on every wired port, SSH by key only, host keys
    made at first boot (a reflash puts the rig's own in place before that), no machine-id."""
    (rootfs / "etc/hostname").write_text("debian\n")
    (rootfs / "etc/hosts").write_text("127.0.0.1 localhost\n127.0.1.1 debian\n")
    (rootfs / "etc/fstab").write_text("# the root is given on the kernel's command line\n")
    (rootfs / "etc/machine-id").write_text("")
    network = rootfs / "etc/systemd/network/80-wired.network"
    network.parent.mkdir(parents=True, exist_ok=True)
    network.write_text("[Match]\nName=en* eth*\n\n[Network]\nDHCP=yes\n")
    sshd = rootfs / "etc/ssh/sshd_config.d/10-rigpivot.conf"
    sshd.write_text("PermitRootLogin prohibit-password\nPasswordAuthentication no\nUseDNS no\n")
    for key in (rootfs / "etc/ssh").glob("ssh_host_*"):
        key.unlink()
    unit = rootfs / "etc/systemd/system/rigpivot-hostkeys.service"
    unit.write_text(
        "[Unit]\nDescription=Make SSH host keys when the image has none\n"
        "Before=ssh.service\nConditionPathExistsGlob=!/etc/ssh/ssh_host_*_key\n\n"
        "[Service]\nType=oneshot\nExecStart=/usr/bin/ssh-keygen -A\n\n"
        "[Install]\nWantedBy=multi-user.target\n"
    )
    wants = rootfs / "etc/systemd/system/multi-user.target.wants"
    wants.mkdir(parents=True, exist_ok=True)
    for name, target in (
        ("rigpivot-hostkeys.service", "/etc/systemd/system/rigpivot-hostkeys.service"),
        ("systemd-networkd.service", "/lib/systemd/system/systemd-networkd.service"),
    ):
        link = wants / name
        if not link.is_symlink():
            link.symlink_to(target)
    for rel, text in (("scripts/local-bottom/rigpivot-loop", LOOP_ROOT_SCRIPT),
                      ("hooks/rigpivot-loop", LOOP_ROOT_HOOK)):  # fmt: skip
        script = rootfs / "etc/initramfs-tools" / rel
        script.parent.mkdir(parents=True, exist_ok=True)
        script.write_text(text)
        script.chmod(0o755)
    modules = rootfs / "etc/initramfs-tools/modules"
    modules.write_text(modules.read_text() + "loop\next4\n" if modules.exists() else "loop\next4\n")


def _esp(rootfs: Path, root_uuid: str, esp: Path) -> None:
    """The EFI system partition: GRUB at the removable-media path (no NVRAM entry needed),
    finding the root by UUID and reading its /boot/grub/grub.cfg."""
    early = rootfs / "tmp/rigpivot-early.cfg"
    early.write_text(
        f"search --no-floppy --fs-uuid --set=root {root_uuid}\n"
        "set prefix=($root)/boot/grub\nconfigfile $prefix/grub.cfg\n"
    )
    modules = ("part_gpt fat ext2 normal linux search search_fs_uuid configfile loadenv test echo "
               "gzio all_video efi_gop serial terminal")  # fmt: skip
    mkimage = "grub-mkimage -O x86_64-efi -o /tmp/BOOTX64.EFI -p /boot/grub"
    _in_root(rootfs, f"{mkimage} -c /tmp/rigpivot-early.cfg {modules}", "building GRUB for EFI")
    with esp.open("wb") as f:
        f.truncate(ESP_MIB * 1024 * 1024)
    _run(["mkfs.vfat", "-F", "32", "-n", "EFI", str(esp)], "formatting the EFI partition")
    _run(["mmd", "-i", str(esp), "::/EFI", "::/EFI/BOOT"], "making the EFI folders")
    _run(["mcopy", "-i", str(esp), str(rootfs / "tmp/BOOTX64.EFI"), "::/EFI/BOOT/BOOTX64.EFI"],
         "copying GRUB to the EFI partition")  # fmt: skip
    (rootfs / "tmp/BOOTX64.EFI").unlink()
    early.unlink()


def assemble_disk(esp: Path, root: Path, disk: Path) -> None:
    """A GPT disk: the EFI partition at 1 MiB, the root right after it."""
    mib = 1024 * 1024
    size = (1 + ESP_MIB + ROOT_MIB + 1) * mib
    with disk.open("wb") as f:
        f.truncate(size)
    layout = (
        f"label: gpt\nstart=2048, size={ESP_MIB * 2048}, type=U\nsize={ROOT_MIB * 2048}, type=L\n"
    )
    _run(["sfdisk", "--quiet", str(disk)], "partitioning the disk image", input=layout.encode())
    with disk.open("r+b") as out:
        for part, offset in ((esp, mib), (root, (1 + ESP_MIB) * mib)):
            out.seek(offset)
            with part.open("rb") as src:
                # Blocks of zeros are skipped: the disk image stays as sparse as the root's.
                for block in iter(lambda: src.read(4 * mib), b""):
                    if block.count(0) == len(block):
                        out.seek(len(block), os.SEEK_CUR)
                    else:
                        out.write(block)


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(4 * 1024 * 1024), b""):
            h.update(block)
    return h.hexdigest()


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    with path.open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def build(mirror: str | None = None) -> Path:
    """The image for `mirror` (default: this machine's apt mirror), built when not already."""
    mirror = mirror or debian_mirror()
    out = cache_root() / image_key(mirror)
    with _locked(cache_root() / "build.lock"):
        if (out / "image.json").is_file():
            return out
        for tool in ("debootstrap", "mkfs.ext4", "mkfs.vfat", "mmd", "mcopy", "sfdisk", "unshare"):
            if shutil.which(tool) is None:
                raise ImageError(f"{tool} is not installed: run `make lab-deps`")
        if os.geteuid() != 0:
            raise ImageError(
                "building the OS image needs root (debootstrap, chroot): run it with sudo"
            )
        log.info("building the reflash image from %s (debootstrap, a few minutes)", mirror)
        with tempfile.TemporaryDirectory(dir=cache_root(), prefix="build-") as tmp:
            work = Path(tmp)
            rootfs = work / "rootfs"
            include = f"--include={','.join(PACKAGES)}"
            _run(["debootstrap", "--variant=minbase", include, SUITE, str(rootfs), mirror],
                 f"debootstrap of Debian {SUITE} from {mirror}")  # fmt: skip
            _configure(rootfs)
            _in_root(rootfs, "update-initramfs -u -k all", "building the initramfs")
            root_uuid = str(uuidlib.uuid4())
            kernels = sorted((rootfs / "boot").glob("vmlinuz-*"))
            if not kernels:
                raise ImageError(f"debootstrap installed no kernel in {rootfs}/boot")
            kernel = kernels[-1]
            initrd = kernel.with_name(kernel.name.replace("vmlinuz-", "initrd.img-", 1))
            (rootfs / "boot/grub").mkdir(parents=True, exist_ok=True)
            (rootfs / "boot/grub/grub.cfg").write_text(
                GRUB_CFG.format(uuid=root_uuid, kernel=kernel.name, initrd=initrd.name)
            )
            _run(["grub-editenv", str(rootfs / "boot/grub/grubenv"), "create"], "making grubenv")
            _esp(rootfs, root_uuid, work / "esp.img")
            staging = work / "out"
            staging.mkdir()
            shutil.copyfile(kernel, staging / "vmlinuz")
            shutil.copyfile(initrd, staging / "initrd.img")
            mkfs = ["mkfs.ext4", "-q", "-L", "rigpivot-root", "-U", root_uuid, "-d", str(rootfs)]
            _run([*mkfs, str(staging / "root.img"), f"{ROOT_MIB}M"], "making the root file system")
            shutil.move(work / "esp.img", staging / "esp.img")
            assemble_disk(staging / "esp.img", staging / "root.img", staging / "disk.img")
            (staging / "manifest.sha256").write_text(
                "".join(f"{sha256(staging / n)}  {n}\n" for n in STAGED)
            )
            (staging / "image.json").write_text(json.dumps({
                "os": f"debian {SUITE}", "mirror": mirror, "packages": list(PACKAGES),
                "kernel": kernel.name.removeprefix("vmlinuz-"), "root_uuid": root_uuid,
                "root_mib": ROOT_MIB, "esp_mib": ESP_MIB,
            }, indent=2) + "\n")  # fmt: skip
            os.rename(staging, out)
    return out
