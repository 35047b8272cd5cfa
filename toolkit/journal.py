"""Where a run keeps its records on the controller: the run journal and the private snapshot
store. (Which run may change a rig is the rig's own lease: toolkit/lease.py.)

The run journal (`runs/<run id>/`) holds the preflight report, the plan, each play's
ansible-runner private data directory (with its artifacts), and the run report (JSON and
HTML). It holds no secret: the snapshots fetched from the rigs (rig.conf, wallet.conf, miner
scripts: wallets, rig passwords, farm hashes) go to a separate store, `snapshots/` beside the
journal root (directories 0700, files 0600), and the journal names them by rig, snapshot id
and sha256 only.
"""

from __future__ import annotations

import datetime
import hashlib
import secrets
from pathlib import Path

from toolkit.models import RunReport, SnapshotRef
from toolkit.report import run_html


def now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


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


def api_keys_to_show(store: Path, hosts: list[str]) -> dict[str, str]:
    """Each rig's API key (fetched by inference_server into `<store>/<host>/api-key`) that the
    operator has not been shown yet; marked shown (`api-key.shown`: the key's sha256, so a new
    key after a rollback and a new conversion is shown again). The key never enters the
    journal or a report."""
    keys: dict[str, str] = {}
    for host in hosts:
        path = store / host / "api-key"
        if not path.is_file():
            continue
        path.chmod(0o600)
        key = path.read_text().strip()
        digest = hashlib.sha256(key.encode()).hexdigest()
        marker = path.with_name("api-key.shown")
        if key and (not marker.is_file() or marker.read_text().strip() != digest):
            keys[host] = key
            marker.write_text(digest + "\n")
            marker.chmod(0o600)
    return keys


def restorable_snapshot(store: Path, host: str) -> Path | None:
    """The private store's newest snapshot of `host` that no rollback has restored yet (the
    copy to restore a rig whose pivot record is damaged from), or None."""
    folder = store / host
    if not folder.is_dir():
        return None
    archives = sorted(
        p for p in folder.glob("*.tar.gz")
        if not p.with_name(p.name.removesuffix(".tar.gz") + ".retired").exists()
    )  # fmt: skip
    return archives[-1] if archives else None


def retire_stored(store: Path, host: str) -> None:
    """A rollback restored `host`: none of its stored snapshots is ever restored again (they
    picture the rig as it was before; the operator has changed it since)."""
    folder = store / host
    for archive in folder.glob("*.tar.gz") if folder.is_dir() else []:
        marker = archive.with_name(archive.name.removesuffix(".tar.gz") + ".retired")
        if not marker.exists():
            marker.write_text("restored by a rollback: never restored again\n")
            marker.chmod(0o600)
