"""What convert reports when the operator stops it or a rig goes away mid-play (plays faked;
the lab-backed faults are in tests/integration/test_faults_interrupt.py)."""

from __future__ import annotations

import os
import signal
from pathlib import Path
from typing import Any

import pytest

from tests.unit.factories import card, rig
from toolkit import cli, pivot, runner
from toolkit.errors import InterruptedRunError
from toolkit.inventory import Host
from toolkit.models import FleetReport
from toolkit.policy import Policy, judge_rig
from toolkit.runner import PlayResult, RigOutcome


class FakePlays:
    """run_playbook's stand-in: each convert play ends as `outcome(host)` says."""

    def __init__(self, status: str, rigs: dict[str, RigOutcome]):
        self.status, self.rigs = status, rigs
        self.calls: list[tuple[str, list[str]]] = []

    def __call__(self, playbook: str, _inv: Any, limit: list[str], *_a: Any, **_k: Any):
        self.calls.append((playbook, list(limit)))
        result = PlayResult(playbook=playbook, status=self.status, rc=0)
        result.rigs = {h: self.rigs.get(h, RigOutcome(host=h)) for h in limit}
        return result


@pytest.fixture
def farm(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    inv = tmp_path / "farm.ini"
    inv.write_text(
        "[rack1]\nr1 ansible_host=127.0.0.1 ansible_port=1\nr2\nr3\n"
        '[all:vars]\nnet_hardening_admin_networks=["127.0.0.1/32"]\n'
    )
    verdicts = [judge_rig(Host(h), rig(card("rtx3060")), Policy()) for h in ("r1", "r2", "r3")]
    monkeypatch.setattr(
        pivot, "judge_fleet", lambda *_a: FleetReport(inventory=str(inv), rigs=verdicts)
    )
    monkeypatch.setattr(pivot, "probe_fleet", lambda *_a, **_k: [])  # the rigs do not answer
    return inv


def run(farm: Path, plays: FakePlays, monkeypatch, stop=lambda: False, batch=2):
    monkeypatch.setattr(pivot, "run_playbook", plays)
    opts = pivot.RunOptions(batch_size=batch, journal_root=farm.parent / "runs")
    return pivot.convert(farm, opts, lambda *_a: True, should_stop=stop)


def drained(host: str, **kw: Any) -> RigOutcome:
    return RigOutcome(
        host=host, reached=True, last_role="nvidia_driver", last_task="Install the driver.",
        record={"state": "drained", "step": "mining_drain"}, **kw,
    )  # fmt: skip


def test_an_interrupted_play_names_each_rig_with_its_recorded_state(farm, monkeypatch):
    plays = FakePlays("canceled", {"r1": drained("r1")})
    rep = run(farm, plays, monkeypatch)
    by = {r.host: r for r in rep.rigs}
    assert rep.interrupted and "interrupted by the operator" in (rep.stopped_early or "")
    assert by["r1"].outcome == "interrupted" and (by["r1"].state, by["r1"].step) == (
        "drained", "mining_drain",
    )  # fmt: skip
    assert "nvidia_driver: Install the driver." in by["r1"].detail
    # r2 was in the batch but no task reached it; r3's batch never started.
    assert by["r2"].outcome == "not-started" and by["r3"].outcome == "not-started"
    assert plays.calls == [("convert.yml", ["r1", "r2"])], "no rollback, no next batch"
    saved = (Path(rep.journal) / "report.json").read_text()
    assert '"interrupted": true' in saved


def test_a_stop_before_the_first_batch_runs_no_play(farm, monkeypatch):
    plays = FakePlays("successful", {})
    rep = run(farm, plays, monkeypatch, stop=lambda: True)
    assert rep.interrupted and plays.calls == []
    assert {r.outcome for r in rep.rigs} == {"not-started"}


def test_a_rig_that_went_away_is_reported_unreachable_not_rolled_back(farm, monkeypatch):
    gone = drained("r1", ok=False, unreachable=True, failed_task="Install the driver.",
                   message="Connection closed by remote host")  # fmt: skip
    plays = FakePlays("failed", {"r1": gone})
    rep = run(farm, plays, monkeypatch, batch=3)
    by = {r.host: r for r in rep.rigs}
    assert by["r1"].outcome == "unreachable" and by["r1"].state == "drained"
    assert "unreachable during nvidia_driver" in by["r1"].detail
    assert by["r2"].outcome == "converted" and not rep.failed and rep.unreachable == ["r1"]
    assert [c[0] for c in plays.calls] == ["convert.yml"], "no rollback of an unreachable rig"


def test_first_ctrl_c_asks_to_stop_and_the_second_quits(monkeypatch):
    # The handler in force before (Python's default, or what the test runner's worker set)
    # is the one in force after.
    before = signal.getsignal(signal.SIGINT)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    with pytest.raises(InterruptedRunError) as quit_, cli._stop_on_ctrl_c() as stop:
        os.kill(os.getpid(), signal.SIGINT)
        assert stop.is_set()
        os.kill(os.getpid(), signal.SIGINT)
        pytest.fail("the second Ctrl-C did not quit")
    assert quit_.value.exit_code == 130
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    signal.signal(signal.SIGINT, before)


def test_a_loop_that_lost_the_rig_is_described_by_its_item_not_its_summary():
    res = {
        "msg": "All items completed",
        "results": [
            {"item": "0", "changed": True},
            {"item": "1", "unreachable": True, "msg": "Data could not be sent to remote host"},
        ],
    }
    assert runner._failure_message(res) == "Data could not be sent to remote host"
