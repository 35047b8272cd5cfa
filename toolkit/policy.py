"""Fitness policy: per card and per rig, what can serve AI, with which engine and model, why not.

Pure functions over the probe's facts. Every knob is a `Policy` field, set per group or host
in the inventory as `rigpivot_<field>`.

Sizing (docs/sizing.md):
  weights: from the model's tensors at each quantisation (toolkit/sizing.py), or measured from
           its files for the farm's own models (`rigpivot models add`).
  vLLM:    gpu_memory_utilization x total VRAM must hold the weights, the CUDA context,
           activation peak and CUDA graphs (vllm_overhead_mib) and the KV cache.
  llama.cpp: total VRAM - llama.cpp's CUDA context and compute buffers must hold weights + KV.
  KV cache = 2 x layers x kv_heads x head_dim x 2 B per token (sliding-window layers capped
           at their window). A fit leaves at least min_context tokens of KV cache.
  decode tokens/s <= memory bandwidth / bytes read per token (weights + KV at min_context).
  load time ~= size / the model disk's read speed + size / the card's PCIe link bandwidth.
Each card runs its own instance (no model is split over risers), so each card gets its own
engine, model, quantisation and context.
"""

from __future__ import annotations

import difflib
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    ValidationInfo,
    field_validator,
)

from toolkit.errors import BadInputError, describe_validation_error
from toolkit.hardware import ModelCatalog, ModelShape, identify, link_mbps, model_catalog
from toolkit.inventory import Host
from toolkit.models import (
    CardPlan,
    CardVerdict,
    Engine,
    GpuFacts,
    ModelFit,
    RigFacts,
    RigVerdict,
    plan_groups,
)

MIB = 2**20
_SLOW = "slow PCIe link"
VAR_PREFIX = "rigpivot_"


class Policy(BaseModel):
    """Preflight's rules. Inventory variable = `rigpivot_` + field name."""

    model_config = ConfigDict(extra="forbid")

    target_models: list[str] = Field(
        default=["qwen2.5-32b", "qwen2.5-14b", "llama-3.1-8b", "qwen2.5-7b", "mistral-7b"],
        description="Models an operator would serve, any order; the largest that fits wins.",
    )
    min_context: int = Field(4096, ge=512, description="Context (tokens) every instance must hold.")
    vllm_min_cc: float = Field(7.5, description="vLLM's compute-capability floor.")
    llamacpp_min_cc: float = Field(5.0, description="llama.cpp's CUDA floor.")
    gpu_memory_utilization: float = Field(
        0.90,
        gt=0.3,
        le=0.98,
        description="vLLM's share of the card's total VRAM: weights, activation peak, CUDA "
        "graphs and KV cache all live in it.",
    )
    vllm_overhead_mib: int = Field(
        1024,
        ge=0,
        description="Inside vLLM's share: CUDA context, activation peak and CUDA graphs.",
    )
    llamacpp_overhead_mib: int = Field(800, ge=0, description="CUDA context, compute buffers.")
    engine: Literal["auto", "vllm", "llama.cpp"] = "auto"
    model_path: str = "/var/lib/rigpivot/models"
    min_host_ram_mib: int = Field(4096, ge=0, description="RAM a rig needs beside the model.")
    slow_link_mbps: float = Field(
        2000.0, description="Links slower than this (x1 risers, Gen1) get a load-time warning."
    )
    disk_read_mbps: dict[str, float] = Field(
        default={"nvme": 2000.0, "ssd": 500.0, "hdd": 150.0, "usb": 20.0, "mmc": 20.0},
        description="Sequential read speed (MB/s) assumed per kind of model disk the probe "
        "reports (docs/sizing.md); a kind not listed (unknown) counts no disk time.",
    )
    slow_load_s: float = Field(
        120.0, description="Model loads slower than this (disk + PCIe) get a warning."
    )
    inplace_os: list[str] = Field(
        default=["debian 11", "debian 12", "ubuntu 20.04", "ubuntu 22.04", "ubuntu 24.04"],
        description="OS releases ('ID VERSION_ID' of /etc/os-release) converted in place: the "
        "driver branches and CUDA 12 the stack installs are built for these. Any other OS "
        "(HiveOS on Ubuntu 18.04, NiceHash OS) is left alone: re-image it first.",
    )
    reflash_free_mib: int = Field(
        2560,
        ge=0,
        description="Free space a reflash needs on the rig's root file system to stage "
        "rigpivot's Debian 12 image beside the mining OS (its 2 GiB root image, kernel and "
        "initramfs, plus room; docs/reflash.md).",
    )
    reflash_min_ram_mib: int = Field(
        1024,
        ge=0,
        description="RAM the reflashed OS boots in (measured: the image reaches sshd under "
        "QEMU with 1 GiB; docs/reflash.md).",
    )
    allow_secure_boot: bool = Field(
        False,
        description="Convert rigs that boot with UEFI Secure Boot on. The driver's DKMS module "
        "only loads when signed by an enrolled key (MOK), which needs someone at the console; "
        "set this only where that key is enrolled.",
    )

    # The model catalog the farm plans with: built-in models plus the farm's own (models.yml
    # beside the farm file); set by `policy_for`.
    _catalog: ModelCatalog | None = PrivateAttr(default=None)

    @property
    def catalog(self) -> ModelCatalog:
        return self._catalog or model_catalog()

    def with_catalog(self, catalog: ModelCatalog | None) -> Policy:
        self._catalog = catalog
        return self

    @field_validator("target_models")
    @classmethod
    def _known_models(cls, v: list[str], info: ValidationInfo) -> list[str]:
        ctx = info.context or {}
        known = (ctx.get("catalog") or model_catalog()).models
        for m in v:
            if m not in known:
                near = difflib.get_close_matches(m, list(known), n=1)
                hint = f" (did you mean {near[0]!r}?)" if near else ""
                raise ValueError(
                    f"model {m!r} is not in the model catalog{hint}; known: {', '.join(known)}"
                )
        if not v:
            raise ValueError("at least one target model is needed")
        return v


def policy_for(host: Host, catalog: ModelCatalog | None = None) -> Policy:
    """The policy a host's inventory variables ask for; bad or unknown variables are named
    with the file and line that set them. `catalog`: the farm's model catalog (built-in
    models plus the farm's own), when the farm has one."""
    fields = Policy.model_fields
    values: dict[str, Any] = {}
    for var, value in host.vars.items():
        if not var.startswith(VAR_PREFIX):
            continue
        name = var.removeprefix(VAR_PREFIX)
        where = host.origin.get(var, "inventory")
        if name not in fields:
            if name in _NON_POLICY:
                continue
            near = difflib.get_close_matches(name, list(fields), n=1)
            hint = f"; did you mean {VAR_PREFIX}{near[0]}?" if near else ""
            raise BadInputError(
                f"{where}: unknown variable {var} for host {host.name}{hint}\n"
                f"  known: {', '.join(VAR_PREFIX + f for f in fields)}"
            )
        values[name] = value
    try:
        return Policy.model_validate(values, context={"catalog": catalog}).with_catalog(catalog)
    except ValidationError as e:
        lines = []
        for err in e.errors():
            var = VAR_PREFIX + str(err["loc"][0]) if err["loc"] else "?"
            msg = err["msg"].removeprefix("Value error, ")
            lines.append(f"{host.origin.get(var, 'inventory')}: {var} for host {host.name}: {msg}")
        raise BadInputError("\n".join(lines) or describe_validation_error(e)) from e


# rigpivot_* variables that are not policy (written by `lab up`, read by roles).
_NON_POLICY = {"known_hosts", "farm_mirror_url"}


def _usable(engine: Engine, vram_mib: int, p: Policy) -> tuple[float, str]:
    """Bytes an engine can fill on a card, and how that figure comes about."""
    if engine == "vllm":
        share = vram_mib * p.gpu_memory_utilization
        usable = share - p.vllm_overhead_mib
        how = (
            f"{vram_mib} MiB × {p.gpu_memory_utilization:.2f} − {p.vllm_overhead_mib} MiB "
            f"(CUDA context, activations, CUDA graphs) = {usable:.0f} MiB"
        )
    else:
        usable = vram_mib - p.llamacpp_overhead_mib
        how = f"{vram_mib} MiB − {p.llamacpp_overhead_mib} MiB (CUDA context, buffers)"
        how += f" = {usable:.0f} MiB"
    return usable * MIB, how


def _fit(
    shape: ModelShape, key: str, quant: str, engine: Engine, vram_mib: int,
    bw_gbs: int | None, link: float | None, disk_mbps: float | None, p: Policy,
) -> ModelFit | str:  # fmt: skip
    """The fit of one model at one quantisation on a card, or why it does not fit."""
    weights = shape.weights_bytes(quant)
    usable, how = _usable(engine, vram_mib, p)
    what = f"{engine} {shape.name} {quant} ({weights / MIB:.0f} MiB)"
    if weights >= usable:
        return f"{what}: the weights alone exceed {how}"
    ctx = shape.max_tokens(usable - weights)
    if ctx < p.min_context:
        return (
            f"{what}: {how} leaves KV cache for {ctx} tokens "
            f"(< {VAR_PREFIX}min_context {p.min_context})"
        )
    kv_min = shape.kv_bytes(p.min_context)
    disk_s = weights / (disk_mbps * 1e6) if disk_mbps else None
    pcie_s = weights / (link * 1e6) if link else None
    load = (disk_s or 0) + (pcie_s or 0) if disk_s or pcie_s else None
    return ModelFit(
        model=key,
        model_name=shape.name,
        quant=quant,
        engine=engine,
        weights_mib=round(weights / MIB),
        kv_mib_per_1k_tokens=round(shape.kv_bytes_per_token() * 1000 / MIB, 1),
        max_context=ctx,
        need_mib=round((weights + kv_min) / MIB),
        usable_mib=round(usable / MIB),
        decode_tokens_s=round(bw_gbs * 1e9 / (weights + kv_min), 1) if bw_gbs else None,
        load_seconds=round(load, 1) if load is not None else None,
        disk_seconds=round(disk_s, 1) if disk_s is not None else None,
        pcie_seconds=round(pcie_s, 1) if pcie_s is not None else None,
    )


def _candidates(engine: Engine, p: Policy) -> list[tuple[str, ModelShape, list[str]]]:
    """Target models an engine can serve, largest first, each with its quantisations
    (highest precision first)."""
    cat = p.catalog
    out = []
    for key in p.target_models:
        shape = cat.models[key]
        quants = shape.quants(engine, cat.quantizations.get(engine, []))
        if quants:
            out.append((key, shape, quants))
    out.sort(key=lambda c: -c[1].params_b)
    return out


def best_fit(
    engine: Engine, vram_mib: int, bw_gbs: int | None, link: float | None, p: Policy,
    disk_mbps: float | None = None,
) -> ModelFit | None:  # fmt: skip
    """The largest target model that fits, at the highest-precision quantisation that fits."""
    for key, shape, quants in _candidates(engine, p):
        for quant in quants:
            fit = _fit(shape, key, quant, engine, vram_mib, bw_gbs, link, disk_mbps, p)
            if isinstance(fit, ModelFit):
                return fit
    return None


def _why_not(
    engine: Engine, size_b: float, vram_mib: int, p: Policy, same_size: bool
) -> str | None:
    """Why `engine` cannot serve the smallest target model at least `size_b` billion
    parameters big (bigger than that when not `same_size`), at its most compact quantisation."""
    for key, shape, quants in reversed(_candidates(engine, p)):
        if shape.params_b > size_b or (same_size and shape.params_b == size_b):
            fit = _fit(shape, key, quants[-1], engine, vram_mib, None, None, None, p)
            return fit if isinstance(fit, str) else None
    return None


def judge_card(g: GpuFacts, p: Policy, disk_mbps: float | None = None) -> CardVerdict:
    known = identify(g.name, g.vram_total_mib)
    reasons: list[str] = []
    warnings: list[str] = []
    notes: list[str] = []
    engines: list[Engine] = []
    cc = g.compute_cap or (known.cc_or_gfx if known and known.vendor == "nvidia" else None)
    vram = g.vram_total_mib or (
        known.vram_gib[0] * 1024 if known and g.vendor == "nvidia" else None
    )
    link = link_mbps(g.pcie_gen_current, g.pcie_width_current)
    link_s = (
        f"Gen{g.pcie_gen_current} x{g.pcie_width_current}"
        if g.pcie_gen_current and g.pcie_width_current
        else "unknown"
    )
    best: ModelFit | None = None
    if g.vendor != "nvidia":
        what = f"{known.arch} {known.cc_or_gfx}" if known else g.name
        rocm = f"; ROCm: {known.rocm_status}" if known else ""
        reasons.append(f"no supported stack: {what} is not an NVIDIA card{rocm}")
    elif g.source == "lspci":
        reasons.append("the NVIDIA driver does not answer for this card (seen by lspci only)")
    if g.vendor == "nvidia" and cc is not None:
        ccf = float(cc)
        if ccf >= p.vllm_min_cc:
            engines.append("vllm")
        if ccf >= p.llamacpp_min_cc:
            engines.append("llama.cpp")
        if ccf < p.vllm_min_cc and ccf >= p.llamacpp_min_cc:
            warnings.append(f"compute capability {cc} < {p.vllm_min_cc}: llama.cpp only, no vLLM")
        if not engines:
            reasons.append(f"compute capability {cc} is below every engine's floor")
    elif g.vendor == "nvidia":
        reasons.append("compute capability unknown (card not in the catalog, driver too old)")
    if p.engine != "auto":
        if p.engine not in engines and engines:
            reasons.append(f"policy asks for {p.engine}, which this card cannot run")
        engines = [e for e in engines if e == p.engine]
    if g.vendor == "nvidia" and not reasons and vram:
        bw = known.mem_bw_gbs if known else None
        fits = [f for e in engines if (f := best_fit(e, vram, bw, link, p, disk_mbps))]
        # Prefer the bigger model; between equals, vLLM (batching) over llama.cpp.
        models = p.catalog.models
        fits.sort(key=lambda f: (-models[f.model].params_b, f.engine != "vllm"))
        best = fits[0] if fits else None
        size = models[best.model].params_b if best else 0.0
        for e in engines:
            # Why this engine does not serve a model as big as the chosen one (or any model).
            if best is None or e != best.engine:
                why = _why_not(e, size, vram, p, same_size=best is not None)
                if why:
                    notes.append(why)
        if best is None:
            smallest = min((models[m] for m in p.target_models), key=lambda s: s.params_b)
            reasons.append(
                f"too little VRAM: {vram / 1024:.0f} GiB holds none of the target models at "
                f"{p.min_context} tokens (smallest: {smallest.name})"
            )
    if g.vendor == "nvidia" and "CMP" in g.name.upper():
        warnings.append(
            "CMP card: PCIe 1.1 x4 link and throttled FP by design; measure before selling it"
        )
    if link is not None and link < p.slow_link_mbps:
        eta = f", model load ≈ {best.load_seconds:.0f} s" if best and best.load_seconds else ""
        warnings.append(f"{_SLOW} {link_s} ({link:.0f} MB/s){eta}; never split a model")
    return CardVerdict(
        index=g.index, bus_id=g.bus_id, name=g.name, vendor=g.vendor, vram_mib=vram,
        compute_cap=cc, link=link_s, link_mbps=link, fit=not reasons and best is not None,
        engines=engines, reasons=reasons, warnings=warnings, best=best, notes=notes,
    )  # fmt: skip


def disk_speed(facts: RigFacts, p: Policy) -> tuple[float | None, str]:
    """The read speed assumed for the rig's model disk (MB/s), and the disk as words."""
    d = facts.host.model_disk
    if d is None or d.kind not in p.disk_read_mbps:
        return None, "unknown disk"
    names = {"nvme": "NVMe SSD", "ssd": "SATA SSD", "hdd": "hard disk", "usb": "USB drive",
             "mmc": "SD/eMMC card"}  # fmt: skip
    return p.disk_read_mbps[d.kind], f"{names.get(d.kind, d.kind)} {d.device or ''}".strip()


def os_reasons(facts: RigFacts, p: Policy) -> list[str]:
    """Why the rig's OS or firmware stops an in-place conversion (empty when nothing does)."""
    h = facts.host
    reasons = []
    release = f"{h.os_id or '?'} {h.os_version or '?'}".lower()
    if release not in {r.lower() for r in p.inplace_os}:
        name = h.os_pretty or release
        short = []
        if h.disk_free_mib < p.reflash_free_mib:
            short.append(f"{p.reflash_free_mib} MiB free on its root (it has {h.disk_free_mib})")
        if h.ram_mib < p.reflash_min_ram_mib:
            short.append(f"{p.reflash_min_ram_mib} MiB of RAM (it has {h.ram_mib})")
        room = (
            "staging rigpivot's Debian 12 image beside its OS needs " + " and ".join(short)
            if short
            else "it has the room to stage rigpivot's Debian 12 image beside its OS"
        )
        reasons.append(
            f"OS {name} ({release}) is not converted in place (supported: "
            f"{', '.join(p.inplace_os)}); re-image the rig onto one of them first "
            f"({room}; docs/reflash.md)"
        )
    if h.secure_boot == "enabled" and not p.allow_secure_boot:
        reasons.append(
            "UEFI Secure Boot is on: the NVIDIA kernel module would not load unsigned; turn it "
            "off in the firmware, or enroll a signing key (MOK) and set "
            f"{VAR_PREFIX}allow_secure_boot=true"
        )
    return reasons


def judge_rig(host: Host, facts: RigFacts, p: Policy) -> RigVerdict:
    disk_mbps, disk_name = disk_speed(facts, p)
    cards = [judge_card(g, p, disk_mbps) for g in facts.gpus]
    fit = [c for c in cards if c.fit and c.best]
    reasons: list[str] = os_reasons(facts, p)
    # Link warnings are restated once for the rig, with the slowest card's load time.
    warnings = sorted({w for c in cards for w in c.warnings if not w.startswith(_SLOW)})
    plans = [CardPlan(gpu=c.index, bus_id=c.bus_id, card=c.name, fit=c.best) for c in fit if c.best]
    engine: Engine | None = None
    model: ModelFit | None = None
    if not cards:
        reasons.append("no GPU found")
    elif not plans:
        reasons.append(
            "no card is fit: " + "; ".join(sorted({r for c in cards for r in c.reasons}))
        )
    else:
        groups = plan_groups(plans)
        model = groups[0][1]
        engine = model.engine
        slowest = min(fit, key=lambda c: c.link_mbps or float("inf"))
        if slowest.best and slowest.link_mbps and slowest.link_mbps < p.slow_link_mbps:
            warnings.append(
                f"{_SLOW} {slowest.link} ({slowest.link_mbps:.0f} MB/s), model load ≈ "
                f"{slowest.best.load_seconds:.0f} s on that card; never split a model"
            )
        slow = max((pl.fit for pl in plans), key=lambda f: f.load_seconds or 0)
        if disk_mbps and slow.load_seconds and slow.load_seconds > p.slow_load_s:
            warnings.append(
                f"slow model load: {slow.label} ≈ {slow.load_seconds:.0f} s "
                f"({slow.disk_seconds:.0f} s reading it from the {disk_name} at ~{disk_mbps:.0f} "
                f"MB/s, {slow.pcie_seconds or 0:.0f} s over PCIe)"
            )
        # Every distinct model file is stored once; loading goes one instance at a time.
        files = {(f.model, f.quant): f.weights_mib for _, f in groups}
        disk_need = int(sum(files.values()) * 1.1 + 1024)
        if facts.host.disk_free_mib < disk_need:
            what = ", ".join(f"{f.label}" for _, f in groups)
            reasons.append(
                f"disk: {facts.host.disk_free_mib} MiB free at {facts.host.model_path}, "
                f"{what} need {disk_need} MiB"
            )
        biggest = max((f for _, f in groups), key=lambda f: f.weights_mib)
        if facts.host.ram_mib < biggest.weights_mib + p.min_host_ram_mib:
            reasons.append(
                f"RAM: {facts.host.ram_mib} MiB, loading {biggest.label} "
                f"needs {biggest.weights_mib + p.min_host_ram_mib} MiB"
            )
    ok = not reasons and model is not None
    return RigVerdict(
        host=host.name, address=f"{host.address}:{host.port}", status="probed",
        verdict="fit" if ok else "unfit", engine=engine if ok else None,
        model=model if ok else None, instances=len(plans) if ok else 0,
        engines=sorted({pl.fit.engine for pl in plans}) if ok else [],
        plans=plans if ok else [], cards=cards,
        reasons=reasons, warnings=warnings, platform=facts.platform, mining=facts.mining,
        driver=facts.nvidia_driver, facts=facts,
    )  # fmt: skip
