"""Build the lab rig image, cached by the hash of everything that goes into it.

Two layers, each tagged with the hash of its inputs so a rebuild happens only when an input
changes: the debootstrapped Debian base (slow: ~1 min, needs the Debian mirror) and the rig
image on top (overlay, simulators, the lab's driver packages; seconds).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import logging
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path

import toolkit.lab.drivers as drivers
from toolkit.errors import LabError
from toolkit.lab.podman import image_exists, podman, podman_env
from toolkit.osimage import debian_mirror

log = logging.getLogger(__name__)

IMAGE_DIR = Path(__file__).with_name("image")
BASE_REPO = "localhost/rigpivot-lab-base"
RIG_REPO = "localhost/rigpivot-lab"
SUITE = "bookworm"
# What a mining rig's OS has, plus what Ansible needs on a target (python3-apt for the apt
# module). No gcc: the simulated NVML library is compiled on the host.
BASE_PACKAGES = (
    "python3,python3-apt,python3-venv,libgomp1,openssh-server,sudo,iproute2,iputils-ping,netcat-openbsd,systemd,"
    "systemd-sysv,dbus,kmod,procps,pciutils,nftables,iptables,curl,ca-certificates,gnupg,"
    "jq,screen,less,lsb-release"
)


def cache_dir() -> Path:
    root = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "rigpivot"
    root.mkdir(parents=True, exist_ok=True)
    return root


def digest(parts: Iterable[bytes | str]) -> str:
    h = hashlib.sha256()
    for p in parts:
        h.update(p.encode() if isinstance(p, str) else p)
        h.update(b"\0")
    return h.hexdigest()[:16]


def tree_digest(root: Path) -> str:
    """Hash of a directory's file names, modes and contents (symlink targets, not contents)."""
    parts: list[bytes | str] = []
    for path in sorted(root.rglob("*")):
        rel = str(path.relative_to(root))
        if "__pycache__" in rel:
            continue
        if path.is_symlink():
            parts += [rel, "->", os.readlink(path)]
        elif path.is_file():
            parts += [rel, oct(path.stat().st_mode & 0o111), path.read_bytes()]
    return digest(parts)


def base_tag() -> str:
    return f"{BASE_REPO}:{digest([SUITE, BASE_PACKAGES, 'minbase-v1'])}"


def ensure_base() -> str:
    tag = base_tag()
    if image_exists(tag):
        return tag
    if shutil.which("debootstrap") is None:
        raise LabError("debootstrap is not installed: run `make lab-deps`")
    log.info("building the lab base image %s with debootstrap (about a minute)", tag)
    with tempfile.TemporaryDirectory(dir=cache_dir(), prefix="rootfs-") as tmp:
        rootfs = Path(tmp) / "rootfs"
        cmd = [
            "debootstrap", "--variant=minbase", f"--include={BASE_PACKAGES}",
            SUITE, str(rootfs), debian_mirror(SUITE),
        ]  # fmt: skip
        proc = subprocess.run(cmd, capture_output=True, check=False)
        if proc.returncode != 0:
            tail = proc.stdout.decode(errors="replace").strip().splitlines()[-15:]
            raise LabError("debootstrap failed:\n" + "\n".join(tail))
        tar = subprocess.Popen(["tar", "-C", str(rootfs), "-c", "."], stdout=subprocess.PIPE)
        imp = subprocess.run(
            ["podman", "import", "-", tag],
            stdin=tar.stdout,
            env=podman_env(),
            capture_output=True,
            check=False,
        )
        tar.wait()
        if imp.returncode != 0 or tar.returncode != 0:
            raise LabError(f"podman import of the lab rootfs failed: {imp.stderr.decode().strip()}")
    prune_old(BASE_REPO, keep=tag)
    return tag


def _pynvml_source() -> Path:
    """pynvml.py from this venv's nvidia-ml-py: the rigs get the same unmodified module."""
    import pynvml

    return Path(pynvml.__file__)


def rig_tag(base: str) -> str:
    return f"{RIG_REPO}:" + digest(
        [base, tree_digest(IMAGE_DIR), drivers.cache_key(IMAGE_DIR), _pynvml_source().read_bytes()]
    )


@contextlib.contextmanager
def cache_lock(name: str) -> Iterator[None]:
    """Serialize a build across processes: concurrent `lab up`s share one cache and wait."""
    with (cache_dir() / f"{name}.lock").open("w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def ensure_rig_image() -> str:
    """The lab rig image's tag, building what is missing."""
    with cache_lock("build"):
        return _ensure_rig_image()


def _ensure_rig_image() -> str:
    base = ensure_base()
    tag = rig_tag(base)
    if image_exists(tag):
        return tag
    log.info("building the lab rig image %s", tag)
    debs = cache_dir() / f"debs-{drivers.cache_key(IMAGE_DIR)}"
    if not debs.is_dir():
        tmp = Path(tempfile.mkdtemp(dir=cache_dir(), prefix="debs-tmp-"))
        drivers.build_packages(tmp, IMAGE_DIR)
        tmp.rename(debs)
    with tempfile.TemporaryDirectory(dir=cache_dir(), prefix="ctx-") as ctx:
        c = Path(ctx)
        shutil.copytree(IMAGE_DIR, c, dirs_exist_ok=True, symlinks=True)
        shutil.copytree(debs, c / "debs", dirs_exist_ok=True)
        shutil.copy(_pynvml_source(), c / "pynvml.py")
        podman(
            "build", "--pull=never", "--build-arg", f"BASE={base}", "-t", tag, str(c), timeout=900
        )
    prune_old(RIG_REPO, keep=tag)
    return tag


def mirror_packages() -> Path:
    """The directory of the lab's .deb packages (built with the rig image)."""
    return cache_dir() / f"debs-{drivers.cache_key(IMAGE_DIR)}"


def prune_old(repo: str, keep: str) -> None:
    out = podman("images", "--format", "{{.Repository}}:{{.Tag}}", repo, check=False)
    for tag in out.stdout.decode().split():
        if tag != keep:
            podman("rmi", tag, check=False)  # fails harmlessly while a rig still uses it
