"""Where a run keeps its records on the controller: the run journal, the private snapshot store,
and the farm lock.

The run journal (`runs/<run id>/`) holds the preflight report, the plan, each play's
ansible-runner private data directory (with its artifacts), and the run report (JSON and
HTML). It holds no secret: the snapshots fetched from the rigs (rig.conf, wallet.conf, miner
scripts: wallets, rig passwords, farm hashes) go to a separate store, `snapshots/` beside the
journal root (directories 0700, files 0600), and the journal names them by rig, snapshot id
and sha256 only.
"""

from __future__ import annotations

import contextlib
import datetime
import fcntl
import getpass
import hashlib
import os
import secrets
import socket
from collections.abc import Iterator
from pathlib import Path

from toolkit.errors import RigpivotError
from toolkit.models import RunReport, SnapshotRef
from toolkit.report import run_html


class LockedError(RigpivotError):
    """Another run holds the farm's lock."""

    exit_code = 5


def now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@contextlib.contextmanager
def farm_lock(journal_root: Path, inventory: Path, command: str) -> Iterator[None]:
    """One convert/rollback at a time per farm file: a second run refuses, naming the holder."""
    locks = journal_root / ".locks"
    locks.mkdir(parents=True, exist_ok=True)
    key = hashlib.sha256(str(inventory.resolve()).encode()).hexdigest()[:16]
    path = locks / f"{key}.lock"
    with path.open("a+") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.seek(0)
            holder = f.read().strip() or "another rigpivot process"
            raise LockedError(
                f"{inventory} is locked by {holder}; wait for that run to end "
                f"(the lock is released when its process exits: {path})"
            ) from None
        f.seek(0)
        f.truncate()
        f.write(
            f"`rigpivot {command}` pid {os.getpid()} by {getpass.getuser()}@"
            f"{socket.gethostname()} since {now()}\n"
        )
        f.flush()
        try:
            yield
        finally:
            f.truncate(0)
            fcntl.flock(f, fcntl.LOCK_UN)


def new_journal(root: Path) -> tuple[str, Path]:
    """A new run id and its journal folder."""
    run_id = (
        datetime.datetime.now(datetime.UTC).strftime("%Y%m%dT%H%M%SZ") + "-" + secrets.token_hex(2)
    )
    path = root / run_id
    path.mkdir(parents=True)
    return run_id, path


def save_report(journal: Path, report: RunReport) -> None:
    (journal / "report.json").write_text(report.model_dump_json(indent=2))
    (journal / "report.html").write_text(run_html(report))


def private_dir(path: Path) -> Path:
    """A directory only its owner can enter (the snapshot store and its per-rig folders)."""
    path.mkdir(parents=True, exist_ok=True)
    path.chmod(0o700)
    return path


def stored_snapshot(store: Path, host: str, record: dict[str, object] | None) -> SnapshotRef | None:
    """Lock down what the play fetched for `host` and name it by id and checksum."""
    facts = (record or {}).get("facts")
    snapshot_id = facts.get("snapshot_id") if isinstance(facts, dict) else None
    folder = store / host
    archive = folder / f"{snapshot_id}.tar.gz"
    if not snapshot_id or not archive.is_file():
        return None
    private_dir(folder)
    for f in folder.iterdir():
        if f.is_file():
            f.chmod(0o600)
    digest = hashlib.sha256()
    with archive.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 16), b""):
            digest.update(chunk)
    return SnapshotRef(id=str(snapshot_id), sha256=digest.hexdigest())
