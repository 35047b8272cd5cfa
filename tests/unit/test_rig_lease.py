"""The rig lease (plugins/modules/rig_lease.py): one run changes a rig at a time, whichever
controller it comes from. Run through Ansible on this machine, on a record in a temp folder."""

from __future__ import annotations

import datetime
import json
import threading
from pathlib import Path

from plugins.module_utils.rigpivot_rig import record_lock_path
from tests.unit.rig_modules import run_module
from tests.unit.test_rig_state import rig_state


def lease(record: Path, run: str, *, check: bool = False, **args: object) -> dict:
    args = {"path": str(record), "run": run, "holder": f"holder of {run}", **args}
    return run_module(record.parent, "rig_lease", args, check=check)


def test_a_second_run_is_refused_naming_the_holder_and_the_time_left(tmp_path: Path):
    record = tmp_path / "state.json"
    first = lease(record, "run-a", controller="ctl-1", pid=41)
    assert not first.get("failed") and first["lease"]["run"] == "run-a"
    second = lease(record, "run-b")
    assert second["failed"]
    assert "leased by holder of run-a (run run-a)" in second["msg"]
    assert " min " in second["msg"] and 3500 < second["left"] <= 3600
    assert json.loads(record.read_text())["lease"]["run"] == "run-a"


def test_the_holder_renews_and_releases_and_another_run_cannot_release_it(tmp_path: Path):
    record = tmp_path / "state.json"
    lease(record, "run-a")
    assert not lease(record, "run-a").get("failed")  # re-entrant: the run's own plays
    lease(record, "run-b", state="absent")  # not its lease: left alone
    assert json.loads(record.read_text())["lease"]["run"] == "run-a"
    lease(record, "run-a", state="absent")
    # the lease was all the record held (never converted): no record is left behind
    assert not record.exists()
    assert not lease(record, "run-b").get("failed")
    rig_state(record, state="snapshotted")
    lease(record, "run-b", state="absent")
    rec = json.loads(record.read_text())
    assert "lease" not in rec and rec["state"] == "snapshotted"


def test_an_expired_lease_is_taken_over_and_the_result_says_whose_it_was(tmp_path: Path):
    record = tmp_path / "state.json"
    lease(record, "run-dead", ttl=60)
    rec = json.loads(record.read_text())
    rec["lease"]["expires"] = "2020-01-01T00:00:00Z"  # the controller died long ago
    record.write_text(json.dumps(rec))
    r = lease(record, "run-b")
    assert not r.get("failed") and r["lease"]["run"] == "run-b"
    assert r["took_over"]["run"] == "run-dead"


def test_check_mode_writes_nothing_but_still_refuses(tmp_path: Path):
    record = tmp_path / "state.json"
    lease(record, "run-a", check=True)
    assert not record.exists() and not Path(record_lock_path(str(record))).exists()
    lease(record, "run-a")
    assert lease(record, "run-b", check=True)["failed"]


def test_writing_the_record_renews_a_live_lease(tmp_path: Path):
    record = tmp_path / "state.json"
    lease(record, "run-a", ttl=600)
    rec = json.loads(record.read_text())
    soon = datetime.datetime.now(datetime.UTC) + datetime.timedelta(seconds=90)
    rec["lease"]["expires"] = soon.strftime("%Y-%m-%dT%H:%M:%SZ")
    record.write_text(json.dumps(rec))
    rig_state(record, state="snapshotted")
    after = json.loads(record.read_text())
    assert after["state"] == "snapshotted" and after["lease"]["run"] == "run-a"
    left = datetime.datetime.strptime(after["lease"]["expires"], "%Y-%m-%dT%H:%M:%SZ")
    assert left.replace(tzinfo=datetime.UTC) - soon > datetime.timedelta(seconds=400)


def test_two_runs_asking_at_once_get_one_lease(tmp_path: Path):
    record = tmp_path / "state.json"
    results: dict[str, dict] = {}

    def ask(run: str) -> None:
        (tmp_path / run).mkdir()  # each run its own play: separate controllers
        results[run] = run_module(tmp_path / run, "rig_lease", {"path": str(record), "run": run})

    threads = [threading.Thread(target=ask, args=(r,)) for r in ("run-a", "run-b", "run-c")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    winners = [r for r, res in results.items() if not res.get("failed")]
    assert len(winners) == 1, results
    assert json.loads(record.read_text())["lease"]["run"] == winners[0]


def test_a_damaged_record_fails_the_lease_unless_a_rollback_sets_it_aside(tmp_path: Path):
    record = tmp_path / "state.json"
    cut = '{\n  "state": "serving",\n  "step": "valid'  # a power cut mid-write
    record.write_text(cut)
    refused = lease(record, "run-a")
    assert refused["failed"] and "not valid JSON" in refused["msg"]
    assert record.read_text() == cut
    assert not lease(record, "run-a", set_aside_damaged=True, check=True).get("failed")
    assert record.read_text() == cut and len(list(tmp_path.glob("state.json.damaged-*"))) == 0
    taken = lease(record, "run-a", set_aside_damaged=True)
    assert not taken.get("failed") and taken["lease"]["run"] == "run-a"
    (kept,) = tmp_path.glob("state.json.damaged-*")
    assert kept.read_text() == cut and taken["set_aside"] == str(kept)
    assert json.loads(record.read_text())["lease"]["run"] == "run-a"
