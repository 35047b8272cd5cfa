"""Per card and per rig: what mining and serving AI earn a day, net of power; and the decision.

All money is per day, in prices.yml's currency. Formulas (docs/economics.md):

  mining revenue  = hashrate x block_reward x 86400 / block_time / nethash x exchange_rate
                    x btc_price x (1 - pool_fee)
  AI revenue      = per_hour x 24 x utilisation x (1 - platform_fee)
               or = per_million_tokens x decode tokens/s x 86400 / 1e6 x utilisation
                    x (1 - platform_fee)
  power cost      = watts / 1000 x 24 x the day's mean price per kWh
  switching cost  = downtime hours x the current side's profit per hour (if positive) + extra

A rig switches only when the other side's profit leads the current one by the margin, the rig
has stayed its minimum time, and the lead over the minimum stay repays the switching cost.
"""

from __future__ import annotations

import datetime
import statistics
from typing import Literal

from pydantic import BaseModel

from toolkit.economics.history import (
    AdviseHistory,
    Downtime,
    Observation,
    RigRecord,
    last_switch,
    measured_downtime,
)
from toolkit.economics.inputs import CardInput, RigEconomicsInput, Side
from toolkit.economics.prices import DecisionSettings, Prices
from toolkit.economics.whattomine import WtmFile
from toolkit.errors import BadInputError
from toolkit.models import RunReport

Decision = Literal["convert", "keep-mining", "switch-back", "stay", "undecided"]
HOURS_PER_DAY = 24


def _kwh_day(watts: float) -> float:
    return watts / 1000 * HOURS_PER_DAY


# -- outliers --------------------------------------------------------------------------------


class PriceScreen:
    """Outlier screening for the run's price series, one observation per series per run.

    A value more than `outlier_factor` times the median of the series' last `outlier_window`
    observations (or less than the median over that factor) is rejected and the median used.
    Every value is recorded, rejected or not, so a lasting move becomes the median after about
    half a window of runs instead of being rejected for ever."""

    def __init__(
        self, history: AdviseHistory, settings: DecisionSettings, now: datetime.datetime
    ) -> None:
        self.history, self.settings, self.now = history, settings, now
        self.seen: dict[str, float] = {}
        self.notes: list[str] = []

    def __call__(self, key: str, value: float) -> float:
        if key in self.seen:
            return self.seen[key]
        s = self.settings
        series = self.history.prices.setdefault(key, [])
        recent = [o.value for o in series[-s.outlier_window :]]
        used, rejected = value, False
        if len(recent) >= s.outlier_min_samples:
            med = statistics.median(recent)
            if med > 0 and (value > med * s.outlier_factor or value < med / s.outlier_factor):
                used, rejected = med, True
                self.notes.append(
                    f"{key}: {value:.6g} rejected as an outlier ({value / med:.2g}x the median "
                    f"{med:.6g} of the last {len(recent)} runs, limit {s.outlier_factor:g}x); "
                    "the median is used"
                )
        series.append(Observation(at=self.now, value=value, rejected=rejected))
        del series[: -2 * s.outlier_window]
        self.seen[key] = used
        return used

    def note(self, text: str) -> None:
        """A note about the prices themselves, said once per run rather than once per card."""
        if text not in self.notes:
            self.notes.append(text)


# -- figures ---------------------------------------------------------------------------------


class CardEconomics(BaseModel):
    index: int | None
    bus_id: str
    name: str
    fit: bool
    coin: str | None = None
    algorithm: str | None = None
    hashrate_hs: float | None = None
    hashrate_source: str | None = None
    mining_revenue: float | None = None
    mining_watts: float | None = None
    mining_watts_source: str | None = None
    mining_profit: float | None = None
    model: str | None = None
    decode_tokens_s: float | None = None
    ai_basis: str | None = None
    ai_revenue: float | None = None
    inference_watts: float | None = None
    inference_watts_source: str | None = None
    ai_profit: float | None = None
    missing: list[str] = []


def mining_figures(
    card: CardInput,
    coins: WtmFile,
    prices: Prices,
    btc_price: float,
    screen: PriceScreen,
    power_kwh: float,
) -> CardEconomics:
    out = CardEconomics(index=card.index, bus_id=card.bus_id, name=card.name, fit=card.fit)
    if card.mining_watts:
        out.mining_watts = card.mining_watts.value
        out.mining_watts_source = card.mining_watts.source
    out.hashrate_source = card.hashrate_source
    if not card.hashrate:
        out.missing.append(f"hashrate (not measured: {card.hashrate_missing})"
                           if card.hashrate_missing else "hashrate (not measured)")  # fmt: skip
        return out
    best: tuple[float, str, str, float] | None = None
    for key, hs in card.hashrate.items():
        matches = coins.for_key(key, prices.mining.algorithm_aliases)
        if not matches:
            out.missing.append(f"no coin for {key!r} in the WhatToMine source")
        for name, c in matches:
            if c.lagging or c.missing():
                why = "lagging" if c.lagging else "no " + ", ".join(c.missing())
                screen.note(f"coin {name} ({c.tag}): skipped, {why}")
                continue
            per_hs = screen(f"coin:{c.tag}", c.value_per_hs_day(btc_price))
            revenue = hs * per_hs * (1 - prices.mining.pool_fee)
            if best is None or revenue > best[0]:
                best = (revenue, c.tag, c.algorithm, hs)
    if best is None:
        return out
    out.mining_revenue, out.coin, out.algorithm, out.hashrate_hs = best
    if out.mining_watts is None:
        out.missing.append("mining watts (not measured)")
    else:
        out.mining_profit = out.mining_revenue - _kwh_day(out.mining_watts) * power_kwh
    return out


def ai_figures(
    card: CardInput,
    out: CardEconomics,
    prices: Prices,
    screen: PriceScreen,
    power_kwh: float,
) -> None:
    ai = prices.ai
    out.model = card.model
    if card.inference_watts:
        out.inference_watts = card.inference_watts.value
        out.inference_watts_source = card.inference_watts.source
    if not card.fit:
        return
    rental = ai.rental_for(card.name)
    if rental is None:
        out.missing.append(f"no rental price matches {card.name!r} in ai.rental")
        return
    share = ai.utilisation * (1 - ai.platform_fee)
    options: list[tuple[float, str]] = []
    if rental.per_hour is not None and ai.basis in ("best", "hour"):
        per_hour = screen(f"rental:{rental.gpu}:hour", rental.per_hour)
        options.append((per_hour * HOURS_PER_DAY * share, f"{per_hour:g}/h"))
    if rental.per_million_tokens is not None and ai.basis in ("best", "tokens"):
        if card.decode_tokens_s is None:
            out.missing.append("decode tokens/s (no estimate or measurement)")
        else:
            out.decode_tokens_s = card.decode_tokens_s.value
            per_m = screen(f"rental:{rental.gpu}:tokens", rental.per_million_tokens)
            tokens_day = card.decode_tokens_s.value * 86_400 / 1e6
            options.append((per_m * tokens_day * share, f"{per_m:g}/M tokens"))
    if not options:
        out.missing.append(f"ai.basis is {ai.basis} but {rental.gpu} has no such price")
        return
    out.ai_revenue, out.ai_basis = max(options)
    if out.inference_watts is None:
        out.missing.append("inference watts (not measured; no power limit known)")
    else:
        out.ai_profit = out.ai_revenue - _kwh_day(out.inference_watts) * power_kwh


# -- the decision ----------------------------------------------------------------------------


class Verdict(BaseModel):
    decision: Decision
    reason: str
    lead: float | None = None  # (other - current) / |current|
    switch_cost: float | None = None


def decide(
    side: Side | None,
    mining: float | None,
    ai: float | None,
    hours_on_side: float | None,
    switch_cost: float,
    settings: DecisionSettings,
    fit: bool = True,
    currency: str = "",
) -> Verdict:
    """Convert, keep mining, switch back or stay: the hysteresis of profit-switching miners.

    `mining` and `ai` are profits per day; `hours_on_side` is how long the rig has been on its
    side (None: since before any record, the minimum stay counts as kept)."""
    if side is None:
        return Verdict(decision="undecided", reason="the rig is mid-pivot, quarantined or away")
    if side == "mining" and not fit:
        return Verdict(decision="keep-mining", reason="not fit for AI (see preflight)")
    stay: Decision = "keep-mining" if side == "mining" else "stay"
    move: Decision = "convert" if side == "mining" else "switch-back"
    current, other = (mining, ai) if side == "mining" else (ai, mining)
    other_name = "AI" if side == "mining" else "mining"
    if current is None or other is None:
        which = [n for n, v in (("mining", mining), ("AI", ai)) if v is None]
        return Verdict(
            decision="undecided",
            reason=f"{' and '.join(which)} profit unknown (missing figures below)",
        )
    gain = other - current
    lead = gain / abs(current) if current else None
    lead_s = f"{lead:+.1%}" if lead is not None else f"{gain:+.2f} {currency}/day"
    if gain <= settings.margin * abs(current) or gain <= 0:
        return Verdict(
            decision=stay, lead=lead, switch_cost=switch_cost,
            reason=f"{other_name} leads by {lead_s}, not more than the margin "
            f"{settings.margin:.0%}",
        )  # fmt: skip
    if hours_on_side is not None and hours_on_side < settings.minimum_stay_hours:
        return Verdict(
            decision=stay, lead=lead, switch_cost=switch_cost,
            reason=f"{other_name} leads by {lead_s}, but the rig has been on {side} for "
            f"{hours_on_side:.1f} h of its minimum stay of {settings.minimum_stay_hours:g} h",
        )  # fmt: skip
    horizon_days = max(settings.minimum_stay_hours, HOURS_PER_DAY) / HOURS_PER_DAY
    if gain * horizon_days <= switch_cost:
        return Verdict(
            decision=stay, lead=lead, switch_cost=switch_cost,
            reason=f"{other_name} leads by {lead_s}, but {gain * horizon_days:.2f} {currency} "
            f"over {horizon_days * 24:g} h does not repay the switch ({switch_cost:.2f})",
        )  # fmt: skip
    return Verdict(
        decision=move, lead=lead, switch_cost=switch_cost,
        reason=f"{other_name} leads by {lead_s} (margin {settings.margin:.0%}) and repays the "
        f"switch ({switch_cost:.2f} {currency}) within {horizon_days * 24:g} h",
    )  # fmt: skip


def switch_cost(current_profit_day: float, downtime_hours: float, extra: float) -> float:
    """The current side's profit lost while the rig is down, plus any fixed cost."""
    return max(current_profit_day, 0.0) / HOURS_PER_DAY * downtime_hours + extra


def break_even_power_price(
    mining_revenue: float, mining_watts: float, ai_revenue: float, ai_watts: float
) -> float | None:
    """The price per kWh at which both sides profit the same; None when no positive one."""
    dw = _kwh_day(ai_watts) - _kwh_day(mining_watts)
    if abs(dw) < 1e-9:
        return None
    p = (ai_revenue - mining_revenue) / dw
    return p if p > 0 else None


# -- per rig ---------------------------------------------------------------------------------


class RigAdvice(BaseModel):
    host: str
    side: Side | None
    state: str | None
    fit: bool
    decision: Decision
    reason: str
    mining_revenue: float | None = None
    mining_watts: float | None = None
    mining_profit: float | None = None
    ai_revenue: float | None = None
    ai_watts: float | None = None
    ai_profit: float | None = None
    lead: float | None = None
    switch_cost: float | None = None
    downtime_hours: float | None = None
    downtime_source: str | None = None
    hours_on_side: float | None = None
    since_source: str | None = None
    break_even_power_price: float | None = None
    cards: list[CardEconomics] = []
    missing: list[str] = []
    notes: list[str] = []


def _total(values: list[float | None]) -> float | None:
    return None if any(v is None for v in values) else sum(v for v in values if v is not None)


def _since(
    rig: RigEconomicsInput,
    history: AdviseHistory,
    runs: list[RunReport],
    now: datetime.datetime,
) -> tuple[datetime.datetime | None, str]:
    """Since when the rig has been on its side: the journal's last switch, else what earlier
    advise runs saw (a change noticed now counts from now)."""
    assert rig.side is not None
    journal = last_switch(runs, rig.host)
    if journal and journal[0] == rig.side:
        return journal[1], "the run journal"
    rec = history.rigs.get(rig.host)
    if rec and rec.side == rig.side:
        return rec.since, "the advise history" if rec.since else "before any record"
    if rec:
        return now, "first seen on this side now"
    return None, "before any record"


def advise_rig(
    rig: RigEconomicsInput,
    prices: Prices,
    coins: WtmFile,
    btc_price: float,
    history: AdviseHistory,
    runs: list[RunReport],
    now: datetime.datetime,
    screen: PriceScreen,
) -> RigAdvice:
    notes = list(rig.notes)
    kwh = prices.power.mean_per_kwh()
    cards = []
    for c in rig.cards:
        ce = mining_figures(c, coins, prices, btc_price, screen, kwh)
        ai_figures(c, ce, prices, screen, kwh)
        cards.append(ce)
    missing = [f"card {c.index if c.index is not None else c.bus_id} {c.name}: {m}"
               for c in cards for m in c.missing]  # fmt: skip
    serving = [c for c in cards if c.fit] if rig.fit else []
    if rig.fit and len(serving) < len(cards):
        notes.append(
            f"{len(cards) - len(serving)} card(s) unfit for AI idle once converted "
            "(their idle draw is not counted)"
        )
    adv = RigAdvice(
        host=rig.host, side=rig.side, state=rig.state, fit=rig.fit, decision="undecided",
        reason="", cards=cards, missing=missing, notes=notes,
        mining_revenue=_total([c.mining_revenue for c in cards]) if cards else None,
        mining_watts=_total([c.mining_watts for c in cards]) if cards else None,
        mining_profit=_total([c.mining_profit for c in cards]) if cards else None,
    )  # fmt: skip
    if serving:
        adv.ai_revenue = _total([c.ai_revenue for c in serving])
        adv.ai_watts = _total([c.inference_watts for c in serving])
        adv.ai_profit = _total([c.ai_profit for c in serving])
    if None not in (adv.mining_revenue, adv.mining_watts, adv.ai_revenue, adv.ai_watts):
        assert adv.mining_revenue is not None and adv.mining_watts is not None
        assert adv.ai_revenue is not None and adv.ai_watts is not None
        adv.break_even_power_price = break_even_power_price(
            adv.mining_revenue, adv.mining_watts, adv.ai_revenue, adv.ai_watts
        )
    if not rig.reachable:
        adv.reason = "unreachable: " + "; ".join(rig.unfit_reasons)
        return adv
    hours: float | None = None
    if rig.side is not None:
        since, adv.since_source = _since(rig, history, runs, now)
        hours = (now - since).total_seconds() / 3600 if since else None
        adv.hours_on_side = hours
        history.rigs[rig.host] = RigRecord(side=rig.side, since=since)
        command = "convert" if rig.side == "mining" else "rollback"
        default = (
            prices.switching.convert_downtime_hours
            if command == "convert"
            else prices.switching.rollback_downtime_hours
        )
        dt = (measured_downtime(runs, rig.host, command) if prices.switching.from_journal
              else None) or Downtime(hours=default, source="prices.yml default")  # fmt: skip
        adv.downtime_hours, adv.downtime_source = dt.hours, dt.source
    current = adv.mining_profit if rig.side == "mining" else adv.ai_profit
    cost = switch_cost(current or 0.0, adv.downtime_hours or 0.0, prices.switching.extra_cost)
    v = decide(rig.side, adv.mining_profit, adv.ai_profit, hours, cost, prices.decision,
               fit=rig.fit, currency=prices.currency)  # fmt: skip
    adv.decision, adv.reason, adv.lead = v.decision, v.reason, v.lead
    adv.switch_cost = v.switch_cost
    if v.decision == "keep-mining" and not rig.fit:
        adv.reason = "not fit for AI: " + "; ".join(rig.unfit_reasons)
    if rig.side is None and rig.state:
        adv.reason = f"the rig is at {rig.state!r}, not mining or serving: finish or roll back"
    if rig.side is not None:
        history.rigs[rig.host].last_decision = adv.decision
        history.rigs[rig.host].last_at = now
    return adv


class AdviceReport(BaseModel):
    inventory: str
    prices_file: str
    generated: datetime.datetime
    currency: str
    power_price_mean: float
    power_price_now: float
    btc_price: float
    settings: DecisionSettings
    rigs: list[RigAdvice]
    notes: list[str] = []
    decision_files: dict[str, str] = {}

    def total(self, field: str) -> float:
        return sum(getattr(r, field) or 0.0 for r in self.rigs)

    @property
    def as_advised(self) -> float:
        """The farm's profit per day once every decision is carried out (known figures only)."""
        total = 0.0
        for r in self.rigs:
            on_ai = r.decision in ("convert", "stay") or (
                r.decision == "undecided" and r.side == "ai"
            )
            v = r.ai_profit if on_ai else r.mining_profit
            total += v or 0.0
        return total

    def hosts(self, decision: Decision) -> list[str]:
        return [r.host for r in self.rigs if r.decision == decision]


def advise_fleet(
    rigs: list[RigEconomicsInput],
    prices: Prices,
    coins: WtmFile,
    history: AdviseHistory,
    runs: list[RunReport],
    now: datetime.datetime,
    inventory: str = "",
    prices_file: str = "",
    notes: list[str] | None = None,
) -> AdviceReport:
    """Every rig's figures and decision; `history` is updated in place for the next run."""
    btc = prices.mining.btc_price or coins.btc_price()
    if btc is None:
        raise BadInputError(
            f"{prices_file}: mining.btc_price: needed (the WhatToMine source lists no Bitcoin "
            f"price): one bitcoin in {prices.currency}"
        )
    screen = PriceScreen(history, prices.decision, now)
    advice = [advise_rig(r, prices, coins, btc, history, runs, now, screen) for r in rigs]
    out_notes = [*(notes or []), *screen.notes]
    return AdviceReport(
        inventory=inventory, prices_file=prices_file, generated=now, currency=prices.currency,
        power_price_mean=prices.power.mean_per_kwh(),
        power_price_now=prices.power.at(now.astimezone().time()), btc_price=btc,
        settings=prices.decision, rigs=advice, notes=out_notes,
    )  # fmt: skip
