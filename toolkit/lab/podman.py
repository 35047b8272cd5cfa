"""The lab's one door to podman: every podman call goes through `podman()`."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

from toolkit.errors import LabError

CONTAINERS_CONF = Path(__file__).with_name("containers.conf")


def podman_env() -> dict[str, str]:
    env = dict(os.environ)
    env.setdefault("CONTAINERS_CONF", str(CONTAINERS_CONF))
    return env


def podman(
    *args: str,
    check: bool = True,
    input: bytes | None = None,
    timeout: float | None = 300,
) -> subprocess.CompletedProcess[bytes]:
    if shutil.which("podman") is None:
        raise LabError("podman is not installed: run `make lab-deps` (apt-get install podman runc)")
    try:
        proc = subprocess.run(
            ["podman", *args],
            env=podman_env(),
            input=input,
            capture_output=True,
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired as e:
        raise LabError(f"podman {' '.join(args[:3])} timed out after {timeout} s") from e
    if check and proc.returncode != 0:
        raise LabError(
            f"podman {' '.join(args[:4])} failed (exit {proc.returncode}): "
            f"{proc.stderr.decode(errors='replace').strip()}"
        )
    return proc


def podman_out(*args: str, timeout: float | None = 300) -> str:
    return podman(*args, timeout=timeout).stdout.decode(errors="replace").strip()


# Where netavark keeps the names aardvark-dns answers for each network (rootful podman): the
# first line of a network's file is the gateway address aardvark listens on.
AARDVARK_DIR = Path("/run/containers/networks/aardvark-dns")


def forget_stale_dns(network: str, aardvark_dir: Path = AARDVARK_DIR) -> bool:
    """Remove the name file of a network that no longer exists. Containers killed without
    their network's teardown (a killed test run, a sandbox gone) leave it behind, and a network
    created again under that name then gets answers on the old gateway only: its rigs resolve
    no names. Call only when `network` does not exist. True when a file was removed."""
    stale = aardvark_dir / network
    if not stale.is_file():
        return False
    stale.unlink()
    return True


def image_exists(tag: str) -> bool:
    return podman("image", "exists", tag, check=False).returncode == 0


def containers(label: str) -> list[dict[str, Any]]:
    """Containers (running or not) carrying `label` (KEY=VALUE), as podman ps reports them."""
    out = podman_out("ps", "-a", "--filter", f"label={label}", "--format", "json")
    result: list[dict[str, Any]] = json.loads(out or "[]")
    return result


def inspect(name: str) -> dict[str, Any] | None:
    proc = podman("container", "inspect", name, check=False)
    if proc.returncode != 0:
        return None
    data: list[dict[str, Any]] = json.loads(proc.stdout or b"[]")
    return data[0] if data else None


def exec_in(name: str, *cmd: str, timeout: float = 60) -> subprocess.CompletedProcess[bytes]:
    return podman("exec", name, *cmd, check=False, timeout=timeout)
