"""known_hosts is the farm's file: rigpivot appends a new rig's key under a lock and touches
nothing else; `@cert-authority` and `@revoked` lines never end a verb in a traceback.

The rigs here are paramiko SSH servers on loopback, each with its own host key: the handshake
is real, the key check is the one the probe does."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import paramiko
import pytest

from tests.unit.test_bad_input import run
from tests.unit.test_cli import Listener
from toolkit import hostkeys
from toolkit.inventory import Host

CA = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIJCf3CbyP+uSTbltlamyXUDqohHKcEQ+sZdSSr1PRRep farm-ca"
OTHER = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIDXzlDuMybMWbzgrSCwIP2TSGEP6vFBEPZnKnX9BLAgL old"


class _Server(paramiko.ServerInterface):
    def check_auth_password(self, username: str, password: str) -> int:
        return paramiko.AUTH_SUCCESSFUL

    def get_allowed_auths(self, username: str) -> str:
        return "password"


class Rig:
    """An SSH server that completes the handshake and password auth, nothing more."""

    def __init__(self) -> None:
        self.key = paramiko.ECDSAKey.generate()
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen()
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.name = f"[127.0.0.1]:{self.port}"
        self.stop = False
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self.stop:
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                continue
            t = paramiko.Transport(conn)
            t.add_server_key(self.key)
            try:
                t.start_server(server=_Server())
                t.accept(5)
            except (paramiko.SSHException, EOFError, OSError):
                pass

    def line(self) -> str:
        return f"{self.name} {self.key.get_name()} {self.key.get_base64()}"

    def close(self) -> None:
        self.stop = True
        self.thread.join()
        self.sock.close()


@pytest.fixture
def rigs() -> Iterator[list[Rig]]:
    made = [Rig() for _ in range(6)]
    yield made
    for r in made:
        r.close()


def connect(rig: Rig, kh: Path, accept_new: bool) -> None:
    client = paramiko.SSHClient()
    hostkeys.install(client, hostkeys.KnownHosts.load(kh), accept_new)
    try:
        client.connect(
            "127.0.0.1", port=rig.port, username="root", password="x", timeout=10,
            allow_agent=False, look_for_keys=False,
        )  # fmt: skip
    finally:
        client.close()


# Every kind of line a farm's known_hosts holds, some of which paramiko cannot read.
ORIGINAL = (
    "# farm known_hosts: managed by hand and by ssh\n"
    f"@cert-authority *.rigs.farm,10.20.* {CA}\n"
    f"@revoked * {OTHER}\n"
    "10.20.0.9 ssh-unknown-type AAAAB3NzaC1yc2EAAAADAQABAAABAQ== from a newer OpenSSH\n"
    "|1|JfKTdBh7rNbXkVAQCRp4OQoPfmI=|USECr3SWf1JUPsms5AqfD5QfxkM= ssh-ed25519 "
    "AAAAC3NzaC1lZDI1NTE5AAAAIDXzlDuMybMWbzgrSCwIP2TSGEP6vFBEPZnKnX9BLAgL\n"
    "\n"
    "  # an indented comment, and no newline at the end"
)


def test_six_rigs_accepted_at_once_all_get_their_keys_and_every_line_is_kept(tmp_path, rigs):
    kh = tmp_path / "known_hosts"
    kh.write_text(ORIGINAL)
    errors: list[BaseException] = []

    def accept(rig: Rig) -> None:
        try:
            connect(rig, kh, accept_new=True)
        except BaseException as e:  # reported below, in the test thread
            errors.append(e)

    threads = [threading.Thread(target=accept, args=(r,)) for r in rigs]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    text = kh.read_text()
    assert text.startswith(ORIGINAL + "\n"), "a line of the original file changed"
    added = text[len(ORIGINAL) + 1 :].splitlines()
    assert sorted(added) == sorted(r.line() for r in rigs)
    # trusted now: a second run connects without --accept-new-host-keys and adds nothing
    for r in rigs:
        connect(r, kh, accept_new=False)
    assert kh.read_text() == text


def test_an_unknown_key_is_refused_without_accept_new_and_the_file_is_untouched(tmp_path, rigs):
    kh = tmp_path / "known_hosts"
    kh.write_text(ORIGINAL)
    with pytest.raises(hostkeys.HostKeyError, match=r"is unknown .*--accept-new-host-keys"):
        connect(rigs[0], kh, accept_new=False)
    assert kh.read_text() == ORIGINAL


def test_a_changed_key_is_refused_even_with_accept_new(tmp_path, rigs):
    kh = tmp_path / "known_hosts"
    kh.write_text(f"{rigs[0].name} {OTHER}\n")
    with pytest.raises(paramiko.BadHostKeyException):
        connect(rigs[0], kh, accept_new=True)
    assert kh.read_text() == f"{rigs[0].name} {OTHER}\n"


def test_a_revoked_key_is_refused_even_with_accept_new(tmp_path, rigs):
    rig = rigs[0]
    kh = tmp_path / "known_hosts"
    kh.write_text(f"{rig.line()}\n@revoked * {rig.key.get_name()} {rig.key.get_base64()}\n")
    before = kh.read_text()
    with pytest.raises(hostkeys.HostKeyError, match=r"is REVOKED \(@revoked at .*known_hosts:2\)"):
        connect(rig, kh, accept_new=True)
    assert kh.read_text() == before


def farm_with(rig: Listener, address: str = "127.0.0.1") -> str:
    return f"[r]\nrig01 ansible_host={address} ansible_port={rig.port}\n"


def test_a_rig_only_a_host_ca_vouches_for_is_named_with_what_to_do(tmp_path):
    """paramiko cannot check host certificates: preflight says so, exit 2, no rig contacted
    (and no paramiko traceback, which a @cert-authority line used to cause)."""
    port = Listener()
    try:
        kh = tmp_path / "known_hosts"
        kh.write_text(f"@cert-authority [127.0.0.1]:* {CA}\n")
        inv = tmp_path / "farm.ini"
        inv.write_text(farm_with(port))
        out = run("preflight", "--inventory", str(inv), "--known-hosts", str(kh))
        assert out.code == 2, out.message
        assert f"rig01: {kh} has no key for [127.0.0.1]:{port.port}, only a host CA" in out.message
        assert f"@cert-authority at {kh}:1" in out.message
        assert "cannot check host certificates" in out.message
        assert "--accept-new-host-keys" in out.message
        assert port.connections == 0
    finally:
        port.close()


def test_a_rig_whose_known_key_is_revoked_is_refused_before_any_connection(tmp_path):
    port = Listener()
    try:
        kh = tmp_path / "known_hosts"
        kh.write_text(f"[127.0.0.1]:{port.port} {OTHER}\n@revoked * {OTHER}\n")
        inv = tmp_path / "farm.ini"
        inv.write_text(farm_with(port))
        out = run("preflight", "--inventory", str(inv), "--known-hosts", str(kh),
                  "--accept-new-host-keys")  # fmt: skip
        assert out.code == 2, out.message
        assert f"rig01: the key {kh}:1 holds for [127.0.0.1]:{port.port} is revoked" in out.message
        assert port.connections == 0
    finally:
        port.close()


def test_a_ca_line_does_not_stop_rigs_with_their_own_key(tmp_path, rigs):
    kh = tmp_path / "known_hosts"
    kh.write_text(ORIGINAL + "\n" + rigs[0].line() + "\n")
    connect(rigs[0], kh, accept_new=False)
    host = Host("rig01", vars={"ansible_host": "127.0.0.1", "ansible_port": rigs[0].port})
    hostkeys.check_fleet_keys([host], kh, accept_new=False)


@pytest.mark.parametrize(
    ("patterns", "name", "hit"),
    [
        ("*.rigs.farm,10.20.*", "10.20.3.7", True),
        ("*.rigs.farm,10.20.*", "10.21.3.7", False),
        ("10.20.*,!10.20.9.*", "10.20.9.1", False),
        ("[127.0.0.1]:*", "[127.0.0.1]:2222", True),
        ("rig0?", "rig01", True),
    ],
)
def test_host_patterns_match_as_openssh_matches_them(patterns, name, hit):
    assert hostkeys._host_matches(patterns, name) is hit


def test_the_append_never_rewrites_and_never_duplicates(tmp_path, rigs):
    kh = tmp_path / "known_hosts"
    kh.write_bytes(b"# no newline at the end")
    assert hostkeys.append_known_host(kh, rigs[0].name, rigs[0].key)
    assert not hostkeys.append_known_host(kh, rigs[0].name, rigs[0].key)
    assert kh.read_text() == f"# no newline at the end\n{rigs[0].line()}\n"
