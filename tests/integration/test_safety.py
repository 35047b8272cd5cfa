"""Safe at every moment of a conversion (issue 12's items 2-4), on one plain-Linux rig that
carries every trap at once: sshd on port 2222 only, and a miner nobody names (a renamed binary,
`hashd`, in a hand-written unit, its pool only in its JSON config). rig02 is an unfit HiveOS
neighbour on the same lab network, mining throughout. Tests run in file order on the rack:

1. a convert stopped (SIGINT) right after `inference_server`: the engine listens, the firewall
   is already in force: the neighbour reaches no inference port, the controller (SSH forward)
   reaches them with the rig's API key and is refused without it;
2. the next convert finishes the rig: egress is default-deny (the pool, the neighbour, the
   HiveOS API: refused; the farm mirror: reachable), the unnamed miner was drained by its GPU
   use, and `validate` fails when it runs again;
3. `status` and `rollback` still reach the rig on port 2222, and it mines again.
"""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.integration.conftest import Rack, wait_for
from tests.integration.endstate import (
    api_key,
    assert_ai_or_mining,
    endpoint_answers,
    outcomes,
    reach,
    record,
    report,
    rigpivot,
    state,
)
from tests.integration.interrupt import Run, task_started

pytestmark = pytest.mark.lab

PROFILE = "linux-3060x1-ssh2222,hive-rx580x6"
RIG, NEIGHBOUR = "rig01", "rig02"
REPO = Path(__file__).resolve().parents[2]
PORT = 8000


@pytest.fixture(scope="module")
def rack(lab_factory) -> Rack:
    rack = lab_factory(2, PROFILE)
    # The inference ports only from the controller's side (the admin network), not the LAN.
    extra = f""" net_hardening_inference_allowed_networks='["{rack.lab.state().admin_network}"]'"""
    ini, n = re.subn(rf"^({RIG} ansible_host=.*)$", lambda m: m.group(1) + extra,
                     rack.lab.inventory.read_text(), flags=re.M)  # fmt: skip
    assert n == 1
    rack.lab.inventory.write_text(ini)
    return rack


@pytest.fixture(scope="module")
def miner_files(rack: Rack) -> dict[str, str]:
    return rack.sha256s(RIG, "/opt/hashd", "/etc/systemd/system/hashd.service")


def test_the_rig_mines_with_a_miner_nobody_names_and_sshd_on_2222(rack, before, miner_files):
    assert rack.ssh(RIG, "sshd -T | grep '^port '").split() == ["port", "2222"]
    assert rack.ssh(RIG, "systemctl is-active hashd").strip() == "active"
    assert "pool.lab" in rack.ssh(RIG, "cat /opt/hashd/config.json")
    wait_for(lambda: reach(rack, RIG, "pool.lab:4444")["pool.lab:4444"] == "open", 60,
             "the rig to reach its pool")  # fmt: skip
    # The neighbour may still be coming up (its address answers ARP once its network is up).
    wait_for(lambda: reach(rack, RIG, f"{NEIGHBOUR}:22")[f"{NEIGHBOUR}:22"] == "open", 60,
             "the rig to reach its neighbour's sshd")  # fmt: skip


@pytest.mark.timeout(1500)  # a conversion on a loaded 2-core machine
def test_a_convert_stopped_after_the_engine_started_leaves_no_port_open_to_the_lan(rack, journal):
    earlier = set(journal.iterdir())
    run = Run(rack, journal, "--limit", RIG)
    wait_for(
        lambda: run.proc.poll() is not None
        or task_started(sorted(set(journal.iterdir()) - earlier), RIG, "power_profile", ""),
        780, "the step after inference_server", every=0.2,
    )  # fmt: skip
    assert run.proc.poll() is None, run.output
    run.proc.send_signal(signal.SIGINT)
    assert run.wait(timeout=180) == 130, run.output
    assert state(rack, RIG) == "serving"
    assert rack.ssh(RIG, f"curl -s -o /dev/null -w '%{{http_code}}' localhost:{PORT}/v1/models",
                    check=False) == "401"  # fmt: skip
    # the neighbour on the LAN: nothing
    assert reach(rack, NEIGHBOUR, f"{RIG}:{PORT}") == {f"{RIG}:{PORT}": "filtered"}
    # the controller, through SSH: with the rig's key only (a wrong key: 401)
    endpoint_answers(rack, RIG, PORT)
    assert len(api_key(rack, RIG)) >= 32


@pytest.mark.timeout(1500)  # a conversion on a loaded 2-core machine
def test_the_next_convert_finishes_and_egress_is_default_deny(rack, journal):
    proc = rigpivot("convert", "-i", str(rack.lab.inventory), "--limit", RIG, "--yes",
                    "--journal", str(journal))  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    assert outcomes(report(journal)) == {RIG: "converted"}
    assert state(rack, RIG) == "ai"
    # The unnamed miner held a GPU: the drain stopped it and the snapshot recorded its unit.
    assert rack.ssh(RIG, "systemctl is-active hashd", check=False).strip() == "inactive"
    assert "hashd.service" in json.dumps(record(rack, RIG)["facts"])
    targets = ["pool.lab:4444", f"{NEIGHBOUR}:22", "api.hive.lab:8000", "mirror.lab:8080"]
    # No mining config the role reads names the pool (hashd's is its own JSON): the default
    # deny rejects it, as it does the neighbour and the HiveOS API.
    assert reach(rack, RIG, *targets) == {
        "pool.lab:4444": "rejected", f"{NEIGHBOUR}:22": "rejected",
        "api.hive.lab:8000": "rejected", "mirror.lab:8080": "open",
    }  # fmt: skip
    # DNS still answers (the allowlist keeps the rig's resolvers)
    assert rack.ssh(RIG, "getent hosts mirror.lab").strip()


def test_validate_fails_while_the_unnamed_miner_runs(rack, journal):
    rack.ssh(RIG, "systemctl start hashd")
    try:
        wait_for(lambda: "hashd" in rack.ssh(RIG, "nvidia-smi --query-compute-apps=name "
                                                  "--format=csv,noheader", check=False),
                 60, "hashd on the GPU")  # fmt: skip
        # the gate as convert ran it: the plan's variables over the farm file
        plan = Path(report(journal)["journal"]) / "plan-inventory.yml"
        play = plan.parent / "validate.yml"
        play.write_text("- hosts: all\n  gather_facts: false\n  roles: [validate]\n")
        proc = subprocess.run(
            [str(Path(sys.executable).parent / "ansible-playbook"), "-i", str(plan), "-i",
             str(rack.lab.inventory), "--limit", RIG, str(play)],
            cwd=REPO, capture_output=True, text=True, timeout=600,
        )  # fmt: skip
        assert proc.returncode != 0, proc.stdout[-3000:]
        assert "did not pass validation" in proc.stdout and "hashd" in proc.stdout, proc.stdout[
            -3000:
        ]
    finally:
        rack.ssh(RIG, "systemctl stop hashd", check=False)


@pytest.mark.timeout(1500)  # a conversion on a loaded 2-core machine
def test_status_and_rollback_reach_the_rig_on_2222(rack, journal, before, miner_files):
    status = rigpivot("status", "-i", str(rack.lab.inventory), "--limit", RIG)
    assert status.returncode == 0, status.stdout + status.stderr
    assert re.search(rf"{RIG}\s.*\bai\b", status.stdout), status.stdout
    proc = rigpivot("rollback", "-i", str(rack.lab.inventory), "--limit", RIG, "--yes",
                    "--journal", str(journal))  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    assert assert_ai_or_mining(rack, RIG, before[RIG]) == "mining"
    assert rack.sha256s(RIG, "/opt/hashd", "/etc/systemd/system/hashd.service") == miner_files
    assert rack.ssh(RIG, "systemctl is-active hashd").strip() == "active"
    wait_for(lambda: reach(rack, RIG, "pool.lab:4444")["pool.lab:4444"] == "open", 60,
             "the rig to reach its pool again")  # fmt: skip


def test_the_neighbour_mined_throughout(rack, before):
    assert assert_ai_or_mining(rack, NEIGHBOUR, before[NEIGHBOUR]) == "mining"
    assert record(rack, NEIGHBOUR) == {}
