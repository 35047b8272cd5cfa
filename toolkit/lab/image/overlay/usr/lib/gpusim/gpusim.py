#!/usr/bin/python3
"""The lab's GPU simulator: the cards of /etc/lab/rig.json as an NVIDIA driver would see them.

What lives where, as on a real rig:
- /etc/lab/rig.json: the hardware (read-only, the product never reads it);
- /usr/lib/gpusim/driver-version, cuda-version: shipped by the installed driver package;
- /run/gpusim/module-version: the "loaded kernel module" (tmpfs: gone at every reboot);
- /run/gpusim/nvml.state: what the kernel driver knows about the cards, as flat key=value
  lines (`count=N`, then `<nvidia index>.<field>=...`, see render_state) read by
  libnvidia-ml.so.1 (C) and nvidia-smi, rewritten atomically;
- /run/gpusim/apps/<pid>: a process using GPUs, one `<nvidia index> <MiB> <name>` line per GPU;
  a card runs at its idle, mining or inference operating point by what runs on it
  (workload_of: a miner's program name, else an inference engine);
- /run/gpusim/pci.dump: the rig's PCI config space, for the real lspci (`lspci -F`).

Every path is prefixed with $GPUSIM_ROOT so the whole simulator runs on a host tree in tests.
Commands: boot, modprobe, rmmod, render, set-power IDX MW, set-persistence IDX 0|1,
attach PID NAME MIB IDX..., detach PID.
"""

from __future__ import annotations

import fcntl
import json
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = os.environ.get("GPUSIM_ROOT", "")
MIB = 1 << 20
# What an idle Ampere/Pascal card shows as used under R510+ drivers: reserved framebuffer
# plus the driver's own context. NVML's v2 memory struct reports it as `reserved`.
BASELINE_USED_MIB = 300
STATE_FORMAT = 1


def path(p: str) -> Path:
    return Path(ROOT + p)


RIG_JSON = path("/etc/lab/rig.json")
LIB_DIR = path("/usr/lib/gpusim")
DRIVER_VERSION_FILE = LIB_DIR / "driver-version"
CUDA_VERSION_FILE = LIB_DIR / "cuda-version"
RUN_DIR = path("/run/gpusim")
MODULE_VERSION_FILE = RUN_DIR / "module-version"
STATE_FILE = RUN_DIR / "nvml.state"
APPS_DIR = RUN_DIR / "apps"
PCI_DUMP = RUN_DIR / "pci.dump"
LOCK_FILE = RUN_DIR / "lock"


class GpusimError(Exception):
    """A command failed the way the real tool would: message for stderr, exit status."""

    def __init__(self, message: str, status: int = 1) -> None:
        super().__init__(message)
        self.status = status


# ---------------------------------------------------------------- files and locking


def read_text(p: Path) -> str | None:
    try:
        return p.read_text().strip()
    except FileNotFoundError:
        return None


def write_atomic(p: Path, text: str, mode: int = 0o644) -> None:
    """Readers (the C library on every NVML call) must never see a half-written file."""
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = p.with_name(f".{p.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    tmp.chmod(mode)
    tmp.replace(p)


@contextmanager
def state_lock() -> Iterator[None]:
    """Serialises read-modify-write of nvml.state (nvidia-smi -pl racing an NVML client)."""
    RUN_DIR.mkdir(parents=True, exist_ok=True)
    with open(LOCK_FILE, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        yield


def load_rig() -> dict[str, Any]:
    try:
        data: dict[str, Any] = json.loads(RIG_JSON.read_text())
    except (OSError, ValueError) as e:
        raise GpusimError(f"gpusim: cannot read the rig's hardware from {RIG_JSON}: {e}") from e
    return data


def driver_version() -> str | None:
    """The installed driver's userspace version (nvidia-smi, libnvidia-ml), if any."""
    return read_text(DRIVER_VERSION_FILE)


def module_version() -> str | None:
    return read_text(MODULE_VERSION_FILE)


def branch(version: str) -> int:
    return int(version.split(".", 1)[0])


# ---------------------------------------------------------------- the cards, as NVML sees them


def is_headless(name: str) -> bool:
    # Mining SKUs (P10x-100, CMP) have no display engine: PCI class 0302 "3D controller".
    return name.startswith("P10") or "CMP" in name


def has_board_serial(name: str) -> bool:
    # GeForce-family boards carry no serial in their InfoROM: nvidia-smi shows N/A and
    # nvmlDeviceGetSerial returns NOT_SUPPORTED. The P10x mining cards are GeForce silicon.
    return "GeForce" not in name and not name.startswith("P10")


def _thermal(power_mw: int, default_mw: int, index: int) -> tuple[int, int]:
    """Deterministic GPU temperature and fan duty for a power draw: a cooler card at a
    lower power limit, as an operator sees after `nvidia-smi -pl`."""
    temp = 30 + round(40 * power_mw / default_mw) + index % 3
    fan = max(30, min(100, 30 + 2 * (temp - 40)))
    return temp, fan


# Programs whose compute work is mining: a card running one draws its mining wattage, a card
# running any other compute process (an inference engine) its inference wattage. The same
# list is in libnvidia-ml (nvml_shim.c: MINER_PROGRAMS); tests/unit/test_gpusim.py holds
# them equal.
MINER_PROGRAMS = (
    "t-rex", "lolminer", "teamredminer", "nbminer", "gminer", "phoenixminer", "ethminer",
    "bzminer", "rigel", "excavator", "onezerominer", "miniz", "xmrig",
)  # fmt: skip
# Operating points, in the order libnvidia-ml indexes them (0, 1, 2).
WORKLOADS = ("idle", "mining", "inference")


def workload_of(app_names: list[str]) -> str:
    """What a card is doing from the processes on it: mining wins over inference (a miner
    left beside an engine holds the card at its mining draw)."""
    if not app_names:
        return "idle"
    if any(os.path.basename(n.split()[0]).lower() in MINER_PROGRAMS for n in app_names if n):
        return "mining"
    return "inference"


def _operating_points(
    limit_mw: int, default_mw: int, index: int, mining_mw: int, inference_mw: int
) -> dict[str, int]:
    """Idle, mining and inference points at the card's power limit in force. A miner at a
    farm's usual OC draws `mining_mw` (memory-bound Etchash, core clocks down); an inference
    engine decoding draws `inference_mw`; a lower limit caps both, as the card's firmware does."""
    idle_mw = default_mw // 10
    points: dict[str, int] = {}
    for name, draw_mw, util_gpu, util_mem, clock_mem in (
        ("idle", idle_mw, 0, 0, 405),
        ("mining", min(limit_mw, mining_mw), 100, 100, 7501),
        ("inference", min(limit_mw, inference_mw), 92, 78, 7001),
    ):
        temp, fan = _thermal(draw_mw, default_mw, index)
        busy = name != "idle"
        points.update({
            f"{name}.power_mw": draw_mw,
            f"{name}.temp": temp,
            f"{name}.fan": fan,
            f"{name}.util_gpu": util_gpu,
            f"{name}.util_mem": util_mem,
            f"{name}.clock_sm": 900 + 900 * limit_mw // default_mw if busy else 210,
            f"{name}.clock_mem": clock_mem,
            # CUDA compute work runs GeForce cards in P2, not P0.
            f"{name}.pstate": 2 if busy else 8,
        })  # fmt: skip
    return points


def _bus_number(bus_id: str) -> int:
    return int(bus_id.split(":", 1)[0], 16)


def render_state(rig: dict[str, Any], previous: dict[str, str]) -> dict[str, str]:
    """The flat state the C library and nvidia-smi read. Power limits and persistence mode
    set since boot are carried over for the cards still present (same UUID)."""
    kept = {previous.get(f"{i}.uuid"): i for i in range(int(previous.get("count", "0")))}
    nvidia = [g for g in rig["gpus"] if g["vendor"] == "nvidia"]
    state: dict[str, str] = {"format": str(STATE_FORMAT), "count": str(len(nvidia))}
    for i, g in enumerate(nvidia):
        power = g["power"]
        default_mw = power["default"] * 1000
        limit_mw, persistence = default_mw, 0
        if (old := kept.get(g["uuid"])) is not None:
            limit_mw = int(previous[f"{old}.power_limit_mw"])
            persistence = int(previous[f"{old}.persistence"])
        vendor, device = (int(x, 16) for x in g["pci_id"].split(":"))
        sub_vendor, sub_device = (int(x, 16) for x in subsystem_id(g["pci_id"]).split(":"))
        major, minor = g["compute_cap"].split(".")
        bus = _bus_number(g["bus_id"])
        fields: dict[str, str | int] = {
            "name": g["name"],
            "uuid": g["uuid"],
            "serial": g["serial"] if has_board_serial(g["name"]) else "",
            "pci_bus_id": f"00000000:{bus:02X}:00.0",
            "pci_domain": 0,
            "pci_bus": bus,
            "pci_device": 0,
            # NVML packs the ids device-high, vendor-low: 0x250410DE.
            "pci_device_id": f"0x{device << 16 | vendor:08X}",
            "pci_subsystem_id": f"0x{sub_device << 16 | sub_vendor:08X}",
            "mem_total": g["vram_mib"] * MIB,
            "mem_reserved": BASELINE_USED_MIB * MIB,
            "cc_major": major,
            "cc_minor": minor,
            "pcie_gen_current": g["pcie_gen_current"],
            # NVML's "max" is what GPU and host can both do; the GPU's own max is separate.
            "pcie_gen_max": min(g["pcie_gen_max_gpu"], g["pcie_gen_max_host"]),
            "pcie_gen_gpu_max": g["pcie_gen_max_gpu"],
            "pcie_gen_host_max": g["pcie_gen_max_host"],
            "pcie_width_current": g["pcie_width_current"],
            "pcie_width_max": g["pcie_width_max"],
            "power_default_mw": default_mw,
            "power_min_mw": power["min"] * 1000,
            "power_max_mw": power["max"] * 1000,
            "power_limit_mw": limit_mw,
            "power_mining_mw": power["mining"] * 1000,
            "power_inference_mw": power["inference"] * 1000,
            "persistence": persistence,
            "vbios": g["vbios"] or "",
            **_operating_points(
                limit_mw, default_mw, i, power["mining"] * 1000, power["inference"] * 1000
            ),
        }
        state.update({f"{i}.{k}": str(v) for k, v in fields.items()})
    return state


def format_state(state: dict[str, str]) -> str:
    head = "# gpusim: the NVIDIA cards of /etc/lab/rig.json; read by libnvidia-ml and nvidia-smi\n"
    return head + "".join(f"{k}={v}\n" for k, v in state.items())


def parse_state(text: str) -> dict[str, str]:
    state: dict[str, str] = {}
    for line in text.splitlines():
        if line and not line.startswith("#") and "=" in line:
            key, value = line.split("=", 1)
            state[key] = value
    return state


def load_state() -> dict[str, str]:
    text = read_text(STATE_FILE)
    return parse_state(text) if text is not None else {}


def render() -> dict[str, str]:
    rig = load_rig()
    with state_lock():
        state = render_state(rig, load_state())
        write_atomic(STATE_FILE, format_state(state))
        write_atomic(PCI_DUMP, pci_dump(rig))
    return state


def _update(index: int, changes: dict[str, int]) -> None:
    with state_lock():
        state = load_state()
        if not 0 <= index < int(state.get("count", "0")):
            raise GpusimError(f"gpusim: no NVIDIA GPU with index {index}", 2)
        for key, value in changes.items():
            state[f"{index}.{key}"] = str(value)
        limit = int(state[f"{index}.power_limit_mw"])
        default = int(state[f"{index}.power_default_mw"])
        mining = int(state[f"{index}.power_mining_mw"])
        inference = int(state[f"{index}.power_inference_mw"])
        for key, value in _operating_points(limit, default, index, mining, inference).items():
            state[f"{index}.{key}"] = str(value)
        write_atomic(STATE_FILE, format_state(state))


def set_power_limit(index: int, limit_mw: int) -> None:
    """Range checks are the caller's (nvidia-smi, NVML), which word them differently."""
    _update(index, {"power_limit_mw": limit_mw})


def set_persistence(index: int, enabled: bool) -> None:
    _update(index, {"persistence": int(enabled)})


# ---------------------------------------------------------------- compute apps


@dataclass(frozen=True)
class App:
    pid: int
    index: int
    used_mib: int
    name: str


def pid_alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def running_apps() -> list[App]:
    """Registered processes still alive: a crashed miner frees its VRAM, as on a real card."""
    apps: list[App] = []
    if not APPS_DIR.is_dir():
        return apps
    for entry in sorted(APPS_DIR.iterdir(), key=lambda p: p.name):
        if not entry.name.isdigit() or not pid_alive(int(entry.name)):
            continue
        for line in (read_text(entry) or "").splitlines():
            parts = line.split(maxsplit=2)
            if len(parts) == 3 and parts[0].isdigit() and parts[1].isdigit():
                apps.append(App(int(entry.name), int(parts[0]), int(parts[1]), parts[2]))
    return apps


def attach(pid: int, name: str, mib: int, indices: list[int]) -> None:
    write_atomic(APPS_DIR / str(pid), "".join(f"{i} {mib} {name}\n" for i in indices))


def detach(pid: int) -> None:
    (APPS_DIR / str(pid)).unlink(missing_ok=True)


# ---------------------------------------------------------------- the kernel module


def modprobe() -> None:
    """Load the installed driver's module unless one is loaded: upgrading the driver under
    a loaded module leaves the old one running until reboot (version mismatch), as on rigs."""
    if module_version() is not None:
        return
    version = driver_version()
    if version is None:
        uname = os.uname().release
        raise GpusimError(
            f"modprobe: FATAL: Module nvidia not found in directory /lib/modules/{uname}"
        )
    if int(load_state().get("count", "0")) == 0:
        # nvidia.ko refuses to load without a supported GPU (an AMD-only rig).
        raise GpusimError("modprobe: ERROR: could not insert 'nvidia': No such device")
    write_atomic(MODULE_VERSION_FILE, version + "\n")


def rmmod() -> None:
    if module_version() is None:
        raise GpusimError("rmmod: ERROR: Module nvidia is not currently loaded")
    if running_apps():
        raise GpusimError("rmmod: ERROR: Module nvidia is in use")
    MODULE_VERSION_FILE.unlink()


def boot() -> None:
    """Power-on: cards come up at their defaults, the installed driver's module loads.
    /run is a fresh tmpfs at every container start; clearing it keeps host trees honest."""
    for p in (STATE_FILE, MODULE_VERSION_FILE, PCI_DUMP):
        p.unlink(missing_ok=True)
    if APPS_DIR.is_dir():
        for entry in APPS_DIR.iterdir():
            entry.unlink()
    render()
    if driver_version() is not None:
        try:
            modprobe()
        except GpusimError as e:
            print(e, file=sys.stderr)


# ---------------------------------------------------------------- the PCI bus, for lspci

# Subsystem ids of boards common on rigs (RTX 3090 Founders Edition, Sapphire Nitro+ RX 580);
# other cards report the reference design's (the chip's own ids).
SUBSYSTEMS = {"10de:2204": "10de:147d", "1002:67df": "1da2:e366"}
# The HDMI audio function a display-capable card exposes at function 1.
AUDIO_FUNCTIONS = {"10de:2504": "10de:228e", "10de:2204": "10de:1aef", "1002:67df": "1002:aaf0"}
HOST_BRIDGE = "8086:591f"  # Kaby Lake host bridge, as on B250 mining boards
ROOT_PORT_FIRST = 0xA290  # 200 Series PCH PCI Express Root Port #1
PCIE_CAP = 0x60
CLASS_NAMES = {
    0x0600: "Host bridge",
    0x0604: "PCI bridge",
    0x0300: "VGA compatible controller",
    0x0302: "3D controller",
    0x0403: "Audio device",
}


def subsystem_id(pci_id: str) -> str:
    return SUBSYSTEMS.get(pci_id, pci_id)


class ConfigSpace:
    """256 bytes of a PCI function's config space, little-endian as lspci reads them."""

    def __init__(self, pci_id: str, class_code: int, header_type: int = 0) -> None:
        self.b = bytearray(256)
        vendor, device = (int(x, 16) for x in pci_id.split(":"))
        self.put(0x00, vendor, 2)
        self.put(0x02, device, 2)
        self.put(0x04, 0x0007, 2)  # I/O, memory, bus master enabled
        self.put(0x08, 0xA1, 1)  # revision
        self.put(0x09, class_code, 3)
        self.put(0x0E, header_type, 1)

    def put(self, offset: int, value: int, size: int) -> None:
        self.b[offset : offset + size] = value.to_bytes(size, "little")

    def pcie(self, port_type: int, cap_gen: int, cap_width: int, gen: int, width: int) -> None:
        """A PCIe capability, so `lspci -vv` shows LnkCap/LnkSta (x1 riser: "downgraded")."""
        self.put(0x06, 0x0010, 2)  # status: capabilities list present
        self.put(0x34, PCIE_CAP, 1)
        self.put(PCIE_CAP, 0x10, 1)  # PCI Express capability, last in the list
        self.put(PCIE_CAP + 0x02, 0x0002 | port_type << 4, 2)
        self.put(PCIE_CAP + 0x0C, cap_gen | cap_width << 4, 4)  # LnkCap
        self.put(PCIE_CAP + 0x12, gen | width << 4, 2)  # LnkSta
        self.put(PCIE_CAP + 0x2C, ((1 << cap_gen) - 1) << 1, 4)  # LnkCap2 speed vector
        self.put(PCIE_CAP + 0x30, cap_gen, 2)  # LnkCtl2 target speed

    def dump(self, address: str) -> str:
        # lspci -F wants "bb:dd.f " then anything (lspci -x puts the class and name there).
        kind = CLASS_NAMES[int.from_bytes(self.b[0x0A:0x0C], "little")]
        rows = [
            f"{o:02x}: " + " ".join(f"{x:02x}" for x in self.b[o : o + 16])
            for o in range(0, 256, 16)
        ]
        return f"{address} {kind}\n" + "\n".join(rows) + "\n\n"


def pci_dump(rig: dict[str, Any]) -> str:
    """The rig's bus in `lspci -x` form: host bridge, one PCH root port per riser slot, and
    every card (AMD too: lspci is the only tool that sees them) with its audio function."""
    out = [ConfigSpace(HOST_BRIDGE, 0x060000).dump("00:00.0")]
    for n, g in enumerate(rig["gpus"]):
        bus = _bus_number(g["bus_id"])
        port = ConfigSpace(f"8086:{ROOT_PORT_FIRST + n:04x}", 0x060400, header_type=0x01)
        port.put(0x18, bus << 8 | bus << 16, 3)  # primary 0, secondary and subordinate: the card
        # The slot's lanes are the riser's: an x1 riser in an x16 slot trains at x1.
        gen, width = g["pcie_gen_current"], g["pcie_width_current"]
        port.pcie(4, g["pcie_gen_max_host"], width, gen, width)
        out.append(port.dump(f"00:{0x1C + n // 8:02x}.{n % 8}"))
        audio = AUDIO_FUNCTIONS.get(g["pci_id"]) if not is_headless(g["name"]) else None
        card = ConfigSpace(
            g["pci_id"],
            0x030200 if is_headless(g["name"]) else 0x030000,
            header_type=0x80 if audio else 0x00,
        )
        sub_vendor, sub_device = (int(x, 16) for x in subsystem_id(g["pci_id"]).split(":"))
        # Registers, a prefetchable VRAM window, I/O ports. 32-bit only: lspci misreads the
        # upper half of 64-bit BARs from a dump (it expects sysfs to tell it the flags).
        card.put(0x10, 0xE0000000 - (n << 24), 4)
        card.put(0x14, 0xC0000000 - (n << 25) | 0x08, 4)
        card.put(0x24, 0xE000 - (n << 12) | 0x01, 4)
        card.put(0x2C, sub_vendor | sub_device << 16, 4)
        card.put(0x3C, 0x10 + n, 1)
        card.put(0x3D, 0x01, 1)  # INTA#
        card.pcie(0, g["pcie_gen_max_gpu"], g["pcie_width_max"], gen, width)
        out.append(card.dump(f"{bus:02x}:00.0"))
        if audio:
            fn = ConfigSpace(audio, 0x040300)
            fn.put(0x2C, sub_vendor | sub_device << 16, 4)
            fn.put(0x3D, 0x02, 1)  # INTB#
            fn.pcie(0, g["pcie_gen_max_gpu"], g["pcie_width_max"], gen, width)
            out.append(fn.dump(f"{bus:02x}:00.1"))
    return "".join(out)


# ---------------------------------------------------------------- command line


def main(argv: list[str]) -> int:
    cmd, args = (argv[0], argv[1:]) if argv else ("", [])
    try:
        if cmd == "boot":
            boot()
        elif cmd == "modprobe":
            modprobe()
        elif cmd == "rmmod":
            rmmod()
        elif cmd == "render":
            render()
        elif cmd == "set-power" and len(args) == 2:
            set_power_limit(int(args[0]), int(args[1]))
        elif cmd == "set-persistence" and len(args) == 2:
            set_persistence(int(args[0]), args[1] == "1")
        elif cmd == "attach" and len(args) >= 4:
            attach(int(args[0]), args[1], int(args[2]), [int(i) for i in args[3:]])
        elif cmd == "detach" and len(args) == 1:
            detach(int(args[0]))
        else:
            print(
                "usage: gpusim.py boot|modprobe|rmmod|render|set-power IDX MW|"
                "set-persistence IDX 0|1|attach PID NAME MIB IDX...|detach PID",
                file=sys.stderr,
            )
            return 2
    except GpusimError as e:
        print(e, file=sys.stderr)
        return e.status
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
