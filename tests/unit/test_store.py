"""The private store on the controller: which stored snapshot a rig whose pivot record is
damaged may be restored from, and API keys shown once."""

from __future__ import annotations

import stat
from pathlib import Path

from toolkit.journal import api_keys_to_show, restorable_snapshot, retire_stored


def test_the_newest_snapshot_no_rollback_restored_is_the_one_to_restore(tmp_path: Path):
    folder = tmp_path / "rig01"
    folder.mkdir()
    assert restorable_snapshot(tmp_path, "rig01") is None
    for sid in ("20261101T000000Z", "20261120T000000Z"):
        (folder / f"{sid}.tar.gz").write_bytes(b"x")
    assert restorable_snapshot(tmp_path, "rig01") == folder / "20261120T000000Z.tar.gz"
    retire_stored(tmp_path, "rig01")  # a rollback restored the rig
    assert restorable_snapshot(tmp_path, "rig01") is None
    (folder / "20261201T000000Z.tar.gz").write_bytes(b"x")  # the next conversion's
    assert restorable_snapshot(tmp_path, "rig01") == folder / "20261201T000000Z.tar.gz"
    assert restorable_snapshot(tmp_path, "rig02") is None


def test_an_api_key_is_shown_once_and_again_only_when_it_changes(tmp_path: Path):
    key = tmp_path / "rig01" / "api-key"
    key.parent.mkdir()
    key.write_text("k" * 43 + "\n")
    assert api_keys_to_show(tmp_path, ["rig01", "rig02"]) == {"rig01": "k" * 43}
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert api_keys_to_show(tmp_path, ["rig01"]) == {}
    key.write_text("n" * 43 + "\n")  # rolled back and converted again: a new key
    assert api_keys_to_show(tmp_path, ["rig01"]) == {"rig01": "n" * 43}
