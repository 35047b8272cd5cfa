"""The runner's reading of Ansible results: failure messages an operator can act on, and no
secret copied out of a task that handles them."""

from __future__ import annotations

from toolkit.runner import HIDDEN, _failure_message

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
