"""Read-only fleet probe over SSH (paramiko's one home): pipe plugins/modules/rig_facts.py to
each rig's `python3 -`, with bounded concurrency, a per-host timeout and host keys checked
against known_hosts. A rig that cannot be reached is reported, never fatal for the rest."""

from __future__ import annotations

import concurrent.futures
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

from toolkit import hostkeys
from toolkit.inventory import Host
from toolkit.models import RigFacts

log = logging.getLogger(__name__)

# The collection's plugins (the repository is the Ansible collection rigpivot.farm).
PLUGINS = Path(__file__).resolve().parents[1] / "plugins"
MODULE = PLUGINS / "modules" / "rig_facts.py"
RIG_LIBRARY = PLUGINS / "module_utils" / "rigpivot_rig.py"
# The module's one import of the library: from the library path, else from the collection.
_IMPORTS = r"(?:\([^)]*\)|[^\n(]+)"
_LIBRARY_IMPORT = re.compile(
    r"^try:\n"
    rf"    from ansible\.module_utils\.rigpivot_rig import {_IMPORTS}\n"
    r"except ImportError:\n"
    r"    from ansible_collections\.rigpivot\.farm\.plugins\.module_utils\.rigpivot_rig"
    rf" import {_IMPORTS}\n",
    re.M,
)


def probe_payload() -> bytes:
    """rig_facts as one file for `python3 -`: the rig-side library inlined where the module
    imports it (as Ansible ships it beside the module), and PIPED set so the module prints its
    facts instead of answering Ansible."""
    module = MODULE.read_text()
    match = _LIBRARY_IMPORT.search(module)
    if match is None:
        raise RuntimeError(f"{MODULE} does not import the rig library in one try statement")
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


class _Prober:
    def __init__(self, opts: ProbeOptions):
        self.opts = opts
        self.payload = probe_payload()
        self.known: dict[Path | None, hostkeys.KnownHosts] = {}
        self.lock = threading.Lock()

    def probe(self, host: Host) -> ProbeResult:
        start = time.monotonic()
        try:
            facts = self._probe(host)
            return ProbeResult(host.name, facts, None, time.monotonic() - start)
        except _ProbeError as e:
            return ProbeResult(host.name, None, str(e), time.monotonic() - start)

    def _known(self, kh: Path | None) -> hostkeys.KnownHosts:
        with self.lock:
            if kh not in self.known:
                self.known[kh] = hostkeys.KnownHosts.load(kh)
            return self.known[kh]

    def _probe(self, host: Host) -> RigFacts:
        accept_new = self.opts.accept_new_host_keys
        kh = hostkeys.known_hosts_for(host, self.opts.known_hosts)
        if kh is None and accept_new:
            kh = hostkeys.default_known_hosts()
        client = paramiko.SSHClient()
        hostkeys.install(client, self._known(kh), accept_new)
        key_file = host.vars.get("ansible_ssh_private_key_file") or host.vars.get(
            "ansible_private_key_file"
        )
        name = hostkeys.key_name(host)
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
        except hostkeys.HostKeyError as e:
            client.close()
            raise _ProbeError(str(e)) from e
        except paramiko.BadHostKeyException as e:
            client.close()
            raise _ProbeError(hostkeys.changed_key_message(host.name, name, kh, e.key)) from e
        except paramiko.SSHException as e:
            client.close()
            raise _ProbeError(f"SSH to {name} failed: {e}") from e
        except (OSError, EOFError) as e:
            client.close()
            raise _ProbeError(f"cannot reach {name}: {e.__class__.__name__}: {e}") from e
        try:
            model_path = str(host.vars.get("rigpivot_model_path", self.opts.model_path))
            return self._run_module(client, name, model_path)
        finally:
            client.close()

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


class _ProbeError(Exception):
    pass


def probe_fleet(
    hosts: list[Host],
    opts: ProbeOptions,
    on_result: Callable[[ProbeResult], None] = lambda _r: None,
) -> list[ProbeResult]:
    # Before any connection: a rig whose key is revoked, or that only a host CA vouches for.
    hostkeys.check_fleet_keys(hosts, opts.known_hosts, opts.accept_new_host_keys)
    prober = _Prober(opts)
    results: dict[str, ProbeResult] = {}
    with concurrent.futures.ThreadPoolExecutor(max_workers=max(1, opts.concurrency)) as pool:
        futures = {pool.submit(prober.probe, h): h.name for h in hosts}
        for fut in concurrent.futures.as_completed(futures):
            res = fut.result()
            results[res.host] = res
            on_result(res)
    return [results[h.name] for h in hosts]
