"""Bad input, for every verb that reads a farm file: exit 2, a message naming file, line and
host and saying what to do, and nothing touched (no SSH connection, no lock, no run journal).

Each farm file points its rigs at a local port that counts connections: a verb that went on to
probe would show there (and end with exit 3, unreachable, rather than 2).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tests.unit.factories import card, rig
from tests.unit.test_cli import Listener
from toolkit import pivot
from toolkit.cli import app
from toolkit.errors import RigpivotError
from toolkit.probe import ProbeResult

VERBS = {
    "preflight": ["preflight"],
    "convert": ["convert", "--yes"],
    "convert --check": ["convert", "--check"],
    "rollback": ["rollback", "--yes"],
    "status": ["status"],
}


class Outcome:
    def __init__(self, code: int, message: str):
        self.code, self.message = code, message


def run(*args: str) -> Outcome:
    """The CLI as `main()` runs it: a domain error becomes its exit code and message."""
    result = CliRunner().invoke(app, list(args))
    if isinstance(result.exception, RigpivotError):
        return Outcome(result.exception.exit_code, str(result.exception))
    if result.exception and not isinstance(result.exception, SystemExit):
        raise result.exception
    return Outcome(result.exit_code, result.output)


@pytest.fixture
def rigport() -> Iterator[Listener]:
    rig = Listener()
    yield rig
    rig.close()


def farm(rig: Listener, extra: str = "", host_vars: str = "") -> str:
    return (
        "[rack1]\n"
        f"rig01 ansible_host=127.0.0.1 ansible_port={rig.port} {host_vars}\n"
        f"rig02 ansible_host=127.0.0.1 ansible_port={rig.port}\n"
        "[farm:children]\nrack1\n" + extra
    )


# case id -> (farm file text given the listener, extra CLI args, message fragments as regexes)
CASES = {
    "missing inventory": (
        None, [], [r"farm\.ini does not exist", r"pass the farm's Ansible INI inventory"],
    ),
    "garbled section header": (
        lambda r: "[rack1\n" + farm(r), [],
        [r"farm\.ini:1: cannot read section header '\[rack1'", r"a section is \[group\]"],
    ),
    "unclosed quote": (
        lambda r: farm(r, host_vars="rigpivot_engine='vllm"), [],
        [r"farm\.ini:2: No closing quotation", r"close the quote"],
    ),
    "duplicate host": (
        lambda r: farm(r) + f"[rack2]\nrig01 ansible_host=127.0.0.1 ansible_port={r.port}\n", [],
        [r"farm\.ini:7: host rig01 is listed again \(first at .*farm\.ini:2\)",
         r"list each rig once"],
    ),
    "unknown policy variable": (
        lambda r: farm(r, host_vars="rigpivot_engin=vllm"), [],
        [r"farm\.ini:2: unknown variable rigpivot_engin for host rig01",
         r"did you mean rigpivot_engine\?"],
    ),
    "mistyped role variable": (
        lambda r: farm(r, "[rack1:vars]\ninference_server_engin=vllm\n"), [],
        [r"farm\.ini:7: inference_server_engin \(host rig01\) is not a variable of role "
         r"inference_server; did you mean inference_server_engine\?"],
    ),
    "misspelt role prefix": (
        lambda r: farm(r, host_vars="mining_restor_keep_models=true"), [],
        [r"farm\.ini:2: mining_restor_keep_models \(host rig01\) is not a variable of any role",
         r"did you mean mining_restore_keep_models\?"],
    ),
    "role variable of the wrong type": (
        lambda r: farm(r, host_vars="inference_server_base_port=eight"), [],
        [r"farm\.ini:2: inference_server_base_port \(host rig01\) must be int, got 'eight'"],
    ),
    "limit matching nothing": (
        lambda r: farm(r), ["--limit", "rig010"],
        [r"--limit 'rig010' matches no host", r"did you mean 'rig01'\?",
         r"groups: all, farm, rack1; hosts: rig01, rig02"],
    ),
    "target model not in the catalog": (
        lambda r: farm(r, host_vars="rigpivot_target_models='[\"qwen2.5-15b\"]'"), [],
        [r"farm\.ini:2: rigpivot_target_models for host rig01: model 'qwen2.5-15b' is not in "
         r"the model catalog \(did you mean 'qwen2.5-14b'\?\)"],
    ),
    "served model not in the catalog": (
        lambda r: farm(r, "[farm:vars]\ninference_server_model_file=qwen2.5-15b-awq.tar.gz\n"), [],
        [r"farm\.ini:7: inference_server_model_file \(host rig01\) 'qwen2.5-15b-awq.tar.gz': "
         r"model 'qwen2.5-15b' is not in the model catalog; did you mean 'qwen2.5-14b' "
         r"\(qwen2.5-14b-awq.tar.gz\)\?"],
    ),
    "invalid CIDR": (
        lambda r: farm(r, "[farm:vars]\nnet_hardening_admin_networks=[\"10.0.0.300/32\"]\n"),
        [],
        [r"farm\.ini:7: net_hardening_admin_networks \(host rig01\) has '10\.0\.0\.300/32', "
         r"which is not a CIDR network: write an address as 192\.0\.2\.10/32"],
    ),
    # The two lines of issue 12: a reader (and YAML) sees a list and a false; Ansible's INI
    # plugin sees the strings "[10.20.0.5/32,10.20.9.0/24]" and "false".
    "network list without JSON quoting": (
        lambda r: farm(r, "[farm:vars]\nnet_hardening_admin_networks=[10.20.0.5/32,10.20.9.0/24]\n"),
        [],
        [r"farm\.ini:7: net_hardening_admin_networks \(host rig01\) must be list, got "
         r"'\[10\.20\.0\.5/32,10\.20\.9\.0/24\]'; Ansible reads it as a string",
         r'under \[group:vars\] write net_hardening_admin_networks=\["10\.20\.0\.5/32","10\.20\.9\.0/24"\]'],
    ),
    "network list on a host line without quotes": (
        lambda r: farm(r, host_vars="net_hardening_admin_networks=[10.20.0.5/32,10.20.9.0/24]"),
        [],
        [r"farm\.ini:2: net_hardening_admin_networks \(host rig01\) must be list",
         r"""on a host line write net_hardening_admin_networks='\["10\.20\.0\.5/32","10\.20\.9\.0/24"\]'"""],
    ),
    "network list quoted whole under group vars": (
        lambda r: farm(r, "[farm:vars]\nnet_hardening_admin_networks='[\"10.0.0.3/32\"]'\n"),
        [],
        [r"farm\.ini:7: net_hardening_admin_networks \(host rig01\) must be list, got "
         r"""'\[\"10\.0\.0\.3/32\"\]'"""],
    ),
    "lowercase false for a bool": (
        lambda r: farm(r, "[farm:vars]\nmining_restore_skip_reboot=false\n"),
        [],
        [r"farm\.ini:7: mining_restore_skip_reboot \(host rig01\) must be bool, got 'false'",
         r"in an INI file write mining_restore_skip_reboot=False"],
    ),
    "host key checking turned off": (
        lambda r: farm(r, host_vars="ansible_ssh_common_args='-o StrictHostKeyChecking=no'"), [],
        [r"rig01: the farm file turns SSH host key checking off",
         r"trust new keys with --accept-new-host-keys"],
    ),
}  # fmt: skip


@pytest.mark.parametrize("verb", list(VERBS))
@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_exits_2_names_the_fix_and_touches_nothing(
    tmp_path: Path, rigport: Listener, verb: str, case: str
) -> None:
    text, extra, fragments = CASES[case]
    inv = tmp_path / "farm.ini"
    if text is not None:
        inv.write_text(text(rigport))
    journal = tmp_path / "runs"
    args = [*VERBS[verb], "--inventory", str(inv), *extra]
    if verb != "preflight" and verb != "status":
        args += ["--journal", str(journal)]
    out = run(*args)
    assert out.code == 2, out.message
    for fragment in fragments:
        assert re.search(fragment, out.message), f"{fragment!r} not in:\n{out.message}"
    assert rigport.connections == 0, "a rig was contacted"
    assert not journal.exists(), "a run journal (or lock) was written"


@pytest.mark.parametrize("verb", list(VERBS))
def test_a_good_farm_file_does_reach_the_rigs(tmp_path: Path, rigport: Listener, verb: str):
    """The other side of the tests above: with nothing wrong, each verb does connect (the
    listener is no SSH server, so the rigs are unreachable: exit 3)."""
    inv = tmp_path / "farm.ini"
    inv.write_text(farm(rigport, "[farm:vars]\ninference_server_model_file=tiny-llama-f32.gguf\n"))
    args = [*VERBS[verb], "--inventory", str(inv)]
    if verb != "preflight" and verb != "status":
        args += ["--journal", str(tmp_path / "runs")]
    out = run(*args)
    assert out.code == 3, out.message
    assert rigport.connections >= 2


def _probed(monkeypatch: pytest.MonkeyPatch, facts: dict[str, object]) -> None:
    def probe(hosts, _opts, *_a):
        return [ProbeResult(h.name, facts[h.name], None, 0.1) for h in hosts]

    def no_play(*_a, **_k):
        raise AssertionError("a playbook ran")

    monkeypatch.setattr(pivot, "probe_fleet", probe)
    monkeypatch.setattr(pivot, "run_playbook", no_play)


def test_rollback_of_a_rig_that_is_mining_is_a_no_op_that_says_so(
    tmp_path: Path, rigport: Listener, monkeypatch: pytest.MonkeyPatch
):
    never = rig(card("rtx3090"))  # probed: mining, no pivot record
    back = rig(card("rtx3090"), state="mining")  # a rollback retired its snapshot
    _probed(monkeypatch, {"rig01": back, "rig02": never})
    inv = tmp_path / "farm.ini"
    inv.write_text(farm(rigport))
    journal = tmp_path / "runs"
    out = run("rollback", "--inventory", str(inv), "--yes", "--journal", str(journal))
    assert out.code == 0, out.message
    (report,) = [json.loads(p.read_text()) for p in journal.glob("*/report.json")]
    assert {(r["host"], r["outcome"], r["detail"]) for r in report["rigs"]} == {
        (h, "mining", "mining and in no conversion: nothing to roll back")
        for h in ("rig01", "rig02")
    }


def test_rollback_of_a_rig_mid_conversion_without_snapshot_is_refused_before_anything_runs(
    tmp_path: Path, rigport: Listener, monkeypatch: pytest.MonkeyPatch
):
    lost = rig(card("rtx3090"), state="drained")  # its record names no snapshot
    converted = rig(card("rtx3090"), state="ai")
    assert converted.pivot is not None
    converted.pivot.snapshot_id = "20261122T001500Z"
    _probed(monkeypatch, {"rig01": converted, "rig02": lost})
    inv = tmp_path / "farm.ini"
    inv.write_text(farm(rigport))
    journal = tmp_path / "runs"
    out = run("rollback", "--inventory", str(inv), "--yes", "--journal", str(journal))
    assert out.code == 2
    assert "rig02 (drained): no snapshot named in the rig's pivot record" in out.message
    assert "leave them out with --limit" in out.message and "rig01" not in out.message
    assert not journal.exists(), "a run journal was written"
