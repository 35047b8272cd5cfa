"""Fitness policy: per card and per rig, what can serve AI, with which engine and model, why not.

Pure functions over the probe's facts. Every knob is a `Policy` field, set per group or host
in the inventory as `rigpivot_<field>`.

Sizing (shared/reference/README.md):
  need = weights (params x bits/8) + KV cache (2 x layers x kv_heads x head_dim x 2 B x tokens)
         + engine overhead;  usable = VRAM x gpu_memory_utilization (vLLM) or VRAM (llama.cpp).
  decode tokens/s <= memory bandwidth / bytes read per token (weights + KV at that context).
  load time ~= model size / PCIe link bandwidth.
"""

from __future__ import annotations

import difflib
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from toolkit.errors import BadInputError, describe_validation_error
from toolkit.hardware import ModelShape, identify, link_mbps, model_catalog
from toolkit.inventory import Host
from toolkit.models import CardVerdict, Engine, GpuFacts, ModelFit, RigFacts, RigVerdict

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
    gpu_memory_utilization: float = Field(0.90, gt=0.3, le=0.98)
    vllm_overhead_mib: int = Field(1024, ge=0, description="CUDA context, activations, graphs.")
    llamacpp_overhead_mib: int = Field(800, ge=0, description="CUDA context, compute buffers.")
    engine: Literal["auto", "vllm", "llama.cpp"] = "auto"
    model_path: str = "/var/lib/rigpivot/models"
    min_host_ram_mib: int = Field(4096, ge=0, description="RAM a rig needs beside the model.")
    slow_link_mbps: float = Field(
        2000.0, description="Links slower than this (x1 risers, Gen1) get a load-time warning."
    )
    inplace_os: list[str] = Field(
        default=["debian 11", "debian 12", "ubuntu 20.04", "ubuntu 22.04", "ubuntu 24.04"],
        description="OS releases ('ID VERSION_ID' of /etc/os-release) converted in place: the "
        "driver branches and CUDA 12 the stack installs are built for these. Any other OS "
        "(HiveOS on Ubuntu 18.04, NiceHash OS) is left alone: re-image it first.",
    )
    allow_secure_boot: bool = Field(
        False,
        description="Convert rigs that boot with UEFI Secure Boot on. The driver's DKMS module "
        "only loads when signed by an enrolled key (MOK), which needs someone at the console; "
        "set this only where that key is enrolled.",
    )

    @field_validator("target_models")
    @classmethod
    def _known_models(cls, v: list[str]) -> list[str]:
        known = model_catalog().models
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


def policy_for(host: Host) -> Policy:
    """The policy a host's inventory variables ask for; bad or unknown variables are named
    with the file and line that set them."""
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
        return Policy.model_validate(values)
    except ValidationError as e:
        lines = []
        for err in e.errors():
            var = VAR_PREFIX + str(err["loc"][0]) if err["loc"] else "?"
            msg = err["msg"].removeprefix("Value error, ")
            lines.append(f"{host.origin.get(var, 'inventory')}: {var} for host {host.name}: {msg}")
        raise BadInputError("\n".join(lines) or describe_validation_error(e)) from e


# rigpivot_* variables that are not policy (written by `lab up`, read by roles).
_NON_POLICY = {"known_hosts", "farm_mirror_url"}


def _fits(
    shape: ModelShape, key: str, quant: str, bits: float, engine: Engine, vram_mib: int,
    bw_gbs: int | None, link: float | None, p: Policy,
) -> ModelFit | None:  # fmt: skip
    weights = shape.params_b * 1e9 * bits / 8
    kv_tok = shape.kv_bytes_per_token()
    if engine == "vllm":
        usable = vram_mib * MIB * p.gpu_memory_utilization - p.vllm_overhead_mib * MIB
    else:
        usable = vram_mib * MIB - p.llamacpp_overhead_mib * MIB
    need = weights + kv_tok * p.min_context
    if need > usable:
        return None
    max_ctx = min(shape.max_context, int((usable - weights) // kv_tok))
    per_token = weights + kv_tok * p.min_context
    return ModelFit(
        model=key,
        model_name=shape.name,
        quant=quant,
        engine=engine,
        weights_mib=round(weights / MIB),
        kv_mib_per_1k_tokens=round(kv_tok * 1000 / MIB, 1),
        max_context=max_ctx,
        need_mib=round(need / MIB),
        usable_mib=round(usable / MIB),
        decode_tokens_s=round(bw_gbs * 1e9 / per_token, 1) if bw_gbs else None,
        load_seconds=round(weights / (link * 1e6), 1) if link else None,
    )


def best_fit(
    engine: Engine, vram_mib: int, bw_gbs: int | None, link: float | None, p: Policy
) -> ModelFit | None:
    """The largest target model that fits, at the highest-precision quantisation that fits."""
    cat = model_catalog()
    shapes = sorted(((k, cat.models[k]) for k in p.target_models), key=lambda kv: -kv[1].params_b)
    quants = sorted(cat.quantizations[engine].items(), key=lambda kv: -kv[1])
    for key, shape in shapes:
        for quant, bits in quants:
            fit = _fits(shape, key, quant, bits, engine, vram_mib, bw_gbs, link, p)
            if fit:
                return fit
    return None


def judge_card(g: GpuFacts, p: Policy) -> CardVerdict:
    known = identify(g.name, g.vram_total_mib)
    reasons: list[str] = []
    warnings: list[str] = []
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
        fits = [f for e in engines if (f := best_fit(e, vram, bw, link, p))]
        # Prefer the bigger model; between equals, vLLM (batching) over llama.cpp.
        fits.sort(key=lambda f: (-model_catalog().models[f.model].params_b, f.engine != "vllm"))
        best = fits[0] if fits else None
        if best is None:
            smallest = min(
                (model_catalog().models[m] for m in p.target_models), key=lambda s: s.params_b
            )
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
        engines=engines, reasons=reasons, warnings=warnings, best=best,
    )  # fmt: skip


def os_reasons(facts: RigFacts, p: Policy) -> list[str]:
    """Why the rig's OS or firmware stops an in-place conversion (empty when nothing does)."""
    h = facts.host
    reasons = []
    release = f"{h.os_id or '?'} {h.os_version or '?'}".lower()
    if release not in {r.lower() for r in p.inplace_os}:
        name = h.os_pretty or release
        reasons.append(
            f"OS {name} ({release}) is not converted in place (supported: "
            f"{', '.join(p.inplace_os)}); re-image the rig onto one of them first"
        )
    if h.secure_boot == "enabled" and not p.allow_secure_boot:
        reasons.append(
            "UEFI Secure Boot is on: the NVIDIA kernel module would not load unsigned; turn it "
            "off in the firmware, or enroll a signing key (MOK) and set "
            f"{VAR_PREFIX}allow_secure_boot=true"
        )
    return reasons


def judge_rig(host: Host, facts: RigFacts, p: Policy) -> RigVerdict:
    cards = [judge_card(g, p) for g in facts.gpus]
    fit = [c for c in cards if c.fit]
    reasons: list[str] = os_reasons(facts, p)
    # Link warnings are restated once for the rig, with the rig's model.
    warnings = sorted({w for c in cards for w in c.warnings if not w.startswith(_SLOW)})
    engine: Engine | None = None
    model: ModelFit | None = None
    if not cards:
        reasons.append("no GPU found")
    elif not fit:
        reasons.append(
            "no card is fit: " + "; ".join(sorted({r for c in cards for r in c.reasons}))
        )
    else:
        # One engine per rig: llama.cpp when any fit card cannot run vLLM, so every fit card serves.
        engine = "vllm" if all("vllm" in c.engines for c in fit) else "llama.cpp"
        smallest = min(fit, key=lambda c: c.vram_mib or 0)
        bw_known = identify(smallest.name, smallest.vram_mib)
        slowest = min(fit, key=lambda c: c.link_mbps or float("inf"))
        model = best_fit(
            engine, smallest.vram_mib or 0, bw_known.mem_bw_gbs if bw_known else None,
            slowest.link_mbps, p,
        )  # fmt: skip
        if model and slowest.link_mbps and slowest.link_mbps < p.slow_link_mbps:
            warnings.append(
                f"{_SLOW} {slowest.link} ({slowest.link_mbps:.0f} MB/s), model load ≈ "
                f"{model.load_seconds:.0f} s per card; never split a model"
            )
        if model is None:
            reasons.append(f"no target model fits every fit card with {engine}")
        else:
            weights = model.weights_mib
            if facts.host.disk_free_mib < weights * 1.1 + 1024:
                reasons.append(
                    f"disk: {facts.host.disk_free_mib} MiB free at {facts.host.model_path}, "
                    f"{model.model_name} {model.quant} needs {int(weights * 1.1 + 1024)} MiB"
                )
            if facts.host.ram_mib < weights + p.min_host_ram_mib:
                reasons.append(
                    f"RAM: {facts.host.ram_mib} MiB, loading {model.model_name} {model.quant} "
                    f"needs {weights + p.min_host_ram_mib} MiB"
                )
    ok = not reasons and model is not None
    return RigVerdict(
        host=host.name, address=f"{host.address}:{host.port}", status="probed",
        verdict="fit" if ok else "unfit", engine=engine if ok else None,
        model=model if ok else None, instances=len(fit) if ok else 0, cards=cards,
        reasons=reasons, warnings=warnings, platform=facts.platform, mining=facts.mining,
        driver=facts.nvidia_driver, facts=facts,
    )  # fmt: skip
