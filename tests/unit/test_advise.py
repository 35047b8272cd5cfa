"""`rigpivot advise`: bad input refused before any rig is probed, reports and decision files
written, and the HTML report's charts."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from tests.unit.factories import card, rig
from tests.unit.test_economics import DATA, NOW, fleet, prices, rig3060
from toolkit.cli import app
from toolkit.economics.engine import AdviceReport, advise_fleet
from toolkit.economics.history import AdviseHistory
from toolkit.economics.inputs import build_inputs, load_measurements
from toolkit.economics.prices import load_prices, load_whattomine
from toolkit.errors import RigpivotError
from toolkit.report import advise_html


def invoke(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(app, ["advise", *args])
    if isinstance(result.exception, RigpivotError):
        return result.exception.exit_code, str(result.exception)
    if result.exception and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result.exit_code, result.output


def test_bad_prices_file_exits_2_naming_the_field_and_probes_nothing(tmp_path):
    inv = tmp_path / "farm.ini"
    inv.write_text("[rack1]\nrig01 ansible_host=127.0.0.1 ansible_port=1\n")
    bad = prices(tmp_path, ai__utilisation="most of the time")
    code, message = invoke("--inventory", str(inv), "--prices", str(bad))
    assert code == 2
    assert f"{bad}: invalid prices file" in message
    assert "ai.utilisation: Input should be a valid number" in message


def test_advise_on_an_unreachable_rig_writes_its_reports_and_exits_3(tmp_path):
    inv = tmp_path / "farm.ini"
    inv.write_text("[rack1]\nrig01 ansible_host=127.0.0.1 ansible_port=1\n")
    out = tmp_path / "advice"
    code, message = invoke(
        "--inventory", str(inv), "--prices", str(prices(tmp_path)), "--timeout", "3",
        "--json", str(tmp_path / "a.json"), "--html", str(tmp_path / "a.html"),
        "--decisions-out", str(out), "--journal", str(tmp_path / "runs"),
    )  # fmt: skip
    assert code == 3 and "rig01" in message
    report = AdviceReport.model_validate_json((tmp_path / "a.json").read_text())
    assert report.rigs[0].decision == "undecided"
    assert (out / "convert.hosts").read_text() == "" == (out / "rollback.hosts").read_text()
    assert "<svg" in (tmp_path / "a.html").read_text()
    assert (tmp_path / ".rigpivot-advise-history.json").is_file()


def test_the_html_report_charts_each_rig_and_the_farm(tmp_path):
    p = load_prices(prices(tmp_path, ai__rental=[{"gpu": "*", "per_hour": 0.2}]))
    coins, _ = load_whattomine(p.mining.whattomine)
    measured = load_measurements(DATA / "measurements.json")
    rigs, _ = build_inputs(fleet(("rig01", rig3060()), ("rig02", rig(card("rx580", 0)))), measured)
    report = advise_fleet(rigs, p, coins, AdviseHistory(), [], NOW)
    assert [r.decision for r in report.rigs] == ["convert", "keep-mining"]
    html = advise_html(report)
    assert html.count("<svg") >= 2 and "rig01" in html and "farm total" in html
    assert "Break-even power price" in html
    be = report.rigs[0].break_even_power_price
    assert be is not None
    # at the break-even price both sides earn the same
    r = report.rigs[0]
    assert r.mining_revenue and r.mining_watts and r.ai_revenue and r.ai_watts
    m = r.mining_revenue - r.mining_watts / 1000 * 24 * be
    a = r.ai_revenue - r.ai_watts / 1000 * 24 * be
    assert m == pytest.approx(a)
