"""Host keys, rigpivot's one policy: which known_hosts a rig is checked against, how Ansible's
ssh is told to check it strictly, how a new key is trusted (--accept-new-host-keys) and what a
changed, revoked or CA-signed key means to the operator.

known_hosts is shared with OpenSSH and the farm's other tools: rigpivot only ever appends a
new key to it, under a file lock, and leaves every other byte alone (comments, key types
paramiko does not know, `@cert-authority` and `@revoked` lines). paramiko's own HostKeys
cannot be used to read it (a marker line raises InvalidHostKey) nor to save it (it rewrites
the whole file from what it understood).
"""

from __future__ import annotations

import base64
import binascii
import fcntl
import hashlib
import hmac
import logging
import os
import re
import shlex
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import paramiko

from toolkit.errors import BadInputError
from toolkit.inventory import Host

log = logging.getLogger(__name__)


class _HasKnownHosts(Protocol):
    @property
    def known_hosts(self) -> Path | None: ...


def default_known_hosts() -> Path:
    return Path.home() / ".ssh" / "known_hosts"


def known_hosts_for(host: Host, known_hosts: Path | None) -> Path | None:
    """The known_hosts a rig's key is checked against: --known-hosts, the inventory's
    `rigpivot_known_hosts`, or ~/.ssh/known_hosts."""
    if known_hosts:
        return known_hosts
    if kh := host.vars.get("rigpivot_known_hosts"):
        return Path(str(kh))
    default = default_known_hosts()
    return default if default.exists() else None


def key_name(host: Host) -> str:
    """The rig's name in known_hosts, as OpenSSH writes it."""
    return host.address if host.port == 22 else f"[{host.address}]:{host.port}"


def fingerprint(key: paramiko.PKey) -> str:
    """OpenSSH's form (`SHA256:...`), the one `ssh-keygen -lf` shows on the rig."""
    digest = base64.b64encode(hashlib.sha256(key.asbytes()).digest()).decode().rstrip("=")
    return f"SHA256:{digest}"


# -- Ansible's side -------------------------------------------------------------------------

# SSH settings in a farm file that would let Ansible reach a rig whose key changed.
_KEY_CHECK_OFF = re.compile(
    r"StrictHostKeyChecking[\s=]+(no|off)\b|UserKnownHostsFile[\s=]+/dev/null", re.I
)
_SSH_ARG_VARS = ("ansible_ssh_common_args", "ansible_ssh_extra_args", "ansible_ssh_args")
_KEY_CHECK_VARS = ("ansible_host_key_checking", "ansible_ssh_host_key_checking")
SSH_SETTING_VARS = (*_SSH_ARG_VARS, *_KEY_CHECK_VARS)


def host_key_checking_off(host: Host) -> str | None:
    """Where the farm file turns host key checking off for `host` (var and file:line), if it
    does: rigpivot refuses such a farm file rather than connect without checking keys."""
    for var in _SSH_ARG_VARS:
        if _KEY_CHECK_OFF.search(str(host.vars.get(var) or "")):
            return f"{var} at {host.origin.get(var, '?')}"
    for var in _KEY_CHECK_VARS:
        if var in host.vars and str(host.vars[var]).strip().lower() in ("false", "no", "0", "off"):
            return f"{var} at {host.origin.get(var, '?')}"
    return None


def ansible_host_key_args(known_hosts: Path) -> str:
    """ssh options that make Ansible check a rig's key against the known_hosts preflight used."""
    return f"-o StrictHostKeyChecking=yes -o UserKnownHostsFile={shlex.quote(str(known_hosts))}"


def ssh_vars(host: Host, probe: _HasKnownHosts | None) -> dict[str, str]:
    """Ansible checks the rig's key against the known_hosts preflight checked it against,
    strictly. Appended to the farm's own extra args (OpenSSH keeps an option's first value, so
    the farm file's own known_hosts, if it names one, still wins)."""
    kh = known_hosts_for(host, probe.known_hosts if probe else None)
    if kh is None:
        return {}
    own = str(host.vars.get("ansible_ssh_extra_args") or "")
    return {"ansible_ssh_extra_args": f"{own} {ansible_host_key_args(kh.resolve())}".strip()}


# What OpenSSH prints when a host's key is not the one known_hosts holds for it.
_CHANGED_KEY = "REMOTE HOST IDENTIFICATION HAS CHANGED"
_KH_FILE = re.compile(r"Offending \S+ key in (\S+?):\d+")
_KH_HINT = re.compile(r"remove with:\s*(?:\r?\n)?\s*(ssh-keygen [^\r\n]+)")


def host_key_message(host: str, text: str) -> str | None:
    """A clear reason when ssh refused `host` because its key changed (or is unknown), else None.

    OpenSSH's own text is a banner of @ signs that a 500-character excerpt cuts before the
    useful part; the operator needs the rig, the known_hosts file and the command to run once
    the new key is checked."""
    if _CHANGED_KEY in text:
        kh = _KH_FILE.search(text)
        hint = _KH_HINT.search(text)
        where = kh.group(1) if kh else "known_hosts"
        cmd = hint.group(1).strip() if hint else f"ssh-keygen -f {where} -R <host>"
        return (
            f"host key for {host} has CHANGED (it does not match {where}); refusing to "
            f"connect. Check the rig's new key (console, reinstall record), then remove the "
            f"old one with `{cmd}` and run again"
        )
    if "Host key verification failed" in text or "No ED25519 host key is known" in text:
        return (
            f"host key for {host} could not be verified against known_hosts (unknown or "
            "changed key); refusing to connect. Check the key, add it to known_hosts "
            "(preflight --accept-new-host-keys trusts new keys) and run again"
        )
    return None


def changed_key_message(rig: str, name: str, kh: Path | None, key: paramiko.PKey) -> str:
    return (
        f"host key for {name} ({rig}) has CHANGED: it is not the key {kh} holds "
        f"(now {key.get_name()} {fingerprint(key)}); refusing to connect. Check "
        "the new key (the rig's console, its reinstall record), then remove the old "
        f"one with `ssh-keygen -f {kh} -R '{name}'` and run again with "
        "--accept-new-host-keys"
    )


# -- known_hosts, read the way OpenSSH writes it ---------------------------------------------


@dataclass
class Marker:
    """A `@cert-authority` or `@revoked` line."""

    kind: str
    patterns: str
    blob: bytes
    line: int

    def matches(self, name: str) -> bool:
        return _host_matches(self.patterns, name)


@dataclass
class KnownHosts:
    path: Path | None
    keys: paramiko.HostKeys = field(default_factory=paramiko.HostKeys)
    entries: list[tuple[str, paramiko.PKey]] = field(default_factory=list)
    markers: list[Marker] = field(default_factory=list)
    # plain lines whose key is revoked: (host patterns, line)
    revoked_entries: list[tuple[list[str], int]] = field(default_factory=list)

    @classmethod
    def load(cls, path: Path | None) -> KnownHosts:
        known = cls(path)
        if path is None or not path.exists():
            return known
        entries: list[tuple[paramiko.hostkeys.HostKeyEntry, int]] = []
        for n, raw in enumerate(path.read_text(errors="replace").splitlines(), 1):
            line = raw.strip()
            if not line or line.startswith("#"):
                continue
            if line.startswith("@"):
                fields = line.split()
                if len(fields) >= 4 and fields[0] in ("@cert-authority", "@revoked"):
                    blob = _b64(fields[3])
                    if blob is not None:
                        known.markers.append(Marker(fields[0][1:], fields[1], blob, n))
                continue
            try:
                entry = paramiko.hostkeys.HostKeyEntry.from_line(line, n)
            except Exception:  # a key type paramiko does not know: OpenSSH's business
                continue
            if entry is not None and entry.key is not None:
                entries.append((entry, n))
        for entry, n in entries:
            if known.revoked(entry.key):
                known.revoked_entries.append((list(entry.hostnames), n))
                continue
            for name in entry.hostnames:
                known.keys.add(name, entry.key.get_name(), entry.key)
                known.entries.append((name, entry.key))
        return known

    def revoked(self, key: paramiko.PKey) -> Marker | None:
        # A revoked key is refused for every rig, whatever the line's host pattern says.
        blob = key.asbytes()
        return next((m for m in self.markers if m.kind == "revoked" and m.blob == blob), None)

    def authorities(self, name: str) -> list[Marker]:
        return [m for m in self.markers if m.kind == "cert-authority" and m.matches(name)]

    def revoked_line_for(self, name: str) -> int | None:
        for names, n in self.revoked_entries:
            if any(_name_matches(h, name) for h in names):
                return n
        return None


def _b64(text: str) -> bytes | None:
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        return None


def _name_matches(entry: str, name: str) -> bool:
    if entry.startswith("|1|"):
        try:
            salt, digest = (base64.b64decode(p) for p in entry[3:].split("|", 1))
        except (binascii.Error, ValueError):
            return False
        mine = hmac.new(salt, name.encode(), hashlib.sha1).digest()
        return hmac.compare_digest(mine, digest)
    return entry == name


def _host_matches(patterns: str, name: str) -> bool:
    """OpenSSH's host pattern list: `*` and `?` wildcards, `!` negates, any negation wins."""
    hit = False
    for pat in patterns.split(","):
        neg = pat.startswith("!")
        rx = re.escape(pat.lstrip("!")).replace(r"\*", ".*").replace(r"\?", ".")
        if re.fullmatch(rx, name):
            if neg:
                return False
            hit = True
    return hit


_APPEND_LOCK = threading.Lock()


def append_known_host(path: Path, name: str, key: paramiko.PKey) -> bool:
    """Add `name`'s key at the end of `path`, under an exclusive lock; every other byte stays.
    False when another thread or process added that key first."""
    line = f"{name} {key.get_name()} {key.get_base64()}\n"
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    with _APPEND_LOCK:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o600)
        with os.fdopen(fd, "r+b") as f:
            fcntl.flock(f, fcntl.LOCK_EX)
            try:
                f.seek(0)
                text = f.read()
                mine = line.split()
                for raw in text.decode(errors="replace").splitlines():
                    fields = raw.split()
                    if fields[1:3] == mine[1:3] and any(
                        _name_matches(h, name) for h in fields[0].split(",")
                    ):
                        return False
                f.write((b"\n" if text and not text.endswith(b"\n") else b"") + line.encode())
                f.flush()
                os.fsync(f.fileno())
            finally:
                fcntl.flock(f, fcntl.LOCK_UN)
    log.info("trusted the host key of %s into %s", name, path)
    return True


# -- the probe's side (paramiko) -------------------------------------------------------------


class HostKeyError(Exception):
    """A rig's key is unknown, revoked or changed: it is not connected to."""


class TrustPolicy(paramiko.MissingHostKeyPolicy):
    """What paramiko does with a key known_hosts does not hold for the rig: refuse a revoked
    key, refuse an unknown one, or (--accept-new-host-keys) append it to known_hosts."""

    def __init__(self, known: KnownHosts, accept_new: bool):
        self.known, self.accept_new = known, accept_new

    def missing_host_key(
        self, client: paramiko.SSHClient, hostname: str, key: paramiko.PKey
    ) -> None:
        kh = self.known.path
        if marker := self.known.revoked(key):
            raise HostKeyError(
                f"host key of {hostname} ({key.get_name()} {fingerprint(key)}) is REVOKED "
                f"(@revoked at {kh}:{marker.line}); refusing to connect. Find out why it was "
                "revoked; the rig needs a new host key before rigpivot reaches it"
            )
        if not self.accept_new or kh is None:
            raise HostKeyError(
                f"host key for {hostname} is unknown (not in {kh or '~/.ssh/known_hosts'}); "
                "check it and re-run with --accept-new-host-keys to trust it"
            )
        append_known_host(kh, hostname, key)


def install(client: paramiko.SSHClient, known: KnownHosts, accept_new: bool) -> None:
    """Make `client` check rigs against `known` (never saving over the file itself)."""
    keys = client.get_host_keys()
    for name, key in known.entries:
        keys.add(name, key.get_name(), key)
    client.set_missing_host_key_policy(TrustPolicy(known, accept_new))


def check_fleet_keys(hosts: list[Host], known_hosts: Path | None, accept_new: bool) -> None:
    """Before any rig is contacted: rigs whose key known_hosts revokes, and rigs only a host CA
    vouches for (paramiko cannot check a host certificate), named with what to do."""
    problems: list[str] = []
    cache: dict[Path | None, KnownHosts] = {}
    for host in hosts:
        kh = known_hosts_for(host, known_hosts)
        known = cache.setdefault(kh, KnownHosts.load(kh))
        name = key_name(host)
        if known.keys.lookup(name) is not None:
            continue
        if (line := known.revoked_line_for(name)) is not None:
            problems.append(
                f"{host.name}: the key {kh}:{line} holds for {name} is revoked (an @revoked "
                f"line names it); rigpivot will not connect. Give the rig a new host key, then "
                f"remove the old line with `ssh-keygen -f {kh} -R '{name}'`"
            )
        elif not accept_new and (cas := known.authorities(name)):
            problems.append(
                f"{host.name}: {kh} has no key for {name}, only a host CA "
                f"(@cert-authority at {kh}:{cas[0].line}), and rigpivot's SSH library "
                "(paramiko) cannot check host certificates. Add the rig's own key: compare "
                f"`ssh-keyscan -p {host.port} {host.address}` with the rig's console and "
                f"append it to {kh}, or trust it with --accept-new-host-keys"
            )
    if problems:
        raise BadInputError("\n".join(problems))
