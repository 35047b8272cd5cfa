"""How convert reads a batch's play: a rig is converted only when its record says `ai`, every
rig of a batch runs to its end, and a rig the play left half-way is rolled back like a failed
one. ansible-runner is replaced by a fake that answers as the real play did."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.unit.factories import card, rig
from toolkit import pivot
from toolkit.inventory import Host
from toolkit.models import FleetReport
from toolkit.policy import Policy, judge_rig
from toolkit.runner import PlayResult, RigOutcome


@pytest.fixture
def farm(tmp_path: Path) -> Path:
    inv = tmp_path / "farm.ini"
    inv.write_text(
        "[rack1]\nrig01 ansible_host=127.0.0.1\nrig02 ansible_host=127.0.0.1\n"
        '[all:vars]\nnet_hardening_admin_networks=["127.0.0.1/32"]\n'
    )
    return inv


def fleet(inventory: Path, *_a: Any, **_k: Any) -> FleetReport:
    verdicts = [
        judge_rig(
            Host(name, vars={"ansible_host": "10.0.0.1"}),
            rig(card("rtx3090"), ram_mib=65536),
            Policy(),
        )
        for name in ("rig01", "rig02")
    ]
    return FleetReport(inventory=str(inventory), rigs=verdicts)


def test_a_rig_the_play_left_half_way_is_rolled_back_not_reported_converted(
    farm: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    calls: list[tuple[str, list[str], dict[str, Any]]] = []

    def play(playbook, _inv, limit, private_dir, extravars=None, **_k) -> PlayResult:
        calls.append((playbook, list(limit), extravars or {}))
        result = PlayResult(playbook=playbook, status="failed", rc=2)
        if playbook == "convert.yml":
            # rig02 failed at cuda; the play stopped there for rig01 too, which had no failed
            # task: its last record says drained.
            result.rigs = {
                "rig01": RigOutcome("rig01", reached=True, record={"state": "drained"},
                                    last_task="Install the CUDA toolkit."),
                "rig02": RigOutcome("rig02", ok=False, reached=True, failed_task="cuda: Install",
                                    message="dpkg returned an error code (1)",
                                    record={"state": "stack_installed"}),
            }  # fmt: skip
        else:
            result.status, result.rc = "successful", 0
            result.rigs = {
                h: RigOutcome(h, reached=True, record={"state": "mining"}) for h in limit
            }
        return result

    monkeypatch.setattr(pivot, "judge_fleet", fleet)
    monkeypatch.setattr(pivot, "run_playbook", play)
    opts = pivot.RunOptions(batch_size=2, max_fail_percent=100, journal_root=tmp_path / "runs")
    rep = pivot.convert(farm, opts, lambda _p, _f: True)

    assert calls[0][0] == "convert.yml"
    # the play's own max_fail_percentage never cuts a batch short
    assert calls[0][2]["rigpivot_max_fail_percent"] == 100
    assert calls[1][:2] == ("rollback.yml", ["rig01", "rig02"])
    by_host = {r.host: r for r in rep.rigs}
    assert by_host["rig01"].outcome == "rolled-back"
    assert "the play ended before the rig finished (its record says drained" in (
        by_host["rig01"].detail
    )
    assert by_host["rig02"].outcome == "rolled-back"
    assert (
        by_host["rig02"].detail
        == "convert failed at cuda: Install: dpkg returned an error code (1)"
    )


def test_a_rig_whose_record_says_ai_is_converted(
    farm: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    def play(playbook, _inv, limit, *_a, **_k) -> PlayResult:
        result = PlayResult(playbook=playbook, status="successful", rc=0)
        result.rigs = {h: RigOutcome(h, reached=True, record={"state": "ai"}) for h in limit}
        return result

    monkeypatch.setattr(pivot, "judge_fleet", fleet)
    monkeypatch.setattr(pivot, "run_playbook", play)
    opts = pivot.RunOptions(batch_size=2, journal_root=tmp_path / "runs")
    rep = pivot.convert(farm, opts, lambda _p, _f: True)
    assert [r.outcome for r in rep.rigs] == ["converted", "converted"]


def test_rollback_reports_a_rig_the_play_never_restored_as_failed(
    farm: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    from toolkit.probe import ProbeResult

    converted = rig(card("rtx3090"), state="ai")
    assert converted.pivot is not None
    converted.pivot.snapshot_id = "20261122T001500Z"

    def probe(hosts, _opts, *_a):
        return [ProbeResult(h.name, converted, None, 0.1) for h in hosts]

    def play(playbook, _inv, limit, *_a, **_k) -> PlayResult:
        # a serial batch failed whole before rig02's turn: Ansible ended the play
        result = PlayResult(playbook=playbook, status="failed", rc=2)
        result.rigs = {
            "rig01": RigOutcome("rig01", ok=False, reached=True, failed_task="restore",
                                message="quarantined"),
            "rig02": RigOutcome("rig02"),
        }  # fmt: skip
        return result

    monkeypatch.setattr(pivot, "probe_fleet", probe)
    monkeypatch.setattr(pivot, "run_playbook", play)
    rep = pivot.rollback(farm, pivot.RunOptions(journal_root=tmp_path / "runs"), lambda _h: True)
    by_host = {r.host: r for r in rep.rigs}
    assert by_host["rig01"].outcome == "quarantined"
    assert by_host["rig02"].outcome == "failed"
    assert "not restored: the play ended first" in by_host["rig02"].detail
