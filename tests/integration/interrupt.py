"""Runs an operator's terminal starts, and power cuts at chosen moments of them: shared by the
fault tests (test_faults_interrupt.py) and the round trips (test_round_trips.py).

A power cut is the lab's: the rig's container killed (`podman kill`), then started again
(`podman start`), as a rig whose power came back boots."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path

from tests.integration.conftest import Rack
from toolkit.lab import podman as pm


class Run:
    """`rigpivot convert` in the background, as an operator's terminal runs it."""

    def __init__(self, rack: Rack, journal: Path, *args: str):
        self.log = journal.parent / f"{journal.name}-convert-{time.monotonic_ns()}.log"
        with self.log.open("w") as out:
            self.proc = subprocess.Popen(
                ["rigpivot", "convert", "-i", str(rack.lab.inventory), "--yes", "--journal",
                 str(journal), *args],
                stdout=out, stderr=subprocess.STDOUT, text=True,
            )  # fmt: skip

    def wait(self, timeout: float) -> int:
        return self.proc.wait(timeout=timeout)

    @property
    def output(self) -> str:
        return self.log.read_text()[-4000:]


def plays_of(journal: Path) -> list[int]:
    """ansible-playbook (and its forks) still running for a run journal under `journal`."""
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmd = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            except OSError:
                continue
            if str(journal) in cmd and "ansible" in cmd:
                pids.append(int(entry.name))
    return pids


def _is_start(event: dict, host: str, role: str, task: str) -> bool:
    data = event.get("event_data") or {}
    return (event.get("event"), data.get("host"), data.get("role")) == (
        "runner_on_start", host, role,
    ) and str(data.get("task", "")).startswith(task)  # fmt: skip


def task_started(runs: list[Path], host: str, role: str, task: str) -> bool:
    """Whether a play of these runs has started `task` of `role` on `host`, from
    ansible-runner's events as they land in the run journal."""
    for f in (f for run in runs for f in run.glob("ansible/*/artifacts/*/job_events/*.json")):
        try:
            event = json.loads(f.read_text())
        except (OSError, ValueError):
            continue  # being written
        if _is_start(event, host, role, task):
            return True
    return False


class TaskWatch:
    """Whether a run started after this watch was made (in `journal`) has started `task` of
    `role` on `host`; each event file is read once, so it can be asked many times a second."""

    def __init__(self, journal: Path, host: str, role: str, task: str) -> None:
        self.journal, self.host, self.role, self.task = journal, host, role, task
        self.earlier = set(journal.iterdir()) if journal.exists() else set()
        self.seen: set[Path] = set()

    def __call__(self) -> bool:
        runs = [r for r in self.journal.iterdir() if r not in self.earlier]
        for f in (f for run in runs for f in run.glob("ansible/*/artifacts/*/job_events/*.json")):
            if f in self.seen:
                continue
            try:
                event = json.loads(f.read_text())
            except (OSError, ValueError):
                continue  # being written: read it next time
            self.seen.add(f)
            if _is_start(event, self.host, self.role, self.task):
                return True
        return False


def freeze(
    container: str, needle: str, stop: threading.Event | None = None, timeout: float = 1800
) -> tuple[int, str] | None:
    """Wait for a process whose command line holds `needle` to run in the container's PID
    namespace (watched from the host's /proc), freeze it (SIGSTOP) and return its host PID and
    command line; None when `stop` is set or `timeout` passes first."""
    info = pm.inspect(container)
    assert info is not None
    ns = os.readlink(f"/proc/{info['State']['Pid']}/ns/pid")
    deadline = time.monotonic() + timeout
    while not (stop is not None and stop.is_set()) and time.monotonic() < deadline:
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                cmd = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
                if needle in cmd and os.readlink(entry / "ns" / "pid") == ns:
                    os.kill(int(entry.name), signal.SIGSTOP)
                    return int(entry.name), cmd
            except OSError:
                continue
        time.sleep(0.01)
    return None


class PowerCut:
    """Cut the rig's power (kill its container) at a chosen moment of a run, from a thread,
    until `done()` (call it when the run it watches has ended: a watcher left running would
    cut the power of a later run).

    `needle`: the moment a process whose command line holds it runs on the rig; the process is
    frozen first (SIGSTOP, so it cannot finish in the time podman takes). Watched from the
    host's /proc, in the rig's PID namespace. `when`: the moment a condition on the controller
    holds (e.g. a `TaskWatch`: the play started a task on the rig)."""

    def __init__(
        self,
        rack: Rack,
        rig: str,
        needle: str | None = None,
        when: Callable[[], bool] | None = None,
    ) -> None:
        assert (needle is None) != (when is None), "a needle or a condition"
        self.caught: list[str] = []
        self._stop = threading.Event()
        container = rack.container(rig)
        target = self._watch_process if needle else self._watch_condition
        self._thread = threading.Thread(
            target=target, args=(container, needle or when), daemon=True
        )
        self._thread.start()

    def _watch_process(self, container: str, needle: str) -> None:
        caught = freeze(container, needle, self._stop)
        if caught is not None:
            pm.podman("kill", container)
            self.caught.append(caught[1])

    def _watch_condition(self, container: str, when: Callable[[], bool]) -> None:
        while not self._stop.is_set():
            if when():
                pm.podman("kill", container)
                self.caught.append(str(getattr(when, "task", when)))
                return
            time.sleep(0.02)

    def done(self) -> list[str]:
        self._stop.set()
        self._thread.join(timeout=30)
        return self.caught


def power_on(rack: Rack, rig: str) -> None:
    """The power comes back: the rig boots and is ready again."""
    pm.podman("start", rack.container(rig))
    rack.wait_ready(rig)
