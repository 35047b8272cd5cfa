"""Fitness decisions from facts: which cards serve AI, with which engine and model, and why not."""

from __future__ import annotations

from tests.unit.factories import card, rig
from toolkit.inventory import Host
from toolkit.policy import Policy, judge_card, judge_rig

P = Policy()


def test_rtx3060_is_fit_for_vllm_with_a_14b_awq_model():
    v = judge_card(card("rtx3060"), P)
    assert v.fit and v.engines == ["vllm", "llama.cpp"]
    assert (v.best.model, v.best.quant, v.best.engine) == ("qwen2.5-14b", "AWQ", "vllm")
    assert v.best.need_mib <= v.best.usable_mib
    assert v.best.max_context >= P.min_context


def test_rtx3090_serves_a_32b_model():
    v = judge_card(card("rtx3090", gen=3, width=8), P)
    assert v.fit and v.best.model == "qwen2.5-32b"
    assert not any("slow PCIe" in w for w in v.warnings)


def test_pascal_p106_is_llamacpp_only():
    v = judge_card(card("p106"), P)
    assert v.engines == ["llama.cpp"]
    assert v.fit and v.best.engine == "llama.cpp" and v.best.quant == "Q4_K_M"
    assert any("llama.cpp only" in w for w in v.warnings)


def test_p106_is_unfit_by_vram_when_policy_targets_bigger_models():
    v = judge_card(card("p106"), Policy(target_models=["qwen2.5-14b"]))
    assert not v.fit and v.reasons[0].startswith("too little VRAM: 6 GiB")


def test_rx580_has_no_supported_stack():
    v = judge_card(card("rx580"), P)
    assert not v.fit and "no supported stack" in v.reasons[0] and "gfx803" in v.reasons[0]


def test_cmp_is_fit_but_flagged_for_its_pcie_1_1_x4_link():
    v = judge_card(card("cmp90hx", gen=1, width=4), P)
    assert v.fit
    assert any("CMP card: PCIe 1.1 x4" in w for w in v.warnings)
    assert any("slow PCIe link Gen1 x4 (1000 MB/s)" in w for w in v.warnings)
    assert v.link == "Gen1 x4"


def test_x1_riser_warns_with_a_load_time_estimate():
    v = judge_card(card("rtx3060", gen=1, width=1), P)
    w = next(w for w in v.warnings if "slow PCIe link" in w)
    assert "Gen1 x1 (250 MB/s)" in w and "model load ≈" in w and "never split" in w
    assert v.best.load_seconds == round(v.best.weights_mib * 2**20 / 250e6, 1)


def test_old_driver_without_compute_cap_falls_back_to_the_catalog():
    v = judge_card(card("p106", compute_cap=None), P)
    assert v.compute_cap == "6.1" and v.engines == ["llama.cpp"]


def test_mixed_rig_serves_every_fit_card_with_llamacpp():
    facts = rig(
        card("rtx3060", 0),
        card("rtx3060", 1),
        card("p106", 2),
        card("p106", 3),
        card("rx580", 4),
        card("rx580", 5),
    )
    v = judge_rig(Host("mixed"), facts, P)
    assert v.verdict == "fit" and v.engine == "llama.cpp" and v.instances == 4
    assert v.model.model == "llama-3.1-8b"  # sized for the smallest fit card (6 GiB)


def test_rig_of_rx580s_is_unfit_with_the_reason():
    v = judge_rig(Host("amd"), rig(*[card("rx580", i) for i in range(6)]), P)
    assert v.verdict == "unfit" and "no supported stack" in v.reasons[0]


def test_rig_with_too_little_disk_or_ram_is_unfit():
    v = judge_rig(Host("r"), rig(card("rtx3060"), disk_mib=2000), P)
    assert v.verdict == "unfit" and v.reasons[0].startswith("disk: 2000 MiB free")
    v = judge_rig(Host("r"), rig(card("rtx3060"), ram_mib=4096), P)
    assert v.verdict == "unfit" and v.reasons[0].startswith("RAM: 4096 MiB")


def test_decode_speed_bound_is_bandwidth_over_bytes_per_token():
    v = judge_card(card("rtx3090", gen=3, width=8), P)
    per_token = (
        v.best.weights_mib * 2**20
    ) + v.best.kv_mib_per_1k_tokens / 1000 * 2**20 * P.min_context
    assert abs(v.best.decode_tokens_s - 936e9 / per_token) < 0.5


def test_rig_on_an_os_that_is_not_converted_in_place_is_unfit_with_what_to_do():
    facts = rig(*[card("rtx3060", i) for i in range(6)])
    facts.host.os_version, facts.host.os_pretty = "18.04", "Ubuntu 18.04.6 LTS"
    v = judge_rig(Host("r"), facts, Policy())
    assert v.verdict == "unfit" and v.engine is None
    assert any("Ubuntu 18.04.6 LTS" in r and "re-image" in r for r in v.reasons), v.reasons
    # The farm can widen the list, per group or host.
    assert judge_rig(Host("r"), facts, Policy(inplace_os=["ubuntu 18.04"])).verdict == "fit"


def test_secure_boot_makes_a_rig_unfit_unless_the_farm_enrolled_a_key():
    facts = rig(*[card("rtx3060", i) for i in range(6)])
    facts.host.secure_boot = "enabled"
    v = judge_rig(Host("r"), facts, Policy())
    assert v.verdict == "unfit"
    assert any("Secure Boot" in r and "rigpivot_allow_secure_boot" in r for r in v.reasons)
    assert judge_rig(Host("r"), facts, Policy(allow_secure_boot=True)).verdict == "fit"
    facts.host.secure_boot = "disabled"
    assert judge_rig(Host("r"), facts, Policy()).verdict == "fit"
