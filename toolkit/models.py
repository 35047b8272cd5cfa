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
    power_draw_w: float | None = None  # drawn when probed (facts_version 3)
    vbios: str | None = None
    temperature_c: int | None = None
    source: Literal["nvml", "nvidia-smi", "lspci"]


class DiskFacts(BaseModel):
    """The block device under the rig's model directory, as the probe reads it from /sys/block."""

    model_config = ConfigDict(extra="ignore")

    device: str | None = None  # "sda", "nvme0n1", "mmcblk0"
    kind: Literal["nvme", "ssd", "hdd", "usb", "mmc", "unknown"] = "unknown"
    rotational: bool | None = None
    removable: bool | None = None
    sys_path: str | None = None  # /sys/devices/... (the bus it hangs off: usb, nvme, ata)


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
    model_disk: DiskFacts | None = None  # probes before facts_version 2 do not report it


class MinerProcess(BaseModel):
    name: str
    pid: int
    exe: str
    unit: str | None


class MinerCardRate(BaseModel):
    """One card's hashrate as its miner's API reports it (bus_id where the API gives it)."""

    model_config = ConfigDict(extra="ignore")

    index: int | None = None
    bus_id: str | None = None
    hashrate_hs: float | None = None


class MinerStats(BaseModel):
    """A running miner's own figures from its local API (module_utils/rigpivot_rig.py:
    read_miner_api); `error` says why there are none (API off, unreachable, not read)."""

    model_config = ConfigDict(extra="ignore")

    miner: str
    pid: int | None = None
    port: int | None = None
    api: str | None = None
    algorithm: str | None = None
    hashrate_hs: float | None = None
    gpus: list[MinerCardRate] = []
    error: str | None = None


class MiningMeasured(BaseModel):
    """The mining figures a conversion's snapshot recorded before the drain (rig_snapshot's
    manifest `measured`), read back by the probe for a rig that now serves AI."""

    model_config = ConfigDict(extra="ignore")

    taken: str | None = None
    power_draw_w: dict[str, float] = {}  # by bus_id
    miner_stats: list[MinerStats] = []


class ServedInstance(BaseModel):
    """One card's inference instance as the rig recorded it (inference_server)."""

    model_config = ConfigDict(extra="ignore")

    gpu: int
    port: int | None = None
    engine: str
    served_name: str
    context: int | None = None


def served_lines(instances: list[ServedInstance]) -> list[str]:
    """Instances grouped by engine and model: ['2× vllm qwen2.5-32b-awq', ...]."""
    groups: dict[tuple[str, str], list[int]] = {}
    for i in instances:
        groups.setdefault((i.engine, i.served_name), []).append(i.gpu)
    return [
        f"{len(g)}× {e} {m}" for (e, m), g in sorted(groups.items(), key=lambda kv: -len(kv[1]))
    ]


class RigLease(BaseModel):
    """Which run may change the rig (the record's `lease`, plugins/modules/rig_lease.py)."""

    model_config = ConfigDict(extra="ignore")

    run: str
    holder: str = ""
    taken: str | None = None
    expires: str | None = None

    def live(self, now: str) -> bool:
        """Whether it still holds at `now` (both ISO UTC, `...Z`, so they sort as text)."""
        return bool(self.expires) and str(self.expires) > now


class PivotRecord(BaseModel):
    """The rig's /var/lib/rigpivot/state.json, as the probe reads it."""

    state: str | None  # "damaged" when the file is there but not a record
    step: str | None
    snapshot_id: str | None
    error: str | None = None
    instances: list[ServedInstance] = []  # what each card serves, once the rig serves
    lease: RigLease | None = None  # the run that may change the rig now (rig_lease)
    mining_measured: MiningMeasured | None = None  # the snapshot's figures (facts_version 3)


class RigFacts(BaseModel):
    """The probe's answer (plugins/modules/rig_facts.py), validated at the controller."""

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
    miner_stats: list[MinerStats] = []  # facts_version 3


class ModelFit(BaseModel):
    """One model at one quantisation on one card."""

    model: str
    model_name: str
    quant: str
    engine: Engine
    weights_mib: int
    kv_mib_per_1k_tokens: float
    max_context: int  # the context the card's KV cache holds (the instance's context)
    need_mib: int  # at the policy's minimum context
    usable_mib: int
    decode_tokens_s: float | None  # upper bound: memory bandwidth / bytes read per token
    load_seconds: float | None  # disk read + PCIe transfer (PCIe alone when the disk is unknown)
    disk_seconds: float | None = None  # reading the model from the rig's disk
    pcie_seconds: float | None = None  # moving it over the card's PCIe link

    @property
    def label(self) -> str:
        return f"{self.model_name} {self.quant}"


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
    best: ModelFit | None  # this card's own plan: each card runs its own instance
    notes: list[str] = []  # why an engine or a bigger model was not chosen


class CardPlan(BaseModel):
    """What one card serves: its own engine, model, quantisation and context."""

    gpu: int | None
    bus_id: str
    card: str
    fit: ModelFit


class RigVerdict(BaseModel):
    host: str
    address: str
    status: Literal["probed", "unreachable"]
    error: str | None = None
    verdict: Literal["fit", "unfit", "unknown"]
    # The rig's summary for consumers of one engine and model per rig: the plan most cards
    # have (between equals, the biggest model). Each card's own plan is in `plans`.
    engine: Engine | None = None
    model: ModelFit | None = None
    instances: int = 0  # one per fit card
    engines: list[Engine] = []  # every engine the rig's plans use (all are installed)
    plans: list[CardPlan] = []
    cards: list[CardVerdict] = []
    reasons: list[str] = []
    warnings: list[str] = []
    platform: str | None = None
    mining: bool | None = None
    driver: str | None = None
    facts: RigFacts | None = None

    def plan_lines(self) -> list[str]:
        """The rig's per-card plans as lines: cards, engine, model, context, speed, load time."""
        out = []
        for n, f in plan_groups(self.plans):
            load = f", load ≈ {f.load_seconds:.0f} s" if f.load_seconds is not None else ""
            tok = f" ≤{f.decode_tokens_s} tok/s" if f.decode_tokens_s else ""
            out.append(f"{n}× {f.engine} {f.label}\n  ctx≤{f.max_context}{tok}{load}")
        return out

    def card_notes(self) -> list[str]:
        """Why cards did not get vLLM or a bigger model, once per distinct reason."""
        return list(dict.fromkeys(n for c in self.cards for n in c.notes))


def plan_groups(plans: list[CardPlan]) -> list[tuple[int, ModelFit]]:
    """The plans of a rig's cards grouped by engine, model and quantisation, most cards first
    (between equals, the biggest model): [(cards, the group's smallest-context plan), ...]."""
    groups: dict[tuple[str, str, str], list[ModelFit]] = {}
    for p in plans:
        groups.setdefault((p.fit.engine, p.fit.model, p.fit.quant), []).append(p.fit)
    out = [(len(fits), min(fits, key=lambda f: f.max_context)) for fits in groups.values()]
    out.sort(key=lambda nf: (-nf[0], -nf[1].weights_mib))
    return out


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
    instances: list[ServedInstance] = []  # what each card serves (a converted rig)


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
    # Rigs whose expired lease of another run this run took over (a controller that died).
    leases_taken_over: list[str] = []
    rigs: list[RigResult] = []

    def count(self, outcome: Outcome) -> int:
        return sum(1 for r in self.rigs if r.outcome == outcome)

    @property
    def failed(self) -> bool:
        return any(r.outcome in ("failed", "quarantined", "rolled-back") for r in self.rigs)

    @property
    def unreachable(self) -> list[str]:
        return [r.host for r in self.rigs if r.outcome == "unreachable"]
