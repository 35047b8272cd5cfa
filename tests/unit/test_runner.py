"""The runner's reading of Ansible results: failure messages an operator can act on, and no
secret copied out of a task that handles them."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

from toolkit.runner import CONVERT_RESCUE, HIDDEN, REPO_ROOT, _failure_message, run_playbook

# What ansible-core's ssh connection reports (event res.msg) when a rig's host key changed.
CHANGED = (
    "Failed to connect to the host via ssh: "
    "@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@\r\n"
    "@    WARNING: REMOTE HOST IDENTIFICATION HAS CHANGED!     @\r\n"
    "@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@\r\n"
    "IT IS POSSIBLE THAT SOMEONE IS DOING SOMETHING NASTY!\r\n"
    "Someone could be eavesdropping on you right now (man-in-the-middle attack)!\r\n"
    "It is also possible that a host key has just been changed.\r\n"
    "The fingerprint for the ED25519 key sent by the remote host is\r\n"
    "SHA256:Qm9ndXNGaW5nZXJwcmludEZvclRlc3RzT25seQ.\r\n"
    "Please contact your system administrator.\r\n"
    "Add correct host key in /farm/known_hosts to get rid of this message.\r\n"
    "Offending ED25519 key in /farm/known_hosts:2\r\n"
    "  remove with:\r\n"
    "  ssh-keygen -f '/farm/known_hosts' -R '[10.0.0.7]:2222'\r\n"
    "Host key for [10.0.0.7]:2222 has changed and you have requested strict checking.\r\n"
    "Host key verification failed."
)


def test_changed_host_key_names_the_rig_the_file_and_the_command():
    msg = _failure_message({"msg": CHANGED, "unreachable": True}, "rig07")
    assert msg.startswith("host key for rig07 has CHANGED")
    assert "/farm/known_hosts" in msg
    assert "`ssh-keygen -f '/farm/known_hosts' -R '[10.0.0.7]:2222'`" in msg
    assert "@@@" not in msg


def test_unverifiable_host_key_is_named_as_such():
    msg = _failure_message({"msg": "Failed to connect: Host key verification failed."}, "rig03")
    assert msg.startswith("host key for rig03 could not be verified")


def test_results_of_tasks_that_handle_secrets_are_never_quoted():
    leaked = "RIG_PASSWD=s3cret-value"
    assert _failure_message({"msg": leaked, "_ansible_no_log": True}) == HIDDEN
    assert _failure_message({"censored": "the output has been hidden", "msg": leaked}) == HIDDEN


def test_ordinary_failures_keep_their_message():
    assert _failure_message({"msg": "apt failed"}) == "apt failed"
    assert _failure_message({"stderr": "a\nb\nlast line"}) == "last line"


def test_nothing_the_project_ships_turns_host_key_checking_off():
    root = Path(__file__).resolve().parents[2]
    off = re.compile(
        r"StrictHostKeyChecking[\s=]+(no|off)\b|UserKnownHostsFile[\s=]+/dev/null"
        r"|host_key_checking\s*[=:]\s*(false|no|0)\b|HOST_KEY_CHECKING['\"]?\s*[=:,]\s*['\"]?(false|no|0)\b",
        re.I,
    )
    shipped = [root / "ansible.cfg"] + [
        p for d in ("roles", "playbooks", "molecule", "inventories", "toolkit", "templates")
        for p in (root / d).rglob("*") if p.is_file() and p.suffix in (".yml", ".yaml", ".py", ".cfg", ".ini", ".j2", ".sh", "")
    ]  # fmt: skip
    assert len(shipped) > 50
    hits = [f"{p.relative_to(root)}: {m.group(0)}" for p in shipped
            for m in [off.search(p.read_text(errors="replace"))] if m]  # fmt: skip
    assert hits == []


def test_the_runner_keeps_ansibles_host_key_checking_on(tmp_path: Path, monkeypatch):
    """ansible-runner sets ANSIBLE_HOST_KEY_CHECKING=False unless told otherwise; an
    operator's environment may too. The play must see True."""
    monkeypatch.setenv("ANSIBLE_HOST_KEY_CHECKING", "False")
    inv = tmp_path / "hosts.yml"
    inv.write_text("all: {hosts: {rig01: {ansible_connection: local}}}\n")
    play = tmp_path / "play.yml"
    play.write_text(
        "- hosts: all\n  gather_facts: false\n  tasks:\n"
        "    - ansible.builtin.assert:\n"
        "        that: lookup('ansible.builtin.config', 'HOST_KEY_CHECKING') | bool\n"
    )
    seen: list[str] = []
    res = run_playbook(str(play), [inv], ["rig01"], tmp_path / "pd",
                       on_event=lambda e: seen.append(e.status))  # fmt: skip
    assert res.rigs["rig01"].ok, res.rigs["rig01"].message
    assert "ok" in seen


def test_the_runner_knows_convert_plays_rescue_tasks_by_their_names():
    """The runner leaves a failed rig's step and message as they were while convert.yml's rescue
    runs (it names those tasks): renaming them there must be done here too."""
    playbooks = REPO_ROOT / "playbooks"

    def names(tasks: list[dict]) -> set[str]:
        found: set[str] = set()
        for t in tasks:
            if "block" in t:
                found |= names(t["block"] + t.get("rescue", []) + t.get("always", []))
            elif t.get("ansible.builtin.import_tasks"):
                found |= names(yaml.safe_load((playbooks / t["ansible.builtin.import_tasks"])
                                              .read_text()))  # fmt: skip
            else:
                found.add(t["name"])
        return found

    play = yaml.safe_load((playbooks / "convert.yml").read_text())[-1]
    rescue = next(t["rescue"] for t in play["tasks"] if "rescue" in t)
    assert names(rescue) == CONVERT_RESCUE
