"""What rigpivot knows about a rig from the inside, shared by every rig-side module.

One definition of a miner (`MINER_NAMES`, `find_miners`), one reader of systemd's unit
properties (`unit_show`), one nvidia-smi reader (`smi_query`, `smi_value`), one list of the PCI
classes a GPU shows as (`GPU_CLASSES`) and one reader of the cards lspci lists (`pci_gpus`). Ansible ships this file with each module that imports
it (module_utils); preflight's probe inlines it into the rig_facts payload it pipes to
`python3 -` (toolkit/probe.py). Standard library only, and Python 3.6 syntax: old HiveOS
images run Python 3.6.
"""

import fnmatch
import grp
import hashlib
import json
import os
import pwd
import re
import subprocess
import time
from typing import Any  # noqa: F401 (type comments; Python 3.6 has typing)

# Miner programs as farms run them, matched case-insensitively against a process's program
# name (comm, argv[0]) and, for interpreted miners and wrapper scripts, argv[1]. A process
# that holds a GPU in nvidia-smi's compute apps is a miner too, whatever its name, unless its
# unit is one of the never-miners below.
MINER_NAMES = (
    "t-rex", "lolminer", "teamredminer", "trm", "nbminer", "gminer", "phoenixminer",
    "ethminer", "xmrig", "bzminer", "rigel", "srbminer-multi", "onezerominer", "nanominer",
    "excavator", "wildrig-multi",
)  # fmt: skip
# Units whose processes are never miners, even on a GPU: HiveOS's USB watchdog pinger (the
# board resets the rig when its pings stop), the lab's simulated hardware, and rigpivot's own
# inference stack (a second convert must not stop what the first installed).
NEVER_MINER_UNITS = ("hive-usbwd.service", "lab-*", "rigpivot-*")
# Units that host more than a miner and are never stopped: on a rig without logind every shell
# started over SSH lives in ssh.service, every cron job in cron.service. A miner found in one
# is handled as a miner without a unit.
SHARED_UNITS = (
    "ssh.service", "sshd.service", "cron.service", "crond.service", "getty@*.service",
    "serial-getty@*.service", "console-getty.service", "user@*.service",
)  # fmt: skip
# PCI classes a GPU shows as: VGA, 3D controller (headless mining SKUs), display controller.
GPU_CLASSES = ("0300", "0302", "0380")
NVIDIA_VENDOR = "10de"


def run(cmd, timeout=30):
    """(rc, stdout, stderr); rc 127 when the program is missing or timed out."""
    try:
        # stdout=PIPE rather than capture_output: Python 3.6.
        p = subprocess.run(
            cmd,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            universal_newlines=True,
            timeout=timeout,
        )
    except (OSError, subprocess.TimeoutExpired) as e:
        return 127, "", str(e)
    return p.returncode, p.stdout, p.stderr


def read(path, mode="r"):
    try:
        with open(path, mode) as f:
            return f.read()
    except (OSError, ValueError):
        return None


def sha256(path):
    """The SHA-256 of a file's content (a link is followed)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 16), b""):
            h.update(chunk)
    return h.hexdigest()


def owner_names(st):
    """Owner and group by name, or by number where the rig has no name for them (miners
    unpacked from tarballs keep the packer's uid)."""
    try:
        owner = pwd.getpwuid(st.st_uid).pw_name
    except KeyError:
        owner = str(st.st_uid)
    try:
        group = grp.getgrgid(st.st_gid).gr_name
    except KeyError:
        group = str(st.st_gid)
    return owner, group


# -- systemd -------------------------------------------------------------------------------


def unit_show(unit, props, retries=3):
    """The unit's properties as systemctl show reports them ({} when systemctl cannot tell).
    systemd answers empty values while it reloads its units: asked again, up to `retries`."""
    for attempt in range(retries):
        rc, out, _ = run(["systemctl", "show", "-p", ",".join(props), unit])
        found = dict(line.split("=", 1) for line in out.splitlines() if "=" in line)
        if rc == 0 and any(found.get(p) for p in props):
            return found
        if attempt + 1 < retries:
            time.sleep(1)
    return {}


# What systemd_service counts as enabled: `systemctl is-enabled` exits 0 (systemctl(1): not for
# linked, masked or disabled units), less enabled-runtime, indirect and alias, which it
# enables anyway. HiveOS links its units into /etc/systemd/system: linked until enabled.
ENABLED_STATES = ("enabled", "static", "generated", "transient")


def unit_state(unit):
    """LoadState, ActiveState and UnitFileState of a unit ('' where systemctl says nothing)."""
    props = ("LoadState", "ActiveState", "UnitFileState")
    found = unit_show(unit, props)
    return {p: found.get(p, "") for p in props}


def unit_actions(want, now):
    """The systemctl verbs that bring a unit from `now` (unit_state) to `want` (any of
    masked, enabled: bools; state: started, stopped or restarted), in the order
    ansible.builtin.systemd_service applies them."""
    todo = []
    masked = now["UnitFileState"].startswith("masked") or now["LoadState"] == "masked"
    if want.get("masked") is True and not masked:
        todo.append("mask")
    elif want.get("masked") is False and masked:
        todo.append("unmask")
    if want.get("enabled") is not None:
        enabled = now["UnitFileState"] in ENABLED_STATES
        if want["enabled"] and not enabled:
            todo.append("enable")
        elif not want["enabled"] and enabled:
            todo.append("disable")
    state, active = want.get("state"), now["ActiveState"]
    if state == "started" and active not in ("active", "activating", "reloading"):
        todo.append("start")
    elif state == "stopped" and active in ("active", "activating", "deactivating", "reloading"):
        todo.append("stop")
    elif state == "restarted":
        todo.append("restart")
    return todo


def exec_paths(exec_start):
    """The programs an ExecStart property runs (`{ path=/opt/x ; argv[]=... }`)."""
    return [t[5:].rstrip(";") for t in exec_start.split() if t.startswith("path=")]


def unit_of(pid):
    """The system unit running pid, or None (a login session, a user manager, a shell)."""
    for line in (read("/proc/%s/cgroup" % pid) or "").splitlines():
        _, controllers, path = (line.split(":", 2) + ["", ""])[:3]
        if controllers not in ("", "name=systemd"):
            continue
        m = re.match(r"^/system\.slice/(?:.*/)?([^/]+\.service)$", path.strip())
        if m:
            return m.group(1)
    return None


# -- nvidia-smi ----------------------------------------------------------------------------


def smi_value(value):
    """nvidia-smi's '[N/A]', '[Not Supported]' and '' are unknowns; numbers become numbers."""
    value = value.strip()
    if not value or value.startswith("["):
        return None
    try:
        return int(value)
    except ValueError:
        try:
            return float(value)
        except ValueError:
            return value


def smi_query(kind, fields, timeout=30):
    """nvidia-smi --query-<kind>=fields as a list of {field: raw text} rows.
    Raises RuntimeError with nvidia-smi's first line when it fails (no driver, a version
    mismatch after an upgrade)."""
    rc, out, err = run(
        ["nvidia-smi", "--query-%s=%s" % (kind, ",".join(fields)), "--format=csv,noheader,nounits"],
        timeout=timeout,
    )
    if rc != 0:
        text = (out + err).strip()
        raise RuntimeError(text.splitlines()[0] if text else "nvidia-smi exit %d" % rc)
    rows = []
    for line in out.strip().splitlines():
        cells = [c.strip() for c in line.split(",")]
        if len(cells) == len(fields):
            rows.append(dict(zip(fields, cells)))  # noqa: B905 (3.6)
    return rows


def gpu_compute_pids():
    """Pids nvidia-smi lists as compute apps, and what nvidia-smi said ('ok', or why not)."""
    try:
        rows = smi_query("compute-apps", ["pid", "process_name"])
    except RuntimeError as e:
        # "Driver/library version mismatch" after a driver upgrade: names still find miners.
        return set(), "failed: %s" % e
    return {int(r["pid"]) for r in rows if r["pid"].isdigit()}, "ok"


# -- the PCI bus ---------------------------------------------------------------------------


def pci_gpus(vendor=None):
    """Every GPU on the PCI bus (a device of one of GPU_CLASSES), as `lspci -vmm -nn -D` lists
    it: [{"slot", "class", "vendor_id", "vendor", "device_id", "device"}], only `vendor`'s
    (a PCI vendor id, NVIDIA_VENDOR) when given. Raises RuntimeError when lspci fails."""
    rc, out, err = run(["lspci", "-vmm", "-nn", "-D"])
    if rc != 0:
        raise RuntimeError((err or out).strip() or "lspci exit %d" % rc)
    cards = []
    for block in out.strip().split("\n\n"):
        rec = dict(line.split(":\t", 1) for line in block.splitlines() if ":\t" in line)
        cls = re.search(r"\[([0-9a-f]{4})\]$", rec.get("Class", ""))
        ven = re.search(r"^(.*?)\s*\[([0-9a-f]{4})\]$", rec.get("Vendor", ""))
        dev = re.search(r"^(.*?)\s*\[([0-9a-f]{4})\]$", rec.get("Device", ""))
        if not (cls and ven and dev and "Slot" in rec) or cls.group(1) not in GPU_CLASSES:
            continue
        if vendor and ven.group(2) != vendor:
            continue
        cards.append(
            {
                "slot": rec["Slot"],
                "class": cls.group(1),
                "vendor_id": ven.group(2),
                "vendor": ven.group(1),
                "device_id": dev.group(2),
                "device": dev.group(1),
            }
        )
    return cards


# -- miners --------------------------------------------------------------------------------


def program_names(pid):
    names = set()  # type: set[str]
    raw = read("/proc/%s/cmdline" % pid, "rb")
    if raw:
        argv = [a.decode("utf-8", "replace") for a in raw.split(b"\0") if a]
        # Interpreted miners and wrappers show the miner as argv[1] (python3 ./lolMiner).
        names.update(os.path.basename(a).lower() for a in argv[:2])
    comm = read("/proc/%s/comm" % pid)
    if comm:
        names.add(comm.strip().lower())
    return names


def _exe(pid, name):
    raw = read("/proc/%s/cmdline" % pid, "rb") or b""
    argv = [a.decode("utf-8", "replace") for a in raw.split(b"\0") if a]
    for a in argv[:2]:
        if os.path.basename(a).lower() == name:
            return a
    return argv[0] if argv else ""


def find_miners(
    names=MINER_NAMES, never_units=NEVER_MINER_UNITS, shared_units=SHARED_UNITS, use_gpu=True
):
    """The rig's miners, by what they are rather than what their unit is called.

    Returns {"miners": [...], "ignored": [...], "units": [unit names], "orphans": [pids],
    "shared": [units hosting a miner that are never stopped], "nvidia_smi": "ok" | why not}.
    Each miner: pid, name, exe, unit (None when it has none or lives in a shared unit), host
    (the unit it lives in), by (name and/or gpu)."""
    wanted = {n.lower() for n in names}
    on_gpu, smi = gpu_compute_pids() if use_gpu else (set(), "not asked")
    skip = {os.getpid(), os.getppid()}
    miners, ignored = [], []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) in skip:
            continue
        pid = int(entry)
        hits = sorted(program_names(pid) & wanted)
        if not hits and pid not in on_gpu:
            continue
        unit = unit_of(pid)
        name = hits[0] if hits else (read("/proc/%s/comm" % pid) or "?").strip()
        found = {
            "pid": pid,
            "name": name,
            "exe": _exe(pid, name),
            "unit": unit,
            "host": unit,
            "by": (["name"] if hits else []) + (["gpu"] if pid in on_gpu else []),
        }
        if unit and any(fnmatch.fnmatch(unit, p) for p in never_units):
            ignored.append(found)
            continue
        if unit and any(fnmatch.fnmatch(unit, p) for p in shared_units):
            found["unit"] = None
        if read("/proc/%s/cmdline" % pid) is not None:  # still there (not a race)
            miners.append(found)
    return {
        "nvidia_smi": smi,
        "miners": miners,
        "ignored": ignored,
        "units": sorted({m["unit"] for m in miners if m["unit"]}),
        "orphans": sorted(m["pid"] for m in miners if not m["unit"]),
        "shared": sorted({m["host"] for m in miners if m["host"] and not m["unit"]}),
    }


# Cron tables a miner can be started from at boot (@reboot lines): the system's and users'.
CRON_TABLES = ("/etc/cron.d/*", "/var/spool/cron/crontabs/*")
CRON_DISABLED = "#rigpivot-disabled# "


def miner_cron_lines(names=MINER_NAMES, tables=CRON_TABLES):
    """@reboot lines of the cron tables that start a known miner: [{path, line}]."""
    import glob

    wanted = [n.lower() for n in names]
    found = []
    for pattern in tables:
        for path in sorted(glob.glob(pattern)):
            for line in (read(path) or "").splitlines():
                words = line.split()
                if not words or words[0] != "@reboot":
                    continue
                # a miner's program, or its folder (/opt/lolminer/mine_etc.sh starts lolMiner)
                parts = {part.lower() for w in words[1:] for part in w.split("/") if part}
                if any(n in parts for n in wanted):
                    found.append({"path": path, "line": line})
    return found


# -- the pivot record ------------------------------------------------------------------------

RECORD = "/var/lib/rigpivot/state.json"


class DamagedRecord(Exception):
    """The record file is there but holds no pivot record (truncated, not JSON, hand-edited)."""


def utc_now():
    import datetime

    return datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0)


def utc_text(moment):
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def utc_parse(text):
    import datetime

    try:
        moment = datetime.datetime.strptime(str(text), "%Y-%m-%dT%H:%M:%SZ")
    except ValueError:
        return None
    return moment.replace(tzinfo=datetime.timezone.utc)


# The record's lock lives in /run/lock (a tmpfs, gone at reboot with every holder), not beside
# the record: a rig whose only record was a lease is left with no /var/lib/rigpivot at all.
LOCK_DIR = "/run/lock"


def record_lock_path(path=RECORD):
    import hashlib

    folder = LOCK_DIR if os.path.isdir(LOCK_DIR) else os.path.dirname(path)
    key = hashlib.sha256(os.path.abspath(path).encode()).hexdigest()[:12]
    return os.path.join(folder, "rigpivot-record-%s.lock" % key)


class record_locked(object):
    """Hold the record's lock (flock) for one read-modify-write: two SSH sessions (two
    controllers) writing the record at once see each other's changes. A pass that writes
    nothing (check mode) creates no lock file where there is none."""

    def __init__(self, path=RECORD, write=True):
        self.path = record_lock_path(path)
        self.write = write
        self.fd = None

    def __enter__(self):
        import fcntl

        if not self.write and not os.path.exists(self.path):
            return self
        folder = os.path.dirname(self.path)
        if not os.path.isdir(folder):
            os.makedirs(folder, 0o755)
        self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        fcntl.flock(self.fd, fcntl.LOCK_EX)
        return self

    def __exit__(self, *exc):
        if self.fd is not None:
            os.close(self.fd)  # closing the descriptor releases the lock
        return False


def new_record():
    """The record of a rig rigpivot never converted."""
    return {"state": "mining", "step": None, "facts": {}, "history": []}


def load_record(path=RECORD):
    """The pivot record, or a new one (`mining`) where the rig has none."""
    import json

    try:
        with open(path) as f:
            record = json.load(f)
    except FileNotFoundError:
        return new_record()
    except ValueError as e:
        raise DamagedRecord(
            "%s is not valid JSON (%s): the rig's pivot record is damaged; `rigpivot rollback` "
            "restores from the controller's copy of the snapshot, or move the file away once "
            "the rig is known to be mining" % (path, e)
        ) from None
    if not isinstance(record, dict):
        raise DamagedRecord("%s does not hold a pivot record (a JSON object)" % path)
    return record


def load_record_or_set_aside(path, set_aside_damaged):
    """(record, set_aside): the pivot record, or where a damaged one is to be moved when
    `set_aside_damaged` (a rollback restoring from the controller's copy of the snapshot) and a
    new record in its place. The caller renames it (never in check mode). A damaged record
    raises DamagedRecord otherwise."""
    try:
        return load_record(path), None
    except DamagedRecord:
        if not set_aside_damaged:
            raise
        return new_record(), "%s.damaged-%s" % (path, utc_text(utc_now()))


def save_record(path, record):
    """Write the record whole or not at all (a temporary file renamed over it)."""
    import json
    import tempfile

    folder = os.path.dirname(path)
    if not os.path.isdir(folder):
        os.makedirs(folder, 0o755)
    fd, tmp = tempfile.mkstemp(dir=folder)
    with os.fdopen(fd, "w") as f:
        json.dump(record, f, indent=2, sort_keys=True)
        f.write("\n")
        f.flush()
        os.fsync(f.fileno())
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)


def record_created(paths, path=RECORD):
    """The conversion's ledger: those of `paths` that do not exist yet join the pivot record's
    `created` list, before the caller creates them (rollback removes exactly those, never what
    the operator made). Returns the paths that did not exist."""
    new = [p for p in paths if not os.path.lexists(p)]
    if not new:
        return []
    with record_locked(path):
        record = load_record(path)
        ledger = list(record.get("created") or [])
        added = [p for p in new if p not in ledger]
        if added:
            record["created"] = ledger + added
            now = utc_now()
            record["updated"] = utc_text(now)
            renew_lease(record, now)
            save_record(path, record)
    return new


# -- the rig lease: which run may change the rig now -----------------------------------------


def lease_left(lease, now=None):
    """Seconds the lease has left (0 when it has expired or cannot be read)."""
    if not isinstance(lease, dict):
        return 0
    expires = utc_parse(lease.get("expires"))
    if expires is None:
        return 0
    return max(0, int((expires - (now or utc_now())).total_seconds()))


def renew_lease(record, now=None):
    """A run that writes the record is alive: its live lease runs for its length again."""
    import datetime

    lease = record.get("lease")
    now = now or utc_now()
    if lease_left(lease, now) > 0 and isinstance(lease.get("ttl"), int):
        lease["expires"] = utc_text(now + datetime.timedelta(seconds=lease["ttl"]))


# -- what the rig measures: each card's power draw, each miner's hashrate -------------------


def smi_power_draw():
    """{bus_id (0000:01:00.0): watts} from nvidia-smi's power.draw; {} when it cannot tell."""
    try:
        rows = smi_query("gpu", ["pci.bus_id", "power.draw"])
    except RuntimeError:
        return {}
    out = {}
    for r in rows:
        watts = smi_value(r["power.draw"])
        if isinstance(watts, (int, float)):
            out[norm_bus_id(r["pci.bus_id"])] = float(watts)
    return out


def norm_bus_id(bus_id):
    """'00000000:01:00.0' (NVML), '0000:01:00.0' and '01:00.0' (lspci) -> '0000:01:00.0'."""
    parts = bus_id.strip().lower().split(":")
    domain = int(parts[0], 16) if len(parts) == 3 else 0
    return "%04x:%s:%s" % (domain, parts[-2][-2:], parts[-1])


# Each miner's local API as it ships: the port it listens on unless its command line (or the
# config file it names) says otherwise, and the protocol. "cgminer": the sgminer/cgminer JSON
# API over a plain TCP socket (TeamRedMiner), tried before HTTP on the same port.
MINER_APIS = {  # type: dict[str, Any]
    "t-rex": {"port": 4067, "paths": ["/summary"], "options": ["--api-bind-http"]},
    "lolminer": {"port": 4069, "paths": ["/summary", "/"], "options": ["--apiport"]},
    # xmrig's HTTP API is off unless --http-port or the config's http.port turns it on.
    "xmrig": {"port": None, "paths": ["/1/summary"], "options": ["--http-port"]},
    "teamredminer": {
        "port": 4028, "paths": ["/summary"], "cgminer": True, "options": ["--api_listen"],
    },
    "trm": {"port": 4028, "paths": ["/summary"], "cgminer": True, "options": ["--api_listen"]},
}  # fmt: skip
API_TIMEOUT_S = 3
# Options naming a config file the API's address may be in (T-Rex, xmrig).
CONFIG_OPTIONS = ("-c", "--config")


def _argv(pid):
    raw = read("/proc/%s/cmdline" % pid, "rb") or b""
    return [a.decode("utf-8", "replace") for a in raw.split(b"\0") if a]


def _port_of(spec):
    """'0.0.0.0:4067', '127.0.0.1:4067', '4067' -> 4067; '0' (API off) and junk -> None."""
    tail = str(spec).rsplit(":", 1)[-1].strip()
    return int(tail) if tail.isdigit() and 0 < int(tail) < 65536 else None


def miner_api_port(name, pid):
    """The port the miner's API listens on: its command line, else the config file it was
    given (T-Rex's `api-bind-http`, xmrig's `http.port`), else the miner's default.
    (port, how it was found) or (None, why not)."""
    api = MINER_APIS.get(name)
    if api is None:
        return None, "rigpivot does not read %s's API" % name
    argv = _argv(pid)
    config = None
    for i, arg in enumerate(argv):
        key, eq, value = arg.partition("=")
        if not eq:
            value = argv[i + 1] if i + 1 < len(argv) else ""
        if key in api["options"]:
            port = _port_of(value)
            if port is None:
                return None, "its API is off (%s %s)" % (key, value)
            return port, "command line"
        if key in CONFIG_OPTIONS:
            config = value
    if config:
        if not os.path.isabs(config):
            cwd = os.path.realpath("/proc/%s/cwd" % pid)
            config = os.path.join(cwd, config)
        try:
            conf = json.loads(read(config) or "null")
        except ValueError:
            conf = None
        if isinstance(conf, dict):
            spec = conf.get("api-bind-http")
            http = conf.get("http")
            if spec is None and isinstance(http, dict):
                spec = http.get("port") if http.get("enabled") else 0
            if spec is not None:
                port = _port_of(spec)
                if port is None:
                    return None, "its API is off (%s: %s)" % (config, spec)
                return port, "config file"
    if api["port"] is None:
        return None, "its API is off (%s opens it only when told a port)" % name
    return api["port"], "default"


def _http_json(port, path, timeout=API_TIMEOUT_S):
    import urllib.request

    # The miner is on this rig: never through a proxy the environment names.
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open("http://127.0.0.1:%d%s" % (port, path), timeout=timeout) as r:
        return json.loads(r.read().decode("utf-8", "replace"))


def _cgminer_json(port, command, timeout=API_TIMEOUT_S):
    import socket

    s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    try:
        s.sendall(json.dumps({"command": command}).encode())
        # The request is whole: a server that reads lines (an HTTP API on the same port)
        # then answers at once instead of waiting out the timeout.
        s.shutdown(socket.SHUT_WR)
        chunks = []
        while True:
            data = s.recv(65536)
            if not data:
                break
            chunks.append(data)
    finally:
        s.close()
    # sgminer ends its answer with a NUL byte.
    return json.loads(b"".join(chunks).rstrip(b"\0").decode("utf-8", "replace"))


def _num(v):
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else None


def parse_miner_api(data):
    """One miner API answer -> {algorithm, hashrate_hs, gpus: [{bus_id, index, hashrate_hs}]}.

    Shapes read: T-Rex's /summary (`hashrate` H/s, `gpus[]` with `pci_bus`/`pci_domain` or
    `bus_id`), lolMiner's /summary (`Algorithms[].Worker_Performance` in `Performance_Unit`,
    `Workers[].PCIE_Address` "bus:device"), xmrig's /1/summary (`hashrate.total[0]`, the 10 s
    average; a CPU miner: no cards) and the sgminer/cgminer API (TeamRedMiner: `summary` and
    `devs` with `KHS 30s`/`MHS 30s`). Raises ValueError for anything else."""
    if not isinstance(data, dict):
        raise ValueError("not a JSON object")
    if isinstance(data.get("Algorithms"), list):  # lolMiner
        algos = [a for a in data["Algorithms"] if isinstance(a, dict)]
        if not algos:
            raise ValueError("lolMiner API: no algorithm")
        algo = algos[0]
        factor = _num(algo.get("Performance_Factor"))
        if factor is None:
            unit = str(algo.get("Performance_Unit", "")).lower()
            prefix = unit[:1] if unit[:1] in "kmgt" and unit[1:2] == "h" else ""
            factor = {"": 1.0, "k": 1e3, "m": 1e6, "g": 1e9, "t": 1e12}[prefix]
        workers = data.get("Workers")
        workers = workers if isinstance(workers, list) else []
        per = algo.get("Worker_Performance")
        per = per if isinstance(per, list) else []
        gpus = []
        for i, perf in enumerate(per):
            w = workers[i] if i < len(workers) and isinstance(workers[i], dict) else {}
            addr = str(w.get("PCIE_Address", ""))
            bus = None
            if ":" in addr:
                b = addr.split(":")[0]
                try:
                    bus = "0000:%02x:00.0" % int(b, 16)
                except ValueError:
                    bus = None
            hs = _num(perf)
            gpus.append({
                "index": w.get("Index", i) if isinstance(w.get("Index", i), int) else i,
                "bus_id": bus,
                "hashrate_hs": hs * factor if hs is not None else None,
            })  # fmt: skip
        total = _num(algo.get("Total_Performance"))
        return {
            "algorithm": str(algo.get("Algorithm", "")) or None,
            "hashrate_hs": total * factor if total is not None else None,
            "gpus": gpus,
        }
    if isinstance(data.get("hashrate"), dict):  # xmrig
        totals = data["hashrate"].get("total") or []
        return {
            "algorithm": str(data.get("algo", "")) or None,
            "hashrate_hs": _num(totals[0]) if totals else None,
            "gpus": [],
        }
    if "SUMMARY" in data or "summary" in data or "DEVS" in data:  # sgminer / cgminer

        def body(key):
            part = data.get(key.lower(), data)
            if isinstance(part, list) and part:
                part = part[0]
            rows = part.get(key) if isinstance(part, dict) else None
            return [r for r in rows if isinstance(r, dict)] if isinstance(rows, list) else []

        def rate(row):
            for key, f in (("MHS 30s", 1e6), ("KHS 30s", 1e3), ("MHS av", 1e6), ("KHS av", 1e3)):
                if _num(row.get(key)) is not None:
                    return row[key] * f
            return None

        summary = body("SUMMARY")
        gpus = [
            {"index": d.get("GPU"), "bus_id": None, "hashrate_hs": rate(d)} for d in body("DEVS")
        ]
        total = rate(summary[0]) if summary else None
        if total is None and gpus:
            rates = [g["hashrate_hs"] for g in gpus]
            total = sum(rates) if None not in rates else None
        return {"algorithm": None, "hashrate_hs": total, "gpus": gpus}
    if "hashrate" in data or "gpus" in data:  # T-Rex (and miners that copy its summary)
        gpus = []
        for g in data.get("gpus") or []:
            if not isinstance(g, dict):
                continue
            bus = g.get("bus_id")
            if isinstance(bus, str) and ":" in bus:
                bus = norm_bus_id(bus)
            elif isinstance(g.get("pci_bus"), int):
                dom = g.get("pci_domain")
                bus = "%04x:%02x:00.0" % (dom if isinstance(dom, int) else 0, g["pci_bus"])
            else:
                bus = None
            idx = g.get("device_id", g.get("gpu_id"))
            gpus.append({
                "index": idx if isinstance(idx, int) else None,
                "bus_id": bus,
                "hashrate_hs": _num(g.get("hashrate")),
            })  # fmt: skip
        return {
            "algorithm": str(data.get("algorithm", "")) or None,
            "hashrate_hs": _num(data.get("hashrate")),
            "gpus": gpus,
        }
    raise ValueError(
        "not a miner API answer rigpivot reads (keys: %s)" % ", ".join(sorted(data)[:8])
    )


def read_miner_api(name, pid):
    """What a running miner's API says: {miner, pid, port, api, algorithm, hashrate_hs, gpus,
    error}. An unknown miner, an API that is off, unreachable or unreadable gives error (the
    reason) and no figures; never an exception."""
    name = name.lower()
    out = {
        "miner": name, "pid": pid, "port": None, "api": None, "algorithm": None,
        "hashrate_hs": None, "gpus": [], "error": None,
    }  # fmt: skip
    port, how = miner_api_port(name, pid)
    if port is None:
        out["error"] = how
        return out
    out["port"] = port
    api = MINER_APIS[name]
    errors = []
    tries = [("cgminer", "summary+devs")] if api.get("cgminer") else []
    tries += [("http", p) for p in api["paths"]]
    for kind, what in tries:
        try:
            data = _cgminer_json(port, what) if kind == "cgminer" else _http_json(port, what)
            parsed = parse_miner_api(data)
        except Exception as e:  # refused, timed out, not JSON, not a miner's answer
            errors.append("%s: %s" % (
                "tcp://127.0.0.1:%d %s" % (port, what) if kind == "cgminer"
                else "http://127.0.0.1:%d%s" % (port, what),
                str(e) or type(e).__name__,
            ))  # fmt: skip
            continue
        out.update(parsed)
        out["api"] = (
            "tcp://127.0.0.1:%d (%s)" % (port, what)
            if kind == "cgminer"
            else "http://127.0.0.1:%d%s" % (port, what)
        )
        if out["hashrate_hs"] is None and not any(g["hashrate_hs"] for g in out["gpus"]):
            out["error"] = "the API reports no hashrate yet"
        return out
    out["error"] = "API (%s port %d) did not answer: %s" % (how, port, "; ".join(errors))
    return out


def miner_stats(miners):
    """read_miner_api for each miner process ({name, pid}), one entry per pid."""
    seen, out = set(), []
    for m in miners:
        if m["pid"] in seen:
            continue
        seen.add(m["pid"])
        out.append(read_miner_api(m["name"], m["pid"]))
    return out
