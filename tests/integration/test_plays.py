"""The plays on their own, as AWX runs them: `ansible-playbook rigpivot.farm.convert` and
`rigpivot.farm.rollback` on the installed collection, no rigpivot CLI, no prompt. convert plans
by itself (preflight.yml), converts the fit rigs one batch at a time, and rolls a rig whose
conversion fails back to mining at once; rollback puts a converted rig back as it was. Each
rig's outcome is in the job's stats (set_stats: what AWX shows as artifacts), in the CLI's words.

One rack: rig01 a one-card HiveOS rig, rig02 a plain-Linux 1x RTX 3090 rig whose farm line pins
a driver the farm mirror does not have, so its conversion fails at the driver step, after the
snapshot and the drain."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest

from tests.collection import ansible, build, install
from tests.integration.conftest import Rack
from tests.integration.endstate import assert_ai_or_mining, record
from toolkit.plan import plan_conversion
from toolkit.preflight import run_preflight

pytestmark = pytest.mark.lab

BAD_DRIVER = "nvidia_driver_branch=535 nvidia_driver_version=535.999.01"


@pytest.fixture(scope="module")
def rack(lab_factory) -> Rack:
    return lab_factory(2, "hive-3060x1,linux-3090x1")


@pytest.fixture(scope="module")
def farm(rack: Rack, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The lab's farm file, rig02's line pinning the missing driver."""
    farm = tmp_path_factory.mktemp("farm") / "farm.ini"
    farm.write_text(re.sub(r"^(rig02 .*)$", rf"\1 {BAD_DRIVER}",
                           rack.lab.inventory.read_text(), count=1, flags=re.M))  # fmt: skip
    return farm


@pytest.fixture(scope="module")
def plays(farm: Path, tmp_path_factory: pytest.TempPathFactory):
    """run(playbook, *args): ansible-playbook on the installed collection with the farm file
    and a folder for the fetched snapshots."""
    tmp = tmp_path_factory.mktemp("plays")
    work = tmp / "work"
    work.mkdir()
    env = install(build(tmp), tmp / "collections", work)
    env["ANSIBLE_PIPELINING"] = "True"  # as the repository's ansible.cfg has it
    env["ANSIBLE_SHOW_CUSTOM_STATS"] = "True"  # each rig's outcome, as AWX's artifacts show it
    (tmp / "snapshots").mkdir()

    def run(playbook: str, *args: str) -> subprocess.CompletedProcess[str]:
        return ansible(
            "ansible-playbook", "-i", str(farm), f"rigpivot.farm.{playbook}",
            "-e", f"mining_snapshot_fetch_dir={tmp / 'snapshots'}", *args,
            env=env, cwd=work, timeout=1800,
        )  # fmt: skip

    return run


@pytest.fixture(scope="module")
def cli_plan(farm: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """rig01's plan as `rigpivot convert` gives it to the plays (its plan-inventory's host
    variables), taken while the rig still mines, as extra vars."""
    (rig01,) = plan_conversion(run_preflight(farm, "rig01"), 1).of("convert")
    out = tmp_path_factory.mktemp("plan") / "rig01.json"
    out.write_text(json.dumps(rig01.role_vars()))
    return out


@pytest.fixture(scope="module")
def converted(plays, cli_plan) -> subprocess.CompletedProcess[str]:
    return plays("convert", "-e", "rigpivot_batch_size=2", "-e", "rigpivot_max_fail_percent=100")


def outcomes(proc: subprocess.CompletedProcess[str]) -> dict[str, dict[str, str]]:
    """Each rig's outcome from the run's stats (set_stats: an AWX job's artifacts)."""
    line = re.search(r"^\s*RUN: (\{.*\})\s*$", proc.stdout, re.M)
    assert line, proc.stdout[-2000:]
    return dict(json.loads(line.group(1))["rigpivot_outcomes"])


def recap(proc: subprocess.CompletedProcess[str], host: str) -> dict[str, int]:
    line = re.search(rf"^{host}\s+: (.*)$", proc.stdout, re.M)
    assert line, proc.stdout[-2000:]
    return {k: int(v) for k, v in re.findall(r"(\w+)=(\d+)", line.group(1))}


def test_convert_alone_converts_the_fit_rig_and_rolls_the_failed_one_back(rack, before, converted):
    out = converted.stdout
    assert converted.returncode == 2, out[-4000:] + converted.stderr[-2000:]  # a rig failed
    assert record(rack, "rig01").get("state") == "ai", out[-6000:]
    assert assert_ai_or_mining(rack, "rig01", before["rig01"]) == "ai"
    # rig02 failed at the driver, after its snapshot and drain: back to mining, as before
    assert recap(converted, "rig02")["failed"] == 1
    assert re.search(r"convert failed at [^\n]*535\.999\.01[^\n]*; the rig was rolled back to "
                     r"mining", out), out[-4000:]  # fmt: skip
    assert assert_ai_or_mining(rack, "rig02", before["rig02"]) == "mining"
    rec = record(rack, "rig02")
    assert (rec["state"], rec["step"]) == ("mining", "mining_restore"), rec
    # the job's report, in the CLI's words
    found = outcomes(converted)
    assert {h: o["outcome"] for h, o in found.items()} == {"rig01": "converted",
                                                           "rig02": "rolled-back"}  # fmt: skip
    assert "535.999.01" in found["rig02"]["detail"], found
    # no lease left behind on either rig
    assert "lease" not in record(rack, "rig01") and "lease" not in rec


def test_a_second_convert_job_changes_nothing_on_the_converted_rig(rack, plays, converted):
    proc = plays("convert", "--limit", "rig01")
    assert proc.returncode == 0, proc.stdout[-4000:]
    assert recap(proc, "rig01")["changed"] == 0, proc.stdout[-4000:]
    assert outcomes(proc)["rig01"]["outcome"] == "already-ai"
    assert record(rack, "rig01")["state"] == "ai"


def test_every_role_run_again_with_the_plan_given_changes_nothing(rack, plays, cli_plan, converted):
    """The whole conversion is idempotent: with the plan given as the CLI gives it, convert.yml
    plans nothing and runs every role again on the converted rig."""
    proc = plays("convert", "--limit", "rig01", "-e", f"@{cli_plan}")
    assert proc.returncode == 0, proc.stdout[-4000:]
    assert "Probe the rig and judge it" in proc.stdout  # skipped, not absent
    counts = recap(proc, "rig01")
    assert counts["changed"] == 0 and counts["ok"] > 100, proc.stdout[-6000:]
    assert record(rack, "rig01")["state"] == "ai"


def test_rollback_alone_puts_the_rig_back_byte_for_byte(rack, before, plays, converted):
    proc = plays("rollback", "--limit", "rig01")
    assert proc.returncode == 0, proc.stdout[-4000:]
    assert assert_ai_or_mining(rack, "rig01", before["rig01"]) == "mining"
    assert record(rack, "rig01")["state"] == "mining"
    assert outcomes(proc) == {"rig01": {"outcome": "mining", "detail": ""}}


def test_the_plays_preflight_report_is_written_where_asked(rack, plays, tmp_path: Path):
    proc = plays("preflight", "-e", f"rigpivot_report_dir={tmp_path}")
    assert proc.returncode == 0, proc.stdout[-4000:]
    rigs = {r["host"]: r for r in json.loads((tmp_path / "preflight.json").read_text())["rigs"]}
    assert {h: (r["verdict"], r["engine"]) for h, r in rigs.items()} == {
        "rig01": ("fit", "llama.cpp"), "rig02": ("fit", "vllm"),
    }  # fmt: skip
