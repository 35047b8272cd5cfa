"""private_fetch (plugins/action): files fetched from a rig into the controller's private store,
the store's folders 0700 and the files 0600 whatever the umask; run through ansible-playbook
against this machine (the rig's files are local files here)."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from tests.unit.rig_modules import run_module


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_fetches_into_owner_only_folders_and_files_once(tmp_path: Path):
    rig = tmp_path / "rig"
    rig.mkdir()
    (rig / "snap.tar.gz").write_bytes(b"wallets")
    (rig / "api-key").write_text("sk-secret\n")
    store = tmp_path / "store"
    files = [{"src": str(rig / "snap.tar.gz"), "dest": str(store / "rig01" / "s1.tar.gz")},
             {"src": str(rig / "api-key"), "dest": str(store / "rig01" / "api-key")}]  # fmt: skip
    old = os.umask(0o022)  # what an operator's shell usually has
    try:
        first = run_module(tmp_path, "private_fetch", {"store": str(store), "files": files})
        again = run_module(tmp_path, "private_fetch", {"store": str(store), "files": files})
    finally:
        os.umask(old)
    assert first["changed"] is True, first
    assert (store / "rig01" / "s1.tar.gz").read_bytes() == b"wallets"
    assert (store / "rig01" / "api-key").read_text() == "sk-secret\n"
    assert mode(store) == mode(store / "rig01") == 0o700
    assert {mode(f) for f in (store / "rig01").iterdir()} == {0o600}
    assert again["changed"] is False, again
    # a mode someone loosened since is tightened again, and that is a change
    (store / "rig01" / "api-key").chmod(0o644)
    third = run_module(tmp_path, "private_fetch", {"store": str(store), "files": files})
    assert third["changed"] is True and mode(store / "rig01" / "api-key") == 0o600


def test_check_mode_fetches_nothing(tmp_path: Path):
    (tmp_path / "key").write_text("k\n")
    store = tmp_path / "store"
    files = [{"src": str(tmp_path / "key"), "dest": str(store / "rig01" / "api-key")}]
    result = run_module(tmp_path, "private_fetch", {"store": str(store), "files": files},
                        check=True)  # fmt: skip
    assert result.get("skipped") is True and not store.exists()


def test_a_destination_outside_the_store_is_refused(tmp_path: Path):
    (tmp_path / "key").write_text("k\n")
    store = tmp_path / "store"
    files = [{"src": str(tmp_path / "key"), "dest": str(tmp_path / "elsewhere" / "api-key")}]
    result = run_module(tmp_path, "private_fetch", {"store": str(store), "files": files})
    assert result["failed"] is True and f"under {store}" in str(result["msg"])
    assert not (tmp_path / "elsewhere").exists() and not store.exists()
