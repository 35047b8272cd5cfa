"""Read-only fleet probe over SSH (paramiko's one home): pipe modules/rig_facts.py to each
rig's `python3 -`, with bounded concurrency, a per-host timeout and host keys checked
against known_hosts. A rig that cannot be reached is reported, never fatal for the rest."""

from __future__ import annotations

import base64
import concurrent.futures
import hashlib
import json
import logging
import os
import re
import shlex
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import paramiko
from pydantic import ValidationError

from toolkit.inventory import Host
from toolkit.models import RigFacts

log = logging.getLogger(__name__)

MODULE = Path(__file__).with_name("modules") / "rig_facts.py"
RIG_LIBRARY = Path(__file__).with_name("module_utils") / "rigpivot_rig.py"
_LIBRARY_IMPORT = re.compile(
    r"^from ansible\.module_utils\.rigpivot_rig import (\([^)]*\)|[^\n(]+)\n", re.M
)


def probe_payload() -> bytes:
    """rig_facts as one file for `python3 -`: the rig-side library inlined where the module
    imports it (as Ansible ships it beside the module), and PIPED set so the module prints its
    facts instead of answering Ansible."""
    module = MODULE.read_text()
    match = _LIBRARY_IMPORT.search(module)
    if match is None:
        raise RuntimeError(f"{MODULE} does not import the rig library in one statement")
    payload = module[: match.start()] + RIG_LIBRARY.read_text() + module[match.end() :]
    return payload.replace("\nPIPED = False\n", "\nPIPED = True\n", 1).encode()


@dataclass(frozen=True)
class ProbeOptions:
    known_hosts: Path | None = None
    accept_new_host_keys: bool = False
    concurrency: int = 32
    timeout: float = 30.0
    gpu_source: str = "auto"
    model_path: str = "/var/lib/rigpivot/models"


@dataclass
class ProbeResult:
    host: str
    facts: RigFacts | None
    error: str | None
    seconds: float


def known_hosts_for(host: Host, opts: ProbeOptions) -> Path | None:
    """The known_hosts a rig's key is checked against: --known-hosts, the inventory's
    `rigpivot_known_hosts`, or ~/.ssh/known_hosts."""
    if opts.known_hosts:
        return opts.known_hosts
    if kh := host.vars.get("rigpivot_known_hosts"):
        return Path(str(kh))
    default = Path.home() / ".ssh" / "known_hosts"
    return default if default.exists() else None


def _fingerprint(key: paramiko.PKey) -> str:
    """OpenSSH's form (`SHA256:...`), the one `ssh-keygen -lf` shows on the rig."""
    digest = base64.b64encode(hashlib.sha256(key.asbytes()).digest()).decode().rstrip("=")
    return f"SHA256:{digest}"


# SSH settings in a farm file that would let Ansible reach a rig whose key changed.
_KEY_CHECK_OFF = re.compile(
    r"StrictHostKeyChecking[\s=]+(no|off)\b|UserKnownHostsFile[\s=]+/dev/null", re.I
)
_SSH_ARG_VARS = ("ansible_ssh_common_args", "ansible_ssh_extra_args", "ansible_ssh_args")
_KEY_CHECK_VARS = ("ansible_host_key_checking", "ansible_ssh_host_key_checking")


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


def _key_name(host: Host) -> str:
    return host.address if host.port == 22 else f"[{host.address}]:{host.port}"


class _Prober:
    def __init__(self, opts: ProbeOptions):
        self.opts = opts
        self.payload = probe_payload()
        self.new_keys: dict[Path, list[str]] = {}
        self.lock = threading.Lock()

    def probe(self, host: Host) -> ProbeResult:
        start = time.monotonic()
        try:
            facts = self._probe(host)
            return ProbeResult(host.name, facts, None, time.monotonic() - start)
        except _ProbeError as e:
            return ProbeResult(host.name, None, str(e), time.monotonic() - start)

    def _probe(self, host: Host) -> RigFacts:
        kh = known_hosts_for(host, self.opts)
        client = paramiko.SSHClient()
        if kh and kh.exists():
            client.load_host_keys(str(kh))
        if self.opts.accept_new_host_keys:
            client.set_missing_host_key_policy(paramiko.AutoAddPolicy())
        else:
            client.set_missing_host_key_policy(paramiko.RejectPolicy())
        key_file = host.vars.get("ansible_ssh_private_key_file") or host.vars.get(
            "ansible_private_key_file"
        )
        name = _key_name(host)
        try:
            client.connect(
                host.address,
                port=host.port,
                username=str(host.vars.get("ansible_user", os.environ.get("USER", "root"))),
                key_filename=str(key_file) if key_file else None,
                timeout=self.opts.timeout,
                banner_timeout=self.opts.timeout,
                auth_timeout=self.opts.timeout,
                allow_agent=False,
                look_for_keys=key_file is None,
            )
        except paramiko.BadHostKeyException as e:
            raise _ProbeError(
                f"host key for {name} ({host.name}) has CHANGED: it is not the key {kh} holds "
                f"(now {e.key.get_name()} {_fingerprint(e.key)}); refusing to connect. Check "
                "the new key (the rig's console, its reinstall record), then remove the old "
                f"one with `ssh-keygen -f {kh} -R '{name}'` and run again with "
                "--accept-new-host-keys"
            ) from e
        except paramiko.SSHException as e:
            if "not found in known_hosts" in str(e):
                raise _ProbeError(
                    f"host key for {name} is unknown (not in {kh or '~/.ssh/known_hosts'}); "
                    "check it and re-run with --accept-new-host-keys to trust it"
                ) from e
            raise _ProbeError(f"SSH to {name} failed: {e}") from e
        except (OSError, EOFError) as e:
            raise _ProbeError(f"cannot reach {name}: {e.__class__.__name__}: {e}") from e
        try:
            if self.opts.accept_new_host_keys and kh:
                self._remember_key(client, name, kh)
            model_path = str(host.vars.get("rigpivot_model_path", self.opts.model_path))
            return self._run_module(client, name, model_path)
        finally:
            client.close()

    def _remember_key(self, client: paramiko.SSHClient, name: str, kh: Path) -> None:
        key = client.get_transport().get_remote_server_key()  # type: ignore[union-attr]
        known = paramiko.HostKeys(str(kh)) if kh.exists() else paramiko.HostKeys()
        if known.lookup(name) is None:
            with self.lock:
                self.new_keys.setdefault(kh, []).append(
                    f"{name} {key.get_name()} {key.get_base64()}"
                )

    def _run_module(self, client: paramiko.SSHClient, name: str, model_path: str) -> RigFacts:
        args = f"--gpu-source={self.opts.gpu_source} --model-path={shlex.quote(model_path)}"
        try:
            stdin, stdout, stderr = client.exec_command(
                f"python3 - {args}", timeout=self.opts.timeout
            )
            stdin.write(self.payload)
            stdin.channel.shutdown_write()
            out = stdout.read()
            err = stderr.read().decode(errors="replace").strip()
            rc = stdout.channel.recv_exit_status()
        except (OSError, paramiko.SSHException) as e:
            raise _ProbeError(f"probe on {name} did not finish: {e}") from e
        if rc != 0:
            tail = err.splitlines()[-1] if err else f"exit {rc}"
            raise _ProbeError(f"probe on {name} failed ({tail}); is python3 installed there?")
        try:
            return RigFacts.model_validate(json.loads(out))
        except (ValueError, ValidationError) as e:
            raise _ProbeError(f"probe on {name} returned unreadable facts: {e}") from e

    def save_new_keys(self) -> None:
        for kh, lines in self.new_keys.items():
            with kh.open("a") as f:
                f.write("\n".join(lines) + "\n")
            log.info("trusted %d new host key(s) into %s", len(lines), kh)


class _ProbeError(Exception):
    pass


def probe_fleet(
    hosts: list[Host],
    opts: ProbeOptions,
    on_result: Callable[[ProbeResult], None] = lambda _r: None,
) -> list[ProbeResult]:
    prober = _Prober(opts)
    results: dict[str, ProbeResult] = {}
    with concurrent.futures.ThreadPoolExecutor(max_workers=max(1, opts.concurrency)) as pool:
        futures = {pool.submit(prober.probe, h): h.name for h in hosts}
        for fut in concurrent.futures.as_completed(futures):
            res = fut.result()
            results[res.host] = res
            on_result(res)
    prober.save_new_keys()
    return [results[h.name] for h in hosts]
