"""rig_files (plugins/modules): a step's folders and files in one call, ledger first, on this
machine's files through ansible-playbook."""

from __future__ import annotations

import json
import stat
from pathlib import Path

from tests.unit.rig_modules import run_module


def files_args(tmp_path: Path, **kw: object) -> dict[str, object]:
    stack = tmp_path / "stack"
    args: dict[str, object] = {
        "step": "inference_server",
        "record": str(tmp_path / "state.json"),
        "directories": [{"path": str(stack), "mode": "0755"},
                        {"path": str(stack / "conf"), "mode": "0750"}],
        "files": [{"path": str(stack / "serve.sh"), "content": "#!/bin/sh\nexec engine\n",
                   "mode": "0755"},
                  {"path": str(stack / "conf" / "0.env"), "secret": "KEY=s3cret\n",
                   "mode": "0600"}],
    }  # fmt: skip
    args.update(kw)
    return args


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_makes_folders_and_files_records_them_first_then_changes_nothing(tmp_path: Path):
    (tmp_path / "state.json").write_text(json.dumps({"state": "hardened", "created": ["/x"]}))
    first = run_module(tmp_path, "rig_files", files_args(tmp_path))
    stack = tmp_path / "stack"
    assert first["changed"] is True, first
    assert (stack / "serve.sh").read_text() == "#!/bin/sh\nexec engine\n"
    assert (mode(stack / "serve.sh"), mode(stack / "conf"), mode(stack / "conf" / "0.env")) == (
        0o755, 0o750, 0o600)  # fmt: skip
    record = json.loads((tmp_path / "state.json").read_text())
    # the ledger keeps what it had and gains every path this call made, nothing else
    assert record["created"] == ["/x", str(stack), str(stack / "conf"), str(stack / "serve.sh"),
                                 str(stack / "conf" / "0.env")]  # fmt: skip
    assert record["state"] == "hardened"
    second = run_module(tmp_path, "rig_files", files_args(tmp_path))
    assert second["changed"] is False and second["changed_paths"] == [], second


def test_a_file_the_rig_had_is_rewritten_but_never_joins_the_ledger(tmp_path: Path):
    stack = tmp_path / "stack"
    stack.mkdir(mode=0o700)
    (stack / "serve.sh").write_text("old\n")
    result = run_module(tmp_path, "rig_files", files_args(tmp_path))
    assert str(stack / "serve.sh") in result["changed_paths"]  # type: ignore[operator]
    assert mode(stack) == 0o755  # its mode set, as `file` would
    created = json.loads((tmp_path / "state.json").read_text())["created"]
    assert str(stack) not in created and str(stack / "serve.sh") not in created


def test_check_mode_writes_nothing_not_even_the_ledger_and_diffs_hide_secrets(tmp_path: Path):
    result = run_module(tmp_path, "rig_files", files_args(tmp_path), check=True, diff=True)
    assert result["changed"] is True
    assert not (tmp_path / "stack").exists() and not (tmp_path / "state.json").exists()
    shown = json.dumps(result)
    assert "exec engine" in shown and "s3cret" not in shown, shown


def test_a_file_failing_its_validation_is_not_put_in_place(tmp_path: Path):
    stack = tmp_path / "stack"
    args = files_args(tmp_path, directories=[], files=[
        {"path": str(tmp_path / "rules.conf"), "content": "drop all\n", "mode": "0644",
         "validate": "/bin/sh -c 'grep -q accept %s'"}])  # fmt: skip
    (tmp_path / "rules.conf").write_text("accept ssh\n")
    result = run_module(tmp_path, "rig_files", args)
    assert result.get("failed") is True
    assert "rules.conf: failed validation" in str(result["msg"]), result
    assert (tmp_path / "rules.conf").read_text() == "accept ssh\n"
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".rigpivot-")] == []
    assert not stack.exists()


def test_prune_removes_the_matching_files_not_kept(tmp_path: Path):
    conf = tmp_path / "conf"
    conf.mkdir()
    for name in ("0.env", "1.env", "notes.txt"):
        (conf / name).write_text(name)
    args = {"prune": [{"path": str(conf), "patterns": ["*.env"], "keep": [str(conf / "0.env")]}]}
    result = run_module(tmp_path, "rig_files", args)
    assert result["pruned"] == [str(conf / "1.env")], result
    assert sorted(p.name for p in conf.iterdir()) == ["0.env", "notes.txt"]


def test_a_file_owned_by_a_missing_user_is_refused_naming_it(tmp_path: Path):
    args = {"files": [{"path": str(tmp_path / "f"), "content": "x", "mode": "0644",
                       "owner": "no-such-rigpivot-user"}]}  # fmt: skip
    result = run_module(tmp_path, "rig_files", args)
    assert result.get("failed") is True and "no user no-such-rigpivot-user" in str(result["msg"])
    # in check mode an earlier task would have made the user: a change, not a failure
    checked = run_module(tmp_path, "rig_files", args, check=True)
    assert checked["changed"] is True and not checked.get("failed"), checked


def test_other_paths_the_step_makes_join_the_ledger_with_its_files(tmp_path: Path):
    key = tmp_path / "nvidia.gpg"  # get_url downloads it after this call
    run_module(tmp_path, "rig_files", files_args(tmp_path, ledger=[str(key)]))
    created = json.loads((tmp_path / "state.json").read_text())["created"]
    assert created[-1] == str(key) and str(tmp_path / "stack") in created
