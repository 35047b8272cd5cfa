"""Synthetic probe facts for unit tests: the cards the lab profiles carry; and the market the
lab's `advise` test prices them in."""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from toolkit.models import DiskFacts, GpuFacts, HostFacts, PivotRecord, RigFacts

NVIDIA = {
    "rtx3060": ("NVIDIA GeForce RTX 3060", 12288, "8.6"),
    "rtx3090": ("NVIDIA GeForce RTX 3090", 24576, "8.6"),
    "p106": ("P106-100", 6144, "6.1"),
    "cmp90hx": ("NVIDIA CMP 90HX", 10240, "8.6"),
    "gtx1660s": ("NVIDIA GeForce GTX 1660 SUPER", 6144, "7.5"),
}


def card(kind: str, i: int = 0, gen: int = 1, width: int = 1, **kw) -> GpuFacts:
    if kind == "rx580":
        return GpuFacts(
            vendor="amd",
            name="Ellesmere [Radeon RX 470/480/570/570X/580/580X/590]",
            bus_id=f"0000:{i + 1:02x}:00.0",
            pci_id="1002:67df",
            source="lspci",
        )
    name, vram, cc = NVIDIA[kind]
    fields = dict(
        index=i,
        vendor="nvidia",
        name=name,
        bus_id=f"0000:{i + 1:02x}:00.0",
        vram_total_mib=vram,
        compute_cap=cc,
        pcie_gen_current=gen,
        pcie_width_current=width,
        source="nvml",
    )
    fields.update(kw)
    return GpuFacts(**fields)


def rig(
    *cards: GpuFacts,
    ram_mib: int = 16384,
    disk_mib: int = 200_000,
    state: str | None = None,
    disk: str | None = None,
) -> RigFacts:
    host = HostFacts(
        hostname="r",
        ram_mib=ram_mib,
        model_path="/var/lib/rigpivot/models",
        disk_free_mib=disk_mib,
        cpu_model="Celeron 3865U",
        cpu_cores=2,
        os_id="ubuntu",
        os_version="20.04",
        os_pretty="HiveOS",
        kernel="5.15",
        secure_boot="bios",
        python="3.8",
        model_disk=DiskFacts(device="sdb", kind=disk) if disk else None,
    )
    return RigFacts(
        facts_version=1,
        gpus=list(cards),
        nvidia_driver="535.183.01",
        cuda_driver="12.2",
        gpu_source="nvml",
        gpu_errors=[],
        host=host,
        platform="hiveos",
        miners=[],
        mining=True,
        hive=None,
        pivot=PivotRecord(state=state, step=None, snapshot_id=None) if state else None,
    )


ECONOMICS = Path(__file__).resolve().parent / "data" / "economics"


def lab_market(folder: Path) -> Path:
    """prices.yml and its WhatToMine file (the unit fixture, ETC's price raised) in `folder`:
    86400 / 13.1 s x 2.56 ETC / 160 TH/s x 0.0016 BTC x 60000 USD = 1.01e-8 USD per H/s a day."""
    folder.mkdir(parents=True, exist_ok=True)
    coins = json.loads((ECONOMICS / "whattomine-coins.json").read_text())
    coins["coins"]["EthereumClassic"]["exchange_rate"] = 0.0016
    (folder / "coins.json").write_text(json.dumps(coins))
    prices = {
        "currency": "USD",
        "power": {"flat": 0.10},
        "mining": {"whattomine": "coins.json", "btc_price": 60000},
        "ai": {
            "utilisation": 0.5,
            "platform_fee": 0.25,
            "rental": [{"gpu": "RTX 3090", "per_hour": 0.60}, {"gpu": "*", "per_hour": 0.01}],
        },
    }
    (folder / "prices.yml").write_text(yaml.safe_dump(prices))
    return folder
