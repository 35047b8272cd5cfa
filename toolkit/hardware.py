"""What rigpivot knows about GPUs and models, independent of any rig: data/gpus.csv (mining-era
cards: VRAM, compute capability, memory bandwidth, ROCm status), data/models.yml (the built-in
models' config.json figures) and the farm's own models.yml beside its farm file."""

from __future__ import annotations

import csv
import functools
import re
from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict

from toolkit import sizing
from toolkit.errors import BadInputError

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
    """A model as its config.json describes it; its size at each quantisation is computed from
    the tensors (toolkit/sizing.py), or measured from its own files (`rigpivot models add`)."""

    model_config = ConfigDict(extra="forbid")

    name: str
    hidden_size: int
    intermediate_size: int
    vocab_size: int
    layers: int
    heads: int
    kv_heads: int
    head_dim: int
    tie_word_embeddings: bool = False
    qkv_bias: bool = False
    fused_qkv: bool = False  # one qkv_proj and one gate_up_proj (Phi-3)
    norms_per_layer: int = 2
    sliding_window: int | None = None  # tokens the sliding-window layers attend to
    sliding_window_layers: int = 0  # how many layers use that window (the rest attend fully)
    max_context: int
    source: str = ""  # where the figures come from
    # `models add`: bytes per quantisation measured from the model's files, the engine that
    # serves them, the parameter count and where the files were read.
    files: dict[str, int] = {}
    engine: str | None = None
    params: int | None = None
    path: str | None = None

    @property
    def params_b(self) -> float:
        return (self.params or sizing.param_count(self)) / 1e9

    def quants(self, engine: str, catalog: list[str]) -> list[str]:
        """The quantisations this model can be served at by `engine`, highest precision first."""
        if self.files:
            if self.engine != engine:
                return []
            return sorted(self.files, key=lambda q: -self.files[q])
        return list(catalog)

    def weights_bytes(self, quant: str) -> int:
        if quant in self.files:
            return self.files[quant]
        return sizing.weights_bytes(self, quant)

    def kv_bytes_per_token(self, bytes_per_element: int = 2) -> int:
        """Per token, over every layer (sliding-window layers counted in full)."""
        return 2 * self.layers * self.kv_heads * self.head_dim * bytes_per_element

    def kv_bytes(self, tokens: int, bytes_per_element: int = 2) -> int:
        """KV cache for `tokens`: sliding-window layers never hold more than their window."""
        per_layer = 2 * self.kv_heads * self.head_dim * bytes_per_element
        swa = self.sliding_window_layers if self.sliding_window else 0
        window = min(tokens, self.sliding_window or tokens)
        return per_layer * ((self.layers - swa) * tokens + swa * window)

    def max_tokens(self, budget: float, bytes_per_element: int = 2) -> int:
        """The most tokens whose KV cache fits in `budget` bytes (capped at max_context)."""
        if budget <= 0:
            return 0
        per_layer = 2 * self.kv_heads * self.head_dim * bytes_per_element
        swa = self.sliding_window_layers if self.sliding_window else 0
        full = self.layers - swa
        tokens = int(budget // (per_layer * self.layers))
        if swa and self.sliding_window and tokens > self.sliding_window:
            rest = budget - per_layer * swa * self.sliding_window
            tokens = int(rest // (per_layer * full)) if full else self.max_context
        return min(self.max_context, tokens)


class ModelCatalog(BaseModel):
    model_config = ConfigDict(extra="forbid")

    # engine -> quantisations of the built-in models, highest precision first
    quantizations: dict[str, list[str]]
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


def farm_catalog_path(inventory: Path) -> Path:
    """The farm's own catalog (`rigpivot models add` writes it): models.yml beside the farm file."""
    return inventory.resolve().parent / "models.yml"


def catalog_with(extra: Path | None) -> ModelCatalog:
    """The built-in catalog plus the models of a farm catalog file, when there is one."""
    base = model_catalog()
    if extra is None or not extra.is_file():
        return base
    try:
        data = yaml.safe_load(extra.read_text()) or {}
        added = {k: ModelShape.model_validate(v) for k, v in (data.get("models") or {}).items()}
    except (OSError, yaml.YAMLError, ValueError) as e:
        raise BadInputError(f"farm model catalog {extra}: {e}") from e
    return ModelCatalog(quantizations=base.quantizations, models={**base.models, **added})


# PCIe bandwidth per lane per direction, MB/s (docs/sizing.md).
PCIE_LANE_MBPS = {1: 250.0, 2: 500.0, 3: 985.0, 4: 1970.0, 5: 3940.0}


def link_mbps(gen: int | None, width: int | None) -> float | None:
    if not gen or not width:
        return None
    return PCIE_LANE_MBPS.get(gen, PCIE_LANE_MBPS[5]) * width
