"""What rigpivot knows about GPUs and models, independent of any rig: data/gpus.csv (mining-era
cards: VRAM, compute capability, memory bandwidth, ROCm status) and data/models.yml."""

from __future__ import annotations

import csv
import functools
import re
from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict

DATA = Path(__file__).with_name("data")


class KnownGpu(BaseModel):
    vendor: str
    model: str
    vram_gib: list[int]  # "6 or 12" -> [6, 12]
    arch: str
    chip: str
    cc_or_gfx: str
    mem_bw_gbs: int
    rocm_status: str
    notes: str

    @property
    def key(self) -> str:
        return _norm(re.sub(r"\s*\d+GB$", "", self.model))


class ModelShape(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str
    params_b: float
    layers: int
    kv_heads: int
    head_dim: int
    max_context: int

    def kv_bytes_per_token(self, bytes_per_element: int = 2) -> int:
        return 2 * self.layers * self.kv_heads * self.head_dim * bytes_per_element


class ModelCatalog(BaseModel):
    model_config = ConfigDict(extra="forbid")

    quantizations: dict[str, dict[str, float]]
    models: dict[str, ModelShape]


def _norm(name: str) -> str:
    n = name.upper().replace("NVIDIA", "").replace("GEFORCE", "").replace("AMD", "")
    return re.sub(r"[^A-Z0-9]+", " ", n).strip()


@functools.cache
def known_gpus() -> list[KnownGpu]:
    out = []
    with (DATA / "gpus.csv").open() as f:
        for row in csv.DictReader(f):
            out.append(
                KnownGpu(
                    vendor=row["vendor"].lower(),
                    model=row["model"],
                    vram_gib=[int(x) for x in re.findall(r"\d+", row["vram_gb"])],
                    arch=row["arch"],
                    chip=row["chip"],
                    cc_or_gfx=row["cc_or_gfx"],
                    mem_bw_gbs=int(row["mem_bw_gbs"]),
                    rocm_status=row["rocm_status"],
                    notes=row["notes"],
                )
            )
    return out


# lspci names AMD chips by codename; the catalog by marketing family.
_AMD_CODENAMES = {
    "ELLESMERE": "Polaris",
    "BAFFIN": "Polaris",
    "VEGA 10": "Vega10",
    "VEGA 20": "Vega20",
    "NAVI 10": "Navi10",
    "NAVI 21": "Navi21",
    "NAVI 22": "Navi22",
    "NAVI 23": "Navi23",
}


def identify(name: str, vram_mib: int | None = None) -> KnownGpu | None:
    """The catalog entry for a card as NVML, nvidia-smi or lspci names it."""
    key = _norm(name)
    cands = [g for g in known_gpus() if g.key == key]
    if not cands:
        # lspci: "GA106 [GeForce RTX 3060 Lite Hash Rate]" or "Ellesmere [Radeon RX ...]"
        m = re.search(r"\[(.+)\]", name)
        inner = _norm(m.group(1)) if m else ""
        inner = inner.replace("LITE HASH RATE", "").strip()
        cands = [g for g in known_gpus() if inner and g.key == inner]
        if not cands:
            code = next((c for c in _AMD_CODENAMES if key.startswith(c)), None)
            if code:
                fam = _AMD_CODENAMES[code]
                cands = [g for g in known_gpus() if g.chip.startswith(fam)]
    if not cands:
        return None
    if vram_mib:
        gib = vram_mib / 1024
        return min(cands, key=lambda g: min(abs(v - gib) for v in g.vram_gib))
    return cands[0]


@functools.cache
def model_catalog(path: Path = DATA / "models.yml") -> ModelCatalog:
    return ModelCatalog.model_validate(yaml.safe_load(path.read_text()))


# PCIe bandwidth per lane per direction, MB/s (shared/reference/README.md).
PCIE_LANE_MBPS = {1: 250.0, 2: 500.0, 3: 985.0, 4: 1970.0, 5: 3940.0}


def link_mbps(gen: int | None, width: int | None) -> float | None:
    if not gen or not width:
        return None
    return PCIE_LANE_MBPS.get(gen, PCIE_LANE_MBPS[5]) * width
