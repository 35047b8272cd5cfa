"""Network hardening of a converted rig, seen from the network (issue 5's Done-when).

One rack: rig01 (HiveOS, 2x RTX 3060 + 2x P106 + 2x RX 580) is converted; rig02 and rig03
(6x RX 580, unfit) stay mining next to it on the same lab network. rig01's inference ports are
open to rig02 only (its /32 is rig01's net_hardening_inference_allowed_networks); rig03 is
outside. The controller's SSH arrives from the lab network's gateway, the lab's
net_hardening_admin_networks. Tests run in file order on the one rack, as an operator's
session would: before, convert, what answers whom, egress, rollback.
"""

from __future__ import annotations

import json
import re
import subprocess
import urllib.request

import pytest

from tests.integration.conftest import Rack, q, wait_for
from tests.integration.endstate import api_key, reach, report, rigpivot

pytestmark = pytest.mark.lab

PROFILE = "hive-mixed6,hive-rx580x6,hive-rx580x6"
CONVERTED, ALLOWED, OUTSIDE = "rig01", "rig02", "rig03"
INFERENCE_PORTS = [8000, 8001]
MINER_API = 4067  # T-Rex's HTTP API on HiveOS rigs
OTHER_PORT = 9999  # something an operator left listening on the rig
FIREWALL_PATHS = ("/etc/nftables.conf", "/etc/ssh")


def probe(rack: Rack, src: str, host: str, ports: list[int]) -> dict[int, str]:
    found = reach(rack, src, *(f"{host}:{p}" for p in ports))
    return {int(t.rsplit(":", 1)[1]): r for t, r in found.items()}


def firewall_state(rack: Rack) -> dict[str, object]:
    """What rollback must put back exactly: files, the live ruleset, sshd's effective
    authentication settings, the agent's unit."""
    sshd = rack.ssh(CONVERTED, "sshd -T -C user=root,host=x,addr=10.0.0.1 | grep -E "
                    "'^(passwordauthentication|permitrootlogin|ciphers|macs|kexalgorithms) '")  # fmt: skip
    agent = rack.ssh(CONVERTED, "echo $(systemctl is-enabled hive-agent) "
                     "$(systemctl is-active hive-agent)", check=False)  # fmt: skip
    return {
        "files": rack.sha256s(CONVERTED, *FIREWALL_PATHS),
        "ruleset": rack.ssh(CONVERTED, "nft list ruleset"),
        "nftables.service": rack.ssh(CONVERTED, "systemctl is-enabled nftables", check=False),
        "sshd": sshd,
        "hive-agent": agent.strip(),
    }


def farm_clients(rack: Rack) -> dict[str, dict[str, int]]:
    """Who each farm service saw (address -> count), from the mirror's /lab/clients."""
    port = rack.lab.state().farm_http_port
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/lab/clients", timeout=10) as r:
        clients: dict[str, dict[str, int]] = json.load(r)
    return clients


def address(rack: Rack, rig: str) -> str:
    return rack.ssh(rig, "hostname -I").split()[0]


@pytest.fixture(scope="module")
def rack(lab_factory) -> Rack:
    rack = lab_factory(3, PROFILE)
    # rig01 serves on two instances and keeps its factory driver with the CUDA it supports (the
    # mirror has the 535 branch and CUDA 12.2): no driver reboot, so the module stays short.
    # Its inference ports are open to rig02 only.
    ini = rack.lab.inventory.read_text()
    extra = (
        " inference_server_gpus='[0,1]' nvidia_driver_branch=535"
        " nvidia_driver_version=535.183.01 cuda_version=12-2"
        f" net_hardening_inference_allowed_networks='[\"{address(rack, ALLOWED)}/32\"]'"
    )
    ini, n = re.subn(rf"^({CONVERTED} ansible_host=.*)$", rf"\1{extra}", ini, flags=re.M)
    assert n == 1, ini
    rack.lab.inventory.write_text(ini)
    return rack


@pytest.fixture(scope="module")
def before(rack: Rack) -> dict[str, object]:
    return firewall_state(rack)


def test_before_conversion_the_miner_api_and_ssh_answer_the_neighbours(rack, before):
    wait_for(lambda: probe(rack, OUTSIDE, CONVERTED, [MINER_API])[MINER_API] == "open", 60,
             "rig01's miner API")  # fmt: skip
    for neighbour in (ALLOWED, OUTSIDE):
        assert probe(rack, neighbour, CONVERTED, [MINER_API, 22]) == {MINER_API: "open", 22: "open"}
    assert before["hive-agent"] == "enabled active"
    # The lab's HiveOS API (api.hive.lab:8000, apart from the mirror) saw rig01's hello fetch
    # the dashboard's config at boot, and its agent's stats.
    me = address(rack, CONVERTED)
    assert farm_clients(rack)["dashboard"].get(me, 0) > 0
    wait_for(lambda: farm_clients(rack)["agent"].get(me, 0) > 0, 30, "rig01's agent stats")


def test_convert_hardens_the_fit_rig_and_leaves_the_neighbours_mining(rack, journal):
    proc = rigpivot("convert", "-i", str(rack.lab.inventory), "--yes", "--journal", str(journal))
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    rep = report(journal)
    outcomes = {r["host"]: r["outcome"] for r in rep["rigs"]}
    assert outcomes == {CONVERTED: "converted", ALLOWED: "untouched", OUTSIDE: "untouched"}
    rec = json.loads(rack.ssh(CONVERTED, "cat /var/lib/rigpivot/state.json"))
    assert rec["state"] == "ai"
    assert any(h["state"] == "hardened" for h in rec["history"]), rec["history"]


def test_a_new_ssh_connection_from_the_controller_gets_in_by_key_only(rack):
    # rack.ssh opens a new connection each time (no shared master), from the admin network.
    assert rack.ssh(CONVERTED, "echo in").strip() == "in"
    rec = next(r for r in rack.lab.state().rigs if r.name == CONVERTED)
    proc = subprocess.run(
        ["ssh", "-F", str(rack.lab.ssh_config), "-o", "BatchMode=yes", "-o", "PubkeyAuthentication=no",
         "-o", "PreferredAuthentications=password,keyboard-interactive", CONVERTED, "true"],
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert proc.returncode == 255 and "Permission denied (publickey)" in proc.stderr, (
        rec,
        proc.stderr,
    )
    # paramiko (preflight's and status's probes) speaks the hardened algorithms too
    status = rigpivot("status", "-i", str(rack.lab.inventory))
    assert status.returncode == 0, status.stdout + status.stderr
    line = next(ln for ln in status.stdout.splitlines() if CONVERTED in ln)
    assert re.search(r"\bai\b", line), status.stdout


def test_only_the_inference_ports_answer_the_allowed_neighbour(rack):
    # Something else listening on the rig stays unreachable from the network.
    rack.ssh(CONVERTED, f"systemd-run --unit=lab-other python3 -m http.server -d /tmp {OTHER_PORT}")
    wait_for(lambda: probe(rack, CONVERTED, "127.0.0.1", [OTHER_PORT])[OTHER_PORT] == "open", 20,
             "the other listener")  # fmt: skip
    ports = [*INFERENCE_PORTS, 22, MINER_API, OTHER_PORT]
    assert probe(rack, ALLOWED, CONVERTED, ports) == {
        8000: "open", 8001: "open", 22: "filtered", MINER_API: "filtered", OTHER_PORT: "filtered",
    }  # fmt: skip


def test_a_rig_outside_the_allowed_networks_reaches_nothing(rack):
    ports = [*INFERENCE_PORTS, 22, MINER_API, OTHER_PORT]
    assert probe(rack, OUTSIDE, CONVERTED, ports) == dict.fromkeys(ports, "filtered")


def test_the_inference_api_answers_the_allowed_neighbour_with_the_rigs_key_only(rack):
    url = f"http://{CONVERTED}:8000/v1/models"
    key = api_key(rack, CONVERTED)
    out = rack.ssh(ALLOWED, f"curl -sf --max-time 10 -H {q('Authorization: Bearer ' + key)} {url}")
    assert json.loads(out)["data"], out
    refused = rack.ssh(ALLOWED, f"curl -s -o /dev/null -w '%{{http_code}}' --max-time 10 {url}",
                       check=False)  # fmt: skip
    assert refused == "401"


def test_egress_to_the_pool_and_the_hive_api_is_blocked_and_the_mirror_reachable(rack):
    me = address(rack, CONVERTED)
    seen = farm_clients(rack)
    # The agent is stopped; try what a restarted miner or agent would do.
    assert rack.ssh(CONVERTED, "systemctl is-enabled hive-agent; systemctl is-active hive-agent",
                    check=False).split() == ["disabled", "inactive"]  # fmt: skip
    assert probe(rack, CONVERTED, "pool.lab", [4444]) == {4444: "refused"}
    assert probe(rack, CONVERTED, "api.hive.lab", [8000]) == {8000: "refused"}
    stats = rack.ssh(CONVERTED, "curl -s -o /dev/null -w '%{http_code}' --max-time 5 -X POST "
                     "-d '{}' http://api.hive.lab:8000/hive/1/stats", check=False)  # fmt: skip
    assert stats == "000"
    assert rack.ssh(CONVERTED, "curl -sf --max-time 5 -o /dev/null -w '%{http_code}' "
                    "http://mirror.lab:8080/apt/Release") == "200"  # fmt: skip
    after = farm_clients(rack)
    assert after["pool"].get(me) == seen["pool"].get(me)
    assert after["agent"].get(me) == seen["agent"].get(me)
    assert after["mirror"].get(me, 0) == seen["mirror"].get(me, 0) + 1
    # the neighbours still mine and report
    assert probe(rack, ALLOWED, "pool.lab", [4444]) == {4444: "open"}


def test_rollback_restores_the_firewall_ssh_and_agent_exactly_though_the_record_is_damaged(
    rack, journal, before
):
    rack.ssh(CONVERTED, "systemctl stop lab-other", check=False)
    # The pivot record cut short (a power cut mid-write on an old rig): it names no snapshot,
    # so rollback restores from the controller's copy in the private store.
    record_path = "/var/lib/rigpivot/state.json"
    rack.ssh(CONVERTED, f"head -c 60 {record_path} > /tmp/cut && cat /tmp/cut > {record_path}")
    status = rigpivot("status", "-i", str(rack.lab.inventory), "--limit", CONVERTED)
    assert "damaged" in status.stdout, status.stdout
    proc = rigpivot("rollback", "-i", str(rack.lab.inventory), "--limit", CONVERTED, "--yes",
                    "--journal", str(journal))  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    assert {r["host"]: r["outcome"] for r in report(journal)["rigs"]} == {CONVERTED: "mining"}
    # the damaged record kept aside for the operator, a new one that says mining
    assert rack.ssh(CONVERTED, f"ls {record_path}.damaged-*").strip()
    assert json.loads(rack.ssh(CONVERTED, f"cat {record_path}"))["state"] == "mining"
    # the stored snapshot it restored is never restored again
    store = journal.parent / "snapshots" / CONVERTED
    assert list(store.glob("*.retired")), sorted(p.name for p in store.iterdir())
    after = firewall_state(rack)
    assert after == before
    assert "passwordauthentication yes" in str(after["sshd"])  # the lab's own drop-in again


def test_after_rollback_the_original_reachability_is_back(rack):
    wait_for(lambda: probe(rack, OUTSIDE, CONVERTED, [MINER_API])[MINER_API] == "open", 60,
             "rig01's miner API")  # fmt: skip
    for neighbour in (ALLOWED, OUTSIDE):
        assert probe(rack, neighbour, CONVERTED, [MINER_API, 22]) == {MINER_API: "open", 22: "open"}
    assert probe(rack, CONVERTED, "pool.lab", [4444]) == {4444: "open"}
    assert probe(rack, CONVERTED, "api.hive.lab", [8000]) == {8000: "open"}
