"""What rigpivot knows about a rig from the inside, shared by every rig-side module.

One definition of a miner (`MINER_NAMES`, `find_miners`), one reader of systemd's unit
properties (`unit_show`), one nvidia-smi reader (`smi_query`, `smi_value`), one list of the PCI
classes a GPU shows as (`GPU_CLASSES`) and one reader of the cards lspci lists (`pci_gpus`). Ansible ships this file with each module that imports
it (module_utils); preflight's probe inlines it into the rig_facts payload it pipes to
`python3 -` (toolkit/probe.py). Standard library only, and Python 3.6 syntax: old HiveOS
images run Python 3.6.
"""

import fnmatch
import os
import re
import subprocess
import time

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
