"""The pivot record (plugins/modules/rig_state.py) as its conversion's ledger, run through
Ansible on this machine."""

from __future__ import annotations

import json
from pathlib import Path

from tests.unit.rig_modules import run_module


def rig_state(record: Path, **args: object) -> dict[str, object]:
    return run_module(record.parent, "rig_state", {"path": str(record), "step": "test", **args})


def test_the_ledger_keeps_only_paths_that_did_not_exist_and_never_forgets_one(tmp_path: Path):
    record = tmp_path / "state.json"
    mine, operators = tmp_path / "rigpivot-nvidia.list", tmp_path / "operator.conf"
    operators.write_text("x\n")
    r = rig_state(record, created=[str(mine), str(operators)])
    assert r["changed"] and r["record"]["created"] == [str(mine)]
    mine.write_text("deb ...\n")  # the step creates it; a re-run must still list it
    r = rig_state(record, created=[str(mine)])
    assert not r["changed"] and json.loads(record.read_text())["created"] == [str(mine)]


def test_rollback_retires_the_snapshot_and_empties_the_ledger(tmp_path: Path):
    record = tmp_path / "state.json"
    rig_state(record, state="snapshotted", created=[str(tmp_path / "a")],
              facts={"snapshot_id": "20261201T000000Z", "drained_units": ["lolminer.service"]})  # fmt: skip
    r = rig_state(record, state="mining", force=True, retire=True)
    rec = json.loads(record.read_text())
    assert r["changed"] and rec["state"] == "mining" and rec["created"] == []
    assert rec["facts"] == {"snapshot_id": None, "retired_snapshots": ["20261201T000000Z"]}


def test_a_damaged_record_is_named_not_read_as_never_converted(tmp_path: Path):
    record = tmp_path / "state.json"
    record.write_text('{"state": "dra')  # a power cut mid-write
    r = rig_state(record, state="drained")
    assert r.get("failed") and "is not valid JSON" in str(r["msg"])
    assert record.read_text() == '{"state": "dra'  # nothing half-changed


def test_rollback_sets_a_damaged_record_aside_and_starts_a_new_one(tmp_path: Path):
    record = tmp_path / "state.json"
    record.write_text('{"state": "dra')
    r = rig_state(record, set_aside_damaged=True, facts={"snapshot_id": "20261201T000000Z"})
    assert r["changed"] and str(r["set_aside"]).startswith(f"{record}.damaged-")
    assert Path(str(r["set_aside"])).read_text() == '{"state": "dra'  # kept for the operator
    rec = json.loads(record.read_text())
    assert rec["state"] == "mining" and rec["facts"]["snapshot_id"] == "20261201T000000Z"


def test_the_ledger_keeps_the_packages_a_step_is_about_to_add_not_those_the_rig_has(
    tmp_path: Path,
):
    record = tmp_path / "state.json"
    r = rig_state(record, installing=["sl", "bash"])  # sl: not on this machine; bash: is
    assert r["changed"], r
    assert "sl" in r["record"]["created_packages"] and "bash" not in r["record"]["created_packages"]


def test_the_ledger_keeps_the_users_a_step_is_about_to_create_not_those_the_rig_has(
    tmp_path: Path,
):
    record = tmp_path / "state.json"
    r = rig_state(record, users=["rigpivot-nobody-here", "root"])
    assert r["changed"] and r["record"]["created_users"] == ["rigpivot-nobody-here"], r
    r = rig_state(record, state="mining", force=True, retire=True)
    assert json.loads(record.read_text())["created_users"] == []


def test_lists_added_to_the_facts_keep_what_an_earlier_run_recorded(tmp_path: Path):
    record = tmp_path / "state.json"
    rig_state(record, state="drained", add_to_facts={"drained_units": ["lolminer.service"]})
    # a resumed drain found only what was still running: the first drain's units stay listed
    r = rig_state(record, state="drained", add_to_facts={"drained_units": ["t-rex.service"]})
    assert r["record"]["facts"]["drained_units"] == ["lolminer.service", "t-rex.service"]
    again = rig_state(record, state="drained", add_to_facts={"drained_units": ["t-rex.service"]})
    assert not again["changed"]
