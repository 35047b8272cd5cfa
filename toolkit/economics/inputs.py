"""What advise knows about each rig and card: preflight's verdict and plan, plus measured figures
(hashrate by algorithm, mining and inference watts).

The probe measures them (facts_version 3): each card's power draw (NVML, else nvidia-smi), each
miner's hashrate per card from its local API, and, for a converted rig, the figures its
conversion's snapshot recorded before the drain. A JSON file (`advise --measurements FILE`)
overrides them figure by figure (a wattmeter at the wall, a benchmark's tokens/s):

    {"rigs": {"rig01": {"cards": [
        {"bus_id": "0000:01:00.0", "hashrate": {"etchash": 47.1e6},
         "mining_watts": 118, "inference_watts": 142, "decode_tokens_s": 38.0}]}}}

Cards are matched by `bus_id`, else by `index`. Hashrates are H/s, keyed by algorithm or coin
tag as the miner reports them. A figure nobody measured is left empty and named in the output;
the only stand-ins are labelled upper bounds read from the card itself (its power limit).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from toolkit.errors import BadInputError, describe_validation_error
from toolkit.models import CardVerdict, FleetReport, GpuFacts, MinerStats, RigVerdict

Side = Literal["mining", "ai"]

# The power_profile role's default cap (roles/power_profile/defaults/main.yml): a converted
# card draws at most this share of its default power limit.
POWER_PROFILE_PERCENT = 80.0


class CardMeasurement(BaseModel):
    model_config = ConfigDict(extra="forbid")

    bus_id: str | None = None
    index: int | None = None
    hashrate: dict[str, float] = {}
    mining_watts: float | None = Field(default=None, gt=0)
    inference_watts: float | None = Field(default=None, gt=0)
    decode_tokens_s: float | None = Field(default=None, gt=0)

    @model_validator(mode="after")
    def _named(self) -> CardMeasurement:
        if self.bus_id is None and self.index is None:
            raise ValueError("a card needs bus_id or index")
        if any(v < 0 for v in self.hashrate.values()):
            raise ValueError("a hashrate cannot be negative")
        return self


class RigMeasurement(BaseModel):
    model_config = ConfigDict(extra="forbid")

    cards: list[CardMeasurement] = []


class Measurements(BaseModel):
    model_config = ConfigDict(extra="forbid")

    rigs: dict[str, RigMeasurement] = {}


def load_measurements(path: Path) -> Measurements:
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise BadInputError(f"{path} does not exist") from None
    except json.JSONDecodeError as e:
        raise BadInputError(f"{path}:{e.lineno}: not JSON: {e.msg}") from e
    try:
        return Measurements.model_validate(data)
    except ValidationError as e:
        raise BadInputError(f"{path}: invalid measurements\n{describe_validation_error(e)}") from e


class Figure(BaseModel):
    """A number and where it came from (`measured`, or the labelled bound that stands in)."""

    value: float
    source: str


class CardInput(BaseModel):
    index: int | None
    bus_id: str
    name: str
    fit: bool
    hashrate: dict[str, float]  # H/s by algorithm or coin tag; empty: not measured
    hashrate_source: str | None = None  # where it was read (the miner's API, the snapshot)
    hashrate_missing: str | None = None  # why there is none, when the probe can tell
    mining_watts: Figure | None
    inference_watts: Figure | None
    model: str | None  # the model the card would serve (preflight's plan)
    decode_tokens_s: Figure | None


class RigEconomicsInput(BaseModel):
    host: str
    reachable: bool
    side: Side | None  # None: mid-pivot, quarantined, or unreachable
    state: str | None
    fit: bool
    unfit_reasons: list[str]
    cards: list[CardInput]
    notes: list[str] = []


def side_of(rig: RigVerdict) -> tuple[Side | None, str | None]:
    """Which side a rig is on, from its pivot record (no record: a mining rig)."""
    if rig.facts is None:
        return None, None
    pv = rig.facts.pivot
    state = pv.state if pv and pv.state else "mining"
    if state == "mining":
        return "mining", state
    if state == "ai":
        return "ai", state
    return None, state


def _gpu(rig: RigVerdict, bus_id: str) -> GpuFacts | None:
    gpus = rig.facts.gpus if rig.facts else []
    return next((g for g in gpus if g.bus_id == bus_id), None)


def _inference_cap(g: GpuFacts | None, percent: float) -> Figure | None:
    if g is None or not g.power_default_w:
        return None
    cap = g.power_default_w * percent / 100
    if g.power_min_w:
        cap = max(cap, g.power_min_w)
    if g.power_max_w:
        cap = min(cap, g.power_max_w)
    return Figure(
        value=float(int(cap)),
        source=f"power profile cap, {percent:g} % of {g.power_default_w:g} W (not measured)",
    )


def _card_rates(
    stats: list[MinerStats], card: CardVerdict
) -> tuple[dict[str, float], list[str], list[str]]:
    """The card's hashrate by algorithm from its miners' APIs (matched by bus id, else by
    NVIDIA index for the cards NVML numbers), the APIs it came from, and why not."""
    rates: dict[str, float] = {}
    apis: list[str] = []
    why: list[str] = []
    for s in stats:
        if s.error and not s.gpus:
            why.append(f"{s.miner}: {s.error}")
            continue
        mine = [
            g
            for g in s.gpus
            if g.bus_id == card.bus_id
            or (g.bus_id is None and card.index is not None and g.index == card.index)
        ]
        if not mine:
            continue
        hs = sum(g.hashrate_hs or 0 for g in mine)
        if not s.algorithm:
            why.append(f"{s.miner}'s API names no algorithm")
        elif hs > 0:
            rates[s.algorithm] = rates.get(s.algorithm, 0) + hs
            apis.append(f"{s.miner} API")
    if not rates and not why and stats:
        why.append("no miner's API lists this card")
    return rates, apis, why


def _snapshot_label(taken: str | None) -> str:
    return f"measured before conversion (snapshot{' ' + taken if taken else ''})"


def build_inputs(
    fleet: FleetReport,
    measurements: Measurements | None = None,
    power_percent: dict[str, float] | None = None,
) -> tuple[list[RigEconomicsInput], list[str]]:
    """Each rig's inputs, and notes on measurements that matched no rig or card."""
    measurements = measurements or Measurements()
    notes: list[str] = []
    known = {r.host for r in fleet.rigs}
    for host in sorted(set(measurements.rigs) - known):
        notes.append(f"measurements for {host}: not a rig of this farm file (ignored)")
    rigs = []
    for rig in fleet.rigs:
        side, state = side_of(rig)
        pct = (power_percent or {}).get(rig.host, POWER_PROFILE_PERCENT)
        measured = measurements.rigs.get(rig.host, RigMeasurement())
        used: set[int] = set()
        cards: list[CardInput] = []
        for c in rig.cards:
            m_i, m = next(
                (
                    (i, m)
                    for i, m in enumerate(measured.cards)
                    if m.bus_id == c.bus_id or (m.bus_id is None and m.index == c.index)
                ),
                (None, None),
            )
            if m_i is not None:
                used.add(m_i)
            g = _gpu(rig, c.bus_id)
            facts = rig.facts
            pv = facts.pivot if facts else None
            # Hashrate: the measurements file, else the miners' APIs now (a mining rig), else
            # what the snapshot recorded before the conversion drained the miners (an AI rig).
            rates: dict[str, float] = {}
            rate_source: str | None = None
            rate_missing: str | None = None
            snap = pv.mining_measured if pv else None
            if m and m.hashrate:
                rates, rate_source = dict(m.hashrate), "measurements file"
            elif facts is not None and side == "mining":
                rates, apis, why = _card_rates(facts.miner_stats, c)
                if rates:
                    rate_source = ", ".join(dict.fromkeys(apis))
                elif not facts.miner_stats:
                    rate_missing = "no miner running"
                else:
                    rate_missing = "; ".join(why)
            elif side == "ai":
                if snap is None:
                    rate_missing = "the conversion's snapshot recorded no mining figures"
                else:
                    rates, _, why = _card_rates(snap.miner_stats, c)
                    if rates:
                        rate_source = _snapshot_label(snap.taken)
                    else:
                        rate_missing = "snapshot: " + ("; ".join(why) or "no miner ran")
            hashing = bool(rates)
            mining_w: Figure | None = None
            if m and m.mining_watts:
                mining_w = Figure(value=m.mining_watts, source="measurements file")
            elif side == "mining" and hashing and g and g.power_draw_w:
                # The card is hashing now: what it draws is what mining costs.
                mining_w = Figure(value=g.power_draw_w, source=f"measured ({g.source})")
            elif side == "ai" and hashing and snap and snap.power_draw_w.get(c.bus_id):
                mining_w = Figure(
                    value=snap.power_draw_w[c.bus_id], source=_snapshot_label(snap.taken)
                )
            elif side == "mining" and g and g.power_limit_w:
                # On a mining rig the limit in force is the miner's: the card draws no more.
                mining_w = Figure(value=g.power_limit_w, source="power limit (not measured)")
            serving = pv is not None and any(i.gpu == c.index for i in pv.instances)
            infer_w: Figure | None = None
            if m and m.inference_watts:
                infer_w = Figure(value=m.inference_watts, source="measurements file")
            elif side == "ai" and serving and g and g.power_draw_w:
                infer_w = Figure(value=g.power_draw_w, source=f"measured ({g.source}), serving")
            elif side == "ai" and g and g.power_limit_w:
                infer_w = Figure(value=g.power_limit_w, source="power limit (not measured)")
            else:
                infer_w = _inference_cap(g, pct)
            decode: Figure | None = None
            if m and m.decode_tokens_s:
                decode = Figure(value=m.decode_tokens_s, source="measurements file")
            elif c.best and c.best.decode_tokens_s:
                decode = Figure(
                    value=c.best.decode_tokens_s, source="preflight's bound (bandwidth / bytes)"
                )
            card = CardInput(
                index=c.index, bus_id=c.bus_id, name=c.name, fit=c.fit,
                hashrate=rates, hashrate_source=rate_source, hashrate_missing=rate_missing,
                mining_watts=mining_w,
                inference_watts=infer_w,
                model=f"{c.best.model_name} {c.best.quant}" if c.best else None,
                decode_tokens_s=decode,
            )  # fmt: skip
            cards.append(card)
        rig_notes = [
            f"measurement for card {m.bus_id or m.index}: no such card on the rig (ignored)"
            for i, m in enumerate(measured.cards)
            if i not in used
        ]
        one = RigEconomicsInput(
            host=rig.host, reachable=rig.status == "probed", side=side, state=state,
            fit=rig.verdict == "fit", unfit_reasons=rig.reasons, cards=cards, notes=rig_notes,
        )  # fmt: skip
        rigs.append(one)
    return rigs, notes
