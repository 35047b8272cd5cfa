"""The CLI's promises about exit codes: bad input is refused before any rig is contacted."""

from __future__ import annotations

import os
import socket
import subprocess
import threading
from pathlib import Path


def rigpivot(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["rigpivot", *args], capture_output=True, text=True, timeout=120)


class Listener:
    """A TCP port that records whether anyone connected (a rig's sshd would be there)."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen()
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.connections = 0
        self.stop = False
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self.stop:
            try:
                conn, _ = self.sock.accept()
                self.connections += 1
                conn.close()
            except TimeoutError:
                continue

    def close(self) -> None:
        self.stop = True
        self.thread.join()
        self.sock.close()


def test_bad_policy_variable_exits_2_and_contacts_no_rig(tmp_path: Path):
    rig = Listener()
    inv = tmp_path / "farm.ini"
    inv.write_text(f"[rack1]\nrig01 ansible_host=127.0.0.1 ansible_port={rig.port}\n"
                   "rig02 ansible_host=127.0.0.1 ansible_port=1 rigpivot_engin=vllm\n")  # fmt: skip
    proc = rigpivot("preflight", "--inventory", str(inv))
    rig.close()
    assert proc.returncode == 2
    assert f"{inv}:3: unknown variable rigpivot_engin for host rig02" in proc.stderr
    assert rig.connections == 0


def test_missing_inventory_exits_2_with_its_path(tmp_path: Path):
    proc = rigpivot("preflight", "--inventory", str(tmp_path / "farm.ini"))
    assert proc.returncode == 2 and "farm.ini does not exist" in proc.stderr


def test_limit_matching_nothing_exits_2(tmp_path: Path):
    inv = tmp_path / "farm.ini"
    inv.write_text("[rack1]\nrig01 ansible_host=127.0.0.1 ansible_port=1\n")
    proc = rigpivot("preflight", "--inventory", str(inv), "--limit", "rig7")
    assert proc.returncode == 2 and "--limit 'rig7' matches no host" in proc.stderr


def test_unreachable_rig_exits_3_and_is_named(tmp_path: Path):
    inv = tmp_path / "farm.ini"
    inv.write_text("[rack1]\nrig01 ansible_host=127.0.0.1 ansible_port=1\n")
    proc = rigpivot("preflight", "--inventory", str(inv), "--timeout", "3")
    assert proc.returncode == 3
    assert "1 rig(s) unreachable: rig01" in proc.stderr


def test_a_farm_file_that_turns_host_key_checking_off_is_refused(tmp_path: Path):
    rig = Listener()
    inv = tmp_path / "farm.ini"
    for line in ("ansible_ssh_common_args='-o StrictHostKeyChecking=no'",
                 "ansible_ssh_extra_args='-o UserKnownHostsFile=/dev/null'",
                 "ansible_host_key_checking=false"):  # fmt: skip
        inv.write_text(f"[rack1]\nrig01 ansible_host=127.0.0.1 ansible_port={rig.port}\n"
                       f"[rack1:vars]\n{line}\n")  # fmt: skip
        for verb in ("preflight", "convert"):
            more = ["--yes", "--journal", str(tmp_path / "runs")] if verb == "convert" else []
            proc = rigpivot(verb, "--inventory", str(inv), *more)
            assert proc.returncode == 2, (line, proc.stdout, proc.stderr)
            assert "rig01: the farm file turns SSH host key checking off" in proc.stderr
            assert f"{inv}:4" in proc.stderr
    # asking for new keys to be checked strictly (or accepted when new) is fine
    inv.write_text(f"[rack1]\nrig01 ansible_host=127.0.0.1 ansible_port={rig.port}\n"
                   "[rack1:vars]\nansible_ssh_common_args='-o StrictHostKeyChecking=accept-new'\n")  # fmt: skip
    proc = rigpivot("preflight", "--inventory", str(inv), "--timeout", "3")
    assert proc.returncode == 3  # probed (and the listener is no sshd)
    rig.close()
    assert rig.connections == 1


def test_reports_piped_to_a_file_keep_each_rig_on_a_few_lines(tmp_path: Path):
    """CI logs and `| tee` are not terminals: rich would fold tables to 80 columns, one word per
    line in the detail column."""
    inv = tmp_path / "farm.ini"
    inv.write_text("[rack1]\nrig01 ansible_host=127.0.0.1 ansible_port=1\n")
    env = {k: v for k, v in os.environ.items() if k != "COLUMNS"}
    proc = subprocess.run(
        ["rigpivot", "preflight", "--inventory", str(inv), "--timeout", "2"],
        capture_output=True, text=True, timeout=120, env=env,
    )  # fmt: skip
    assert proc.returncode == 3
    lines = proc.stdout.splitlines()
    row = [i for i, ln in enumerate(lines) if "rig01" in ln]
    assert row, proc.stdout
    # The rig's row and its continuation lines, up to the table's bottom edge.
    end = next(i for i in range(row[0], len(lines)) if lines[i].startswith("└"))
    assert end - row[0] <= 3, proc.stdout
    assert "cannot reach [127.0.0.1]:1" in lines[row[0]]
