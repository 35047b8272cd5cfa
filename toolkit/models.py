"""Pydantic models at the edges: what the probe reports about a rig, what preflight decides, and
what a convert or rollback run reports."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict

Engine = Literal["vllm", "llama.cpp"]


class GpuFacts(BaseModel):
    model_config = ConfigDict(extra="ignore")

    index: int | None = None
    vendor: str
    name: str
    uuid: str | None = None
    bus_id: str
    pci_id: str | None = None
    vram_total_mib: int | None = None
    vram_free_mib: int | None = None
    compute_cap: str | None = None
    pcie_gen_current: int | None = None
    pcie_gen_max: int | None = None
    pcie_width_current: int | None = None
    pcie_width_max: int | None = None
    power_limit_w: float | None = None
    power_min_w: float | None = None
    power_max_w: float | None = None
    power_default_w: float | None = None
    vbios: str | None = None
    temperature_c: int | None = None
    source: Literal["nvml", "nvidia-smi", "lspci"]


class HostFacts(BaseModel):
    model_config = ConfigDict(extra="ignore")

    hostname: str
    ram_mib: int
    model_path: str
    disk_free_mib: int
    cpu_model: str
    cpu_cores: int | None
    os_id: str | None
    os_version: str | None
    os_pretty: str | None
    kernel: str
    secure_boot: str
    python: str


class MinerProcess(BaseModel):
    name: str
    pid: int
    exe: str
    unit: str | None


class PivotRecord(BaseModel):
    """The rig's /var/lib/rigpivot/state.json, as the probe reads it."""

    state: str | None  # "damaged" when the file is there but not a record
    step: str | None
    snapshot_id: str | None
    error: str | None = None


class RigFacts(BaseModel):
    """The probe's answer (toolkit/modules/rig_facts.py), validated at the controller."""

    model_config = ConfigDict(extra="ignore")

    facts_version: int
    gpus: list[GpuFacts]
    nvidia_driver: str | None
    cuda_driver: str | None
    gpu_source: str | None
    gpu_errors: list[str]
    host: HostFacts
    platform: Literal["hiveos", "linux", "none"]
    miners: list[MinerProcess]
    mining: bool
    hive: dict[str, str | None] | None
    pivot: PivotRecord | None = None


class ModelFit(BaseModel):
    """One model at one quantisation on one card."""

    model: str
    model_name: str
    quant: str
    engine: Engine
    weights_mib: int
    kv_mib_per_1k_tokens: float
    max_context: int
    need_mib: int  # at the policy's minimum context
    usable_mib: int
    decode_tokens_s: float | None  # upper bound: memory bandwidth / bytes read per token
    load_seconds: float | None  # model size over the card's PCIe link


class CardVerdict(BaseModel):
    index: int | None
    bus_id: str
    name: str
    vendor: str
    vram_mib: int | None
    compute_cap: str | None
    link: str  # "Gen1 x1"
    link_mbps: float | None
    fit: bool
    engines: list[Engine]
    reasons: list[str]  # why not fit
    warnings: list[str]
    best: ModelFit | None


class RigVerdict(BaseModel):
    host: str
    address: str
    status: Literal["probed", "unreachable"]
    error: str | None = None
    verdict: Literal["fit", "unfit", "unknown"]
    engine: Engine | None = None
    model: ModelFit | None = None  # what each instance serves (one per fit card)
    instances: int = 0
    cards: list[CardVerdict] = []
    reasons: list[str] = []
    warnings: list[str] = []
    platform: str | None = None
    mining: bool | None = None
    driver: str | None = None
    facts: RigFacts | None = None


class FleetReport(BaseModel):
    inventory: str
    rigs: list[RigVerdict]

    @property
    def cards_total(self) -> int:
        return sum(len(r.cards) for r in self.rigs)

    @property
    def cards_fit(self) -> int:
        return sum(1 for r in self.rigs for c in r.cards if c.fit)

    @property
    def rigs_convertible(self) -> int:
        return sum(1 for r in self.rigs if r.verdict == "fit")

    @property
    def unreachable(self) -> list[str]:
        return [r.host for r in self.rigs if r.status == "unreachable"]


# -- runs: what convert and rollback report -----------------------------------------------

Outcome = Literal[
    "converted", "already-ai", "rolled-back", "quarantined", "failed", "untouched",
    "unreachable", "not-started", "would-convert", "mining", "interrupted",
]  # fmt: skip


class SnapshotRef(BaseModel):
    """The controller's copy of a rig's snapshot, named without its content: the archive is
    `<snapshot store>/<rig>/<id>.tar.gz` (and `<id>.manifest.json` beside it)."""

    id: str
    sha256: str  # of the archive


class RigResult(BaseModel):
    host: str
    outcome: Outcome
    detail: str = ""
    engine: str | None = None
    model: str | None = None
    endpoints: list[str] = []
    batch: int | None = None
    snapshot: SnapshotRef | None = None
    # The rig's pivot record (/var/lib/rigpivot/state.json) as last seen: where a rig that
    # went away or was interrupted stands, and so where the next run resumes it from.
    state: str | None = None
    step: str | None = None


class RunReport(BaseModel):
    run_id: str
    command: Literal["convert", "rollback"]
    inventory: str
    check: bool
    journal: str
    snapshot_store: str | None = None
    started: str
    finished: str = ""
    stopped_early: str | None = None
    interrupted: bool = False  # the operator stopped the run (SIGINT)
    rigs: list[RigResult] = []

    def count(self, outcome: Outcome) -> int:
        return sum(1 for r in self.rigs if r.outcome == outcome)

    @property
    def failed(self) -> bool:
        return any(r.outcome in ("failed", "quarantined", "rolled-back") for r in self.rigs)

    @property
    def unreachable(self) -> list[str]:
        return [r.host for r in self.rigs if r.outcome == "unreachable"]
