#!/usr/bin/env python3
"""The README's advise sample, from synthetic probe facts: the lab's 6-rig mixed rack as the
probe reads it while mining (each card's hashrate from its miner's API as the lab's miners
report it, its draw from NVML at the lab cards' mining wattage, toolkit/lab/profiles.yml),
with tests/integration/test_advise.py's prices. No rig is contacted.

    .venv/bin/python scripts/advise_sample.py OUTDIR   # table on stdout, OUTDIR/advise.html
"""

from __future__ import annotations

import datetime
import shutil
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


from tests.unit.factories import card, lab_market, rig  # noqa: E402
from toolkit.console import print_advice  # noqa: E402
from toolkit.economics.engine import advise_fleet  # noqa: E402
from toolkit.economics.history import AdviseHistory  # noqa: E402
from toolkit.economics.inputs import build_inputs  # noqa: E402
from toolkit.economics.prices import load_prices, load_whattomine  # noqa: E402
from toolkit.inventory import Host  # noqa: E402
from toolkit.models import FleetReport, MinerCardRate, MinerProcess, MinerStats  # noqa: E402
from toolkit.policy import Policy, judge_rig  # noqa: E402

# card kind: (MH/s Etchash as the lab's miners hash, default / min / max limit W, mining W)
LAB = {
    "rtx3060": (47.0, 170, 100, 170, 115),
    "p106": (21.0, 120, 60, 140, 90),
    "rtx3090": (120.0, 350, 100, 365, 290),
    "cmp90hx": (86.0, 250, 100, 250, 220),
}
RACK = {  # rig: (miner, platform, [(kind, count, link gen, link width)])
    "rig01": ("t-rex", "hiveos", [("rtx3060", 6, 1, 1)]),
    "rig02": ("t-rex", "hiveos", [("p106", 8, 1, 1)]),
    "rig03": ("lolminer", "linux", [("rtx3090", 2, 3, 8)]),
    "rig04": ("t-rex", "hiveos", [("cmp90hx", 4, 1, 4)]),
    "rig05": ("teamredminer", "hiveos", [("rx580", 6, 2, 1)]),
    "rig06": ("t-rex", "hiveos", [("rtx3060", 2, 1, 1), ("p106", 2, 1, 1), ("rx580", 2, 2, 1)]),
}


def facts(miner: str, platform: str, groups: list[tuple[str, int, int, int]]):  # type: ignore[no-untyped-def]
    gpus, rates, n, i = [], [], 0, 0
    for kind, count, gen, width in groups:
        for _ in range(count):
            if kind == "rx580":
                g = card("rx580", n)
            else:
                mhs, default, lo, hi, mining = LAB[kind]
                g = card(kind, i, gen, width, power_default_w=float(default),
                         power_min_w=float(lo), power_max_w=float(hi),
                         power_limit_w=float(default), power_draw_w=float(mining))  # fmt: skip
                if miner != "teamredminer":
                    rates.append(MinerCardRate(index=i, bus_id=g.bus_id, hashrate_hs=mhs * 1e6))
                i += 1
            gpus.append(g)
            n += 1
    if miner == "teamredminer":
        rates = [MinerCardRate(bus_id=g.bus_id, hashrate_hs=31e6) for g in gpus]
    f = rig(*gpus, ram_mib=65536)
    f.platform = platform  # type: ignore[assignment]
    f.miners = [MinerProcess(name=miner, pid=1000, exe=f"/opt/{miner}", unit=None)]
    f.miner_stats = [
        MinerStats(miner=miner, pid=1000, algorithm="etchash", gpus=rates,
                   hashrate_hs=sum(r.hashrate_hs or 0 for r in rates))
    ]  # fmt: skip
    return f


def main(out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    lab_market(out)
    p = load_prices(out / "prices.yml")
    wtm, notes = load_whattomine(p.mining.whattomine)
    fleet = FleetReport(
        inventory="inventories/lab/farm.ini",
        rigs=[judge_rig(Host(h), facts(*spec), Policy()) for h, spec in RACK.items()],
    )
    rigs, more = build_inputs(fleet)
    now = datetime.datetime(2026, 1, 15, 9, 0, tzinfo=datetime.UTC)
    report = advise_fleet(rigs, p, wtm, AdviseHistory(), [], now,
                          inventory="inventories/lab/farm.ini", prices_file="prices.yml",
                          notes=[*notes, *more])  # fmt: skip
    report.decision_files = {
        "convert": "advice/convert.hosts",
        "switch-back": "advice/rollback.hosts",
    }
    print_advice(report)
    from toolkit.report import advise_html

    (out / "advise.html").write_text(advise_html(report))
    shutil.copy(out / "prices.yml", out / "prices.sample.yml")


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "advise-sample"))
