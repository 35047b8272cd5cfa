"""The outcome rules of convert and rollback, read as an operator reads the report: each rig's
outcome from what the plays did, with no lab and nothing patched."""

from __future__ import annotations

from toolkit import outcomes
from toolkit.models import served_lines
from toolkit.plan import RigPlan
from toolkit.runner import PlayResult, RigOutcome

PLAN = RigPlan(host="rig01", action="convert", engine="vllm", model="Qwen2.5-32B AWQ", gpus=[0, 1])


def play(status: str = "successful", **rigs: RigOutcome) -> PlayResult:
    return PlayResult(playbook="convert.yml", status=status, rc=0, rigs=dict(rigs))


def converted(rig: RigOutcome, rolled: PlayResult | None = None, **kw: object):
    args = {"batch": 1, "check": False, "canceled": False, "address": "10.0.0.7:22", **kw}
    return outcomes.converted(PLAN, rig, rolled, **args)  # type: ignore[arg-type]


def test_a_rig_whose_record_says_ai_is_converted_with_its_endpoints():
    rig = RigOutcome("rig01", reached=True, record={"state": "ai", "facts": {}})
    res = converted(rig)
    assert (res.outcome, res.state, res.step) == ("converted", "ai", "validate")
    assert res.endpoints == ["http://10.0.0.7:8000/v1", "http://10.0.0.7:8001/v1"]


def test_the_report_shows_what_the_rig_serves_when_the_farm_file_pins_another_model():
    facts = {"inference_engine": "llama.cpp", "inference_model": "tiny", "inference_ports": [9000]}
    res = converted(RigOutcome("rig01", reached=True, record={"state": "ai", "facts": facts}))
    assert (res.engine, res.model, res.endpoints) == (
        "llama.cpp",
        "tiny",
        ["http://10.0.0.7:9000/v1"],
    )
    assert "preflight chose vllm Qwen2.5-32B AWQ" in res.detail


def test_a_play_cut_short_leaves_a_rig_half_way_and_it_counts_as_failed():
    p = play("failed", rig01=RigOutcome("rig01", reached=True, record={"state": "drained"},
                                        last_task="Install the CUDA toolkit."))  # fmt: skip
    outcomes.mark_unfinished(p)
    assert p.failed() == ["rig01"]
    assert p.rigs["rig01"].failed_task == "Install the CUDA toolkit."
    assert "its record says drained, not ai" in (p.rigs["rig01"].message or "")


def test_only_rigs_the_play_reached_and_that_still_answer_are_rolled_back():
    p = play(
        "failed",
        changed=RigOutcome("changed", ok=False, reached=True, record={"state": "drained"}),
        snapfail=RigOutcome("snapfail", ok=False, reached=True, failed_task="mining_snapshot"),
        never=RigOutcome("never", ok=False, reached=False),
        gone=RigOutcome("gone", ok=False, reached=True, unreachable=True),
        fine=RigOutcome("fine", reached=True, record={"state": "ai"}),
    )
    assert outcomes.to_roll_back(p, {}) == ["changed"]
    assert outcomes.to_roll_back(play("canceled", **p.rigs), {}) == []
    # a rig that was mid-conversion before the run has something to undo, record or not
    assert outcomes.to_roll_back(p, {"snapfail": "drained"}) == ["changed", "snapfail"]


def failed_at_cuda() -> RigOutcome:
    """A rig that failed part-way through conversion (its record is past `mining`)."""
    return RigOutcome("rig01", ok=False, reached=True, failed_task="cuda: Install",
                      message="dpkg", record={"state": "stack_installed"})  # fmt: skip


def test_a_failed_rig_whose_rollback_worked_is_rolled_back_and_mining():
    rig = failed_at_cuda()
    back = play(rig01=RigOutcome("rig01", reached=True, record={"state": "mining"}))
    res = converted(rig, back)
    assert (res.outcome, res.state) == ("rolled-back", "mining")
    assert res.detail == "convert failed at cuda: Install: dpkg"


def test_a_failed_rig_whose_rollback_failed_is_quarantined_with_both_reasons():
    rig = failed_at_cuda()
    back = play("failed", rig01=RigOutcome("rig01", ok=False, reached=True, message="mirror down"))
    res = converted(rig, back)
    assert (res.outcome, res.state) == ("quarantined", "quarantined")
    assert "rollback failed too: mirror down" in res.detail


def test_a_rig_that_went_away_during_its_rollback_is_unreachable_with_where_it_stands():
    rig = failed_at_cuda()
    back = play(rig01=RigOutcome("rig01", ok=False, reached=True, unreachable=True, message="gone"))
    res = converted(rig, back, recorded=("restoring", "mining_restore"))
    assert res.outcome == "unreachable"
    assert "recorded state restoring (step mining_restore)" in res.detail


def test_an_interrupted_rig_names_its_step_and_how_to_resume():
    rig = RigOutcome("rig01", reached=True, last_role="nvidia_driver", last_task="Install")
    res = converted(rig, canceled=True, recorded=("drained", "mining_drain"))
    assert res.outcome == "interrupted"
    assert "during nvidia_driver: Install; recorded state drained" in res.detail
    assert outcomes.RESUME_HINT in res.detail
    assert converted(RigOutcome("rig01"), canceled=True).outcome == "not-started"


def test_check_mode_says_would_convert_or_what_would_fail():
    assert converted(RigOutcome("rig01", reached=True), check=True).outcome == "would-convert"
    bad = RigOutcome("rig01", ok=False, reached=True, failed_task="t", message="m")
    assert (converted(bad, check=True).outcome, converted(bad, check=True).detail) == (
        "failed",
        "t: m",
    )


def test_the_rigs_left_mid_way_are_those_whose_record_must_be_read_back():
    p = play(
        a=RigOutcome("a", reached=True, record={"state": "ai"}),
        b=RigOutcome("b", ok=False, reached=True, unreachable=True),
        c=RigOutcome("c", ok=False, reached=True),
    )
    assert outcomes.left_midway(["a", "b", "c"], p, ["c"], None) == ["b", "c"]
    back = play(c=RigOutcome("c", reached=True, record={"state": "mining"}))
    assert outcomes.left_midway(["a", "b", "c"], p, ["c"], back) == ["b"]
    assert outcomes.batch_stopped(p, None, ["c"], check=False)
    assert not outcomes.batch_stopped(p, back, ["c"], check=False)


def test_a_rollback_that_ended_before_a_rig_was_restored_is_not_reported_mining():
    p = PlayResult(playbook="rollback.yml", status="failed", rc=2,
                   rigs={"rig01": RigOutcome("rig01", reached=True, record={"state": "ai"})})  # fmt: skip
    res = outcomes.restored("rig01", p, check=False)
    assert (res.outcome, res.state) == ("failed", "ai")
    ok = PlayResult(playbook="rollback.yml", status="successful", rc=0,
                    rigs={"rig01": RigOutcome("rig01", reached=True, record={"state": "mining"})})  # fmt: skip
    assert outcomes.restored("rig01", ok, check=False).outcome == "mining"


def test_a_rig_whose_restore_failed_is_quarantined():
    p = PlayResult(playbook="rollback.yml", status="failed", rc=2, rigs={
        "rig01": RigOutcome("rig01", ok=False, reached=True, failed_task="restore", message="x")})  # fmt: skip
    res = outcomes.restored("rig01", p, check=False)
    assert (res.outcome, res.state, res.detail) == ("quarantined", "quarantined", "restore: x")


def test_a_snapshot_that_fails_changes_nothing_the_rig_keeps_mining():
    rig = RigOutcome("rig01", ok=False, reached=True, failed_task="mining_snapshot: Take",
                     message="No space left on device")  # fmt: skip
    res = converted(rig)
    assert (res.outcome, res.state) == ("not-started", "mining")
    assert "before changing the rig: No space left on device; it keeps mining" in res.detail


def test_the_report_shows_what_each_card_serves():
    instances = [
        {"gpu": 0, "port": 8000, "engine": "vllm", "served_name": "qwen2.5-32b-awq"},
        {"gpu": 1, "port": 8001, "engine": "vllm", "served_name": "qwen2.5-32b-awq"},
        {"gpu": 2, "port": 8002, "engine": "llama.cpp", "served_name": "llama-3.1-8b-q4_k_m"},
    ]
    facts = {"inference_instances": instances, "inference_ports": [8000, 8001, 8002]}
    res = converted(RigOutcome("rig01", reached=True, record={"state": "ai", "facts": facts}))
    assert served_lines(res.instances) == [
        "2× vllm qwen2.5-32b-awq",
        "1× llama.cpp llama-3.1-8b-q4_k_m",
    ]
