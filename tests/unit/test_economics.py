"""advise's economics: revenue from a WhatToMine-format JSON and rental prices, and a decision
that follows the margin, keeps the minimum stay, ignores outlier prices and does not flap.

The fixtures in tests/unit/data/economics are in WhatToMine's shape (every field the site
sends, toolkit/economics/whattomine.py) with round, made-up values, and a measurements file
in the shape the probe will fill in."""

from __future__ import annotations

import datetime
import http.server
import json
import random
import shutil
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from tests.unit.factories import card, rig
from toolkit.economics.engine import (
    PriceScreen,
    advise_fleet,
    decide,
    switch_cost,
)
from toolkit.economics.history import (
    AdviseHistory,
    last_switch,
    load_history,
    measured_downtime,
    read_journal,
    save_history,
)
from toolkit.economics.inputs import Figure, Measurements, build_inputs, load_measurements
from toolkit.economics.prices import (
    DecisionSettings,
    PriceSourceError,
    load_prices,
    load_whattomine,
)
from toolkit.errors import BadInputError
from toolkit.inventory import Host
from toolkit.models import (
    FleetReport,
    MinerCardRate,
    MinerProcess,
    MinerStats,
    MiningMeasured,
    PivotRecord,
    RigResult,
    RunReport,
    ServedInstance,
)
from toolkit.policy import Policy, judge_rig

DATA = Path(__file__).parent / "data" / "economics"
NOW = datetime.datetime(2025, 6, 1, 12, 0, tzinfo=datetime.UTC)
S = DecisionSettings()  # margin 10 %, minimum stay 24 h


def fleet(*rigs_: tuple[str, object]) -> FleetReport:
    return FleetReport(
        inventory="farm.ini",
        rigs=[judge_rig(Host(name), facts, Policy()) for name, facts in rigs_],  # type: ignore[arg-type]
    )


def rig3060(n: int = 2, state: str | None = None) -> object:
    facts = rig(*[card("rtx3060", i, power_default_w=170.0, power_limit_w=120.0) for i in range(n)])
    if state:
        facts.pivot = PivotRecord(state=state, step=None, snapshot_id=None)
    return facts


def prices(tmp_path: Path, **edits: object) -> Path:
    for f in ("prices.yml", "whattomine-coins.json"):
        shutil.copy(DATA / f, tmp_path / f)
    if edits:
        data = yaml.safe_load((tmp_path / "prices.yml").read_text())
        for dotted, value in edits.items():
            *head, last = dotted.split("__")
            node = data
            for k in head:
                node = node.setdefault(k, {})
            if value is None:
                node.pop(last)
            else:
                node[last] = value
        (tmp_path / "prices.yml").write_text(yaml.safe_dump(data))
    return tmp_path / "prices.yml"


def etc_per_hs_day() -> float:
    """ETC in the fixture: 86400 / 13.1 s x 2.56 ETC / 160 TH/s x 0.00025 BTC x 60000 USD."""
    return 86400 / 13.1 * 2.56 / 160e12 * 0.00025 * 60000


# -- revenue -----------------------------------------------------------------------------------


def test_mining_revenue_follows_the_whattomine_formula_and_skips_lagging_coins(tmp_path):
    p = load_prices(prices(tmp_path))
    coins, notes = load_whattomine(p.mining.whattomine)
    assert notes == []
    rigs, _ = build_inputs(
        fleet(("rig01", rig3060())), load_measurements(DATA / "measurements.json")
    )
    report = advise_fleet(rigs, p, coins, AdviseHistory(), [], NOW)
    c0, c1 = report.rigs[0].cards
    assert c0.coin == "ETC"  # the lagging EtcFork would pay far more: skipped
    assert c0.mining_revenue == pytest.approx(47e6 * etc_per_hs_day() * 0.99)
    assert c0.mining_profit == pytest.approx(c0.mining_revenue - 0.115 * 24 * 0.10)
    assert report.notes == ["coin EtcFork (EFK): skipped, lagging"]  # once, not per card
    # card 1 reports two algorithms: the better-paying one is counted
    rvn = 24e6 * 86400 / 60 * 2500 / 5e12 * 2.5e-7 * 60000 * 0.99
    etc = 47.5e6 * etc_per_hs_day() * 0.99
    assert c1.mining_revenue == pytest.approx(max(rvn, etc))
    assert c1.coin == ("RVN" if rvn > etc else "ETC")


def test_a_coin_tag_or_a_miner_spelling_of_the_algorithm_finds_the_coin(tmp_path):
    coins, _ = load_whattomine(str(DATA / "whattomine-coins.json"))
    aliases = load_prices(prices(tmp_path)).mining.algorithm_aliases
    assert [c.tag for _, c in coins.for_key("autolykos2", aliases)] == ["ERG"]
    assert [c.tag for _, c in coins.for_key("Kaw-Pow", aliases)] == ["RVN"]
    assert [c.tag for _, c in coins.for_key("etc", aliases)] == ["ETC"]


def test_ai_revenue_per_hour_and_per_token_and_the_better_one_counts(tmp_path):
    p = load_prices(prices(tmp_path))
    coins, _ = load_whattomine(p.mining.whattomine)
    facts = rig(card("rtx3090", 0, power_default_w=350.0))
    rigs, _ = build_inputs(fleet(("big", facts)))
    c = advise_fleet(rigs, p, coins, AdviseHistory(), [], NOW).rigs[0].cards[0]
    hourly = 0.20 * 24 * 0.5 * 0.75
    assert c.decode_tokens_s
    tokens = 0.30 * c.decode_tokens_s * 86400 / 1e6 * 0.5 * 0.75
    assert c.ai_revenue == pytest.approx(max(hourly, tokens))
    # not measured: the power profile's cap stands in, and says so
    assert c.inference_watts == 280 and "not measured" in (c.inference_watts_source or "")
    assert c.ai_profit == pytest.approx(c.ai_revenue - 0.280 * 24 * 0.10)


def test_a_missing_measurement_is_named_not_invented(tmp_path):
    p = load_prices(prices(tmp_path))
    coins, _ = load_whattomine(p.mining.whattomine)
    rigs, notes = build_inputs(
        fleet(("rig01", rig3060(3))), load_measurements(DATA / "measurements.json")
    )
    assert notes == ["measurements for rig77: not a rig of this farm file (ignored)"]
    adv = advise_fleet(rigs, p, coins, AdviseHistory(), [], NOW).rigs[0]
    assert adv.cards[2].mining_revenue is None and adv.mining_profit is None
    assert (
        "card 2 NVIDIA GeForce RTX 3060: hashrate (not measured: no miner running)" in adv.missing
    )
    assert adv.decision == "undecided" and "mining profit unknown" in adv.reason


# -- the decision --------------------------------------------------------------------------------


def test_the_decision_follows_the_margin():
    assert decide("mining", 10.0, 10.9, None, 0, S).decision == "keep-mining"
    v = decide("mining", 10.0, 11.2, None, 0, S)
    assert v.decision == "convert" and v.lead == pytest.approx(0.12)
    assert decide("ai", 10.9, 10.0, None, 0, S).decision == "stay"
    assert decide("ai", 11.2, 10.0, None, 0, S).decision == "switch-back"
    # negative profits: the lead is measured against the loss's size
    assert decide("mining", -2.0, -1.9, None, 0, S).decision == "keep-mining"
    assert decide("mining", -2.0, -1.0, None, 0, S).decision == "convert"
    assert decide("mining", 0.0, 0.5, None, 0, S).decision == "convert"
    assert decide("mining", 5.0, 50.0, None, 0, S, fit=False).decision == "keep-mining"


def test_the_minimum_stay_is_kept():
    v = decide("ai", 20.0, 10.0, 5.0, 0, S)
    assert v.decision == "stay" and "5.0 h of its minimum stay of 24 h" in v.reason
    assert decide("ai", 20.0, 10.0, 24.0, 0, S).decision == "switch-back"


def test_the_lead_must_repay_the_switch_within_the_minimum_stay():
    cost = switch_cost(10.0, downtime_hours=2.0, extra=5.0)
    assert cost == pytest.approx(10 / 24 * 2 + 5)
    v = decide("mining", 10.0, 15.0, None, cost, S)  # leads by 50 %, 5 a day < 5.83
    assert v.decision == "keep-mining" and "does not repay the switch (5.83)" in v.reason
    assert decide("mining", 10.0, 17.0, None, cost, S).decision == "convert"
    # a longer minimum stay is a longer horizon to repay it in
    assert (
        decide("mining", 10.0, 15.0, None, cost, DecisionSettings(minimum_stay_hours=48)).decision
        == "convert"
    )


def test_a_noisy_series_around_break_even_flips_no_more_than_the_minimum_stay_allows():
    """500 hourly steps, both sides' profits 10 ± 30 % noise: a naive switcher flaps on every
    other step; with the margin and the minimum stay, flips are bounded by steps / stay."""
    rng = random.Random(16)
    series = [(10 * rng.uniform(0.7, 1.3), 10 * rng.uniform(0.7, 1.3)) for _ in range(500)]

    def flips(settings: DecisionSettings) -> int:
        side, since, count = "mining", None, 0
        for hour, (mining, ai) in enumerate(series):
            held = None if since is None else hour - since
            v = decide(side, mining, ai, held, 0.0, settings)  # type: ignore[arg-type]
            if v.decision in ("convert", "switch-back"):
                side = "ai" if side == "mining" else "mining"
                since, count = hour, count + 1
        return count

    naive = flips(DecisionSettings(margin=0, minimum_stay_hours=0))
    damped = flips(S)
    assert naive > 100
    assert damped <= 500 // 24 + 1
    # the margin alone already cuts most flips; the stay bounds what is left
    assert flips(DecisionSettings(margin=0.10, minimum_stay_hours=0)) < naive


def test_the_minimum_stay_holds_across_runs_through_the_history_file(tmp_path):
    p = load_prices(prices(tmp_path, ai__rental=[{"gpu": "RTX 3060", "per_hour": 0.5}]))
    coins, _ = load_whattomine(p.mining.whattomine)
    measured = load_measurements(DATA / "measurements.json")
    path = tmp_path / "history.json"

    def run(state: str | None, at: datetime.datetime, per_hour: float) -> str:
        p.ai.rental[0].per_hour = per_hour
        rigs, _ = build_inputs(fleet(("rig01", rig3060(2, state))), measured)
        history = load_history(path)
        adv = advise_fleet(rigs, p, coins, history, [], at).rigs[0]
        save_history(path, history)
        return f"{adv.decision}: {adv.reason}"

    assert run(None, NOW, 0.5).startswith("convert")  # AI far ahead, no record: move
    # the operator converted; an hour later mining pays more, but the rig stays a day
    assert run("ai", NOW + datetime.timedelta(hours=1), 0.001).startswith("stay")
    later = run("ai", NOW + datetime.timedelta(hours=20), 0.001)
    assert later.startswith("stay") and "19.0 h of its minimum stay" in later
    assert run("ai", NOW + datetime.timedelta(hours=26), 0.001).startswith("switch-back")


# -- outliers ------------------------------------------------------------------------------------


def test_an_outlier_price_is_rejected_and_a_lasting_move_is_not():
    history = AdviseHistory()
    for i, v in enumerate([1.0, 1.1, 0.9, 1.0, 1.05]):
        PriceScreen(history, S, NOW + datetime.timedelta(hours=i))("coin:ETC", v)
    screen = PriceScreen(history, S, NOW + datetime.timedelta(hours=6))
    assert screen("coin:ETC", 9.0) == pytest.approx(1.0)
    assert "coin:ETC: 9 rejected as an outlier" in screen.notes[0]
    assert history.prices["coin:ETC"][-1].rejected
    assert PriceScreen(history, S, NOW)("coin:ETC", 1.4) == 1.4  # a move, not an outlier
    # the new level, held run after run, becomes the median and is no longer rejected
    used = [PriceScreen(history, S, NOW)("coin:ETC", 9.0) for _ in range(8)]
    assert used[0] != 9.0 and used[-1] == 9.0


def test_a_spiking_exchange_rate_does_not_flip_the_decision(tmp_path):
    p = load_prices(prices(tmp_path))
    raw = json.loads((DATA / "whattomine-coins.json").read_text())
    history = AdviseHistory()
    measured = load_measurements(DATA / "measurements.json")
    rigs, _ = build_inputs(fleet(("rig01", rig3060(2, "ai"))), measured)
    for i in range(4):
        coins, _ = load_whattomine(str(DATA / "whattomine-coins.json"))
        advise_fleet(rigs, p, coins, history, [], NOW + datetime.timedelta(days=i))
    raw["coins"]["EthereumClassic"]["exchange_rate"] = 0.025  # x100, a bad tick
    (tmp_path / "spike.json").write_text(json.dumps(raw))
    coins, _ = load_whattomine(str(tmp_path / "spike.json"))
    report = advise_fleet(rigs, p, coins, history, [], NOW + datetime.timedelta(days=5))
    assert report.rigs[0].decision == "stay"
    assert any("coin:ETC" in n and "rejected as an outlier" in n for n in report.notes)


# -- switching cost from the journal ---------------------------------------------------------------


def journal(root: Path) -> Path:
    def write(run_id: str, command: str, started: str, finished: str, rigs: list[RigResult]):
        (root / run_id).mkdir(parents=True)
        r = RunReport(run_id=run_id, command=command, inventory="farm.ini", check=False,  # type: ignore[arg-type]
                      journal=str(root / run_id), started=started, finished=finished, rigs=rigs)  # fmt: skip
        (root / run_id / "report.json").write_text(r.model_dump_json())

    write("20250501T100000Z-aaaa", "convert", "2025-05-01T10:00:00Z", "2025-05-01T10:40:00Z",
          [RigResult(host="rig01", outcome="converted", batch=1),
           RigResult(host="rig02", outcome="converted", batch=2)])  # fmt: skip
    write("20250510T100000Z-bbbb", "rollback", "2025-05-10T10:00:00Z", "2025-05-10T10:15:00Z",
          [RigResult(host="rig01", outcome="mining")])  # fmt: skip
    write("20250511T100000Z-cccc", "convert", "2025-05-11T10:00:00Z", "", [])  # unfinished
    return root


def test_downtime_and_the_last_switch_are_read_from_the_run_journal(tmp_path):
    runs = read_journal(journal(tmp_path / "runs"))
    assert len(runs) == 2
    convert = measured_downtime(runs, "rig01", "convert")
    assert convert and convert.hours == pytest.approx(20 / 60)  # 40 min over 2 batches
    assert "this rig's 1 convert" in convert.source
    other = measured_downtime(runs, "rig09", "rollback")
    assert other and other.hours == pytest.approx(0.25) and "farm's" in other.source
    assert measured_downtime([], "rig01", "convert") is None
    side, when = last_switch(runs, "rig01") or (None, None)
    assert side == "mining" and when == datetime.datetime(2025, 5, 10, 10, 15, tzinfo=datetime.UTC)


# -- prices.yml and its source -------------------------------------------------------------------


def test_power_price_time_of_day_table_is_averaged_over_the_day(tmp_path):
    table = [{"start": "00:00", "price": 0.08}, {"start": "07:00", "price": 0.20},
             {"start": "23:00", "price": 0.08}]  # fmt: skip
    p = load_prices(prices(tmp_path, power__flat=None, power__time_of_day=table))
    assert p.power.mean_per_kwh() == pytest.approx((8 * 0.08 + 16 * 0.20) / 24)
    assert p.power.at(datetime.time(12, 0)) == 0.20
    assert p.power.at(datetime.time(23, 30)) == 0.08


@pytest.mark.parametrize(
    ("edits", "message"),
    [
        ({"ai__utilisation": None}, "ai.utilisation: Field required"),
        ({"ai__platform_fee": 1.5}, "ai.platform_fee: Input should be less than 1"),
        ({"power__time_of_day": [{"start": "07:00", "price": 0.1}]}, "power: give either flat"),
        ({"ai__rental": [{"gpu": "RTX 3060"}]}, "ai.rental.0: RTX 3060: give per_hour"),
        ({"decision__margn": 0.05}, "decision.margn: Extra inputs are not permitted"),
    ],
)
def test_bad_prices_file_names_the_field(tmp_path, edits, message):
    with pytest.raises(BadInputError) as e:
        load_prices(prices(tmp_path, **edits))
    assert str(tmp_path / "prices.yml") in str(e.value) and message in str(e.value)


class Serve:
    """The fixture on a loopback HTTP server, as whattomine.com would answer."""

    def __init__(self, body: bytes) -> None:
        self.body = body

        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.end_headers()
                self.wfile.write(outer.body)

            def log_message(self, *_a: object) -> None:
                pass

        self.server = http.server.HTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/coins.json"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def served() -> Iterator[Serve]:
    s = Serve((DATA / "whattomine-coins.json").read_bytes())
    yield s
    s.close()


def test_a_url_source_is_cached_and_its_failure_is_named_not_fatal(tmp_path, served):
    cache = tmp_path / "cache"
    coins, notes = load_whattomine(served.url, cache, timeout_s=5)
    assert "Ravencoin" in coins.coins and notes == []
    served.body = b"<html>maintenance</html>"
    coins, notes = load_whattomine(served.url, cache, timeout_s=5)
    assert "Ravencoin" in coins.coins
    assert f"mining prices: {served.url}: {served.url}: not JSON" in notes[0]
    assert "using the copy cached" in notes[0]
    served.close()
    _, notes = load_whattomine(served.url, cache, timeout_s=2)
    assert "cannot fetch it" in notes[0]
    with pytest.raises(PriceSourceError, match="no cached copy"):
        load_whattomine(served.url, tmp_path / "empty", timeout_s=2)


# -- measured by the probe ----------------------------------------------------------------------


def t_rex(*rates: tuple[str, float], error: str | None = None) -> MinerStats:
    return MinerStats(
        miner="t-rex", pid=100, port=4067, api="http://127.0.0.1:4067/summary",
        algorithm="etchash", hashrate_hs=sum(r for _, r in rates),
        gpus=[MinerCardRate(index=i, bus_id=b, hashrate_hs=r) for i, (b, r) in enumerate(rates)],
        error=error,
    )  # fmt: skip


def test_a_mining_rig_is_advised_on_what_its_miner_and_nvml_measure(tmp_path):
    p = load_prices(prices(tmp_path))
    coins, _ = load_whattomine(p.mining.whattomine)
    facts = rig(
        *[card("rtx3060", i, power_default_w=170.0, power_limit_w=170.0, power_draw_w=115.0)
          for i in range(3)]
    )  # fmt: skip
    facts.miners = [MinerProcess(name="t-rex", pid=100, exe="/hive/miners/t-rex/t-rex", unit=None)]
    # the miner hashes on two of the three cards (the third is left out of its config)
    facts.miner_stats = [t_rex(("0000:01:00.0", 47e6), ("0000:02:00.0", 46e6))]
    rigs, _ = build_inputs(fleet(("rig01", facts)))
    c0, _, c2 = rigs[0].cards
    assert c0.hashrate == {"etchash": 47e6} and c0.hashrate_source == "t-rex API"
    assert c0.mining_watts == Figure(value=115.0, source="measured (nvml)")
    # not hashing: its draw is no mining figure; the limit stands in, labelled
    assert c2.hashrate == {} and c2.hashrate_missing == "no miner's API lists this card"
    assert c2.mining_watts == Figure(value=170.0, source="power limit (not measured)")
    adv = advise_fleet(rigs, p, coins, AdviseHistory(), [], NOW).rigs[0]
    assert adv.cards[0].mining_revenue == pytest.approx(47e6 * etc_per_hs_day() * 0.99)
    assert adv.cards[0].hashrate_source == "t-rex API"
    assert (
        "card 2 NVIDIA GeForce RTX 3060: hashrate (not measured: no miner's API lists this card)"
        in adv.missing
    )


def test_a_miner_whose_api_is_down_is_named_as_the_reason():
    facts = rig(card("rtx3060", 0, power_default_w=170.0, power_limit_w=170.0))
    facts.miner_stats = [
        MinerStats(miner="lolminer", pid=7, port=4069, error="API (default port 4069) did not "
                   "answer: http://127.0.0.1:4069/summary: Connection refused")
    ]  # fmt: skip
    rigs, _ = build_inputs(fleet(("rig01", facts)))
    assert rigs[0].cards[0].hashrate_missing == (
        "lolminer: API (default port 4069) did not answer: "
        "http://127.0.0.1:4069/summary: Connection refused"
    )


def test_a_converted_rig_is_advised_on_its_snapshots_mining_figures_and_its_draw_serving(tmp_path):
    p = load_prices(prices(tmp_path))
    coins, _ = load_whattomine(p.mining.whattomine)
    facts = rig(
        *[card("rtx3060", i, power_default_w=170.0, power_limit_w=136.0, power_draw_w=131.0)
          for i in range(2)]
    )  # fmt: skip
    facts.pivot = PivotRecord(
        state="ai", step="validate", snapshot_id="20250601T000000Z",
        instances=[ServedInstance(gpu=0, port=8000, engine="llama.cpp", served_name="m"),
                   ServedInstance(gpu=1, port=8001, engine="llama.cpp", served_name="m")],
        mining_measured=MiningMeasured(
            taken="2025-06-01T00:00:00Z",
            power_draw_w={"0000:01:00.0": 116.0, "0000:02:00.0": 118.0},
            miner_stats=[t_rex(("0000:01:00.0", 47e6), ("0000:02:00.0", 46e6))],
        ),
    )  # fmt: skip
    rigs, _ = build_inputs(fleet(("rig01", facts)))
    c0, c1 = rigs[0].cards
    snap = "measured before conversion (snapshot 2025-06-01T00:00:00Z)"
    assert rigs[0].side == "ai"
    assert (c0.hashrate, c0.hashrate_source) == ({"etchash": 47e6}, snap)
    assert c1.mining_watts == Figure(value=118.0, source=snap)
    assert c0.inference_watts == Figure(value=131.0, source="measured (nvml), serving")
    adv = advise_fleet(rigs, p, coins, AdviseHistory(), [], NOW).rigs[0]
    assert adv.mining_watts == 234.0 and adv.ai_watts == 262.0 and adv.missing == []


def test_the_measurements_file_overrides_the_probe():
    facts = rig(card("rtx3060", 0, power_default_w=170.0, power_limit_w=170.0, power_draw_w=115.0))
    facts.miner_stats = [t_rex(("0000:01:00.0", 47e6))]
    rigs, _ = build_inputs(
        fleet(("rig01", facts)),
        Measurements.model_validate(
            {"rigs": {"rig01": {"cards": [{"index": 0, "hashrate": {"etchash": 50e6},
                                          "mining_watts": 120}]}}}
        ),
    )  # fmt: skip
    c = rigs[0].cards[0]
    assert (c.hashrate, c.hashrate_source) == ({"etchash": 50e6}, "measurements file")
    assert c.mining_watts == Figure(value=120.0, source="measurements file")
