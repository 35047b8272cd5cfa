"""The inference_server role's readiness wait (roles/inference_server/files/wait_ready.py), run
as the rig runs it: real HTTP on loopback, systemd's answers from a `systemctl` on PATH that
reads the restart count and state each unit has in a file the test changes."""

from __future__ import annotations

import http.server
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

SCRIPT = Path(__file__).parents[2] / "roles/inference_server/files/wait_ready.py"

FAKE_SYSTEMCTL = """#!/bin/sh
# systemctl show --property=NRestarts --property=ActiveState UNIT
unit="$4"
echo "$unit" >> "$UNITS_DIR/asked"
cat "$UNITS_DIR/$unit" 2>/dev/null || printf 'NRestarts=0\\nActiveState=activating\\n'
"""


class _Models(http.server.BaseHTTPRequestHandler):
    key = ""

    def do_GET(self) -> None:
        ok = self.path == "/v1/models" and (
            not self.key or self.headers.get("Authorization") == f"Bearer {self.key}"
        )
        self.send_response(200 if ok else 401)
        self.end_headers()
        self.wfile.write(b'{"data": []}')

    def log_message(self, *_a: object) -> None:
        pass


@pytest.fixture
def server() -> Iterator[http.server.HTTPServer]:
    srv = http.server.HTTPServer(("127.0.0.1", 0), _Models)
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    yield srv
    srv.shutdown()


@pytest.fixture
def units(tmp_path: Path) -> Path:
    bin_dir, units_dir = tmp_path / "bin", tmp_path / "units"
    bin_dir.mkdir()
    units_dir.mkdir()
    (bin_dir / "systemctl").write_text(FAKE_SYSTEMCTL)
    (bin_dir / "systemctl").chmod(0o755)
    return units_dir


def set_unit(units: Path, gpu: int, restarts: int, state: str = "activating") -> None:
    (units / f"inst@{gpu}.service").write_text(f"NRestarts={restarts}\nActiveState={state}\n")


def start(
    units: Path, base_port: int, gpus: list[int], timeout: float = 30, key: str = ""
) -> subprocess.Popen[str]:
    env = {
        **os.environ,
        "PATH": f"{units.parent / 'bin'}:{os.environ['PATH']}",
        "UNITS_DIR": str(units),
        "RIGPIVOT_API_KEY": key,
    }
    argv = [sys.executable, str(SCRIPT), "--unit", "inst@", "--base-port", str(base_port),
            "--timeout", str(timeout), "--max-restarts", "2", "--delay", "0.1",
            *map(str, gpus)]  # fmt: skip
    return subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, text=True)


def instances(proc: subprocess.Popen[str]) -> dict[int, dict[str, object]]:
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0
    return {i["gpu"]: i for i in json.loads(out)["instances"]}


def test_an_instance_that_answers_is_ready(server: http.server.HTTPServer, units: Path) -> None:
    got = instances(start(units, server.server_port, [0]))
    assert got[0] == {"gpu": 0, "port": server.server_port, "ready": True, "reason": ""}


def test_the_api_key_comes_from_the_environment(
    server: http.server.HTTPServer, units: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_Models, "key", "s3cret")
    assert instances(start(units, server.server_port, [0], key="s3cret"))[0]["ready"] is True
    assert instances(start(units, server.server_port, [0], timeout=1))[0]["ready"] is False


def test_a_crash_looping_instance_is_given_up_long_before_the_timeout(
    server: http.server.HTTPServer, units: Path
) -> None:
    # GPU 1's port (base + 1) has no server: its engine keeps dying and systemd restarts it.
    set_unit(units, 1, restarts=3)
    t0 = time.monotonic()
    proc = start(units, server.server_port, [0, 1], timeout=300)
    # The count it starts from is read before the engine restarts again.
    asked = units / "asked"
    while "inst@1.service" not in (asked.read_text() if asked.exists() else ""):
        time.sleep(0.05)
    set_unit(units, 1, restarts=4)
    time.sleep(0.5)
    assert proc.poll() is None, "one restart is not a crash loop"
    set_unit(units, 1, restarts=5)
    got = instances(proc)
    # given up on its restarts, not on the 300 s timeout (a loaded machine's margin)
    assert time.monotonic() - t0 < 150
    assert got[0]["ready"] is True
    assert got[1]["ready"] is False
    assert got[1]["reason"] == (
        "systemd restarted it 2 times while waiting: the engine keeps crashing"
    )


def test_a_failed_unit_and_a_silent_one_are_named(
    server: http.server.HTTPServer, units: Path
) -> None:
    set_unit(units, 1, restarts=0, state="failed")
    got = instances(start(units, server.server_port, [1, 2], timeout=1))
    assert got[1]["reason"] == "its unit failed"
    assert got[2]["reason"] == "no answer in 1 s"
