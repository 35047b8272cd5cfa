"""The rigs' leases, as the controller takes them: every rig a run will change is leased to the
run before any change (playbooks/lease.yml, the rig_lease module), and released at the end.

A lease lives on the rig, in its pivot record, so it holds whichever shell, folder, farm file,
cron job or AWX job the second run comes from. A rig leased to another live run stops the
whole run before it changes anything (exit 5, naming the holder and the time left); an
expired lease is taken over, and the run report says whose it was.
"""

from __future__ import annotations

import contextlib
import getpass
import os
import socket
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from toolkit.errors import LeasedError, RigpivotError
from toolkit.runner import run_playbook

# Seconds a lease lasts unless the run renews it: every step a rig reaches renews its lease,
# so this bounds the longest single step (a model download) and how long a rig stays leased
# to a controller that died.
LEASE_TTL = 3600


def lease_vars(run_id: str, command: str, ttl: int = LEASE_TTL) -> dict[str, Any]:
    """The extra variables that name this run in every play it runs."""
    controller = socket.gethostname()
    return {
        "rigpivot_run_id": run_id,
        "rigpivot_lease_holder": (
            f"`rigpivot {command}` pid {os.getpid()} by {getpass.getuser()}@{controller}"
        ),
        "rigpivot_lease_controller": controller,
        "rigpivot_lease_pid": os.getpid(),
        "rigpivot_lease_ttl": ttl,
    }


def _dead_here(lease: dict[str, Any]) -> bool:
    """Whether a lease names a rigpivot process of this controller that no longer runs."""
    pid = lease.get("pid")
    if lease.get("controller") != socket.gethostname() or not isinstance(pid, int) or pid <= 0:
        return False
    try:
        return b"rigpivot" not in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return True


def _refusal(held: dict[str, dict[str, Any]], others: dict[str, str]) -> str:
    lines = [
        f"{host}: {lease.get('holder') or 'another run'} (run {lease.get('run')}) since "
        f"{lease.get('taken')}, until {lease.get('expires')}"
        for host, lease in sorted(held.items())
    ] + [f"{host}: {why}" for host, why in sorted(others.items())]
    return "\n  ".join(lines)


@contextlib.contextmanager
def leased(
    inventories: Sequence[Path],
    hosts: Sequence[str],
    extravars: dict[str, Any],
    journal: Path,
    check: bool = False,
) -> Iterator[list[str]]:
    """Hold the lease of every rig in `hosts` for the run `extravars` names, for the block.

    Yields a line for each rig whose expired lease of another run was taken over. Rigs that
    cannot be reached are left to the run's plays (they report them unreachable). A --check
    run takes nothing, but still refuses rigs another run holds."""
    if not hosts:
        yield []
        return
    take = run_playbook(
        "lease.yml", inventories, hosts, journal / "ansible" / "000-lease-take",
        extravars={**extravars, "rigpivot_lease_state": "present"}, check=check,
    )  # fmt: skip
    held = {h: r.held_by for h, r in take.rigs.items() if r.held_by}
    if dead := sorted({str(lease.get("run")) for lease in held.values() if _dead_here(lease)}):
        # Runs of this controller whose process is gone (a rig that lost power mid-run kept
        # their lease): taken over now, not an hour later.
        again = run_playbook(
            "lease.yml", inventories, sorted(held), journal / "ansible" / "000-lease-take-over",
            extravars={**extravars, "rigpivot_lease_state": "present",
                       "rigpivot_lease_replace": dead},
            check=check,
        )  # fmt: skip
        for h, r in again.rigs.items():
            take.rigs[h] = r
            if r.ok:
                r.took_over = held[h]
        held = {h: r.held_by for h, r in take.rigs.items() if r.held_by}
    others = {
        h: f"{r.failed_task}: {r.message}"
        for h, r in take.rigs.items()
        if not r.ok and not r.unreachable and not r.held_by
    }
    taken = [h for h, r in take.rigs.items() if r.ok]
    try:
        if held:
            raise LeasedError(
                "leased to another run, so nothing was changed:\n  "
                + _refusal(held, others)
                + "\nwait for that run to end (or its lease to expire), or leave the rigs out "
                "with --limit"
            )
        if others:
            raise RigpivotError(
                "could not take the rigs' leases, so nothing was changed:\n  "
                + _refusal({}, others)
            )
        yield [
            f"{h}: took over the lease of {r.took_over.get('holder') or 'another run'} "
            f"(run {r.took_over.get('run')}, until {r.took_over.get('expires')}): "
            + ("expired" if r.took_over.get("run") not in dead else "its process is gone")
            for h, r in sorted(take.rigs.items())
            if r.took_over
        ]
    finally:
        if taken and not check:
            run_playbook(
                "lease.yml", inventories, taken, journal / "ansible" / "999-lease-release",
                extravars={**extravars, "rigpivot_lease_state": "absent"},
            )  # fmt: skip
