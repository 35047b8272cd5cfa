"""Lab-backed tests: one lab rack per test module, reached over real SSH.

Each module gets its own lab (own containers, network, keys and inventory under a temporary
directory), so tests never touch a lab an operator brought up with `make demo`.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from toolkit.lab import podman as pm
from toolkit.lab.catalog import LabSecrets
from toolkit.lab.rack import Lab

pytestmark = pytest.mark.lab


class Rack:
    """A running lab rack, as a test sees it."""

    def __init__(self, lab: Lab):
        self.lab = lab

    @property
    def rigs(self) -> dict[str, str]:
        """rig name -> profile"""
        return {r.name: r.profile for r in self.lab.state().rigs}

    def container(self, rig: str) -> str:
        return f"{self.lab.prefix}-{rig}"

    def ssh(self, rig: str, command: str, check: bool = True, timeout: float = 120) -> str:
        """Run a shell command on a rig over real SSH (the inventory's key and known_hosts)."""
        proc = subprocess.run(
            ["ssh", "-F", str(self.lab.ssh_config), "-o", "BatchMode=yes", rig, command],
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if check and proc.returncode != 0:
            raise AssertionError(
                f"{rig}: {command!r} exited {proc.returncode}:\n{proc.stdout}{proc.stderr}"
            )
        return proc.stdout

    @contextlib.contextmanager
    def forward(self, rig: str, port: int) -> Iterator[int]:
        """A local port forwarded over SSH to `port` on the rig (rig ports are not published:
        an operator reaches a rig's services the same way, or from the farm network)."""
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            local = s.getsockname()[1]
        proc = subprocess.Popen(
            ["ssh", "-F", str(self.lab.ssh_config), "-N", "-o", "ExitOnForwardFailure=yes",
             "-L", f"127.0.0.1:{local}:127.0.0.1:{port}", rig],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip

        def is_open() -> bool:
            with socket.socket() as c:
                return c.connect_ex(("127.0.0.1", local)) == 0

        try:
            wait_for(is_open, 20, f"an SSH forward to {rig}:{port}", every=0.2)
            yield local
        finally:
            proc.terminate()
            proc.wait(timeout=10)

    def sha256s(self, rig: str, *paths: str) -> dict[str, str]:
        """sha256 of every file under `paths` on the rig (missing paths are skipped)."""
        out = self.ssh(rig, "find " + " ".join(paths) + " -type f -print0 2>/dev/null | "
                       "sort -z | xargs -0 -r sha256sum", check=False)  # fmt: skip
        return {line.split(None, 1)[1]: line.split()[0] for line in out.splitlines()}

    def restart_count(self, rig: str) -> int:
        info = pm.inspect(self.container(rig))
        assert info is not None
        return int(info.get("RestartCount", 0))

    def reboot(self, rig: str) -> None:
        """Power-cycle a rig (container restart) and wait until it is ready again."""
        pm.podman("restart", "-t", "10", self.container(rig))
        self.wait_ready(rig)

    def wait_ready(self, rig: str, timeout: float = 120) -> None:
        wait_for(
            lambda: self.ssh(rig, "systemctl is-system-running", check=False).strip() == "running",
            timeout,
            f"{rig} to finish booting",
        )


def wait_for(cond: Callable[[], bool], timeout: float, what: str, every: float = 1.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if cond():
                return
        except (subprocess.SubprocessError, AssertionError):
            pass
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


@pytest.fixture(scope="module")
def lab_factory(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[..., Rack]]:
    labs: list[Lab] = []

    def make(rigs: int, profile: str, secrets: dict[str, LabSecrets] | None = None) -> Rack:
        name = f"t{os.getpid()}-{len(labs)}-{tmp_path_factory.getbasetemp().name[-6:]}"
        lab = Lab(tmp_path_factory.mktemp("lab"), name=name)
        labs.append(lab)
        lab.up(rigs, profile, lab_secrets=secrets)
        return Rack(lab)

    yield make
    for lab in labs:
        lab.down()


@pytest.fixture(scope="module")
def journal(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The module's run journal root (`--journal`)."""
    return tmp_path_factory.mktemp("runs")


@pytest.fixture(scope="module")
def before(rack: Rack) -> dict[str, dict[str, object]]:
    """Each rig of the module's `rack` as the operator left it: mining files by checksum and
    mining units' enablement (a module may define its own)."""
    from tests.integration.endstate import snapshot_of

    return {rig: snapshot_of(rack, rig) for rig in rack.rigs}


def q(s: str) -> str:
    return shlex.quote(s)


__all__ = ["Path", "Rack", "q", "wait_for"]
