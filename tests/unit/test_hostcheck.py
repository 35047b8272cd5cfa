"""The lab's host requirements: what `make lab-deps` installs, what `lab up` checks, and what the
lab's code really calls are one list."""

from __future__ import annotations

import ast
import os
import re
import subprocess
import sys
from pathlib import Path

from toolkit.lab import hostcheck

REPO = Path(__file__).resolve().parents[2]
HOST_DEPS = REPO / "scripts" / "host-deps.sh"
RIGPIVOT = Path(sys.executable).parent / "rigpivot"
# Binaries the lab never calls itself: podman does (its runtime, network backend and name
# server, the firewall tool netavark calls, the uid mapper).
CALLED_BY_PODMAN = {"runc", "netavark", "aardvark-dns", "iptables", "newuidmap"}
# Binaries Ansible calls on the controller for the lab's rigs.
CALLED_BY_ANSIBLE = {"ssh"}
SUBPROCESS_CALLS = {"run", "Popen", "check_output", "check_call", "_run"}
# Lab tests that run programs on the machine itself (not in a lab rig).
LAB_TESTS = [REPO / "tests" / "integration" / f"test_reflash_{t}.py" for t in ("disk", "image")]
# Essential packages (on every Debian machine, never installed by name) and the programs of
# theirs the lab runs.
ESSENTIAL = {"dpkg", "tar", "util-linux"}
ESSENTIAL_PROGRAMS = {"sh", "gzip", "cp"}


def script_packages() -> set[str]:
    text = HOST_DEPS.read_text()
    match = re.search(r"^pkgs=\(([^)]*)\)", text, re.M)
    assert match, f"{HOST_DEPS} has no pkgs=(...) list"
    return set(match.group(1).split())


def binaries_the_lab_calls() -> set[str]:
    """Every program name a lab module runs: the first string of a command list handed to
    subprocess (directly or through a variable), and every `shutil.which` argument."""
    found: set[str] = set()
    for path in [*(REPO / "toolkit" / "lab").glob("*.py"), *LAB_TESTS]:
        tree = ast.parse(path.read_text())
        for func in ast.walk(tree):
            if not isinstance(func, ast.FunctionDef | ast.AsyncFunctionDef | ast.Module):
                continue
            lists: dict[str, ast.List] = {}
            for node in ast.walk(func):
                if isinstance(node, ast.Assign) and isinstance(node.value, ast.List):
                    for t in node.targets:
                        if isinstance(t, ast.Name):
                            lists[t.id] = node.value
            for node in ast.walk(func):
                if not isinstance(node, ast.Call):
                    continue
                name = getattr(node.func, "attr", getattr(node.func, "id", ""))
                if name == "which" and node.args and isinstance(node.args[0], ast.Constant):
                    found.add(str(node.args[0].value))
                if name not in SUBPROCESS_CALLS or not node.args:
                    continue
                cmd = node.args[0]
                if isinstance(cmd, ast.Constant):  # run("losetup", ...): the program alone
                    found.add(str(cmd.value))
                if isinstance(cmd, ast.Name):
                    cmd = lists.get(cmd.id, cmd)
                if (
                    isinstance(cmd, ast.List) and cmd.elts
                    and isinstance(cmd.elts[0], ast.Constant)
                ):  # fmt: skip
                    found.add(str(cmd.elts[0].value))
    # Every podman call goes through toolkit/lab/podman.py's podman().
    return found | {"podman"}


def test_the_scan_sees_the_lab_calls():
    called = binaries_the_lab_calls()
    assert {"podman", "debootstrap", "gcc", "tar", "ssh-keygen", "dpkg-scanpackages"} <= called


def test_lab_up_checks_every_binary_the_lab_calls():
    checked = {n.binary for n in hostcheck.NEEDS}
    wanted = (binaries_the_lab_calls() | CALLED_BY_PODMAN | CALLED_BY_ANSIBLE) - ESSENTIAL_PROGRAMS
    assert wanted - checked == set(), "add them to toolkit/lab/hostcheck.py NEEDS"


def test_host_deps_installs_every_package_lab_up_checks():
    needed = {n.package for n in hostcheck.NEEDS} - ESSENTIAL
    assert needed - script_packages() == set(), f"add them to {HOST_DEPS.name}'s pkgs"


def test_host_deps_says_why_each_package_is_there():
    comment = "\n".join(ln for ln in HOST_DEPS.read_text().splitlines() if ln.startswith("#"))
    unexplained = [
        p
        for p in script_packages()
        if not re.search(rf"(?<![\w+-]){re.escape(p)}(?![\w+-])", comment)
    ]
    assert unexplained == []


def _path_without(tmp_path: Path, hidden: str) -> str:
    """A PATH with every program of the current one, except `hidden`."""
    shadow = tmp_path / "bin"
    shadow.mkdir()
    for d in os.environ["PATH"].split(os.pathsep):
        if not os.path.isdir(d):
            continue
        for entry in os.scandir(d):
            target = shadow / entry.name
            if entry.name != hidden and not target.exists():
                target.symlink_to(entry.path)
    return str(shadow)


def test_lab_up_names_a_missing_binary_with_its_package_and_builds_nothing(tmp_path: Path):
    lab_dir = tmp_path / "lab"
    proc = subprocess.run(
        [str(RIGPIVOT), "lab", "up", "--rigs", "1", "--profile", "linux-3090x2",
         "--dir", str(lab_dir), "--name", "hostcheck"],
        env={**os.environ, "PATH": _path_without(tmp_path, "debootstrap")},
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 2, proc.stderr
    err = " ".join(proc.stderr.split())
    assert "debootstrap (package debootstrap)" in err
    assert "make lab-deps" in err and "apt-get install --no-install-recommends debootstrap" in err
    assert not lab_dir.exists()  # no key, no inventory, nothing written


def test_podman_on_cni_is_refused_naming_netavark(tmp_path: Path):
    fake = tmp_path / "podman"
    fake.write_text('#!/bin/sh\necho \'{"host": {"networkBackend": "cni"}}\'\n')
    fake.chmod(0o755)
    env = {**os.environ, "PATH": f"{tmp_path}{os.pathsep}{os.environ['PATH']}"}
    assert hostcheck.podman_network_backend(env) == "cni"
    old = os.environ["PATH"]
    os.environ["PATH"] = env["PATH"]
    try:
        found = hostcheck.problems()
    finally:
        os.environ["PATH"] = old
    assert any("network backend cni, not netavark" in p for p in found), found


def test_cgroup2_is_read_from_the_kernels_filesystems(tmp_path: Path):
    with_it, without = tmp_path / "a", tmp_path / "b"
    with_it.write_text("nodev\tsysfs\nnodev\tcgroup\nnodev\tcgroup2\n")
    without.write_text("nodev\tsysfs\nnodev\tcgroup\n")
    assert hostcheck.cgroup2_supported(with_it) and not hostcheck.cgroup2_supported(without)
