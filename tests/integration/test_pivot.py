"""The pivot end to end on a mixed lab rack: convert, a second convert, rollback. Tests run in
file order on one rack, as an operator's session would. The mixed rig's cards each serve
preflight's plan for them (`farm` below). (`convert --check` on a HiveOS and a plain rig, the
whole rig compared before and after, is test_round_trips.py's trip 1.)"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.integration.conftest import Rack, wait_for
from tests.integration.endstate import (
    endpoint_answers,
    hashing,
    outcomes,
    report,
    rigpivot,
    snapshot_of,
    state,
)
from tests.integration.endstate import (
    record as state_record,
)
from toolkit.lab.models import MODEL_FILE

pytestmark = pytest.mark.lab

# rig01 mixed (2x 3060 + 2x P106 + 2x RX 580), rig02 2x 3090 plain Linux, rig03 6x RX 580
# (unfit). Which cards of which rigs are fit (the CMP 90HX's narrow link among them) is
# preflight's, tested on the six-rig lab rack in test_preflight.py.
PROFILE = "hive-mixed6,linux-3090x2,hive-rx580x6"
FIT = ["rig01", "rig02"]


@pytest.fixture(scope="module")
def rack(lab_factory) -> Rack:
    return lab_factory(3, PROFILE)


@pytest.fixture(scope="module")
def farm(rack: Rack, tmp_path_factory: pytest.TempPathFactory) -> str:
    """The lab's farm file with its model pin moved from all rigs to each rig but the mixed
    one: rig01 serves preflight's plan for each card (the lab's model store holds the tiny
    model under every catalog GGUF name); rig02's plan is a vLLM checkpoint the lab has not."""
    pin = f"inference_server_model_file={MODEL_FILE}"
    lines = []
    for ln in rack.lab.inventory.read_text().splitlines(keepends=True):
        if ln.startswith(pin):
            continue
        if ln.startswith("rig0") and not ln.startswith("rig01 "):
            ln = f"{ln.rstrip()} {pin}\n"
        lines.append(ln)
    farm = tmp_path_factory.mktemp("farm") / "farm.ini"
    farm.write_text("".join(lines))
    return str(farm)


def test_convert_converts_fit_rigs_and_leaves_the_unfit_one_mining(rack, farm, journal, before):
    proc = rigpivot("convert", "-i", farm, "--yes", "--batch-size", "2",
                    "--journal", str(journal))  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    rep = report(journal)
    assert outcomes(rep) == {
        "rig01": "converted", "rig02": "converted", "rig03": "untouched",
    }  # fmt: skip
    for rig in FIT:
        assert state(rack, rig) == "ai"
    # The unfit rig was never touched: same files, same units, still hashing, no record.
    assert snapshot_of(rack, "rig03") == before["rig03"]
    assert rack.ssh("rig03", "test -e /var/lib/rigpivot && echo yes", check=False) == ""
    assert hashing(rack, "rig03")


def test_no_watchdog_rebooted_a_rig_during_conversion(rack):
    for rig in rack.rigs:
        assert rack.ssh(rig, "cat /var/log/lab/reboots.log 2>/dev/null", check=False) == ""


def test_every_endpoint_answers_the_openai_client(rack, journal):
    rep = report(journal)
    for r in rep["rigs"]:
        if r["outcome"] != "converted":
            continue
        assert r["endpoints"], r
        for url in r["endpoints"]:
            endpoint_answers(rack, r["host"], int(url.rsplit(":", 1)[1].split("/")[0]))


def test_each_card_of_the_mixed_rig_serves_its_own_plan(rack, journal):
    """rig01 (2x RTX 3060 + 2x P106 + 2x RX 580): each NVIDIA card serves preflight's plan for
    it, and the plans are not all alike."""
    rep = report(journal)
    plan = json.loads((Path(rep["journal"]) / "plan.json").read_text())
    (planned,) = [r["instances"] for r in plan["rigs"] if r["host"] == "rig01"]
    assert len({i["model_file"] for i in planned}) >= 2, (
        f"the mixed rig's plans are all alike: {planned}"
    )
    for inst in planned:
        env = rack.ssh("rig01", f"cat /etc/rigpivot/inference/{inst['gpu']}.env")
        assert f"RIGPIVOT_ENGINE={inst['engine']}\n" in env
        assert f"RIGPIVOT_MODEL=/var/lib/rigpivot/models/{inst['model_file']}\n" in env
        assert f"RIGPIVOT_CONTEXT={inst['context']}\n" in env
        endpoint_answers(rack, "rig01", 8000 + inst["gpu"])
    served = {
        i["gpu"]: i["served_name"]
        for i in state_record(rack, "rig01")["facts"]["inference_instances"]
    }
    assert served == {
        i["gpu"]: i["model_file"].removesuffix(".gguf") for i in planned
    }  # fmt: skip
    (row,) = [r for r in rep["rigs"] if r["host"] == "rig01"]
    assert {(i["gpu"], i["served_name"]) for i in row["instances"]} == set(served.items())


def test_a_second_convert_changes_nothing(rack, farm, journal):
    converted = {rig: snapshot_of(rack, rig) for rig in FIT}
    proc = rigpivot("convert", "-i", farm, "--yes", "--journal", str(journal))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    rep = report(journal)
    assert {h: o for h, o in outcomes(rep).items() if h in FIT} == dict.fromkeys(FIT, "already-ai")
    assert not (Path(rep["journal"]) / "ansible").exists(), "no play ran"
    for rig in FIT:
        assert snapshot_of(rack, rig) == converted[rig]


def test_status_shows_each_rigs_state(rack):
    proc = rigpivot("status", "-i", str(rack.lab.inventory))
    assert proc.returncode == 0, proc.stderr
    lines = {ln.split()[1]: ln for ln in proc.stdout.splitlines() if "rig0" in ln}
    assert all("ai" in lines[r] for r in FIT) and "mining" in lines["rig03"]


def test_rollback_returns_rigs_to_mining_byte_for_byte(rack, farm, journal, before):
    proc = rigpivot("rollback", "-i", farm, "--limit", ",".join(FIT), "--yes",
                    "--journal", str(journal))  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    assert outcomes(report(journal)) == dict.fromkeys(FIT, "mining")
    for rig in FIT:
        assert state(rack, rig) == "mining"
        wait_for(lambda rig=rig: hashing(rack, rig), 60, f"{rig} to hash again")
        assert snapshot_of(rack, rig) == before[rig], f"{rig} differs from before conversion"
        if rack.rigs[rig].startswith("hive-"):
            assert rack.ssh(rig, "systemctl is-active hive-watchdog").strip() == "active"
    for rig in rack.rigs:
        assert rack.ssh(rig, "cat /var/log/lab/reboots.log 2>/dev/null", check=False) == ""


def test_rollback_of_a_rig_that_is_mining_is_a_no_op_that_says_so(rack, journal):
    before = rack.ssh(
        "rig03",
        "ls -A /var/lib/rigpivot 2>/dev/null; systemctl is-active lolminer hive-miner",
        check=False,
    )
    proc = rigpivot("rollback", "-i", str(rack.lab.inventory), "--limit", "rig03", "--yes",
                    "--journal", str(journal))  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    (rig,) = report(journal)["rigs"]
    assert (rig["host"], rig["outcome"]) == ("rig03", "mining")
    assert rig["detail"] == "mining and in no conversion: nothing to roll back"
    after = rack.ssh(
        "rig03",
        "ls -A /var/lib/rigpivot 2>/dev/null; systemctl is-active lolminer hive-miner",
        check=False,
    )
    assert after == before  # no record written, no unit touched
