"""rig_restore (plugins/modules): a snapshot taken by rig_snapshot put back in one module call,
and checked, on this machine's files through ansible-playbook."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

from tests.unit.rig_modules import run_module
from tests.unit.test_rig_snapshot import params, rig_snapshot


def snapshot(tmp_path: Path) -> tuple[Path, Path]:
    """A small rig tree (config, a script, a link, a wallet) and its snapshot."""
    etc = tmp_path / "etc"
    (etc / "ssh").mkdir(parents=True)
    (etc / "ssh" / "sshd_config").write_text("PermitRootLogin yes\n")
    (etc / "miner.sh").write_text("#!/bin/sh\nexec miner\n")
    (etc / "miner.sh").chmod(0o750)
    (etc / "wallet.conf").write_text("WAL=0xsecretwallet\n")
    (etc / "wallet.conf").chmod(0o600)
    (etc / "environment").symlink_to(etc / "miner.sh")
    snap = tmp_path / "snap"
    manifest = rig_snapshot().take(
        params(dirs=[str(etc)], watch_absent=[str(tmp_path / "stack")]), [], str(snap)
    )
    (snap / "manifest.json").write_text(json.dumps(manifest))
    return etc, snap


def convert(etc: Path, tmp_path: Path) -> list[str]:
    """What a conversion and an operator's hand leave: changed content, mode and link, a lost
    file, a folder the stack made and files it created. Returns the ledger's paths."""
    (etc / "ssh" / "sshd_config").write_text("PermitRootLogin no\n")
    (etc / "miner.sh").chmod(0o755)
    (etc / "wallet.conf").unlink()
    (etc / "environment").unlink()
    (etc / "environment").symlink_to(etc / "ssh")
    (tmp_path / "stack" / "venv").mkdir(parents=True)
    (etc / "ssh" / "sshd_config.d").mkdir()
    (etc / "ssh" / "sshd_config.d" / "rigpivot.conf").write_text("PasswordAuthentication no\n")
    return [str(etc / "ssh" / "sshd_config.d" / "rigpivot.conf")]


def restore(tmp_path: Path, snap: Path, created: list[str], **kw: object) -> dict[str, object]:
    manifest = json.loads((snap / "manifest.json").read_text())
    args = {"snapshot_dir": str(snap), "remove": manifest["absent"] + created,
            "diff_paths": [str(tmp_path / "etc" / "ssh") + "/"]}  # fmt: skip
    return run_module(tmp_path, "rig_restore", args, **kw)  # type: ignore[arg-type]


def test_restores_every_file_link_and_mode_and_removes_what_the_conversion_made(tmp_path: Path):
    etc, snap = snapshot(tmp_path)
    created = convert(etc, tmp_path)
    result = restore(tmp_path, snap, created)
    assert result["changed"] is True, result
    assert sorted(result["restored"]) == sorted(  # type: ignore[call-overload]
        str(etc / n) for n in ("ssh/sshd_config", "miner.sh", "wallet.conf", "environment")
    )
    assert result["removed"] == [str(tmp_path / "stack"), *created]
    assert (etc / "ssh" / "sshd_config").read_text() == "PermitRootLogin yes\n"
    assert stat.S_IMODE((etc / "miner.sh").stat().st_mode) == 0o750
    assert (etc / "wallet.conf").read_text() == "WAL=0xsecretwallet\n"
    assert stat.S_IMODE((etc / "wallet.conf").stat().st_mode) == 0o600
    assert os.readlink(etc / "environment") == str(etc / "miner.sh")
    assert not (tmp_path / "stack").exists() and not Path(created[0]).exists()
    # the folder the created file was in is the operator's to keep
    assert (etc / "ssh" / "sshd_config.d").is_dir()
    # no temporary file left beside the restored ones
    assert not [p for p in etc.rglob("*") if ".rigpivot" in p.name]
    # a second run finds nothing to do, and the check passes
    again = restore(tmp_path, snap, created)
    assert again["changed"] is False and again["restored"] == [] and again["removed"] == []
    verified = run_module(tmp_path, "rig_restore", {"snapshot_dir": str(snap), "state": "verified"})
    assert verified.get("failed") is not True, verified


def test_check_mode_changes_nothing_and_diffs_only_the_ssh_config(tmp_path: Path):
    etc, snap = snapshot(tmp_path)
    created = convert(etc, tmp_path)
    (etc / "wallet.conf").write_text("WAL=0xoperatorsnewwallet\n")
    before = {p: p.read_bytes() for p in etc.rglob("*") if p.is_file() and not p.is_symlink()}
    result = restore(tmp_path, snap, created, check=True, diff=True)
    assert result["changed"] is True
    assert str(etc / "wallet.conf") in result["restored"]  # type: ignore[operator]
    assert {p: p.read_bytes() for p in before} == before
    assert (tmp_path / "stack").is_dir() and os.readlink(etc / "environment") == str(etc / "ssh")
    diffs = result["diff"]
    assert [d["before_header"] for d in diffs] == [str(etc / "ssh" / "sshd_config")]  # type: ignore[attr-defined]
    assert "secretwallet" not in json.dumps(result) and "newwallet" not in json.dumps(result)


def test_never_removes_a_file_of_the_snapshot_and_leaves_excluded_ones_alone(tmp_path: Path):
    etc, snap = snapshot(tmp_path)
    (etc / "miner.sh").write_text("#!/bin/sh\nexec newminer\n")
    (etc / "wallet.conf").write_text("WAL=0xoperatorsnewwallet\n")
    args = {"snapshot_dir": str(snap), "remove": [str(etc / "miner.sh")],
            "exclude": [str(etc / "wallet.conf")]}  # fmt: skip
    result = run_module(tmp_path, "rig_restore", args)
    assert result["restored"] == [str(etc / "miner.sh")] and result["removed"] == []
    assert (etc / "miner.sh").read_text() == "#!/bin/sh\nexec miner\n"
    assert (etc / "wallet.conf").read_text() == "WAL=0xoperatorsnewwallet\n"


def test_verify_fails_naming_each_file_and_link_that_differs(tmp_path: Path):
    etc, snap = snapshot(tmp_path)
    convert(etc, tmp_path)
    result = run_module(tmp_path, "rig_restore", {"snapshot_dir": str(snap), "state": "verified"})
    assert result["failed"] is True
    assert result["differ"] == [
        f"{etc / 'environment'}: points elsewhere (was a link to {etc / 'miner.sh'})",
        f"{etc / 'ssh' / 'sshd_config'}: content differs",
        f"{etc / 'wallet.conf'}: missing",
    ]
    assert "3 of the snapshot's files differ" in str(result["msg"])


def test_a_missing_snapshot_is_named(tmp_path: Path):
    result = run_module(tmp_path, "rig_restore", {"snapshot_dir": str(tmp_path / "nowhere")})
    assert result["failed"] is True
    assert f"cannot read the snapshot's manifest in {tmp_path / 'nowhere'}" in str(result["msg"])


def test_only_the_paths_asked_for_are_put_back_and_none_when_none_is_asked(tmp_path: Path):
    # mining_restore unmasks a unit by putting back the one file the mask replaced
    etc, snap = snapshot(tmp_path)
    convert(etc, tmp_path)
    link = str(etc / "environment")
    none = run_module(tmp_path, "rig_restore", {"snapshot_dir": str(snap), "only": []})
    assert none["changed"] is False and none["restored"] == []
    one = run_module(tmp_path, "rig_restore", {"snapshot_dir": str(snap), "only": [link]})
    assert one["restored"] == [link]
    assert os.readlink(link) == str(etc / "miner.sh")
    assert not (etc / "wallet.conf").exists()  # not asked for: left as the conversion left it
