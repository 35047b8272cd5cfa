"""The probe's reading of measured figures (module_utils/rigpivot_rig.py): each miner's hashrate
from its local API, per card where the API gives it, and each card's power draw.

The fixtures in tests/unit/data/miner_api are in each API's own shape (T-Rex's /summary,
lolMiner's /summary, xmrig's /1/summary, the sgminer API TeamRedMiner speaks) with made-up
values; the lab's miners answer in T-Rex's shape, read here from the lab's own miner."""

from __future__ import annotations

import contextlib
import http.server
import importlib.machinery
import json
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from tests.unit.test_rig_library import library

DATA = Path(__file__).parent / "data" / "miner_api"
FAKEMINER = Path(__file__).resolve().parents[2] / "toolkit/lab/image/overlay/usr/lib/lab/fakeminer"


def fixture(name: str) -> Any:
    return json.loads((DATA / name).read_text())


def test_t_rex_summary_gives_each_card_by_its_pci_bus():
    got = library().parse_miner_api(fixture("t-rex-summary.json"))
    assert got == {
        "algorithm": "etchash",
        "hashrate_hs": 94020000.0,
        "gpus": [
            {"index": 0, "bus_id": "0000:01:00.0", "hashrate_hs": 47120000.0},
            {"index": 1, "bus_id": "0000:02:00.0", "hashrate_hs": 46900000.0},
        ],
    }


def test_lolminer_summary_is_scaled_by_its_performance_unit():
    got = library().parse_miner_api(fixture("lolminer-summary.json"))
    assert got["algorithm"] == "Etchash"
    assert got["hashrate_hs"] == pytest.approx(240.2e6)
    assert got["gpus"] == [
        {"index": 0, "bus_id": "0000:03:00.0", "hashrate_hs": pytest.approx(120.1e6)},
        {"index": 1, "bus_id": "0000:04:00.0", "hashrate_hs": pytest.approx(120.1e6)},
    ]
    # without Performance_Factor, the unit says it
    data = fixture("lolminer-summary.json")
    del data["Algorithms"][0]["Performance_Factor"]
    assert library().parse_miner_api(data)["hashrate_hs"] == pytest.approx(240.2e6)


def test_xmrig_gives_a_total_only_it_mines_on_the_cpu():
    got = library().parse_miner_api(fixture("xmrig-summary.json"))
    assert got == {"algorithm": "rx/0", "hashrate_hs": 612.4, "gpus": []}


def test_the_sgminer_api_gives_each_device_by_index_and_no_algorithm():
    got = library().parse_miner_api(fixture("teamredminer-summary-devs.json"))
    assert got["algorithm"] is None and got["hashrate_hs"] == pytest.approx(62.1e6)
    assert [(g["index"], g["bus_id"]) for g in got["gpus"]] == [(0, None), (1, None)]
    assert got["gpus"][0]["hashrate_hs"] == pytest.approx(31.05e6)


def test_an_answer_in_no_known_shape_is_refused_by_name():
    with pytest.raises(ValueError, match="not a miner API answer rigpivot reads"):
        library().parse_miner_api({"status": "ok"})


def fakeminer() -> ModuleType:
    loader = importlib.machinery.SourceFileLoader("fakeminer", str(FAKEMINER))
    mod = ModuleType(loader.name)
    loader.exec_module(mod)
    return mod


def test_the_lab_miners_answer_is_read_card_by_card():
    fm = fakeminer()
    cards = [
        {"vendor_index": 0, "bus_id": "0000:01:00.0", "name": "RTX 3060", "model": "rtx3060"},
        {"vendor_index": 1, "bus_id": "0000:02:00.0", "name": "RTX 3060", "model": "rtx3060"},
    ]
    miner = fm.Miner("t-rex", {"algo": "etchash"}, cards)
    miner.mhs = [47.0, 46.5]
    got = library().parse_miner_api(miner.summary())
    assert got["algorithm"] == "etchash" and got["hashrate_hs"] == 93.5e6
    assert [(g["bus_id"], g["hashrate_hs"]) for g in got["gpus"]] == [
        ("0000:01:00.0", 47e6),
        ("0000:02:00.0", 46.5e6),
    ]


# -- asking a running miner -------------------------------------------------------------------


@contextlib.contextmanager
def http_api(body: Any, path: str = "/summary") -> Iterator[int]:
    class Api(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            data = json.dumps(body).encode()
            self.send_response(200 if self.path == path else 404)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Api)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()


@contextlib.contextmanager
def miner_process(*argv: str) -> Iterator[int]:
    """A process whose command line is a miner's (`sh -c 'sleep 30' t-rex --api-bind-http …`)."""
    proc = subprocess.Popen(["sh", "-c", "sleep 30", *argv])
    try:
        time.sleep(0.1)
        yield proc.pid
    finally:
        proc.kill()
        proc.wait()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_the_api_port_comes_from_the_miners_command_line():
    with (
        http_api(fixture("t-rex-summary.json")) as port,
        miner_process("t-rex", "--api-bind-http", f"127.0.0.1:{port}") as pid,
    ):
        got = library().read_miner_api("t-rex", pid)
    assert got["error"] is None and got["port"] == port
    assert got["api"] == f"http://127.0.0.1:{port}/summary"
    assert got["hashrate_hs"] == 94020000.0 and len(got["gpus"]) == 2


def test_the_api_port_comes_from_the_config_file_the_miner_was_given(tmp_path: Path):
    conf = tmp_path / "config.json"
    with http_api(fixture("t-rex-summary.json")) as port:
        # as HiveOS's h-config.sh writes T-Rex's config.json
        conf.write_text(json.dumps({"api-bind-http": f"0.0.0.0:{port}", "pools": []}))
        with miner_process("t-rex", "-c", str(conf)) as pid:
            got = library().read_miner_api("t-rex", pid)
    assert got["port"] == port and got["error"] is None
    assert got["hashrate_hs"] == 94020000.0


def test_lolminer_is_asked_on_summary_then_on_its_root_page():
    with (
        http_api(fixture("lolminer-summary.json"), "/") as port,
        miner_process("lolMiner", "--apiport", str(port)) as pid,
    ):
        got = library().read_miner_api("lolminer", pid)
    assert got["api"] == f"http://127.0.0.1:{port}/" and got["error"] is None
    assert got["hashrate_hs"] == pytest.approx(240.2e6)


def test_an_unreachable_or_absent_api_is_a_reason_never_a_crash():
    lib = library()
    port = free_port()
    with miner_process("lolMiner", "--apiport", str(port)) as pid:
        down = lib.read_miner_api("lolminer", pid)
        xmrig = lib.read_miner_api("xmrig", pid)
        unknown = lib.read_miner_api("nbminer", pid)
    assert down["hashrate_hs"] is None and down["gpus"] == []
    assert down["error"].startswith(f"API (command line port {port}) did not answer: ")
    with miner_process("t-rex") as pid:  # no option: T-Rex's default port, nothing there
        off = lib.read_miner_api("t-rex", pid)
    assert off["port"] == 4067 and "did not answer" in off["error"]
    assert xmrig["error"] == "its API is off (xmrig opens it only when told a port)"
    assert unknown["error"] == "rigpivot does not read nbminer's API"
    with miner_process("t-rex", "--api-bind-http", "0") as pid:
        assert lib.read_miner_api("t-rex", pid)["error"] == "its API is off (--api-bind-http 0)"


def test_teamredminer_is_asked_over_the_sgminer_socket_api():
    answer = json.dumps(fixture("teamredminer-summary-devs.json")).encode() + b"\0"
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    asked: list[bytes] = []

    def serve() -> None:
        conn, _ = server.accept()
        with conn:
            asked.append(conn.recv(4096))
            conn.sendall(answer)

    threading.Thread(target=serve, daemon=True).start()
    port = server.getsockname()[1]
    try:
        with miner_process("teamredminer", f"--api_listen=127.0.0.1:{port}") as pid:
            got = library().read_miner_api("teamredminer", pid)
    finally:
        server.close()
    assert asked == [b'{"command": "summary+devs"}']
    assert got["error"] is None and got["api"] == f"tcp://127.0.0.1:{port} (summary+devs)"
    assert got["hashrate_hs"] == pytest.approx(62.1e6)
