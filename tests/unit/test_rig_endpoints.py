"""rig_endpoints (plugins/modules): every endpoint of a rig asked in one module call, its
models and a completion, with what each request got; the validate role names a failure from
it. Run through Ansible against small OpenAI-shaped servers on this machine."""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from tests.unit.rig_modules import run_module

KEY = "sk-test-" + "x" * 24


def server(models: list[str], choices: int = 1) -> ThreadingHTTPServer:
    """An endpoint that wants KEY, lists `models` and answers completions with `choices`."""

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *_args: object) -> None:
            pass

        def reply(self, status: int, doc: dict[str, object]) -> None:
            body = json.dumps(doc).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def authorized(self) -> bool:
            if self.headers.get("Authorization") == f"Bearer {KEY}":
                return True
            self.reply(401, {"error": "invalid api key"})
            return False

        def do_GET(self) -> None:
            if self.authorized():
                self.reply(200, {"data": [{"id": m} for m in models]})

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length", 0))
            asked = json.loads(self.rfile.read(length))
            if self.authorized():
                assert asked["model"] == models[0] and asked["max_tokens"] == 4
                self.reply(200, {"choices": [{"text": " fine"}] * choices})

    srv = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    return srv


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def endpoints() -> Iterator[dict[str, int]]:
    servers = {"good": server(["tiny"]), "empty": server([]), "mute": server(["tiny"], 0)}
    yield {name: s.server_address[1] for name, s in servers.items()}
    for s in servers.values():
        s.shutdown()


def ask(tmp_path: Path, ports: list[int], key: str = KEY, check: bool = False) -> dict:
    return run_module(tmp_path, "rig_endpoints",
                      {"ports": ports, "api_key": key, "max_tokens": 4, "timeout": 5},
                      check=check)  # fmt: skip


def test_every_endpoint_is_asked_in_one_call_and_says_what_it_got(tmp_path, endpoints):
    refused = free_port()
    ports = [endpoints["good"], endpoints["empty"], endpoints["mute"], refused]
    r = ask(tmp_path, ports)
    assert r.get("failed") is not True and r["changed"] is False, r
    got = {e["port"]: e for e in r["endpoints"]}
    assert [e["port"] for e in r["endpoints"]] == ports
    good = got[endpoints["good"]]
    assert good["models"] == {"status": 200, "msg": "OK", "ids": ["tiny"]}
    assert good["completion"] == {"status": 200, "msg": "OK", "choices": 1}
    assert got[endpoints["empty"]]["models"]["ids"] == []
    assert got[endpoints["empty"]]["completion"]["status"] == -2  # not asked
    assert got[endpoints["mute"]]["completion"] == {"status": 200, "msg": "OK", "choices": 0}
    assert got[refused]["models"]["status"] == -1
    assert "refused" in got[refused]["models"]["msg"].lower()
    # the key is never echoed back
    assert KEY not in json.dumps(r)


def test_a_wrong_key_is_a_401_and_check_mode_still_asks(tmp_path, endpoints):
    r = ask(tmp_path, [endpoints["good"]], key="not-the-key", check=True)
    (e,) = r["endpoints"]
    assert e["models"]["status"] == 401 and e["completion"]["status"] == -2


def test_the_rig_s_own_key_is_read_on_the_rig_and_never_echoed(tmp_path, endpoints):
    kept = tmp_path / "api-key"
    kept.write_text(KEY + "\n")
    r = run_module(tmp_path, "rig_endpoints",
                   {"ports": [endpoints["good"]], "api_key_file": str(kept), "max_tokens": 4, "timeout": 5})  # fmt: skip
    (e,) = r["endpoints"]
    assert e["models"]["status"] == 200 and e["completion"]["status"] == 200, r
    assert KEY not in json.dumps(r)
    # no key kept: asked without one, and refused
    r = run_module(tmp_path, "rig_endpoints",
                   {"ports": [endpoints["good"]], "api_key_file": str(tmp_path / "none"), "timeout": 5})  # fmt: skip
    assert r["endpoints"][0]["models"]["status"] == 401, r
