"""Planning a conversion from preflight's verdicts."""

from __future__ import annotations

from tests.unit.factories import card, rig
from toolkit.inventory import Host
from toolkit.models import FleetReport, RigVerdict
from toolkit.plan import plan_conversion
from toolkit.policy import Policy, judge_rig


def fleet(**rigs) -> FleetReport:
    verdicts = [judge_rig(Host(name), facts, Policy()) for name, facts in rigs.items()]
    verdicts.append(RigVerdict(host="gone", address="10.0.0.9:22", status="unreachable",
                               error="cannot reach", verdict="unknown"))  # fmt: skip
    return FleetReport(inventory="farm.ini", rigs=verdicts)


def test_unfit_rigs_are_never_planned_for_conversion():
    plan = plan_conversion(fleet(amd=rig(card("rx580")), good=rig(card("rtx3060"))), 5)
    actions = {r.host: r.action for r in plan.rigs}
    assert actions == {"amd": "untouched", "good": "convert", "gone": "unreachable"}
    assert plan.batches == [["good"]]


def test_converted_rigs_are_left_alone_and_interrupted_ones_resume():
    plan = plan_conversion(
        fleet(done=rig(card("rtx3060"), state="ai"), half=rig(card("rtx3060"), state="drained")),
        5,
    )
    by = {r.host: r for r in plan.rigs}
    assert by["done"].action == "already-ai"
    assert by["half"].action == "convert" and by["half"].reason == "resuming from drained"


def test_quarantined_rigs_wait_for_the_operator():
    plan = plan_conversion(fleet(q=rig(card("rtx3060"), state="quarantined")), 5)
    assert plan.rigs[0].action == "quarantined" and plan.batches == []


def test_batches_follow_batch_size():
    rigs = {f"r{i}": rig(card("rtx3060")) for i in range(5)}
    assert plan_conversion(fleet(**rigs), 2).batches == [["r0", "r1"], ["r2", "r3"], ["r4"]]


def test_uniform_rig_keeps_the_rig_level_role_vars():
    r = plan_conversion(fleet(p106s=rig(card("p106", 0), card("p106", 1))), 1).rigs[0]
    assert r.role_vars() == {
        "rigpivot_plan_action": "convert",
        "rigpivot_plan_engine": "llama.cpp",
        "rigpivot_plan_gpus": [0, 1],
        "rigpivot_plan_model_file": "llama-3.1-8b-q4_k_m.gguf",
        "rigpivot_plan_nvidia_gpus": 2,
        "rigpivot_plan_engines": ["llama.cpp"],
        "rigpivot_plan_instances": [
            {"gpu": i, "engine": "llama.cpp", "model": "llama-3.1-8b", "quant": "Q4_K_M",
             "context": r.instances[i]["context"], "model_file": "llama-3.1-8b-q4_k_m.gguf"}
            for i in (0, 1)
        ],
    }  # fmt: skip


def test_mixed_rig_gives_each_fit_card_its_own_instance():
    facts = rig(
        card("rtx3090", 0), card("p106", 1), card("p106", 2), card("rx580", 3), ram_mib=32768
    )
    r = plan_conversion(fleet(mixed=facts), 1).rigs[0]
    assert r.gpus == [0, 1, 2]
    # The rig's summary is the plan most cards have; each card has its own instance.
    assert r.engine == "llama.cpp" and r.model_file == "llama-3.1-8b-q4_k_m.gguf"
    assert r.engines == ["llama.cpp", "vllm"]
    by_gpu = {i["gpu"]: i for i in r.role_vars()["rigpivot_plan_instances"]}
    assert set(by_gpu) == {0, 1, 2}
    assert (by_gpu[0]["engine"], by_gpu[0]["model_file"]) == ("vllm", "qwen2.5-32b-awq")
    assert by_gpu[1]["model_file"] == by_gpu[2]["model_file"] == "llama-3.1-8b-q4_k_m.gguf"
    assert all(i["context"] >= Policy().min_context for i in by_gpu.values())


def test_a_rig_left_mid_conversion_that_no_longer_looks_fit_is_returned_to_mining():
    """After a driver install, before the reboot, NVML reports a version mismatch and the cards
    look absent: the rig must not be left drained."""
    plan = plan_conversion(fleet(half=rig(state="stack_installed"), never=rig()), 5)
    by = {r.host: r for r in plan.rigs}
    assert by["half"].action == "return"
    assert "stopped mid-conversion (recorded state stack_installed)" in by["half"].reason
    assert by["never"].action == "untouched" and plan.batches == []


def test_a_damaged_pivot_record_is_named_and_the_rig_is_not_touched():
    facts = rig(card("rtx3060"), state="damaged")
    assert facts.pivot is not None
    facts.pivot.error = "Expecting value: line 1 column 11"
    plan = plan_conversion(fleet(broken=facts), 5)
    assert plan.rigs[0].action == "quarantined" and plan.batches == []
    assert (
        "pivot record (/var/lib/rigpivot/state.json) is damaged (Expecting" in plan.rigs[0].reason
    )
