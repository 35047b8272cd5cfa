"""Host keys are always verified (issue 5): a rig whose SSH host key changed is refused by
convert, with what the operator must do, and the other rigs are still converted; a key that
changes after preflight is refused by Ansible the same way.

One rack for the module: two fit plain-Linux rigs (no driver change, no reboot: fast).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path

import pytest

from tests.integration.conftest import Rack
from toolkit.models import RunReport
from toolkit.pivot import RunOptions, convert
from toolkit.plan import Plan

pytestmark = pytest.mark.lab

PROFILE = "linux-3090x1,linux-3090x1"
CONFIGS = ("/opt/lolminer", "/etc/systemd/system/lolminer.service")


@pytest.fixture(scope="module")
def rack(lab_factory) -> Rack:
    return lab_factory(2, PROFILE)


@pytest.fixture(scope="module")
def before(rack: Rack) -> dict[str, dict[str, str]]:
    return {rig: rack.sha256s(rig, *CONFIGS) for rig in rack.rigs}


def port(rack: Rack, rig: str) -> int:
    return next(r.port for r in rack.lab.state().rigs if r.name == rig)


def assert_untouched_and_mining(rack: Rack, rig: str, before: dict[str, str]) -> None:
    """Read over SSH once the controller trusts the rig's new key again."""
    assert rack.ssh(rig, "test -e /var/lib/rigpivot && echo touched", check=False) == ""
    assert rack.sha256s(rig, *CONFIGS) == before
    assert rack.ssh(rig, "systemctl is-active lolminer").strip() == "active"
    assert rack.ssh(rig, "pgrep -f lolMiner", check=False) != ""


def test_convert_refuses_a_rig_whose_host_key_changed_and_converts_the_other(
    rack: Rack, before, tmp_path: Path
):
    # rig02 was reinstalled (or someone sits in the middle): the farm's known_hosts still has
    # its old key.
    rack.lab.rekey("rig02")
    try:
        env = {**os.environ, "COLUMNS": "1000"}  # one line per table row
        proc = subprocess.run(
            ["rigpivot", "convert", "-i", str(rack.lab.inventory), "--yes",
             "--journal", str(tmp_path / "runs")],
            capture_output=True, text=True, env=env, timeout=900,
        )  # fmt: skip
        out = proc.stdout + proc.stderr
        assert proc.returncode == 3, out[-4000:]  # not everything done: some rigs unreachable
        rep = RunReport.model_validate_json(
            next((tmp_path / "runs").glob("*/report.json")).read_text()
        )
        outcomes = {r.host: r.outcome for r in rep.rigs}
        assert outcomes == {"rig01": "converted", "rig02": "unreachable"}
        detail = next(r.detail for r in rep.rigs if r.host == "rig02")
        name = f"[127.0.0.1]:{port(rack, 'rig02')}"
        kh = rack.lab.known_hosts.resolve()
        for needed in (f"host key for {name} (rig02) has CHANGED", str(kh),
                       f"`ssh-keygen -f {kh} -R '{name}'`"):  # fmt: skip
            assert needed in detail, detail
            assert needed in out, out[-4000:]
        assert "rig02" in proc.stderr and "unreachable" in proc.stderr
        # No play ever went to rig02.
        events = (tmp_path / "runs").glob("*/ansible/*/artifacts/*/job_events/*.json")
        assert not [e for e in events if '"host": "rig02"' in e.read_text()]
    finally:
        rack.lab.write_controller_files()  # the operator checked the new key and trusts it
    assert rack.ssh("rig01", "jq -r .state /var/lib/rigpivot/state.json").strip() == "ai"
    assert_untouched_and_mining(rack, "rig02", before["rig02"])


def test_a_key_that_changes_after_preflight_is_refused_by_ansible(
    rack: Rack, before, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    # Whatever the environment says, the runner keeps Ansible's host key checking on.
    monkeypatch.setenv("ANSIBLE_HOST_KEY_CHECKING", "False")

    def rekey_then_go(plan: Plan, _fleet: object) -> bool:
        # Preflight reached rig02 with its trusted key; the key changes before Ansible runs.
        assert [r.host for r in plan.of("convert")] == ["rig02"]
        rack.lab.rekey("rig02")
        return True

    try:
        rep = convert(rack.lab.inventory, RunOptions(limit="rig02", journal_root=tmp_path),
                      rekey_then_go)  # fmt: skip
    finally:
        rack.lab.write_controller_files()
    (res,) = rep.rigs
    assert (res.host, res.outcome) == ("rig02", "failed") and rep.failed  # exit 1
    name = f"[127.0.0.1]:{port(rack, 'rig02')}"
    kh = rack.lab.known_hosts.resolve()
    assert res.detail.startswith("not started: host key for rig02 has CHANGED"), res.detail
    # OpenSSH's own command (its quoting varies with its version)
    assert re.search(
        rf"`ssh-keygen -f ['\"]?{re.escape(str(kh))}['\"]? -R ['\"]?{re.escape(name)}", res.detail
    )
    # Refused at the first connection: no rollback play for a rig nothing touched.
    plays = sorted(p.name for p in (tmp_path / rep.run_id / "ansible").iterdir())
    assert plays == ["000-lease-take", "001-convert"], plays
    assert (
        json.loads((tmp_path / rep.run_id / "report.json").read_text())["rigs"][0]["detail"]
        == res.detail
    )
    assert_untouched_and_mining(rack, "rig02", before["rig02"])
