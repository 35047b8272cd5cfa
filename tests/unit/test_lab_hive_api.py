"""The lab's HiveOS API has its own name and port, apart from the farm mirror, so a firewall
can cut a converted rig off the one and keep the other; the lab's inventory carries the
networks net_hardening needs."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from toolkit.inventory import load_inventory
from toolkit.lab.catalog import (
    HIVE_API_HOST,
    HIVE_API_PORT,
    MIRROR_HOST,
    MIRROR_PORT,
    build_rig,
    load_catalog,
)
from toolkit.lab.rack import Lab, LabState, RigRecord
from toolkit.rolevars import check_role_vars

FARM_SERVICES = (
    Path(__file__).resolve().parents[2] / "toolkit/lab/image/overlay/usr/lib/lab/farm-services"
)


def test_hiveos_rigs_talk_to_the_hive_api_not_to_the_mirror():
    spec = build_rig(load_catalog(), "rig01", "rack1", "hive-3060x6", "test")
    assert spec.hive is not None
    url = urlsplit(spec.hive.hive_host_url)
    assert (url.hostname, url.port) == (HIVE_API_HOST, HIVE_API_PORT)
    assert (url.hostname, url.port) != (MIRROR_HOST, MIRROR_PORT)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def farm(tmp_path):
    (tmp_path / "hive" / "1234567").mkdir(parents=True)
    (tmp_path / "hive" / "1234567" / "rig.conf").write_text("RIG_ID=1234567\n")
    (tmp_path / "apt").mkdir()
    (tmp_path / "apt" / "Release").write_text("Origin: rigpivot-lab\n")
    ports = {"FARM_HTTP_PORT": _free_port(), "FARM_HIVE_API_PORT": _free_port(),
             "FARM_POOL_PORT": _free_port()}  # fmt: skip
    env = dict(os.environ, FARM_ROOT=str(tmp_path), **{k: str(v) for k, v in ports.items()})
    proc = subprocess.Popen([sys.executable, str(FARM_SERVICES)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", ports["FARM_HIVE_API_PORT"])) == 0:
                break
        time.sleep(0.1)
    yield {"mirror": ports["FARM_HTTP_PORT"], "api": ports["FARM_HIVE_API_PORT"]}
    proc.terminate()
    proc.wait(timeout=10)


def _get(port: int, path: str) -> int:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as r:
            return int(r.status)
    except urllib.error.HTTPError as e:
        return e.code


def test_farm_services_serve_the_dashboard_on_the_api_port_only(farm):
    assert _get(farm["api"], "/hive/1234567/rig.conf") == 200
    assert _get(farm["mirror"], "/hive/1234567/rig.conf") == 404
    assert _get(farm["mirror"], "/apt/Release") == 200
    assert _get(farm["api"], "/apt/Release") == 404
    req = urllib.request.Request(
        f"http://127.0.0.1:{farm['api']}/hive/1234567/stats", data=b"{}", method="POST"
    )
    with urllib.request.urlopen(req, timeout=5) as r:
        assert r.status == 204
    with urllib.request.urlopen(f"http://127.0.0.1:{farm['mirror']}/lab/clients") as r:
        clients = json.load(r)
    assert clients["agent"] == {"127.0.0.1": 1}
    assert clients["dashboard"] == {"127.0.0.1": 1}
    assert clients["mirror"] == {"127.0.0.1": 1}


def test_the_lab_inventory_sets_the_hardening_networks(tmp_path):
    lab = Lab(tmp_path, name="unit")
    lab.key.write_text("")
    Path(f"{lab.key}.pub").write_text("ssh-ed25519 AAAA lab\n")
    state = LabState(name="unit", lab_id="x", subnet="10.89.3.0/24", admin_network="10.89.3.1/32",
                     rigs=[RigRecord(name="rig01", rack="rack1", profile="hive-3060x6",
                                     port=2222, container="c")])  # fmt: skip
    (tmp_path / "lab.json").write_text(state.model_dump_json())
    lab.write_controller_files()
    host = load_inventory(lab.inventory).hosts["rig01"]
    assert host.vars["net_hardening_admin_networks"] == ["10.89.3.1/32"]
    assert host.vars["net_hardening_inference_allowed_networks"] == ["10.89.3.0/24"]
    check_role_vars(host)
