"""What a rig's end state is, as an operator checks it: the CLI run as a subprocess, the run
report, the pivot record on the rig, the miner hashing, the mining files by checksum, and the
inference endpoints answering the real `openai` client.

The promise every pivot and fault test holds rigpivot to: each rig ends either `ai` (every
endpoint answers) or `mining` (miner hashing, mining files identical to before by checksum),
never in between (`assert_ai_or_mining`).
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import openai

from tests.integration.conftest import Rack, q, wait_for

# What rollback must put back byte for byte, and the units whose enablement it restores.
MINING_PATHS = ("/hive-config", "/opt/lolminer", "/etc/systemd/system/lolminer.service",
                "/etc/apt", "/etc/modprobe.d", "/etc/ssh")  # fmt: skip
UNITS = "hive-miner hive-watchdog hive-autofan hive-agent hive-hello hive-usbwd lolminer"


def rigpivot(*args: str, timeout: float = 1800) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["rigpivot", *args], capture_output=True, text=True, timeout=timeout)


def report(journal: Path) -> dict:
    """The report of the latest run in a journal root."""
    latest = sorted(p for p in journal.iterdir() if (p / "report.json").exists())[-1]
    return json.loads((latest / "report.json").read_text())


def outcomes(rep: dict) -> dict[str, str]:
    return {r["host"]: r["outcome"] for r in rep["rigs"]}


def snapshot_of(rack: Rack, rig: str) -> dict[str, object]:
    """The rig's mining files by checksum and its mining units' enablement."""
    units = rack.ssh(rig, f"for u in {UNITS}; do echo $u $(systemctl is-enabled $u 2>&1 | head -1);"
                          " done", check=False)  # fmt: skip
    return {"files": rack.sha256s(rig, *MINING_PATHS), "units": units}


def record(rack: Rack, rig: str) -> dict:
    """The pivot record on the rig (`{}` on a rig rigpivot never touched)."""
    out = rack.ssh(rig, "cat /var/lib/rigpivot/state.json 2>/dev/null", check=False)
    return json.loads(out) if out else {}


def state(rack: Rack, rig: str) -> str:
    return record(rack, rig).get("state", "mining")


def hashing(rack: Rack, rig: str) -> bool:
    if rack.rigs[rig].startswith("linux-"):
        return rack.ssh(rig, "pgrep -f 'lolMiner|/opt/hashd/hashd'", check=False) != ""
    return float(rack.ssh(rig, "cat /run/hive/khs 2>/dev/null || echo 0", check=False) or 0) > 0


def api_key(rack: Rack, rig: str) -> str:
    """The key the rig's endpoints require (inference_server keeps it on the rig)."""
    return rack.ssh(rig, "cat /etc/rigpivot/api-key").strip()


def endpoint_answers(rack: Rack, rig: str, port: int) -> None:
    """A completion and a chat completion from the rig's endpoint, with the openai client and
    the rig's API key; without the key the endpoint refuses."""
    with rack.forward(rig, port) as local:
        url = f"http://127.0.0.1:{local}/v1"
        stranger = openai.OpenAI(base_url=url, api_key="not-the-key", max_retries=0)
        try:
            stranger.models.list()
        except openai.AuthenticationError:
            pass
        else:
            raise AssertionError(f"{rig}:{port} answered a client without the rig's API key")
        client = openai.OpenAI(base_url=url, api_key=api_key(rack, rig))
        model = client.models.list().data[0].id
        done = client.completions.create(model=model, prompt="Hello", max_tokens=8)
        assert done.choices and done.choices[0].text is not None
        chat = client.chat.completions.create(
            model=model, messages=[{"role": "user", "content": "Hi"}], max_tokens=8
        )
        assert chat.choices[0].message.content is not None


def assert_ai_or_mining(rack: Rack, rig: str, before: dict[str, object]) -> str:
    """Assert the rig is either serving (`ai`: every validated endpoint answers) or mining
    again (no pivot state left but `mining`, miner hashing, mining files and units as
    `before`). Returns which."""
    rec = record(rack, rig)
    now = rec.get("state", "mining")
    if now == "ai":
        ports = rec.get("facts", {}).get("validated_ports") or []
        assert ports, f"{rig}: state ai without validated ports: {rec}"
        for port in ports:
            endpoint_answers(rack, rig, int(port))
        return "ai"
    assert now == "mining", f"{rig} is left {now!r} (step {rec.get('step')!r}): {rec}"
    wait_for(lambda: hashing(rack, rig), 90, f"{rig} to hash again")
    assert snapshot_of(rack, rig) == before, f"{rig}: mining files or units differ from before"
    return "mining"


# Connect to each host:port once, from inside a rig: open, refused (TCP reset: nothing listens,
# or a reject rule), rejected (an ICMP error: a default-deny reject rule, no route) or filtered
# (no answer: dropped).
REACH = r"""
import socket, sys
for target in sys.argv[1:]:
    host, port = target.rsplit(":", 1)
    s = socket.socket()
    s.settimeout(2)
    try:
        s.connect((host, int(port)))
        r = "open"
    except ConnectionRefusedError:
        r = "refused"
    except (TimeoutError, socket.timeout):
        r = "filtered"
    except OSError:
        r = "rejected"
    finally:
        s.close()
    print(target, r)
"""


def reach(rack: Rack, src: str, *targets: str) -> dict[str, str]:
    """What `src` gets connecting to each `host:port`."""
    out = rack.ssh(src, f"python3 -c {q(REACH)} {' '.join(targets)}")
    return dict(line.split() for line in out.splitlines())
