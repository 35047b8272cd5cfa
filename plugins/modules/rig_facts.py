#!/usr/bin/python3
"""rig_facts: what a rig is made of, read-only, in one file.

The same file is an Ansible module and the payload rigpivot's preflight pipes to `python3 -`
over SSH, with the rig-side library (module_utils/rigpivot_rig.py: what a miner is, systemd
and nvidia-smi readers) inlined in place of its import (toolkit/probe.py builds that payload).
Piped, it needs nothing but the rig's Python 3.6+. It changes nothing on the rig.

GPUs come from NVML through pynvml when the rig has it, from `nvidia-smi --query-gpu` when
it does not (or when NVML fails), and from lspci for every card the NVIDIA stack cannot see
(AMD cards, NVIDIA cards without a working driver). Secrets in mining configs (wallets, rig
passwords, farm hashes) are never read into the facts.

Options (Ansible args, or `--key=value` on the command line):
  gpu_source   auto | nvml | nvidia-smi   (default auto: NVML first)
  model_path   where models will live; free disk is measured there, and the block device
               under it is reported (kind: nvme, ssd, hdd, usb, mmc or unknown) for load times
               (default /var/lib/rigpivot)
"""

DOCUMENTATION = r"""
module: rig_facts
short_description: What a rig is made of and where it stands in the pivot, read-only.
description:
  - GPUs (NVML, else nvidia-smi, and lspci for the cards the NVIDIA stack cannot see), host RAM, disk and CPU, OS, kernel, secure boot, the mining platform and its miners (with their own API's figures), and the pivot record.
  - Sets the fact C(rig_facts). Secrets in mining configs are never read into the facts.
  - The same file is the payload preflight pipes to C(python3 -) over SSH, with the rig library inlined.
author: rigpivot maintainers
options:
  gpu_source:
    description: Where GPU facts come from; C(auto) tries NVML first.
    type: str
    choices: [auto, nvml, nvidia-smi]
    default: auto
  model_path:
    description: Where models will live; free disk and the block device under it are measured there.
    type: path
    default: /var/lib/rigpivot
"""

import json
import os
import platform
import re
import shutil
import sys

# The library path (ansible.cfg `library`/`module_utils`: the CLI, the roles run from the
# repository) first; an installed collection (rigpivot.farm) when that is not there. The probe
# replaces this whole try statement with the library's source (and sets PIPED): keep it one.
try:
    from ansible.module_utils.rigpivot_rig import (
        find_miners,
        miner_stats,
        norm_bus_id,
        pci_gpus,
        read,
        run,
        smi_query,
        smi_value,
    )
except ImportError:
    from ansible_collections.rigpivot.farm.plugins.module_utils.rigpivot_rig import (
        find_miners,
        miner_stats,
        norm_bus_id,
        pci_gpus,
        read,
        run,
        smi_query,
        smi_value,
    )

PIPED = False
# 2: host.model_disk; 3: each card's power_draw_w, each miner's API figures (miner_stats),
# and the mining figures the snapshot of a converted rig recorded (pivot.mining_measured)
FACTS_VERSION = 3
SMI_FIELDS = [
    "index",
    "name",
    "uuid",
    "pci.bus_id",
    "pci.device_id",
    "memory.total",
    "memory.free",
    "compute_cap",
    "pcie.link.gen.current",
    "pcie.link.gen.max",
    "pcie.link.width.current",
    "pcie.link.width.max",
    "power.limit",
    "power.min_limit",
    "power.max_limit",
    "power.default_limit",
    "power.draw",
    "vbios_version",
    "temperature.gpu",
    "driver_version",
]


def gpus_from_nvml():
    # The probe is read-only: Python would otherwise write pynvml's bytecode cache beside it.
    sys.dont_write_bytecode = True
    import pynvml as n  # raises ImportError where the rig has no pynvml

    def opt(fn, *args):
        # Older drivers lack some calls (NVMLError_FunctionNotFound) and GeForce cards refuse
        # others (NotSupported): such a fact is unknown, not fatal.
        try:
            return fn(*args)
        except n.NVMLError:
            return None

    def text(v):
        return v.decode() if isinstance(v, bytes) else v

    n.nvmlInit()
    try:
        driver = text(n.nvmlSystemGetDriverVersion())
        cuda = opt(n.nvmlSystemGetCudaDriverVersion)
        gpus = []
        for i in range(n.nvmlDeviceGetCount()):
            h = n.nvmlDeviceGetHandleByIndex(i)
            mem = n.nvmlDeviceGetMemoryInfo(h)
            cc = opt(n.nvmlDeviceGetCudaComputeCapability, h)
            pci = n.nvmlDeviceGetPciInfo(h)
            limits = opt(n.nvmlDeviceGetPowerManagementLimitConstraints, h)
            mw = [
                opt(n.nvmlDeviceGetPowerManagementLimit, h),
                limits[0] if limits else None,
                limits[1] if limits else None,
                opt(n.nvmlDeviceGetPowerManagementDefaultLimit, h),
            ]
            dev_id = pci.pciDeviceId
            gpus.append(
                {
                    "index": i,
                    "vendor": "nvidia",
                    "name": text(n.nvmlDeviceGetName(h)),
                    "uuid": text(n.nvmlDeviceGetUUID(h)),
                    "bus_id": norm_bus_id(text(pci.busId)),
                    "pci_id": "%04x:%04x" % (dev_id & 0xFFFF, dev_id >> 16),
                    "vram_total_mib": mem.total // 2**20,
                    "vram_free_mib": mem.free // 2**20,
                    "compute_cap": "%d.%d" % cc if cc else None,
                    "pcie_gen_current": opt(n.nvmlDeviceGetCurrPcieLinkGeneration, h),
                    "pcie_gen_max": opt(n.nvmlDeviceGetMaxPcieLinkGeneration, h),
                    "pcie_width_current": opt(n.nvmlDeviceGetCurrPcieLinkWidth, h),
                    "pcie_width_max": opt(n.nvmlDeviceGetMaxPcieLinkWidth, h),
                    "power_limit_w": _watts(mw[0]),
                    "power_min_w": _watts(mw[1]),
                    "power_max_w": _watts(mw[2]),
                    "power_default_w": _watts(mw[3]),
                    # what the card draws now (a miner hashing, an engine serving, or idle)
                    "power_draw_w": _watts(opt(n.nvmlDeviceGetPowerUsage, h)),
                    "vbios": text(opt(n.nvmlDeviceGetVbiosVersion, h)),
                    "temperature_c": opt(n.nvmlDeviceGetTemperature, h, 0),
                    "source": "nvml",
                }
            )
        return gpus, driver, "%d.%d" % (cuda // 1000, cuda % 1000 // 10) if cuda else None
    finally:
        n.nvmlShutdown()


def _watts(mw):
    return round(mw / 1000.0, 2) if mw is not None else None


def gpus_from_nvidia_smi():
    if shutil.which("nvidia-smi") is None:
        raise RuntimeError("nvidia-smi not found")
    fields = list(SMI_FIELDS)
    try:
        rows = smi_query("gpu", fields)
    except RuntimeError as e:
        if 'Field "compute_cap"' not in str(e):
            raise
        # Drivers before the 510 branch cannot report compute capability here.
        fields.remove("compute_cap")
        rows = smi_query("gpu", fields)
    gpus, driver = [], None
    for row in rows:
        driver = row["driver_version"]
        dev_id = int(row["pci.device_id"], 16)
        gpus.append(
            {
                "index": int(row["index"]),
                "vendor": "nvidia",
                "name": row["name"],
                "uuid": row["uuid"],
                "bus_id": norm_bus_id(row["pci.bus_id"]),
                "pci_id": "%04x:%04x" % (dev_id & 0xFFFF, dev_id >> 16),
                "vram_total_mib": smi_value(row["memory.total"]),
                "vram_free_mib": smi_value(row["memory.free"]),
                "compute_cap": row.get("compute_cap") or None,
                "pcie_gen_current": smi_value(row["pcie.link.gen.current"]),
                "pcie_gen_max": smi_value(row["pcie.link.gen.max"]),
                "pcie_width_current": smi_value(row["pcie.link.width.current"]),
                "pcie_width_max": smi_value(row["pcie.link.width.max"]),
                "power_limit_w": smi_value(row["power.limit"]),
                "power_min_w": smi_value(row["power.min_limit"]),
                "power_max_w": smi_value(row["power.max_limit"]),
                "power_default_w": smi_value(row["power.default_limit"]),
                "power_draw_w": smi_value(row["power.draw"]),
                "vbios": row["vbios_version"] if not row["vbios_version"].startswith("[") else None,
                "temperature_c": smi_value(row["temperature.gpu"]),
                "source": "nvidia-smi",
            }
        )
    cuda = None
    rc, out, _ = run(["nvidia-smi"])
    m = re.search(r"CUDA Version:\s*([\d.]+)", out)
    if m:
        cuda = m.group(1)
    return gpus, driver, cuda


def gpus_from_lspci():
    """Every GPU lspci lists (the library's pci_gpus), in the facts' form."""
    try:
        found = pci_gpus()
    except RuntimeError:
        return []
    cards = []
    for card in found:
        ven = card["vendor_id"]
        bus = norm_bus_id(card["slot"])
        vram = None
        try:  # amdgpu publishes VRAM in sysfs on real rigs
            with open("/sys/bus/pci/devices/%s/mem_info_vram_total" % bus) as f:
                vram = int(f.read()) // 2**20
        except (OSError, ValueError):
            pass
        cards.append(
            {
                "vendor": {"10de": "nvidia", "1002": "amd", "8086": "intel"}.get(ven, ven),
                "name": card["device"],
                "bus_id": bus,
                "pci_id": "%s:%s" % (ven, card["device_id"]),
                "vram_total_mib": vram,
                "source": "lspci",
            }
        )
    return cards


def gather_gpus(source="auto"):
    errors, nvidia, driver, cuda, used = [], [], None, None, None
    tries = {"auto": ("nvml", "nvidia-smi"), "nvml": ("nvml",), "nvidia-smi": ("nvidia-smi",)}[
        source
    ]
    for name in tries:
        try:
            fn = gpus_from_nvml if name == "nvml" else gpus_from_nvidia_smi
            nvidia, driver, cuda = fn()
            used = name
            break
        except ImportError:
            errors.append("nvml: pynvml is not installed")
        except Exception as e:  # NVMLError, RuntimeError: report and fall back
            errors.append("%s: %s" % (name, str(e) or type(e).__name__))
    seen = {g["bus_id"] for g in nvidia}
    others = [g for g in gpus_from_lspci() if g["bus_id"] not in seen]
    for g in others:
        g["index"] = None
    return {
        "gpus": nvidia + others,
        "nvidia_driver": driver,
        "cuda_driver": cuda,
        "gpu_source": used,
        "gpu_errors": errors,
    }


def _kv(text):
    out = {}
    for line in (text or "").splitlines():
        m = re.match(r"^\s*([A-Za-z_][A-Za-z0-9_]*)=(.*)$", line)
        if m:
            out[m.group(1)] = m.group(2).strip().strip('"').strip("'")
    return out


def gather_host(model_path):
    mem = _kv(re.sub(r":\s+", "=", read("/proc/meminfo") or ""))
    ram_kib = int(mem.get("MemTotal", "0 kB").split()[0])
    probe = model_path
    while probe and not os.path.exists(probe):
        probe = os.path.dirname(probe)
    disk = shutil.disk_usage(probe or "/")
    cpuinfo = read("/proc/cpuinfo") or ""
    m = re.search(r"^model name\s*:\s*(.+)$", cpuinfo, re.M)
    osr = _kv(read("/etc/os-release"))
    return {
        "hostname": platform.node(),
        "ram_mib": ram_kib // 1024,
        "model_path": model_path,
        "disk_free_mib": disk.free // 2**20,
        "model_disk": model_disk(probe or "/"),
        "cpu_model": m.group(1).strip() if m else platform.processor(),
        "cpu_cores": os.cpu_count(),
        "os_id": osr.get("ID"),
        "os_version": osr.get("VERSION_ID"),
        "os_pretty": osr.get("PRETTY_NAME"),
        "kernel": platform.release(),
        "secure_boot": _secure_boot(),
        "python": platform.python_version(),
    }


def model_disk(path):
    """The block device under `path`'s filesystem: its disk's name and kind, from sysfs."""
    try:
        dev = os.stat(path).st_dev
    except OSError:
        return {"device": None, "kind": "unknown"}
    return disk_facts(os.major(dev), os.minor(dev))


def disk_facts(major, minor, sys_root="/sys"):
    """Disk facts for block device major:minor: the whole disk behind a partition, and
    behind device-mapper or md (its first member); kind from the disk's name, bus and
    queue/rotational."""
    node = os.path.join(sys_root, "dev", "block", "%d:%d" % (major, minor))
    if not os.path.exists(node):  # overlayfs, tmpfs, NFS: no block device
        return {"device": None, "kind": "unknown"}
    real = os.path.realpath(node)
    for _ in range(4):
        if os.path.exists(os.path.join(real, "partition")):
            real = os.path.dirname(real)
        try:
            members = sorted(os.listdir(os.path.join(real, "slaves")))
        except OSError:
            members = []
        if not members:
            break
        real = os.path.realpath(os.path.join(real, "slaves", members[0]))
    if os.path.exists(os.path.join(real, "partition")):
        real = os.path.dirname(real)
    name = os.path.basename(real)
    rotational = (read(os.path.join(real, "queue", "rotational")) or "").strip()
    removable = (read(os.path.join(real, "removable")) or "").strip()
    parts = real.split(os.sep)
    if any(p.startswith("usb") for p in parts):
        kind = "usb"
    elif name.startswith("nvme"):
        kind = "nvme"
    elif name.startswith("mmcblk"):
        kind = "mmc"
    elif rotational == "1":
        kind = "hdd"
    elif rotational == "0":
        kind = "ssd"
    else:
        kind = "unknown"
    return {
        "device": name,
        "kind": kind,
        "rotational": rotational == "1" if rotational in ("0", "1") else None,
        "removable": removable == "1" if removable in ("0", "1") else None,
        "sys_path": real[len(sys_root) :] if real.startswith(sys_root) else real,
    }


def _secure_boot():
    if not os.path.isdir("/sys/firmware/efi"):
        return "bios"
    vars_dir = "/sys/firmware/efi/efivars"
    try:
        for name in os.listdir(vars_dir):
            if name.startswith("SecureBoot-"):
                with open(os.path.join(vars_dir, name), "rb") as f:
                    return "enabled" if f.read()[-1:] == b"\x01" else "disabled"
    except OSError:
        pass
    return "unknown"


def gather_mining():
    # The one definition of a miner, the drain's and the snapshot's too.
    miners = [
        {"name": m["name"], "pid": m["pid"], "exe": m["exe"], "unit": m["unit"]}
        for m in find_miners()["miners"]
    ]
    # Each miner's own figures from its local API (hashrate, per card where it says); a miner
    # whose API is off, unreachable or unknown is listed with the reason.
    hive = None
    if os.path.exists("/hive-config/rig.conf"):
        conf = _kv(read("/hive-config/rig.conf"))
        # rig.conf also holds RIG_PASSWD and FARM_HASH: only harmless keys are copied out.
        hive = {
            k.lower(): conf.get(k) for k in ("WORKER_NAME", "MINER", "MAINTENANCE", "WD_ENABLED")
        }
    platform_name = (
        "hiveos"
        if hive is not None or os.path.isdir("/hive/bin")
        else ("linux" if miners else "none")
    )
    return {
        "platform": platform_name,
        "miners": miners,
        "mining": bool(miners),
        "hive": hive,
        "miner_stats": miner_stats(miners),
    }


SNAPSHOT_ROOT = "/var/lib/rigpivot/snapshots"  # rig_snapshot's (mining_snapshot's) root


def snapshot_measured(snapshot_id, root=SNAPSHOT_ROOT):
    """The mining figures a conversion's snapshot recorded before the drain (rig_snapshot's
    manifest `measured`): what the rig earned mining, for a rig that now serves AI."""
    if not snapshot_id or "/" in snapshot_id:
        return None
    try:
        with open(os.path.join(root, snapshot_id, "manifest.json")) as f:
            manifest = json.load(f)
    except (OSError, ValueError):
        return None
    measured = manifest.get("measured") if isinstance(manifest, dict) else None
    return measured if isinstance(measured, dict) else None


def gather_pivot(path="/var/lib/rigpivot/state.json"):
    """Where the rig stands in rigpivot's pivot (written by the rig_state module), if anywhere."""
    try:
        with open(path) as f:
            record = json.load(f)
    except OSError:
        return None
    except ValueError as e:
        # Truncated or corrupt (a power cut mid-write on an old rig, a hand edit): never read as
        # "never converted", which would let a half-converted rig be planned from scratch.
        return {"state": "damaged", "step": None, "snapshot_id": None, "error": str(e)}
    if not isinstance(record, dict):
        return {"state": "damaged", "step": None, "snapshot_id": None, "error": "not an object"}
    facts = record.get("facts") or {}
    return {
        "state": record.get("state"),
        "step": record.get("step"),
        "snapshot_id": facts.get("snapshot_id"),
        # what each card serves (inference_server's record): gpu, port, engine, served_name
        "instances": facts.get("inference_instances") or [],
        # the run changing the rig now, if any (rig_lease): run, holder, taken, expires
        "lease": record.get("lease") if isinstance(record.get("lease"), dict) else None,
        "mining_measured": snapshot_measured(facts.get("snapshot_id")),
    }


def gather(gpu_source="auto", model_path="/var/lib/rigpivot"):
    facts = {"facts_version": FACTS_VERSION}
    facts.update(gather_gpus(gpu_source))
    facts["host"] = gather_host(model_path)
    facts.update(gather_mining())
    facts["pivot"] = gather_pivot()
    return facts


def main():
    if not PIPED:
        from ansible.module_utils.basic import AnsibleModule

        module = AnsibleModule(
            argument_spec=dict(
                gpu_source=dict(type="str", default="auto", choices=["auto", "nvml", "nvidia-smi"]),
                model_path=dict(type="path", default="/var/lib/rigpivot"),
            ),
            supports_check_mode=True,
        )
        facts = gather(module.params["gpu_source"], module.params["model_path"])
        module.exit_json(changed=False, ansible_facts={"rig_facts": facts})
    args = {}
    for a in sys.argv[1:]:
        if a.startswith("--") and "=" in a:
            k, v = a[2:].split("=", 1)
            args[k.replace("-", "_")] = v
    source = args.get("gpu_source", "auto")
    if source not in ("auto", "nvml", "nvidia-smi"):
        print(json.dumps({"failed": True, "msg": "gpu_source must be auto, nvml or nvidia-smi"}))
        sys.exit(1)
    print(json.dumps(gather(source, args.get("model_path") or "/var/lib/rigpivot")))


if __name__ == "__main__":
    main()
