"""Faults where the rig or the controller goes away mid-run (issue 6), on one lab rack: the
operator stops the controller (SIGINT), a rig loses power in the middle of its driver install,
SSH to a rig drops while the rig keeps running. After each, every rig is `ai` or `mining`
(`assert_ai_or_mining`), or the report says where it stands and the next run finishes it.

Tests run in file order on one rack, each starting from where the one before left the rigs,
which keeps the module short: the rig interrupted by SIGINT is the one killed next (its
conversion resumes from the state SIGINT left), rig02 is the one whose SSH drops, and one
rollback at the end returns both to mining byte for byte.
"""

from __future__ import annotations

import os
import signal

import pytest

from tests.integration.conftest import Rack, wait_for
from tests.integration.endstate import (
    assert_ai_or_mining,
    outcomes,
    record,
    report,
    rigpivot,
    state,
)
from tests.integration.interrupt import PowerCut, Run, freeze, plays_of, task_started
from toolkit.lab import podman as pm

pytestmark = pytest.mark.lab

# rig01: HiveOS, one 3060, driver 535 -> 550: the driver step installs a new driver and
# reboots, and HiveOS's watchdog and hello are armed.
# rig02: plain Debian, one 3090 with driver 550 already: the fastest rig to convert.
PROFILE = "hive-3060x1,linux-3090x1"
RIGS = ["rig01", "rig02"]


@pytest.fixture(scope="module")
def rack(lab_factory) -> Rack:
    return lab_factory(2, PROFILE)


def installed(rack: Rack, rig: str, package: str) -> bool:
    out = rack.ssh(rig, f"dpkg-query -W -f='${{Status}}' {package}", check=False)
    return "install ok installed" in out


def leases_held(rack: Rack) -> dict[str, object]:
    """The rigs whose pivot record still names a run that may change them."""
    return {rig: record(rack, rig)["lease"] for rig in rack.rigs if "lease" in record(rack, rig)}


def test_sigint_mid_batch_stops_cleanly_with_every_rig_recorded(rack, journal, before):
    earlier = set(journal.iterdir())
    run = Run(rack, journal, "--batch-size", "1")  # batch 1: rig01, batch 2: rig02
    # SIGINT as rig01's driver step begins (drained recorded), well before apt installs the
    # new driver: the next test cuts the power in the middle of that install.
    wait_for(
        lambda: task_started(sorted(set(journal.iterdir()) - earlier), "rig01",
                             "nvidia_driver", "Look for NVIDIA"),
        600, "rig01's driver step", every=0.2,
    )  # fmt: skip
    run.proc.send_signal(signal.SIGINT)
    rc = run.wait(timeout=120)
    assert rc == 130, run.output
    assert "convert interrupted; stopped mid-way, at their recorded state: rig01" in run.output
    rep = report(journal)
    assert rep["interrupted"] is True
    assert outcomes(rep) == {"rig01": "interrupted", "rig02": "not-started"}
    rig01 = next(r for r in rep["rigs"] if r["host"] == "rig01")
    # The report says where rig01 stands, and the rig's own record says the same.
    assert rig01["state"] == state(rack, "rig01") == "drained", rig01
    assert "interrupted by the operator" in rig01["detail"]
    assert "`convert` resumes it" in rig01["detail"]
    assert "interrupted" in (rep["stopped_early"] or "")
    # The play was stopped with the tool, and the run let go of the rigs' leases.
    wait_for(lambda: not plays_of(journal), 10, "the play's processes to end")
    assert leases_held(rack) == {}
    # rig02 was never touched; rig01 is drained: not mining, not serving, but recorded.
    assert record(rack, "rig02") == {}
    assert_ai_or_mining(rack, "rig02", before["rig02"])


@pytest.mark.timeout(1800)  # two conversions with driver reboots, on a shared 2-core machine
def test_rig_killed_mid_driver_install_is_reported_and_the_next_convert_finishes(
    rack, journal, before
):
    # rig01 resumes from drained (SIGINT left it there, its mining driver in place); its power
    # goes in the middle of the new driver's postinst, with the old driver already removed.
    assert not installed(rack, "rig01", "nvidia-driver-550")
    cut = PowerCut(rack, "rig01", "nvidia-driver-550.postinst")
    run = Run(rack, journal, "--limit", "rig01")
    rc = run.wait(timeout=1200)
    assert cut.done(), "the driver's postinst never ran on rig01"
    rep = report(journal)
    assert rc == 3, run.output  # a rig unreachable, none failed
    assert outcomes(rep) == {"rig01": "unreachable"}
    rig01 = rep["rigs"][0]
    assert "unreachable during nvidia_driver" in rig01["detail"], rig01
    assert "`convert` resumes it" in rig01["detail"]
    assert (rig01["state"], rig01["step"]) == ("drained", "mining_drain"), rig01
    assert not list(journal.glob(f"{rep['run_id']}/ansible/*-rollback")), "a rollback was tried"

    # The rig comes back (power on): still drained, HiveOS still in maintenance mode (hello
    # masked, so the dashboard's rig.conf did not come back), its dpkg cut mid-configure.
    pm.podman("start", rack.container("rig01"))
    rack.wait_ready("rig01")
    assert state(rack, "rig01") == "drained"
    assert rack.ssh("rig01", "grep -c '^MAINTENANCE=1' /hive-config/rig.conf").strip() == "1"
    assert rack.ssh("rig01", "dpkg --audit", check=False).strip(), "dpkg was not left half done"

    run = Run(rack, journal, "--limit", "rig01")
    rc = run.wait(timeout=1200)
    assert rc == 0, run.output
    assert outcomes(report(journal)) == {"rig01": "converted"}
    assert rack.ssh("rig01", "dpkg --audit").strip() == ""
    assert assert_ai_or_mining(rack, "rig01", before["rig01"]) == "ai"


def block_ssh(rack: Rack, rig: str, on: bool) -> None:
    """Refuse SSH inside the rig (nftables; the rig keeps running), or allow it again."""
    rules = (
        "add table inet faultssh\n"
        "add chain inet faultssh input { type filter hook input priority -10 ; }\n"
        "add rule inet faultssh input tcp dport 22 reject with tcp reset\n"
        if on
        else "delete table inet faultssh\n"
    )
    pm.podman("exec", "-i", rack.container(rig), "nft", "-f", "-", input=rules.encode())


def test_ssh_drop_mid_convert_is_reported_and_the_next_convert_finishes(rack, journal, before):
    started = (pm.inspect(rack.container("rig02")) or {})["State"]["StartedAt"]
    earlier = set(journal.iterdir())
    run = Run(rack, journal, "--limit", "rig02")
    # SSH goes while the readiness check runs on the rig: the check is held (SIGSTOP) until
    # the rig refuses SSH, so it cannot answer, and the next step begin, before the drop.
    caught = freeze(rack.container("rig02"), "wait_ready.py", timeout=900)
    assert caught is not None, "rig02's readiness check never ran"
    wait_for(
        lambda: task_started(sorted(set(journal.iterdir()) - earlier), "rig02",
                             "inference_server", "Wait until every instance answers"),
        30, "the readiness check's start in the run's events", every=0.2,
    )  # fmt: skip
    block_ssh(rack, "rig02", True)
    os.kill(caught[0], signal.SIGCONT)  # its instances start and answer readiness, unheard
    try:
        rc = run.wait(timeout=600)
    finally:
        block_ssh(rack, "rig02", False)
    rep = report(journal)
    assert rc == 3, run.output
    assert outcomes(rep) == {"rig02": "unreachable"}
    rig02 = next(r for r in rep["rigs"] if r["host"] == "rig02")
    assert "unreachable during inference_server" in rig02["detail"], rig02
    # What the report says is what the rig recorded; the rig kept running all along.
    assert rig02["state"] == state(rack, "rig02"), (rig02, record(rack, "rig02"))
    assert (pm.inspect(rack.container("rig02")) or {})["State"]["StartedAt"] == started

    run = Run(rack, journal, "--limit", "rig02")
    rc = run.wait(timeout=900)
    assert rc == 0, run.output
    assert outcomes(report(journal)) == {"rig02": "converted"}
    assert assert_ai_or_mining(rack, "rig02", before["rig02"]) == "ai"


def test_rollback_after_the_kill_and_the_drop_restores_mining_byte_for_byte(rack, journal, before):
    proc = rigpivot("rollback", "-i", str(rack.lab.inventory), "--yes", "--journal", str(journal))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert outcomes(report(journal)) == dict.fromkeys(RIGS, "mining")
    for rig in RIGS:
        assert assert_ai_or_mining(rack, rig, before[rig]) == "mining"


def test_rollback_straight_after_a_kill_mid_driver_install_restores_mining(rack, journal, before):
    """The other way out of a power cut: no resume, straight back to mining from the snapshot
    (rollback finishes the half-configured driver, removes it, reinstalls the mining one)."""
    assert not installed(rack, "rig01", "nvidia-driver-550")
    cut = PowerCut(rack, "rig01", "nvidia-driver-550.postinst")
    run = Run(rack, journal, "--limit", "rig01")
    rc = run.wait(timeout=1200)
    assert cut.done(), "the driver's postinst never ran on rig01"
    assert rc == 3, run.output
    assert outcomes(report(journal)) == {"rig01": "unreachable"}
    pm.podman("start", rack.container("rig01"))
    rack.wait_ready("rig01")
    assert rack.ssh("rig01", "dpkg --audit", check=False).strip(), "dpkg was not left half done"

    proc = rigpivot("rollback", "-i", str(rack.lab.inventory), "--limit", "rig01", "--yes",
                    "--journal", str(journal))  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert outcomes(report(journal)) == {"rig01": "mining"}
    assert rack.ssh("rig01", "dpkg --audit").strip() == ""
    assert assert_ai_or_mining(rack, "rig01", before["rig01"]) == "mining"
