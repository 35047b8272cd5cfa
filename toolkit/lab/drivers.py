"""The lab's NVIDIA driver and CUDA packages: what the farm mirror serves and rigs install.

A driver package carries the simulated userspace of one driver version: nvidia-smi, a
libnvidia-ml.so.1 compiled from libnvidia-ml/nvml_shim.c for that version, and the version
files the GPU simulator reads. Installing it "loads the kernel module" only on a rig that has
none loaded, so an upgrade without a reboot ends in "Driver/library version mismatch", as on
real rigs. A CUDA toolkit package carries version.json and an nvcc that prints its version,
and depends on a driver new enough for it. A `linux-headers-<host kernel release>` package
(empty, like a metapackage) stands for the kernel headers a real rig installs for DKMS: the
rigs run the host's kernel, so the headers matching `uname -r` on a rig are the host's.

Packages are built with dpkg-deb on the host (gcc compiles the library; the rig image has no
compiler) and cached by `cache_key`, a hash of every input.
"""

from __future__ import annotations

import hashlib
import json
import platform
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from toolkit.errors import LabError

DRIVER_VERSIONS = ("470.256.02", "535.183.01", "535.216.01", "550.127.05")
# Debian's own packaging of the driver (non-free: one unversioned `nvidia-driver` package), as
# plain Debian 12 rigs install it (bookworm ships 535.183.01).
DEBIAN_DRIVER = "nvidia-driver"
DEBIAN_DRIVER_VERSIONS = ("535.183.01",)
# The CUDA version each driver branch reports (nvidia-smi's header, cuDriverGetVersion).
DRIVER_CUDA = {"470": "11.4", "535": "12.2", "550": "12.4"}
CUDA_VERSIONS = {"11-4": "11.4.4", "12-2": "12.2.2", "12-4": "12.4.1"}
# Minimum Linux driver of each toolkit release (CUDA release notes, "CUDA Toolkit and
# Corresponding Driver Versions").
CUDA_MIN_DRIVER = {"11-4": "470.82.01", "12-2": "535.104.05", "12-4": "550.54.15"}
PACKAGE_REVISION = "1lab"
LIB_DIR = "usr/lib/x86_64-linux-gnu"
MAINTAINER = "rigpivot lab <lab@rigpivot.invalid>"


@dataclass(frozen=True)
class Nvcc:
    """What `nvcc --version` of a toolkit release prints."""

    version: str
    built: str
    build: str
    copyright_year: int


NVCC = {
    "11-4": Nvcc("11.4.152", "Mon_Oct_11_21:27:02_PDT_2021", "compiler.30521435_0", 2021),
    "12-2": Nvcc("12.2.140", "Tue_Aug_15_22:02:13_PDT_2023", "compiler.33191640_0", 2023),
    "12-4": Nvcc("12.4.131", "Thu_Mar_28_02:18:24_PDT_2024", "compiler.34097967_0", 2024),
}


def branch(version: str) -> str:
    return version.split(".", 1)[0]


def driver_package(version: str) -> str:
    return f"nvidia-driver-{branch(version)}"


def driver_deb_name(version: str, package: str | None = None) -> str:
    """The file name 10-driver (first boot) looks for in /opt/lab/debs."""
    return f"{package or driver_package(version)}_{version}-{PACKAGE_REVISION}_amd64.deb"


def cuda_version_code(version: str) -> int:
    """12020 for "12.2": the integer nvmlSystemGetCudaDriverVersion returns."""
    major, minor = version.split(".")
    return int(major) * 1000 + int(minor) * 10


def kernel_release() -> str:
    """The rigs' kernel release: containers share the host's kernel."""
    return platform.release()


def headers_package(release: str) -> str:
    return f"linux-headers-{release}"


def headers_version(release: str) -> str:
    """A Debian-looking version for the headers of `release`: "6.1.0-18-amd64" → "6.1.0-1lab"."""
    match = re.match(r"\d+(?:\.\d+)*", release)
    return f"{match.group(0) if match else '0'}-{PACKAGE_REVISION}"


def cache_key(image_dir: Path) -> str:
    """Hash of everything the packages are built from: this module (versions, control
    files, scripts), the NVML library's source and the host's kernel release (the headers
    package is named after it)."""
    h = hashlib.sha256(Path(__file__).read_bytes())
    h.update(b"kernel\0" + kernel_release().encode() + b"\0")
    for src in sorted((image_dir / "libnvidia-ml").rglob("*")):
        if src.is_file():
            h.update(str(src.relative_to(image_dir)).encode() + b"\0" + src.read_bytes())
    return h.hexdigest()[:16]


def _run(cmd: list[str], what: str) -> None:
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise LabError(f"{what} failed ({' '.join(cmd[:2])}...):\n{proc.stderr.strip()}")


def compile_nvml(source: Path, version: str, out: Path) -> Path:
    """Build libnvidia-ml.so.<version>: the version is compiled in, because the real
    library checks it against the loaded kernel module at nvmlInit."""
    if shutil.which("gcc") is None:
        raise LabError("gcc is not installed: it compiles the lab's simulated libnvidia-ml")
    cuda = cuda_version_code(DRIVER_CUDA[branch(version)])
    cmd = [
        "gcc", "-shared", "-fPIC", "-O2", "-Wall", "-Wextra", "-Werror", "-fvisibility=hidden",
        f'-DGPUSIM_DRIVER_VERSION="{version}"', f"-DGPUSIM_DRIVER_MAJOR={branch(version)}",
        f"-DGPUSIM_CUDA_VERSION={cuda}", "-Wl,-soname,libnvidia-ml.so.1",
        "-o", str(out), str(source), "-lpthread",
    ]  # fmt: skip
    _run(cmd, f"compiling the simulated NVML for {version}")
    return out


def _write(path: Path, text: str, mode: int = 0o644) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    path.chmod(mode)


def _package(root: Path, control: dict[str, str], description: str, out_dir: Path) -> Path:
    """Write DEBIAN/control and build root into <Package>_<Version>_<Architecture>.deb."""
    text = "".join(f"{k}: {v}\n" for k, v in control.items()) + f"Description: {description}\n"
    _write(root / "DEBIAN/control", text)
    # Directory modes would otherwise follow the umask and the 0700 of the temp dir.
    for d in [root, *(p for p in root.rglob("*") if p.is_dir() and not p.is_symlink())]:
        d.chmod(0o755)
    deb = out_dir / f"{control['Package']}_{control['Version']}_{control['Architecture']}.deb"
    cmd = ["dpkg-deb", "--root-owner-group", "-Zxz", "--build", str(root), str(deb)]
    _run(cmd, f"building {deb.name}")
    return deb


DRIVER_POSTINST = """\
#!/bin/sh
set -e
if [ "$1" = configure ]; then
    ldconfig
    # As DKMS does on a rig: the new module is loaded now only if none is. A loaded module
    # of another version stays until reboot ("Driver/library version mismatch").
    python3 /usr/lib/gpusim/gpusim.py modprobe || true
fi
"""
# Removing the driver does not unload its kernel module: it stays loaded until reboot.
DRIVER_POSTRM = """\
#!/bin/sh
set -e
if [ "$1" = remove ] || [ "$1" = purge ]; then
    ldconfig
fi
"""
NVIDIA_SMI = """\
#!/bin/sh
# nvidia-smi of the rigpivot lab's simulated NVIDIA driver.
exec python3 /usr/lib/gpusim/nvidia-smi "$@"
"""


def build_driver(version: str, image_dir: Path, out_dir: Path, debian: bool = False) -> Path:
    """NVIDIA's packaging (nvidia-driver-<branch>, one of them at a time), or Debian's."""
    pkg = DEBIAN_DRIVER if debian else driver_package(version)
    cuda = DRIVER_CUDA[branch(version)]
    with tempfile.TemporaryDirectory(prefix=f"{pkg}-") as tmp:
        root = Path(tmp)
        lib = root / LIB_DIR / f"libnvidia-ml.so.{version}"
        lib.parent.mkdir(parents=True)
        compile_nvml(image_dir / "libnvidia-ml/nvml_shim.c", version, lib)
        lib.chmod(0o644)
        (lib.parent / "libnvidia-ml.so.1").symlink_to(lib.name)
        _write(root / "usr/bin/nvidia-smi", NVIDIA_SMI, 0o755)
        _write(root / "usr/lib/gpusim/driver-version", version + "\n")
        _write(root / "usr/lib/gpusim/cuda-version", cuda + "\n")
        control = {
            "Package": pkg,
            "Version": f"{version}-{PACKAGE_REVISION}",
            "Architecture": "amd64",
            "Maintainer": MAINTAINER,
            "Section": "non-free/libs",
            "Priority": "optional",
            "Depends": "python3",
        }
        if not debian:
            # One driver at a time, whatever the branch (Debian's unversioned package too):
            # the usual virtual-package idiom.
            control["Provides"] = f"nvidia-driver (= {version})"
            control["Conflicts"] = control["Replaces"] = "nvidia-driver"
        description = (
            f"NVIDIA driver {version}{' (Debian packaging)' if debian else ''}"
            " (rigpivot lab simulation)\n"
            f" nvidia-smi and libnvidia-ml.so.1 of driver {version} (CUDA {cuda}), answering\n"
            " from the lab rig's simulated cards."
        )
        _write(root / "DEBIAN/postinst", DRIVER_POSTINST, 0o755)
        _write(root / "DEBIAN/postrm", DRIVER_POSTRM, 0o755)
        return _package(root, control, description, out_dir)


def _nvcc_script(series: str) -> str:
    n = NVCC[series]
    dotted = series.replace("-", ".")
    return f"""\
#!/bin/sh
# nvcc of the rigpivot lab's CUDA {CUDA_VERSIONS[series]}: it only knows its version.
case "$1" in
--version|-V)
    cat <<'EOF'
nvcc: NVIDIA (R) Cuda compiler driver
Copyright (c) 2005-{n.copyright_year} NVIDIA Corporation
Built on {n.built}
Cuda compilation tools, release {dotted}, V{n.version}
Build cuda_{dotted}.r{dotted}/{n.build}
EOF
    ;;
"")
    echo "nvcc fatal   : No input files specified; use option --help for more information" >&2
    exit 1
    ;;
*)
    echo "nvcc fatal   : the rigpivot lab's nvcc compiles nothing" >&2
    exit 1
    ;;
esac
"""


def build_cuda(series: str, out_dir: Path) -> Path:
    full, dotted = CUDA_VERSIONS[series], series.replace("-", ".")
    minimum = CUDA_MIN_DRIVER[series]
    prefix = f"/usr/local/cuda-{dotted}"
    with tempfile.TemporaryDirectory(prefix=f"cuda-{series}-") as tmp:
        root = Path(tmp)
        version_json = {
            "cuda": {"name": "CUDA SDK", "version": full},
            "cuda_nvcc": {"name": "CUDA NVCC", "version": NVCC[series].version},
        }
        home = root / prefix.lstrip("/")
        _write(home / "version.json", json.dumps(version_json, indent=3) + "\n")
        _write(home / "bin/nvcc", _nvcc_script(series), 0o755)
        control = {
            "Package": f"cuda-toolkit-{series}",
            "Version": f"{full}-{PACKAGE_REVISION}",
            "Architecture": "amd64",
            "Maintainer": MAINTAINER,
            "Section": "non-free/devel",
            "Priority": "optional",
            # The versioned virtual package lets a newer branch satisfy an older toolkit.
            "Depends": f"{driver_package(minimum)} (>= {minimum}) | nvidia-driver (>= {minimum})",
        }
        description = (
            f"CUDA Toolkit {full} (rigpivot lab simulation)\n"
            f" version.json and an nvcc that reports {full}; needs driver >= {minimum}."
        )
        # /usr/local/cuda follows the newest toolkit, as NVIDIA's packages arrange it.
        priority = int(series.replace("-", ""))
        _write(
            root / "DEBIAN/postinst",
            '#!/bin/sh\nset -e\nif [ "$1" = configure ]; then\n'
            f"    update-alternatives --install /usr/local/cuda cuda {prefix} {priority}\nfi\n",
            0o755,
        )
        _write(
            root / "DEBIAN/prerm",
            '#!/bin/sh\nset -e\nif [ "$1" = remove ]; then\n'
            f"    update-alternatives --remove cuda {prefix}\nfi\n",
            0o755,
        )
        return _package(root, control, description, out_dir)


def build_headers(release: str, out_dir: Path) -> Path:
    """linux-headers-<release>, empty: what the driver role installs so DKMS could build the
    module for the running kernel. The fields are those of Debian's own headers packages."""
    if not re.fullmatch(r"[a-z0-9][a-z0-9+.-]+", release):
        raise LabError(
            f"the host's kernel release {release!r} is not a valid Debian package name part"
        )
    pkg = headers_package(release)
    with tempfile.TemporaryDirectory(prefix=f"{pkg}-") as tmp:
        control = {
            "Package": pkg,
            "Source": "linux",
            "Version": headers_version(release),
            "Architecture": "amd64",
            "Maintainer": MAINTAINER,
            "Section": "kernel",
            "Priority": "optional",
            "Homepage": "https://www.kernel.org/",
        }
        description = (
            f"Header files for Linux {release}\n"
            " This package provides the architecture-specific kernel header files for\n"
            f" Linux kernel {release}, generally used for building out-of-tree kernel\n"
            " modules. (rigpivot lab: the rigs run the host's kernel; the package is empty.)"
        )
        return _package(Path(tmp), control, description, out_dir)


def build_packages(out_dir: Path, image_dir: Path) -> list[Path]:
    """Every driver, CUDA and kernel headers package of the lab, into out_dir."""
    if shutil.which("dpkg-deb") is None:
        raise LabError("dpkg-deb is not installed: it builds the lab's driver packages")
    out_dir.mkdir(parents=True, exist_ok=True)
    debs = [build_driver(v, image_dir, out_dir) for v in DRIVER_VERSIONS]
    debs += [build_driver(v, image_dir, out_dir, debian=True) for v in DEBIAN_DRIVER_VERSIONS]
    debs += [build_cuda(s, out_dir) for s in CUDA_VERSIONS]
    return [*debs, build_headers(kernel_release(), out_dir)]
