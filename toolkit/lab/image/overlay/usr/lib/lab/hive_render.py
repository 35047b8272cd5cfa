#!/usr/bin/env python3
"""Render a lab rig's HiveOS configuration (/hive-config) from its rig.json.

Usage: hive_render.py RIG_JSON OUT_DIR

Python 3 standard library only: it runs inside the rig at first boot and on the lab host,
where the controller publishes the same bytes as the rig's "dashboard" copy at
{hive_host_url}/{rig_id}/rig.conf and .../wallet.conf. HiveOS's `hello` downloads that copy at
every boot and overwrites the local one, so a boot changes nothing until someone edits the
local files: then the dashboard wins (a local MAINTENANCE=1 is undone at the next boot).

The files follow what the Hive dashboard sends a rig: shell variable assignments that
HiveOS's bash scripts source.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

# Flight-sheet variables of each miner HiveOS runs in the lab (wallet.conf: <PREFIX>_URL ...).
MINER_PREFIX = {"t-rex": "TREX", "teamredminer": "TEAMREDMINER"}

# A farm's usual ETC overclock per card model, as a flight sheet's OC profile would set it:
# core offset (MHz), memory offset (HiveOS unit: MHz of transfer rate), power limit (W).
NVIDIA_OC = {
    "rtx3060": (-200, 2400, 120),
    "rtx3090": (-200, 2200, 280),
    "p106-100": (100, 600, 90),
    "cmp90hx": (0, 1000, 220),
}
# Polaris: core clock (MHz), core voltage (mV), memory clock (MHz), fan (%).
AMD_OC = {"rx580": (1150, 850, 2000, 70)}
STOCK = (0, 0, 0, 0)  # a model without a profile: 0 leaves the card at its default


def _q(value: object) -> str:
    """A double-quoted shell word (bash `. rig.conf` must read back exactly `value`)."""
    s = str(value)
    for ch in ("\\", '"', "$", "`"):
        s = s.replace(ch, "\\" + ch)
    return f'"{s}"'


def _per_card(values) -> str:
    """HiveOS OC files hold one space-separated value per card of the vendor, in bus order."""
    return _q(" ".join(str(v) for v in values))


def _lines(pairs: list[tuple[str, str]]) -> str:
    return "".join(f"{k}={v}\n" for k, v in pairs)


def farm_id(farm_hash: str) -> int:
    """A stable farm id for the rig's farm (the dashboard knows it by id, rigs by hash)."""
    return int(farm_hash[:8], 16) % 900_000 + 100_000


def rig_conf(spec: dict) -> str:
    hive, miner = spec["hive"], spec["miner"]
    return _lines(
        [
            ("HIVE_HOST_URL", _q(hive["hive_host_url"])),
            ("API_HOST_URLs", _q(hive["hive_host_url"])),
            # Set when a rig joins its farm by hash (first boot); a secret like RIG_PASSWD.
            ("FARM_HASH", _q(hive["farm_hash"])),
            ("RIG_ID", str(hive["rig_id"])),
            ("RIG_PASSWD", _q(hive["rig_passwd"])),
            ("WORKER_NAME", _q(miner["worker"])),
            ("FARM_ID", str(farm_id(hive["farm_hash"]))),
            ("MINER", miner["name"]),
            ("MINER2", ""),
            ("TIMEZONE", _q("UTC")),
            ("WD_ENABLED", "1"),
            # Minutes, as on the dashboard; a lab "minute" is lab_minute_seconds long, so the
            # watchdog restarts a dead miner after ~1 lab minute and reboots after ~3.
            ("WD_MINER", "1"),
            ("WD_REBOOT", "3"),
            ("WD_CHECK_GPU", "0"),
            ("WD_MAX_LA", ""),
            ("WD_ASR", ""),
            ("WD_POWER_ENABLED", "0"),
            ("WD_SHARE_TIME", ""),
            ("WD_MINHASHES", "'{}'"),
            ("WD_MINHASHES_ALGO", "'{}'"),
            ("WD_TYPE", "'miner'"),
            ("MAINTENANCE", "0"),
            ("X_DISABLED", "1"),
            ("MINER_DELAY", "1"),
            ("PUSH_INTERVAL", ""),
            ("SSH_ENABLE", "1"),
            ("SSH_PASSWORD_ENABLE", "1"),
        ]
    )


def wallet_conf(spec: dict) -> str:
    miner = spec["miner"]
    name = miner["name"]
    if name not in MINER_PREFIX:
        raise ValueError(f"HiveOS rigs in the lab run {sorted(MINER_PREFIX)}, not {name!r}")
    p = MINER_PREFIX[name]
    # The dashboard fills in the wallet (%EWAL%) and leaves %WORKER_NAME% to the rig.
    head = f'### FLIGHT SHEET "{miner["coin"]} {name}" ###\n\n# Miner {name}\n'
    meta = json.dumps({name: {"coin": miner["coin"]}}, separators=(",", ":"))
    return (
        head
        + _lines(
            [
                (f"{p}_ALGO", _q(miner["algo"])),
                (f"{p}_TEMPLATE", _q(f"{miner['wallet']}.%WORKER_NAME%")),
                (f"{p}_URL", _q(miner["pool_url"])),
                (f"{p}_PASS", _q(miner["password"])),
                (f"{p}_USER_CONFIG", "''"),
            ]
        )
        + f"\nMETA='{meta}'\n"
    )


def nvidia_oc_conf(spec: dict) -> str | None:
    cards = [g for g in spec["gpus"] if g["vendor"] == "nvidia"]
    if not cards:
        return None
    oc = [NVIDIA_OC.get(g["model"], STOCK) for g in cards]
    return _lines(
        [
            ("CLOCK", _per_card(o[0] for o in oc)),
            ("MEM", _per_card(o[1] for o in oc)),
            ("PLIMIT", _per_card(o[2] for o in oc)),
            ("FAN", _per_card(0 for _ in oc)),  # 0: autofan drives the fans
            ("OHGODAPILL_ENABLED", ""),
            ("OHGODAPILL_START_TIMEOUT", ""),
            ("OHGODAPILL_ARGS", ""),
            ("RUNNING_DELAY", ""),
        ]
    )


def amd_oc_conf(spec: dict) -> str | None:
    cards = [g for g in spec["gpus"] if g["vendor"] == "amd"]
    if not cards:
        return None
    oc = [AMD_OC.get(g["model"], STOCK) for g in cards]
    return _lines(
        [
            ("CORE_CLOCK", _per_card(o[0] for o in oc)),
            ("CORE_STATE", ""),
            ("CORE_VDDC", _per_card(o[1] for o in oc)),
            ("MEM_CLOCK", _per_card(o[2] for o in oc)),
            ("MEM_STATE", ""),
            ("FAN", _per_card(o[3] for o in oc)),
            ("REF", ""),
            ("AGGRESSIVE", ""),
        ]
    )


def autofan_conf(_spec: dict) -> str:
    return _lines(
        [
            ("ENABLED", "1"),
            ("TARGET_TEMP", "65"),
            ("MEM_TEMP", "90"),
            ("MIN_FAN", "30"),
            ("MAX_FAN", "100"),
            ("CRITICAL_TEMP", "85"),
            ("CRITICAL_TEMP_ACTION", ""),
            ("NO_AMD", "0"),
            ("REBOOT_ON_ERROR", "0"),
            ("SMART_MODE", "0"),
        ]
    )


def render(spec: dict) -> dict[str, str]:
    """/hive-config's files for a HiveOS rig: file name -> content."""
    if spec.get("platform") != "hiveos" or not spec.get("hive"):
        raise ValueError(f"rig {spec.get('name')!r} is not a HiveOS rig")
    files = {
        "rig.conf": rig_conf(spec),
        "wallet.conf": wallet_conf(spec),
        "nvidia-oc.conf": nvidia_oc_conf(spec),
        "amd-oc.conf": amd_oc_conf(spec),
        "autofan.conf": autofan_conf(spec),
    }
    return {name: text for name, text in files.items() if text is not None}


def main(argv: list[str]) -> int:
    if len(argv) != 3:
        print(f"usage: {argv[0]} RIG_JSON OUT_DIR", file=sys.stderr)
        return 2
    spec = json.loads(Path(argv[1]).read_text())
    out = Path(argv[2])
    out.mkdir(parents=True, exist_ok=True)
    for name, text in render(spec).items():
        (out / name).write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
