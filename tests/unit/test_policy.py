"""Fitness decisions from facts: which cards serve AI, with which engine and model, and why not."""

from __future__ import annotations

import pytest

from tests.unit.factories import card, rig
from toolkit.inventory import Host
from toolkit.policy import Policy, judge_card, judge_rig

P = Policy()


def test_rtx3060_serves_a_14b_model_on_llamacpp_as_vllm_would_leave_too_little_context():
    v = judge_card(card("rtx3060"), P)
    assert v.fit and v.engines == ["vllm", "llama.cpp"]
    # Qwen2.5-14B AWQ is 9.98 GB: 12 GiB x 0.90 - 1 GiB leaves KV cache for ~2,700 tokens.
    assert (v.best.model, v.best.quant, v.best.engine) == ("qwen2.5-14b", "Q4_K_M", "llama.cpp")
    assert v.best.need_mib <= v.best.usable_mib
    assert v.best.max_context >= P.min_context
    why = next(n for n in v.notes if n.startswith("vllm Qwen2.5-14B-Instruct AWQ"))
    assert "12288 MiB × 0.90 − 1024 MiB" in why and "rigpivot_min_context 4096" in why
    tokens = int(why.split("KV cache for ")[1].split(" tokens")[0])
    assert 2000 < tokens < P.min_context


def test_gtx1660_super_6gb_is_not_planned_vllm_with_an_8b_awq_model():
    v = judge_card(card("gtx1660s"), P)
    assert v.engines == ["vllm", "llama.cpp"]  # compute capability 7.5: vLLM could run
    assert v.fit
    assert not (v.best.engine == "vllm" and v.best.model == "llama-3.1-8b")
    assert (v.best.engine, v.best.model, v.best.quant) == ("llama.cpp", "llama-3.1-8b", "Q4_K_M")
    # Llama-3.1-8B AWQ is 5.73 GB: more than 6 GiB x 0.90 - 1 GiB before any KV cache.
    assert any(
        n.startswith("vllm Llama-3.1-8B-Instruct AWQ") and "weights alone exceed" in n
        for n in v.notes
    ), v.notes
    r = judge_rig(Host("r"), rig(*[card("gtx1660s", i) for i in range(6)]), P)
    assert r.engine == "llama.cpp" and r.engines == ["llama.cpp"]


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


def test_mixed_rig_plans_each_card_on_its_own():
    facts = rig(
        card("rtx3090", 0, gen=3, width=16),
        card("rtx3090", 1, gen=3, width=16),
        *[card("p106", i) for i in range(2, 6)],
        ram_mib=32768,
    )
    v = judge_rig(Host("mixed"), facts, P)
    assert v.verdict == "fit" and v.instances == 6
    plans = {p.gpu: p.fit for p in v.plans}
    for i in (0, 1):  # the 3090s serve the 32B model on vLLM, not the P106s' 8B
        assert (plans[i].engine, plans[i].model, plans[i].quant) == ("vllm", "qwen2.5-32b", "AWQ")
        assert plans[i].max_context >= P.min_context
    for i in range(2, 6):
        assert (plans[i].engine, plans[i].model, plans[i].quant) == (
            "llama.cpp",
            "llama-3.1-8b",
            "Q4_K_M",
        )
    assert v.engines == ["llama.cpp", "vllm"]  # both engines are installed
    # The rig-level summary (one engine and model per rig) is the plan most cards have.
    assert (v.engine, v.model.model) == ("llama.cpp", "llama-3.1-8b")


def test_load_time_counts_the_disk_read_and_the_pcie_transfer():
    facts = rig(card("rtx3090", 0, gen=3, width=16), disk="usb", ram_mib=32768)
    v = judge_rig(Host("usb"), facts, P)
    fit = v.plans[0].fit
    size = fit.weights_mib * 2**20
    assert fit.disk_seconds == pytest.approx(size / 20e6, abs=0.1)  # a USB stick: ~20 MB/s
    assert fit.pcie_seconds == pytest.approx(size / (16 * 985e6), abs=0.1)
    assert fit.load_seconds == pytest.approx(fit.disk_seconds + fit.pcie_seconds, abs=0.2)
    assert fit.load_seconds > 900  # a 19 GB model read from a USB stick: about a quarter hour
    w = next(w for w in v.warnings if w.startswith("slow model load"))
    assert "USB drive sdb" in w and "~20 MB/s" in w
    nvme = judge_rig(
        Host("nvme"), rig(card("rtx3090", 0, gen=3, width=16), disk="nvme", ram_mib=32768), P
    )
    assert nvme.plans[0].fit.load_seconds < 15
    assert not any(w.startswith("slow model load") for w in nvme.warnings)


def test_a_model_the_farm_added_is_planned_like_a_built_in_one():
    from toolkit.hardware import ModelCatalog, ModelShape, model_catalog

    base = model_catalog()
    tiny = ModelShape(
        name="tiny-llama", hidden_size=64, intermediate_size=128, vocab_size=361, layers=2,
        heads=4, kv_heads=4, head_dim=16, max_context=2048, files={"F32": 1_000_000},
        engine="llama.cpp",
    )  # fmt: skip
    cat = ModelCatalog(quantizations=base.quantizations, models={**base.models, "tiny": tiny})
    host = Host("r", vars={"rigpivot_target_models": ["tiny"], "rigpivot_min_context": 1024})
    from toolkit.policy import policy_for

    v = judge_rig(host, rig(card("p106")), policy_for(host, cat))
    assert (v.engine, v.model.model, v.model.quant) == ("llama.cpp", "tiny", "F32")
    assert v.model.max_context == 2048


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
    (why,) = [r for r in v.reasons if "Ubuntu 18.04.6 LTS" in r]
    assert "re-image the rig onto one of them first" in why
    assert "it has the room to stage rigpivot's Debian 12 image beside its OS" in why
    # A rig without the room for a reflash is told what it lacks.
    facts.host.disk_free_mib, facts.host.ram_mib = 1500, 900
    (why,) = [r for r in judge_rig(Host("r"), facts, Policy()).reasons if "18.04" in r]
    assert ("staging rigpivot's Debian 12 image beside its OS needs 2560 MiB free on its root "
            "(it has 1500) and 1024 MiB of RAM (it has 900)") in why  # fmt: skip
    facts.host.disk_free_mib, facts.host.ram_mib = 100_000, 32_000
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
