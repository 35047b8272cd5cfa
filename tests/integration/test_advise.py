"""advise on the lab's mixed rack, end to end: the probe reads each miner's hashrate from its
API and each card's draw from NVML; advise decides with a prices file; `convert --limit @file`
converts exactly the rigs it chose; advised again, the converted rig is judged on the mining
figures its snapshot recorded and on what its cards draw serving. Tests run in file order on
one rack.

The prices are chosen so the answer is known (docs/economics.md, "Formulas"): ETC pays about
1.0e-8 USD per H/s a day, power costs 0.10 USD/kWh, renting an RTX 3090 pays 0.60 USD/h and
any other card 0.01 USD/h. Only rig03 (2× RTX 3090: 120 MH/s and 290 W each mining, ~0.51
USD/day profit a card; ~4.7 USD/day serving) is worth converting; the 3060, P106 and CMP rigs
earn more mining than their rental pays; rig05's RX 580s are unfit; rig06's RX 580s have no
miner (the mixed rig runs T-Rex only), so their mining figure is missing and rig06 is
undecided, never converted."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.integration.conftest import Rack, wait_for
from tests.integration.endstate import hashing, outcomes, report, rigpivot, state
from tests.unit.factories import lab_market

pytestmark = pytest.mark.lab

# hive-3060x6, hive-p106x8, linux-3090x2, hive-cmp90hx4, hive-rx580x6, hive-mixed6
RIGS = ["rig01", "rig02", "rig03", "rig04", "rig05", "rig06"]
CHOSEN = ["rig03"]


@pytest.fixture(scope="module")
def rack(lab_factory) -> Rack:
    return lab_factory(6, "mixed")


@pytest.fixture(scope="module")
def market(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return lab_market(tmp_path_factory.mktemp("market"))


def advise(rack: Rack, market: Path, journal: Path, out: Path) -> dict:
    out.mkdir(parents=True, exist_ok=True)
    proc = rigpivot(
        "advise", "-i", str(rack.lab.inventory), "--prices", str(market / "prices.yml"),
        "--journal", str(journal), "--history", str(market / "history.json"),
        "--json", str(out / "advice.json"), "--html", str(out / "advice.html"),
        "--decisions-out", str(out / "decisions"),
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    return json.loads((out / "advice.json").read_text())


def by_host(advice: dict) -> dict[str, dict]:
    return {r["host"]: r for r in advice["rigs"]}


def test_advise_reads_the_miners_and_nvml_and_chooses_the_3090_rig(rack, market, journal):
    for rig in RIGS:
        wait_for(lambda rig=rig: hashing(rack, rig), 120, f"{rig} hashing")
    advice = advise(rack, market, journal, market / "first")
    rigs = by_host(advice)
    assert {h: r["decision"] for h, r in rigs.items()} == {
        "rig01": "keep-mining", "rig02": "keep-mining", "rig03": "convert",
        "rig04": "keep-mining", "rig05": "keep-mining", "rig06": "undecided",
    }  # fmt: skip
    # measured, not assumed: each card's hashrate from its miner's API, its draw from NVML
    watts = {"rig01": 115, "rig02": 90, "rig03": 290, "rig04": 220}
    for host, w in watts.items():
        for c in rigs[host]["cards"]:
            assert c["hashrate_source"] in ("t-rex API", "lolminer API"), (host, c)
            assert c["mining_watts"] == w and c["mining_watts_source"] == "measured (nvml)"
    rig03 = rigs["rig03"]["cards"]
    assert all(117e6 < c["hashrate_hs"] < 123e6 for c in rig03)  # 120 MH/s ± the lab's noise
    assert all("not measured" in c["inference_watts_source"] for c in rig03)  # not serving yet
    # rig06's RX 580s: nothing hashes on them, and advise says so rather than guessing
    assert any("no miner's API lists this card" in m for m in rigs["rig06"]["missing"])
    decisions = market / "first" / "decisions"
    assert (decisions / "convert.hosts").read_text().split() == CHOSEN
    assert (decisions / "rollback.hosts").read_text() == ""
    assert (market / "first" / "advice.html").read_text().count("<svg") >= 2


def test_convert_limited_to_the_decision_file_converts_exactly_those(rack, market, journal):
    hosts = market / "first" / "decisions" / "convert.hosts"
    proc = rigpivot(
        "convert", "-i", str(rack.lab.inventory), "--limit", f"@{hosts}", "--yes",
        "--journal", str(journal),
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    converted = {h for h, o in outcomes(report(journal)).items() if o == "converted"}
    assert converted == set(CHOSEN)
    for rig in RIGS:
        if rig in CHOSEN:
            assert state(rack, rig) == "ai"
        else:
            assert state(rack, rig) == "mining" and hashing(rack, rig), rig


def test_advised_again_the_converted_rig_stays_on_its_snapshots_mining_figures(
    rack, market, journal
):
    # the engines hold their cards (the lab's cuda-watch) within a couple of seconds
    apps = "nvidia-smi --query-compute-apps=pid,process_name,gpu_bus_id --format=csv,noheader"
    try:
        wait_for(lambda: rack.ssh("rig03", apps).strip().count("\n") == 1, 120,
                 "rig03's two engines on their cards")  # fmt: skip
    except AssertionError as e:
        seen = rack.ssh("rig03", f"{apps}; systemctl status --no-pager lab-cuda "
                                 "'rigpivot-inference@*'; journalctl -u lab-cuda -n 20 --no-pager",
                        check=False)  # fmt: skip
        raise AssertionError(f"{e}:\n{seen}") from None
    advice = advise(rack, market, journal, market / "second")
    rigs = by_host(advice)
    assert rigs["rig03"]["side"] == "ai" and rigs["rig03"]["decision"] == "stay"
    for c in rigs["rig03"]["cards"]:
        # mining: what the conversion's snapshot measured before the drain
        assert c["hashrate_source"].startswith("measured before conversion (snapshot ")
        assert c["mining_watts"] == 290
        # serving: the card's draw now, under power_profile's 80 % cap (0.8 x 350 W)
        assert c["inference_watts"] == 280
        assert c["inference_watts_source"] == "measured (nvml), serving"
    assert rigs["rig01"]["decision"] == "keep-mining"
    # nobody moves: both decision files are empty, and convert refuses an empty one
    decisions = market / "second" / "decisions"
    assert (decisions / "convert.hosts").read_text() == ""
    proc = rigpivot(
        "convert", "-i", str(rack.lab.inventory), "--limit", f"@{decisions / 'convert.hosts'}",
        "--yes", "--journal", str(journal),
    )  # fmt: skip
    assert proc.returncode == 2, proc.stdout + proc.stderr
