"""ansible-runner's one home: run a playbook, stream its events, return per-rig outcomes.

Python and Ansible meet at the private data directory: inventory, extravars and options go
in; status, rc, stats and events come back. A fresh private data directory is made for every
run, because ansible-runner persists `env/cmdline` and `env/extravars` and a later run in the
same directory would silently reuse them (e.g. stay in --check).
"""

from __future__ import annotations

import logging
import os
import signal
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import ansible_runner

from toolkit.errors import RigpivotError
from toolkit.hostkeys import host_key_message

log = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parents[1]
# The tasks of convert.yml's rescue (names as there and in tasks/lease.yml): for a rig that
# has failed, none of them changes what the run tells of it.
CONVERT_RESCUE = frozenset({
    "Restore the rig, or quarantine it (its conversion failed).",
    "Name this run for the rigs' leases.",
    "Take, renew or release the rig's lease for this run.",
    "Report the rig's outcome.",
    "Fail the rig so the run reports it (its conversion failed).",
})  # fmt: skip
PLAYBOOKS = REPO_ROOT / "playbooks"


@dataclass
class RigOutcome:
    host: str
    ok: bool = True
    unreachable: bool = False
    changed: int = 0
    failed_task: str | None = None
    message: str | None = None
    last_task: str | None = None
    last_role: str | None = None  # the role (step) of the last task started on the rig
    reached: bool = False  # any task ran on the rig
    record: dict[str, Any] | None = None  # the rig's pivot record, as rig_state last wrote it
    held_by: dict[str, Any] | None = None  # another run's live lease, when rig_lease refused
    took_over: dict[str, Any] | None = None  # an expired lease of another run rig_lease took


@dataclass
class PlayResult:
    playbook: str
    status: str
    rc: int
    rigs: dict[str, RigOutcome] = field(default_factory=dict)
    artifacts: Path | None = None

    def failed(self) -> list[str]:
        return [h for h, r in self.rigs.items() if not r.ok]

    @property
    def canceled(self) -> bool:
        return self.status == "canceled"


@dataclass
class TaskEvent:
    """What the CLI shows while a play runs."""

    host: str
    task: str
    role: str | None
    status: str  # ok, changed, failed, unreachable, skipped, started


HIDDEN = "(output hidden: the task handles secrets)"


def _failure_message(res: dict[str, Any], host: str = "") -> str:
    if res.get("_ansible_no_log") or res.get("censored"):
        return HIDDEN
    # A loop's summary ("All items completed", "One or more items failed") says nothing:
    # the first item that failed or could not reach the rig does.
    items = res.get("results")
    if isinstance(items, list):
        for item in items:
            if isinstance(item, dict) and (item.get("failed") or item.get("unreachable")):
                return _failure_message(item, host)
    if key_problem := host_key_message(host, str(res.get("msg") or "")):
        return key_problem
    for key in ("msg", "stderr", "reason"):
        if res.get(key):
            text = str(res[key]).strip()
            return text.splitlines()[-1][:500] if key == "stderr" else text[:500]
    return "failed"


def _kill_plays() -> None:
    """SIGKILL the process group of each ansible-playbook this process started, as
    ansible-runner does on cancel (pexpect makes each child a session leader)."""
    me = os.getpid()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            # comm may hold spaces or parentheses: the fields after the last ')' are safe.
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            if int(fields[1]) == me and os.getpgid(int(entry.name)) == int(entry.name):
                os.killpg(int(entry.name), signal.SIGKILL)
        except (OSError, IndexError, ValueError):
            continue


def run_playbook(
    playbook: str,
    inventories: Sequence[Path],
    limit: Sequence[str],
    private_dir: Path,
    extravars: dict[str, Any] | None = None,
    check: bool = False,
    forks: int = 16,
    on_event: Callable[[TaskEvent], None] = lambda _e: None,
    should_stop: Callable[[], bool] = lambda: False,
) -> PlayResult:
    """Run playbooks/<playbook> on `limit` hosts and tell how each rig fared.

    `should_stop` is polled about once a second while the play runs; when it turns true,
    ansible-runner kills ansible-playbook's process group (its forks and SSH clients with it)
    and the result's status is `canceled`. What a rig had reached is in its pivot record."""
    private_dir.mkdir(parents=True, exist_ok=False)
    result = PlayResult(playbook=playbook, status="unknown", rc=-1)
    for host in limit:
        result.rigs[host] = RigOutcome(host=host)

    def handle(event: dict[str, Any]) -> bool:
        data = event.get("event_data") or {}
        host = data.get("host")
        kind = event.get("event", "")
        if not host or host not in result.rigs:
            return True
        rig = result.rigs[host]
        task = str(data.get("task") or "")
        # convert.yml's rescue, when this controller rolls back (rigpivot_rollback_on_failure
        # false), only fails the rig again: where it failed, and why, stay the failed step's.
        if not rig.ok and task in CONVERT_RESCUE:
            return True
        # Reached = a task came back from the rig. A task that only started, then found the rig
        # unreachable (ssh refused: down, host key changed), changed nothing there: nothing
        # to roll back.
        if kind in ("runner_on_ok", "runner_on_failed"):
            rig.reached = True
        role = data.get("role")
        if kind == "runner_on_start":
            rig.last_task, rig.last_role = task, role
            on_event(TaskEvent(host, task, role, "started"))
        elif kind == "runner_on_ok":
            res = data.get("res") or {}
            if isinstance(res.get("record"), dict):
                rig.record = res["record"]
            if isinstance(res.get("took_over"), dict):
                rig.took_over = res["took_over"]
            changed = bool(res.get("changed"))
            rig.changed += int(changed)
            on_event(TaskEvent(host, task, role, "changed" if changed else "ok"))
        elif kind == "runner_on_failed" and not data.get("ignore_errors"):
            rig.ok = False
            rig.failed_task = f"{role}: {task}" if role else task
            rig.message = _failure_message(data.get("res") or {})
            held = (data.get("res") or {}).get("held_by")
            rig.held_by = held if isinstance(held, dict) else None
            on_event(TaskEvent(host, task, role, "failed"))
        elif kind == "runner_on_unreachable":
            rig.ok, rig.unreachable = False, True
            rig.failed_task = task
            rig.message = _failure_message(data.get("res") or {}, host)
            on_event(TaskEvent(host, task, role, "unreachable"))
        return True

    env = {
        "ANSIBLE_CONFIG": str(REPO_ROOT / "ansible.cfg"),
        "ANSIBLE_ROLES_PATH": str(REPO_ROOT / "roles"),
        "ANSIBLE_LIBRARY": str(REPO_ROOT / "plugins" / "modules"),
        "ANSIBLE_MODULE_UTILS": str(REPO_ROOT / "plugins" / "module_utils"),
        "ANSIBLE_ACTION_PLUGINS": str(REPO_ROOT / "plugins" / "action"),
        # ansible-runner adds its own callbacks' folder to this variable, which then hides
        # ansible.cfg's callback_plugins: name ours here (controller_cache).
        "ANSIBLE_CALLBACK_PLUGINS": str(REPO_ROOT / "plugins" / "callback"),
        "ANSIBLE_NOCOLOR": "1",
        # Host keys are always checked. ansible-runner sets this to False unless the
        # environment names it, and False makes Ansible switch ssh's strict checking off
        # ahead of the inventory's own options (OpenSSH keeps an option's first value): a rig
        # whose key changed would then be reached with key auth. Forced, whatever the env.
        "ANSIBLE_HOST_KEY_CHECKING": "True",
        # ansible-playbook from the same install as this toolkit, then the system's ssh.
        "PATH": os.pathsep.join(
            [str(Path(sys.executable).parent), os.environ.get("PATH", "/usr/bin:/bin")]
        ),
    }
    try:
        runner = ansible_runner.run(
            private_data_dir=str(private_dir),
            project_dir=str(REPO_ROOT),
            playbook=str(PLAYBOOKS / playbook),
            inventory=[str(p.resolve()) for p in inventories],
            limit=",".join(limit),
            extravars=extravars or {},
            cmdline="--check --diff" if check else None,
            envvars=env,
            forks=forks,
            quiet=True,
            event_handler=handle,
            cancel_callback=should_stop,
            # How often the cancel callback is polled while the play is silent (seconds).
            settings={"pexpect_timeout": 1},
        )
    except KeyboardInterrupt:
        # Quit at once (a second Ctrl-C): ansible-runner's own cancel did not get to run.
        _kill_plays()
        raise
    except Exception as e:  # runner raises bare exceptions for setup problems
        raise RigpivotError(f"could not start ansible-runner for {playbook}: {e}") from e
    result.status, result.rc = str(runner.status), int(runner.rc or 0)
    result.artifacts = Path(runner.config.artifact_dir)
    if runner.status == "canceled":
        return result
    if runner.status in ("failed", "timeout") and all(r.ok for r in result.rigs.values()):
        # The play failed before reaching any rig (syntax error, bad inventory...).
        for rig in result.rigs.values():
            rig.ok = False
            rig.message = (
                f"playbook {playbook} {runner.status} (rc {runner.rc}); see {result.artifacts}"
            )
    return result
