"""A lab rack: rig containers, the farm's services, and the files a controller needs to reach them.

`Lab.up()` reconciles the rack to the requested rigs (re-runnable: rigs whose spec and image
are unchanged keep running and keep their state), then writes, in the lab's state directory:
`farm.ini` (Ansible inventory, racks as groups), `known_hosts` (each rig's own host key),
`ssh_config` (for `ssh -F`), and the controller's key pair.
"""

from __future__ import annotations

import concurrent.futures
import gzip
import hashlib
import io
import ipaddress
import json
import logging
import secrets
import shutil
import socket
import subprocess
import sys
import tarfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from email.utils import formatdate
from pathlib import Path

from pydantic import BaseModel

from toolkit.errors import BadInputError, LabError
from toolkit.lab import hostcheck
from toolkit.lab import image as lab_image
from toolkit.lab import models as lab_models
from toolkit.lab import podman as pm
from toolkit.lab.catalog import (
    HIVE_API_HOST,
    MIRROR_HOST,
    MIRROR_PORT,
    POOL_HOST,
    LabSecrets,
    RigSpec,
    build_rig,
    load_catalog,
)

log = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_STATE_DIR = REPO_ROOT / "inventories" / "lab"
HIVE_RENDER = lab_image.IMAGE_DIR / "overlay/usr/lib/lab/hive_render.py"
READY_TIMEOUT = 180.0
# The record rigpivot keeps on a rig it has worked on (plugins/modules/rig_state.py).
PIVOT_RECORD = "/var/lib/rigpivot/state.json"


class RigRecord(BaseModel):
    name: str
    rack: str
    profile: str
    port: int
    container: str


class LabState(BaseModel):
    name: str
    lab_id: str
    image: str = ""
    farm_http_port: int = 0
    # The lab network's subnet, and where the controller's SSH connections come from as a rig
    # sees them (podman masquerades connections to the published loopback ports behind the
    # network's gateway): the lab's net_hardening networks.
    subnet: str = ""
    admin_network: str = ""
    rigs: list[RigRecord] = []
    # Secrets chosen at `lab up --secrets` (rig -> secrets), kept so a later `lab up` keeps them.
    secrets: dict[str, LabSecrets] = {}


@dataclass
class RigStatus:
    name: str
    rack: str
    profile: str
    port: int
    state: str  # podman's container state
    booted: bool
    miner: str  # "hashing 282.4 MH/s", "stopped", ...
    reboots: int
    pivot: str = "-"  # the rig's pivot record: mining, drained, ..., ai (and failed units)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _ssh_banner(port: int, timeout: float = 5.0) -> bool:
    # Seconds, not one: on a loaded machine (the suite's two workers, each converting) a rig's
    # sshd can take over a second to answer, every time, and the rig was never "ready".
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
            s.settimeout(timeout)
            return s.recv(64).startswith(b"SSH-")
    except OSError:
        return False


class Lab:
    """One lab rack. Several labs can run side by side (tests use their own)."""

    def __init__(self, state_dir: Path = DEFAULT_STATE_DIR, name: str = "lab", rack_size: int = 4):
        self.state_dir = state_dir
        self.name = name
        self.rack_size = rack_size
        self.prefix = f"rigpivot-{name}"
        self.network = self.prefix
        self.farm_container = f"{self.prefix}-farm"

    # -- files a controller uses -------------------------------------------------------
    @property
    def inventory(self) -> Path:
        return self.state_dir / "farm.ini"

    @property
    def known_hosts(self) -> Path:
        return self.state_dir / "known_hosts"

    @property
    def ssh_config(self) -> Path:
        return self.state_dir / "ssh_config"

    @property
    def key(self) -> Path:
        return self.state_dir / "id_ed25519"

    @property
    def _state_file(self) -> Path:
        return self.state_dir / "lab.json"

    def state(self) -> LabState:
        try:
            return LabState.model_validate_json(self._state_file.read_text())
        except FileNotFoundError:
            return LabState(name=self.name, lab_id=secrets.token_hex(4))

    def _save(self, state: LabState) -> None:
        self._state_file.write_text(state.model_dump_json(indent=2) + "\n")

    # -- up ----------------------------------------------------------------------------
    def up(
        self,
        rigs: int,
        profile: str,
        say: Callable[[str], None] = lambda _m: None,
        lab_secrets: dict[str, LabSecrets] | None = None,
    ) -> LabState:
        """`lab_secrets`: chosen wallets, pool passwords, rig passwords and farm hashes per rig
        (HiveOS's dashboard copy gets them too, so `hello` keeps them at boot)."""
        if rigs < 1:
            raise BadInputError("--rigs must be at least 1")
        catalog = load_catalog()
        profiles = catalog.rack_profiles(profile, rigs)  # bad profile: fail before any work
        hostcheck.require()
        self.state_dir.mkdir(parents=True, exist_ok=True)
        if not self.state().rigs:
            # A lab with no rigs of its own record: whatever carries its name (containers, a
            # network) was left by a run that was killed, and goes before the new rack comes up.
            self.down()
        state = self.state()
        if lab_secrets is not None:
            state.secrets = dict(lab_secrets)
        say("lab image: checking the cache")
        image = lab_image.ensure_rig_image()
        self._ensure_key()
        if pm.podman("network", "exists", self.network, check=False).returncode != 0:
            if pm.forget_stale_dns(self.network):
                say(f"lab network {self.network}: removed the name records a killed run left")
            pm.podman("network", "create", "--label", f"rigpivot.lab={self.name}", self.network)
        state.subnet, state.admin_network = self._network_addresses()

        old = {r.name: r for r in state.rigs}
        names = [f"rig{i + 1:02d}" for i in range(len(profiles))]
        if unknown := sorted(set(state.secrets) - set(names)):
            raise BadInputError(f"lab secrets name rigs this lab does not have: {unknown}")
        specs = [
            build_rig(catalog, n, f"rack{i // self.rack_size + 1}", p, state.lab_id,
                      secrets=state.secrets.get(n))
            for i, (n, p) in enumerate(zip(names, profiles, strict=True))
        ]  # fmt: skip
        say("farm services: mirror, pool, HiveOS dashboard")
        state.farm_http_port = self._ensure_farm(image, specs, state.farm_http_port)

        records: list[RigRecord] = []
        created: list[str] = []
        for spec in specs:
            port = old[spec.name].port if spec.name in old else _free_port()
            rec = RigRecord(
                name=spec.name,
                rack=spec.rack,
                profile=spec.profile,
                port=port,
                container=f"{self.prefix}-{spec.name}",
            )
            if self._ensure_rig(rec, spec, image):
                created.append(rec.name)
            records.append(rec)
        wanted = {r.container for r in records}
        for c in pm.containers(f"rigpivot.lab={self.name}"):
            if c["Labels"].get("rigpivot.role") == "rig" and c["Names"][0] not in wanted:
                pm.podman("rm", "-f", "-t", "0", c["Names"][0])
        state.image, state.rigs = image, records
        self._save(state)
        say(f"rigs: {len(records)} ({len(created)} new), waiting for them to boot")
        self._wait_ready(records)
        self.write_controller_files()
        return state

    def _network_addresses(self) -> tuple[str, str]:
        """The lab network's IPv4 subnet and its gateway as a /32."""
        info = json.loads(pm.podman("network", "inspect", self.network).stdout)
        for sub in info[0].get("subnets") or []:
            net = ipaddress.ip_network(sub["subnet"], strict=False)
            if net.version == 4 and sub.get("gateway"):
                return str(net), f"{ipaddress.ip_address(sub['gateway'])}/32"
        raise LabError(f"podman network {self.network} has no IPv4 subnet with a gateway")

    def _ensure_key(self) -> None:
        if not self.key.exists():
            subprocess.run(
                ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", f"rigpivot-{self.name}",
                 "-f", str(self.key)],
                check=True,
            )  # fmt: skip

    def _host_key(self, rig: str) -> Path:
        d = self.state_dir / "hostkeys"
        d.mkdir(exist_ok=True)
        path = d / f"{rig}_ed25519"
        if not path.exists():
            subprocess.run(
                [
                    "ssh-keygen",
                    "-q",
                    "-t",
                    "ed25519",
                    "-N",
                    "",
                    "-C",
                    f"root@{rig}",
                    "-f",
                    str(path),
                ],
                check=True,
            )
        return path

    def rekey(self, rig: str) -> None:
        """Give a rig a new host key, as a reinstalled or swapped rig would have."""
        path = self._host_key(rig)
        path.unlink()
        Path(f"{path}.pub").unlink()
        new = self._host_key(rig)
        container = f"{self.prefix}-{rig}"
        pm.podman("cp", "-", f"{container}:/", input=self._identity_tar(rig, new, None))
        pm.podman("exec", container, "systemctl", "restart", "ssh")

    def _identity_tar(self, rig: str, host_key: Path, spec: RigSpec | None) -> bytes:
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w") as tar:

            def add(path: str, data: bytes, mode: int) -> None:
                info = tarfile.TarInfo(path)
                info.size, info.mode, info.mtime = len(data), mode, int(time.time())
                tar.addfile(info, io.BytesIO(data))

            add("etc/ssh/ssh_host_ed25519_key", host_key.read_bytes(), 0o600)
            add("etc/ssh/ssh_host_ed25519_key.pub", Path(f"{host_key}.pub").read_bytes(), 0o644)
            if spec is not None:
                add("etc/lab/rig.json", spec.model_dump_json(indent=2).encode(), 0o644)
                add("root/.ssh/authorized_keys", Path(f"{self.key}.pub").read_bytes(), 0o600)
                add("etc/hostname", f"{rig}\n".encode(), 0o644)
                if spec.ssh_port != 22:  # sshd on that port only, as some farms set it
                    port = f"# lab: this rig's sshd listens here only\nPort {spec.ssh_port}\n"
                    add("etc/ssh/sshd_config.d/lab-port.conf", port.encode(), 0o644)
        return buf.getvalue()

    def _ensure_rig(self, rec: RigRecord, spec: RigSpec, image: str) -> bool:
        """Create the rig's container unless an identical one exists; True if created."""
        digest = hashlib.sha256(
            (spec.model_dump_json() + image + str(rec.port)).encode()
        ).hexdigest()[:16]
        current = pm.inspect(rec.container)
        if current and current["Config"]["Labels"].get("rigpivot.spec") == digest:
            if current["State"]["Status"] != "running":
                pm.podman("start", rec.container)
            return False
        if current:
            pm.podman("rm", "-f", "-t", "0", rec.container)
        pm.podman(
            "create", "--name", rec.container, "--hostname", rec.name,
            "--network", self.network, "--network-alias", rec.name,
            "--systemd=always", "--cgroupns=private",
            "--cap-add", "SYS_ADMIN,NET_ADMIN,NET_RAW",
            # A rig that reboots comes back, as real rigs do (watchdogs rely on it).
            "--restart=always",
            "-p", f"127.0.0.1:{rec.port}:{spec.ssh_port}",
            "--label", f"rigpivot.lab={self.name}", "--label", "rigpivot.role=rig",
            "--label", f"rigpivot.rig={rec.name}", "--label", f"rigpivot.spec={digest}",
            image,
        )  # fmt: skip
        tar = self._identity_tar(rec.name, self._host_key(rec.name), spec)
        pm.podman("cp", "-", f"{rec.container}:/", input=tar)
        pm.podman("start", rec.container)
        return True

    def _ensure_farm(self, image: str, specs: list[RigSpec], port: int) -> int:
        farm = self.state_dir / "farm"
        self._build_apt_repo(farm / "apt")
        lab_models.publish(farm)  # the tiny model and the engine's wheelhouse
        self._publish_dashboard(farm / "hive", specs)
        current = pm.inspect(self.farm_container)
        if current and current["Config"]["Image"] == image and port:
            if current["State"]["Status"] != "running":
                pm.podman("start", self.farm_container)
            return port
        if current:
            pm.podman("rm", "-f", "-t", "0", self.farm_container)
        port = port or _free_port()
        pm.podman(
            "run", "-d", "--name", self.farm_container, "--hostname", "farm",
            "--network", self.network,
            "--network-alias", MIRROR_HOST, "--network-alias", POOL_HOST,
            "--network-alias", HIVE_API_HOST,
            "-p", f"127.0.0.1:{port}:{MIRROR_PORT}",
            "-v", f"{farm.resolve()}:/srv/farm:ro", "--restart=always",
            "--label", f"rigpivot.lab={self.name}", "--label", "rigpivot.role=farm",
            image, "/usr/lib/lab/farm-services",
        )  # fmt: skip
        return port

    @staticmethod
    def _build_apt_repo(apt: Path) -> None:
        """A flat apt repository of the lab's packages, as a farm-local mirror serves it."""
        apt.mkdir(parents=True, exist_ok=True)
        for deb in lab_image.mirror_packages().glob("*.deb"):
            if not (apt / deb.name).exists():
                shutil.copy(deb, apt / deb.name)
        packages = subprocess.run(
            ["dpkg-scanpackages", "--multiversion", "."],
            cwd=apt, capture_output=True, check=True,
        ).stdout  # fmt: skip
        (apt / "Packages").write_bytes(packages)
        (apt / "Packages.gz").write_bytes(gzip.compress(packages, mtime=0))
        lines = [
            "Origin: rigpivot-lab", "Label: farm mirror", "Suite: stable", "Codename: farm",
            f"Date: {formatdate(usegmt=True)}", "Architectures: amd64 all", "SHA256:",
        ]  # fmt: skip
        for name in ("Packages", "Packages.gz"):
            data = (apt / name).read_bytes()
            lines.append(f" {hashlib.sha256(data).hexdigest()} {len(data)} {name}")
        (apt / "Release").write_text("\n".join(lines) + "\n")

    @staticmethod
    def _publish_dashboard(hive: Path, specs: list[RigSpec]) -> None:
        """What HiveOS's dashboard holds for each rig: `hello` fetches it at boot."""
        for spec in specs:
            if spec.hive is None:
                continue
            out = hive / str(spec.hive.rig_id)
            out.mkdir(parents=True, exist_ok=True)
            rig_json = out / ".rig.json"
            rig_json.write_text(spec.model_dump_json())
            subprocess.run([sys.executable, str(HIVE_RENDER), str(rig_json), str(out)], check=True)
            rig_json.unlink()

    def _wait_ready(self, records: list[RigRecord]) -> None:
        def ready(rec: RigRecord) -> str | None:
            deadline = time.monotonic() + READY_TIMEOUT
            last = ""
            while time.monotonic() < deadline:
                p = pm.exec_in(
                    rec.container, "sh", "-c",
                    "test -e /var/lib/lab/firstboot.done && systemctl is-system-running",
                    timeout=30,
                )  # fmt: skip
                last = p.stdout.decode().strip()
                if last == "running" and _ssh_banner(rec.port):
                    return None
                if last == "degraded":
                    failed = pm.exec_in(
                        rec.container, "systemctl", "--failed", "--no-legend", "--plain"
                    ).stdout.decode()
                    units = [ln.split()[0] for ln in failed.splitlines() if ln.strip()]
                    # A rig rigpivot has worked on is the operator's now: a unit of theirs
                    # that failed is theirs to see (`lab status`), not a lab that did not boot.
                    # The lab's own units failing always is.
                    touched = pm.exec_in(rec.container, "test", "-e", PIVOT_RECORD).returncode
                    if touched == 0 and not any(u.startswith("lab-") for u in units):
                        if _ssh_banner(rec.port):
                            log.warning("%s: up, with failed units: %s", rec.name, units)
                            return None
                        time.sleep(0.5)
                        continue
                    return f"{rec.name}: boot degraded, failed units:\n{failed.strip()}"
                time.sleep(0.5)
            return (
                f"{rec.name}: not ready after {READY_TIMEOUT:.0f} s (systemd: {last or 'booting'})"
            )

        with concurrent.futures.ThreadPoolExecutor(max_workers=8) as pool:
            errors = [e for e in pool.map(ready, records) if e]
        if errors:
            raise LabError("lab rigs did not come up:\n" + "\n".join(errors))

    def write_controller_files(self) -> None:
        """Inventory, known_hosts (the rigs' current host keys) and ssh_config."""
        state = self.state()
        key, kh = self.key.resolve(), self.known_hosts.resolve()
        racks: dict[str, list[RigRecord]] = {}
        for r in state.rigs:
            racks.setdefault(r.rack, []).append(r)
        ini = [
            f"# The lab rack {self.name!r}, written by `rigpivot lab up`; rewritten on every run.",
            "# Rigs are podman containers reached over real SSH on loopback ports.",
        ]
        for rack, rigs in racks.items():
            ini.append(f"\n[{rack}]")
            ini += [f"{r.name} ansible_host=127.0.0.1 ansible_port={r.port}" for r in rigs]
        ini.append("\n[farm:children]")
        ini += list(racks)
        ini += [
            "\n[all:vars]",
            "ansible_user=root",
            f"ansible_ssh_private_key_file={key}",
            f"ansible_ssh_common_args='-o UserKnownHostsFile={kh} -o StrictHostKeyChecking=yes'",
            f"rigpivot_known_hosts={kh}",
            f"rigpivot_farm_mirror_url=http://{MIRROR_HOST}:{MIRROR_PORT}",
            "# The lab has no GPU: every converted rig serves the lab's tiny model on CPU with",
            "# llama.cpp. Preflight's engine and model choices still show in plans and reports.",
            "inference_server_engine=llama.cpp",
            "inference_server_gpu_layers=0",
            f"inference_server_model_file={lab_models.MODEL_FILE}",
            "# Hardening: SSH only from where the controller's connections arrive (the lab",
            "# network's gateway: podman masquerades the published loopback ports behind it),",
            "# the inference ports from the lab network.",
            f'net_hardening_admin_networks=["{state.admin_network}"]',
            f'net_hardening_inference_allowed_networks=["{state.subnet}"]',
        ]
        self.inventory.write_text("\n".join(ini) + "\n")
        hosts = []
        for r in state.rigs:
            pub = Path(f"{self._host_key(r.name)}.pub").read_text().split()
            hosts.append(f"[127.0.0.1]:{r.port} {pub[0]} {pub[1]}")
        kh.write_text("\n".join(hosts) + "\n")
        cfg = [
            f"Host {r.name}\n  HostName 127.0.0.1\n  Port {r.port}\n  User root\n"
            f"  IdentityFile {key}\n  IdentitiesOnly yes\n  UserKnownHostsFile {kh}\n"
            "  StrictHostKeyChecking yes\n"
            for r in state.rigs
        ]
        self.ssh_config.write_text("\n".join(cfg))

    # -- down, status ------------------------------------------------------------------
    def down(self) -> list[str]:
        """Remove every container and the network of this lab; the image cache stays."""
        removed = [c["Names"][0] for c in pm.containers(f"rigpivot.lab={self.name}")]
        if removed:
            pm.podman("rm", "-f", "-t", "0", *removed, timeout=600)
        pm.podman("network", "rm", "-f", self.network, check=False)
        state = self.state()
        state.rigs, state.farm_http_port = [], 0
        if self._state_file.exists():
            self._save(state)
        for f in (self.inventory, self.known_hosts, self.ssh_config):
            f.unlink(missing_ok=True)
        return removed

    def status(self) -> list[RigStatus]:
        out: list[RigStatus] = []
        for r in self.state().rigs:
            info = pm.inspect(r.container)
            st = info["State"]["Status"] if info else "missing"
            booted, miner, reboots, pivot = False, "-", 0, "-"
            if st == "running":
                probe = pm.exec_in(
                    r.container, "sh", "-c",
                    "test -e /var/lib/lab/firstboot.done && echo booted=yes; "
                    # HiveOS publishes kH/s in /run/hive/khs; a plain rig's miner (lolMiner,
                    # or the unnamed hashd) only answers on its API (H/s).
                    "echo khs=$(cat /run/hive/khs 2>/dev/null || curl -sf --max-time 2 "
                    "localhost:4069/ 2>/dev/null | jq -er '.hashrate / 1000' 2>/dev/null || "
                    "curl -sf --max-time 2 localhost:4059/summary | jq -r '.hashrate / 1000' "
                    "2>/dev/null); "
                    "echo active=$(systemctl is-active hive-miner lolminer hashd 2>/dev/null "
                    "| grep -c '^active'); "
                    "echo reboots=$(wc -l < /var/log/lab/reboots.log 2>/dev/null || echo 0); "
                    f"echo pivot=$(jq -r '.state // empty' {PIVOT_RECORD} 2>/dev/null); "
                    "echo failed=$(systemctl --failed --no-legend --plain | awk '{print $1}' "
                    "| paste -sd, -)",
                    timeout=20,
                ).stdout.decode()  # fmt: skip
                got = dict(ln.split("=", 1) for ln in probe.splitlines() if "=" in ln)
                booted = got.get("booted") == "yes"
                khs, active = got.get("khs", "").strip(), got.get("active", "0").strip()
                reboots = int(got["reboots"]) if got.get("reboots", "").isdigit() else 0
                if active != "0" and khs not in ("-", "", "0"):
                    miner = f"hashing {float(khs) / 1000:.1f} MH/s"
                else:
                    miner = "stopped" if active == "0" else "starting"
                # The rig's pivot record: a rig rigpivot never touched is mining.
                pivot = got.get("pivot", "").strip() or "mining"
                if failed := got.get("failed", "").strip():
                    pivot += f" (failed units: {failed})"
            out.append(
                RigStatus(r.name, r.rack, r.profile, r.port, st, booted, miner, reboots, pivot)
            )
        return out
