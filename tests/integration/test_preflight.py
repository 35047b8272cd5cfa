"""Preflight on a lab rack: the verdicts an operator gets for every rig profile in the catalog."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from tests.collection import ansible, build, install
from tests.integration.conftest import Rack
from toolkit.inventory import load_inventory
from toolkit.probe import ProbeOptions, probe_fleet

pytestmark = pytest.mark.lab


@pytest.fixture(scope="module")
def rack(lab_factory) -> Rack:
    return lab_factory(6, "mixed")


def preflight(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["rigpivot", "preflight", *args], capture_output=True, text=True,
                          timeout=300)  # fmt: skip


@pytest.fixture(scope="module")
def report(rack: Rack, tmp_path_factory) -> dict:
    out = tmp_path_factory.mktemp("report")
    proc = preflight("--inventory", str(rack.lab.inventory), "--json", str(out / "r.json"),
                     "--html", str(out / "r.html"))  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "<html" in (out / "r.html").read_text()
    data = json.loads((out / "r.json").read_text())
    data["console"] = proc.stdout
    return data


def verdict(report: dict, profile: str, rack: Rack) -> dict:
    host = next(name for name, p in rack.rigs.items() if p == profile)
    return next(r for r in report["rigs"] if r["host"] == host)


def test_rtx_rigs_get_the_biggest_model_that_really_fits(report, rack):
    """A 3090 serves Qwen2.5-32B AWQ on vLLM; on a 12 GB 3060 that checkpoint's real size
    (embeddings and head in 16-bit) leaves vLLM too little KV cache, so it serves the 14B as a
    GGUF on llama.cpp, and the report says why."""
    v = verdict(report, "linux-3090x2", rack)
    assert (v["verdict"], v["engine"], v["model"]["model"]) == ("fit", "vllm", "qwen2.5-32b")
    assert v["instances"] == len(v["cards"])
    v = verdict(report, "hive-3060x6", rack)
    assert (v["verdict"], v["engine"], v["model"]["model"], v["model"]["quant"]) == (
        "fit", "llama.cpp", "qwen2.5-14b", "Q4_K_M",
    )  # fmt: skip
    assert v["instances"] == len(v["cards"])
    notes = [n for c in v["cards"] for n in c["notes"]]
    assert any("vllm" in n and "rigpivot_min_context" in n for n in notes), notes


def test_p106_rig_is_fit_only_for_llamacpp(report, rack):
    v = verdict(report, "hive-p106x8", rack)
    assert v["verdict"] == "fit" and v["engine"] == "llama.cpp"
    assert all(c["engines"] == ["llama.cpp"] for c in v["cards"])
    assert v["driver"] == "470.256.02"


def test_rx580_rig_is_unfit_with_no_supported_stack(report, rack):
    v = verdict(report, "hive-rx580x6", rack)
    assert v["verdict"] == "unfit" and len(v["cards"]) == 6
    assert all("no supported stack" in c["reasons"][0] for c in v["cards"])


def test_cmp_rig_is_flagged_for_its_pcie_1_1_x4_link(report, rack):
    v = verdict(report, "hive-cmp90hx4", rack)
    assert v["verdict"] == "fit"
    assert any("PCIe 1.1 x4" in w for w in v["warnings"])
    assert {c["link"] for c in v["cards"]} == {"Gen1 x4"}


def test_mixed_rig_serves_its_nvidia_cards_and_names_the_amd_ones(report, rack):
    v = verdict(report, "hive-mixed6", rack)
    assert v["verdict"] == "fit" and v["engine"] == "llama.cpp" and v["instances"] == 4
    assert sum(not c["fit"] for c in v["cards"]) == 2


def test_fleet_summary_and_mining_state_are_reported(report):
    assert "24 of 32 cards fit, 5 of 6 rigs convertible" in report["console"]
    assert all(r["mining"] for r in report["rigs"]), "every lab rig mines before conversion"
    assert {r["platform"] for r in report["rigs"]} == {"hiveos", "linux"}


def judged(rig: dict) -> dict:
    """A rig's verdict without its live readings (power draw, temperatures, miner figures)."""
    return {k: v for k, v in rig.items() if k != "facts"}


def test_the_preflight_play_judges_every_rig_as_the_cli_does(report, rack, tmp_path: Path):
    """`ansible-playbook rigpivot.farm.preflight` on the installed collection, no rigpivot CLI
    (as an AWX job runs it): every rig gets the CLI's verdict and plan, and a rig that cannot
    be reached is a verdict, not a failed run."""
    work, out = tmp_path / "work", tmp_path / "out"
    work.mkdir(), out.mkdir()
    env = install(build(tmp_path), tmp_path / "collections", work)
    inv = work / "farm.ini"
    inv.write_text(rack.lab.inventory.read_text().replace(
        "[rack1]", "[rack1]\nghost ansible_host=127.0.0.1 ansible_port=9", 1))  # fmt: skip
    proc = ansible("ansible-playbook", "-i", str(inv), "rigpivot.farm.preflight",
                   "-e", f"rigpivot_report_dir={out}", env=env, cwd=work, timeout=600)  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    played = {r["host"]: r for r in json.loads((out / "preflight.json").read_text())["rigs"]}
    ghost = played.pop("ghost")
    assert (ghost["status"], ghost["verdict"]) == ("unreachable", "unknown"), ghost
    assert "cannot reach ghost" in ghost["error"], ghost
    assert {h: judged(r) for h, r in played.items()} == {
        r["host"]: judged(r) for r in report["rigs"]
    }
    assert all(r["facts"]["gpus"] is not None for r in played.values())


def test_nvml_and_nvidia_smi_paths_give_the_same_facts(rack: Rack):
    hosts = load_inventory(rack.lab.inventory).select("rig01,rig03,rig04,rig06")
    by_nvml = probe_fleet(hosts, ProbeOptions(gpu_source="nvml"))
    by_smi = probe_fleet(hosts, ProbeOptions(gpu_source="nvidia-smi"))
    for a, b in zip(by_nvml, by_smi, strict=True):
        assert a.facts and b.facts, (a.error, b.error)
        assert a.facts.gpu_source == "nvml" and b.facts.gpu_source == "nvidia-smi"
        strip = {"source", "temperature_c", "vram_free_mib", "power_draw_w"}  # live readings
        assert [g.model_dump(exclude=strip) for g in a.facts.gpus] == [
            g.model_dump(exclude=strip) for g in b.facts.gpus
        ]
        assert a.facts.nvidia_driver == b.facts.nvidia_driver


def test_unreachable_rig_is_reported_and_the_others_still_probed(rack: Rack, tmp_path: Path):
    inv = tmp_path / "farm.ini"
    inv.write_text(rack.lab.inventory.read_text().replace(
        "[rack1]", "[rack1]\nghost ansible_host=127.0.0.1 ansible_port=9", 1))  # fmt: skip
    proc = preflight("--inventory", str(inv), "--json", str(tmp_path / "r.json"))
    assert proc.returncode == 3, proc.stdout + proc.stderr
    rigs = json.loads((tmp_path / "r.json").read_text())["rigs"]
    assert [r["status"] for r in rigs].count("unreachable") == 1
    assert "cannot reach [127.0.0.1]:9" in next(r for r in rigs if r["host"] == "ghost")["error"]
    assert sum(r["verdict"] == "fit" for r in rigs) == 5


def test_changed_host_key_is_refused_and_the_others_go_on(rack: Rack, tmp_path: Path):
    rack.lab.rekey("rig02")
    try:
        proc = preflight("--inventory", str(rack.lab.inventory), "--json", str(tmp_path / "r.json"))
        assert proc.returncode == 3
        rigs = {r["host"]: r for r in json.loads((tmp_path / "r.json").read_text())["rigs"]}
        assert "host key for [127.0.0.1]:" in rigs["rig02"]["error"]
        assert "has CHANGED" in rigs["rig02"]["error"] and "ssh-keygen" in rigs["rig02"]["error"]
        assert all(r["status"] == "probed" for h, r in rigs.items() if h != "rig02")
        # an explicit opt-in to new keys still refuses a changed one
        proc = preflight("--inventory", str(rack.lab.inventory), "--limit", "rig02",
                         "--accept-new-host-keys")  # fmt: skip
        assert proc.returncode == 3
    finally:
        rack.lab.write_controller_files()
