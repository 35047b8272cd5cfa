"""Living rigs, many round trips (issue 11): three round trips on the same two rigs, a HiveOS rig
and a plain-Linux rig, with the operator's changes between each; every rollback puts the rig
back as it was just before *that* conversion, and deletes nothing it did not create. The
third conversion is cut by power failures at four points (driver install, hardening, engine
install, model download), and each following `convert` goes on to `ai`.

"As it was" is a whole-rig inventory taken over SSH before each `convert` and after each
`rollback` (`INVENTORY`: every path of the root filesystem with its type, mode, owner, group,
link target and sha256, the packages with versions and holds, every unit's enablement and
activity, the loaded nftables ruleset); the two must be equal but for `ALLOWED`, short and
justified entry by entry.

Secrets never leak (issue 5): the rack's rigs carry fresh wallets, pool and rig passwords and
a farm hash, and trip 1 runs every verb as an operator does (preflight, convert --check,
convert, status, rollback) with its own HOME, TMPDIR and Ansible log; none of them appears in
any console output, run journal, report or Ansible local file, the snapshot that holds them
is kept in the private store, and each rig's API key is shown once.

Tests run in file order on one rack (one-GPU rigs: the cheapest shapes), as an operator's
weeks would: trip 1 and what it left behind, trip 2, then trip 3 with its power cuts and its
rollback.
"""

from __future__ import annotations

import fnmatch
import json
import os
import re
import stat
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from secrets import token_hex
from typing import Any

import pytest

from tests.integration.conftest import Rack, q, wait_for
from tests.integration.endstate import (
    endpoint_answers,
    hashing,
    outcomes,
    record,
    report,
    rigpivot,
    state,
)
from tests.integration.interrupt import PowerCut, Run, TaskWatch, power_on
from tests.integration.leaks import leaks, tree_leaks
from toolkit.lab.catalog import LabSecrets

pytestmark = pytest.mark.lab

# rig01: HiveOS, one RTX 3060, driver 535. Trips 1 and 2 keep its driver (pinned and held by
# the conversion, released by rollback: quick); trip 3's conversion installs 550 and reboots,
# its rollback puts 535 back and reboots (the packages and holds are part of the inventory).
# rig02: plain Debian, one RTX 3090, driver 550 already (pinned and held by the conversion).
PROFILE = "hive-3060x1,linux-3090x1"
HIVE, LINUX = "rig01", "rig02"
RIGS = (HIVE, LINUX)
# Fresh for every run, so a hit can only come from this run's rigs.
PLANTED = {
    HIVE: LabSecrets(
        wallet="0x" + token_hex(20),
        pool_password="poolpw-" + token_hex(8),
        rig_passwd="rigpw-" + token_hex(8),
        farm_hash=token_hex(20),
    ),
    LINUX: LabSecrets(wallet="0x" + token_hex(20)),
}
SECRETS = {
    f"{rig} {field}": value
    for rig, s in PLANTED.items()
    for field, value in s.model_dump().items()
    if value
}

# The whole-rig inventory, run on the rig with `python3 -` once per inventory; JSON out.
INVENTORY = r"""
import grp, hashlib, json, os, pwd, stat, subprocess

def run(*argv):
    return subprocess.run(argv, capture_output=True, text=True, check=True).stdout

# Virtual and runtime filesystems are not the rig's disk: /proc, /sys, /dev, /run, /tmp and
# every directory something is mounted on (cgroups, the journal's tmpfs, ...).
skip = {"/proc", "/sys", "/dev", "/run", "/tmp"}
with open("/proc/self/mountinfo") as f:
    for line in f:
        point = line.split()[4].encode().decode("unicode_escape")
        if point != "/" and os.path.isdir(point):
            skip.add(point)

def named(lookup, ident):
    try:
        return f"{lookup(ident)[0]}({ident})"
    except KeyError:
        return str(ident)  # no passwd/group entry: the number alone

def sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        if path == "/var/lib/dpkg/status":
            # apt rewrites each package's Priority and Section from whichever lists it last
            # read: bookkeeping, not the rig's state; the rest of the file is compared.
            keep = (ln for ln in f if not ln.startswith((b"Priority:", b"Section:")))
            h.update(b"".join(keep))
        else:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
    return h.hexdigest()

KINDS = ((stat.S_ISLNK, "link"), (stat.S_ISDIR, "dir"), (stat.S_ISREG, "file"),
         (stat.S_ISFIFO, "fifo"), (stat.S_ISSOCK, "socket"), (stat.S_ISCHR, "chardev"),
         (stat.S_ISBLK, "blockdev"))

paths = {}
def visit(path):
    st = os.lstat(path)
    kind = next(k for test, k in KINDS if test(st.st_mode))
    entry = [kind, oct(stat.S_IMODE(st.st_mode)), named(pwd.getpwuid, st.st_uid),
             named(grp.getgrgid, st.st_gid)]
    if kind == "link":
        entry.append(os.readlink(path))
    elif kind == "file":
        entry.append(sha256(path))
    paths[path] = entry

visit("/")
for top, dirs, files in os.walk("/"):
    dirs[:] = [d for d in dirs if os.path.join(top, d) not in skip]
    for name in dirs + files:
        visit(os.path.join(top, name))

packages = {}
fmt = "${Package}:${Architecture}\t${Version}\t${db:Status-Abbrev}\n"
for line in run("dpkg-query", "-W", "-f", fmt).splitlines():
    name, version, status = line.split("\t")
    if status.strip() not in ("un", "pn"):  # known to dpkg, never installed
        packages[name] = f"{version} {status.strip()}"
unit_files = {}
for line in run("systemctl", "list-unit-files", "--no-legend", "--plain").splitlines():
    if line.strip():
        unit_files[line.split()[0]] = " ".join(line.split()[1:])
units = {}
for line in run("systemctl", "list-units", "--all", "--no-legend", "--plain").splitlines():
    f = line.split()
    if len(f) >= 4:
        units[f[0]] = " ".join(f[1:4])
print(json.dumps({
    "paths": paths, "packages": packages, "held": sorted(run("apt-mark", "showhold").split()),
    "auto": sorted(run("apt-mark", "showauto").split()),
    "unit files": unit_files, "units": units, "nftables": run("nft", "list", "ruleset"),
}))
"""

# What may differ between before `convert` and after `rollback`, and why. Each is a glob on a
# key of the inventory's sections ("section:key"; paths are keys of "paths").
ALLOWED = {
    # Logs: each run writes its own (apt's, dpkg's, logins'); kept for the operator.
    "paths:/var/log/*": "logs",
    # apt's package lists and bookkeeping: refreshed by every apt-get update (the conversion's
    # farm-mirror source adds lists for as long as it is there). What they mean to the rig
    # (installed packages and versions, held and automatically installed marks) is compared
    # in "packages" and "held".
    "paths:/var/lib/apt/*": "apt's lists and bookkeeping",
    # Caches: apt's downloaded archives and package caches, ldconfig's.
    "paths:/var/cache/*": "caches",
    # Backups the tools keep of their previous version: dpkg's status-old, and passwd-,
    # group-, shadow-, gshadow- (rewritten by every useradd and userdel: the conversion adds
    # its service user, rollback removes it).
    "paths:/var/lib/dpkg/status-old": "dpkg's backup of its previous status",
    # The OS's daily backups of dpkg's and apt's databases (dpkg-db-backup.timer), written on
    # the OS's schedule whether or not rigpivot ran: a rig is a living machine.
    "paths:/var/backups/*": "the OS's daily database backups",
    "paths:/etc/*-": "the shadow tools' backups",
    # rigpivot's own record and snapshots: kept after rollback on purpose (a retired snapshot
    # stays for audit; docs/roles.md, "The snapshot on the rig").
    "paths:/var/lib/rigpivot*": "rigpivot's record and retired snapshots",
    # Ansible's working directory on the rig: every Ansible run makes it (rollback's own too).
    "paths:/root/.ansible*": "Ansible's remote working directory",
    # The container runtime writes these at every container start (podman's bind mounts).
    "paths:/etc/hostname": "container runtime",
    "paths:/etc/hosts": "container runtime",
    "paths:/etc/resolv.conf": "container runtime",
    # systemd: the random seed it saves at boot and shutdown, the private /tmp of a service,
    # new at every start (the HiveOS rig reboots into its mining driver).
    "paths:/var/lib/systemd/random-seed": "systemd's random seed",
    "paths:/var/tmp/systemd-private-*": "services' private /tmp",
    # Boot-time oneshots that a reboot does not run again: the lab's factory setup (first boot
    # only), and HiveOS's hello, which rollback leaves to the next boot on purpose (it would
    # overwrite the restored rig.conf with the dashboard's; mining_restore_units_not_started).
    "units:lab-firstboot.service": "the lab's first boot",
    "units:hive-hello.service": "HiveOS's boot-time hello",
    # Synchronisation targets stay reached once a unit the conversion started pulled them in
    # (nftables.service: network-pre; the engines: network-online), until the next boot.
    "units:network-*.target": "reached targets",
    # The test's own SSH logins: logind's sessions and their user manager.
    "units:session-*.scope": "the test's SSH sessions",
    "units:user@*": "the test's SSH sessions",
    "units:user-*": "the test's SSH sessions",
}
SHOWN = 40  # differing keys shown on failure


def inventory(rack: Rack, rig: str) -> dict[str, Any]:
    proc = subprocess.run(
        ["ssh", "-F", str(rack.lab.ssh_config), "-o", "BatchMode=yes", rig, "python3", "-"],
        input=INVENTORY, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, f"{rig}: the inventory failed: {proc.stderr[-3000:]}"
    inv: dict[str, Any] = json.loads(proc.stdout)
    inv["nftables"] = {"ruleset": inv["nftables"]}
    inv["held"] = {"held": inv["held"], "auto": inv.pop("auto")}
    return inv


def inventories(rack: Rack) -> dict[str, dict[str, Any]]:
    with ThreadPoolExecutor(len(RIGS)) as pool:
        return dict(zip(RIGS, pool.map(lambda rig: inventory(rack, rig), RIGS), strict=True))


def allowed(section: str, key: str) -> bool:
    return any(fnmatch.fnmatchcase(f"{section}:{key}", glob) for glob in ALLOWED)


def differences(before: dict[str, Any], after: dict[str, Any]) -> list[str]:
    """Each key whose value differs (or exists on one side only), outside `ALLOWED`."""
    out = []
    for section in sorted(before.keys() | after.keys()):
        b, a = before.get(section, {}), after.get(section, {})
        for key in sorted(b.keys() | a.keys()):
            if b.get(key) != a.get(key) and not allowed(section, key):
                out.append(f"{section}: {key}\n    before: {b.get(key)}\n    after:  {a.get(key)}")
    return out


def assert_same_rig(
    rig: str, before: dict[str, Any], after: dict[str, Any], trip: int, since: str = "rollback"
) -> None:
    diff = differences(before, after)
    shown = "\n".join(diff[:SHOWN]) + (
        f"\n... and {len(diff) - SHOWN} more" if diff[SHOWN:] else ""
    )
    assert not diff, (
        f"{rig}, trip {trip}: {len(diff)} differences between before convert and after "
        f"{since}:\n{shown}"
    )


# -- the operator's changes between trips -----------------------------------------------------

# Each trip's new apt source: the same Debian mirror as the rig's own sources.list.
SUITES = {1: "bookworm-backports", 2: "bookworm-updates", 3: "bookworm-proposed-updates"}
UNNAMED = 4242  # a uid and gid with no passwd or group entry: a miner unpacked from a tarball
CRONTAB = "/var/spool/cron/crontabs/root"
WALLETS: dict[tuple[str, int], str] = {}


def cron_lines(rig: str, trip: int) -> list[str]:
    lines = [f"17 */6 * * * /opt/tools-{trip}/bin/tool report  # trip {trip}"]
    if rig == LINUX and trip == 2:
        # A miner started by cron as well as by its unit: the drain comments it out, rollback
        # must put it back as it was.
        lines.append("@reboot /opt/lolminer/mine_etc.sh --apiport 4069")
    return lines


def operator_changes(rack: Rack, rig: str, trip: int) -> None:
    """What an operator does between two trips, on one rig."""
    # Trip 1 converts with the wallet the lab planted (the secrets searched for); later trips
    # change it.
    wallet = WALLETS[rig, trip] = PLANTED[rig].wallet if trip == 1 else "0x" + token_hex(20)
    cron = "\n".join(cron_lines(rig, trip))
    script = f"""set -eu
T={trip}
echo 'deb http://deb.debian.org/debian {SUITES[trip]} main' > /etc/apt/sources.list.d/operator-$T.list
printf '# trip %s: PCIe Gen3 on the risers\\noptions nvidia NVreg_EnablePCIeGen3=1\\n' $T \\
    > /etc/modprobe.d/operator-$T.conf
update-initramfs -u  # so early boot reads the option too
install -d -m 0755 /var/spool/cron /var/spool/cron/crontabs
touch {CRONTAB} && chmod 0600 {CRONTAB}
printf '%s\\n' {q(cron)} >> {CRONTAB}
install -d -m 0755 /opt/tools-$T/bin
printf '#!/bin/sh\\necho trip %s\\n' $T > /opt/tools-$T/bin/tool
chmod 0750 /opt/tools-$T/bin/tool
chown -R {UNNAMED}:{UNNAMED} /opt/tools-$T
ln -sfn /opt/tools-$T /opt/tools-current
"""
    if rig == HIVE:
        script += f"""
install -d -m 0755 /hive-config/operator-$T /hive/miners/custom/opminer-$T
echo "trip $T: riser 3 replaced" > "/hive-config/operator-$T/notes trip $T.txt"
echo "key-$T" > /hive-config/.operator-$T && chmod 0600 /hive-config/.operator-$T
chown user:user /hive-config/.operator-$T
printf 'CUSTOM_NAME=opminer-%s\\nCUSTOM_VERSION=1.%s\\n' $T $T \\
    > /hive/miners/custom/opminer-$T/h-manifest.conf
printf '#!/usr/bin/env bash\\nexec ./opminer "$@"\\n' > /hive/miners/custom/opminer-$T/h-run.sh
chmod 0755 /hive/miners/custom/opminer-$T/h-run.sh
chown -R {UNNAMED}:{UNNAMED} /hive/miners/custom/opminer-$T
ln -sfn /hive/miners/custom/opminer-$T /hive-config/custom-$T
"""
    if rig == HIVE and trip > 1:
        script += f"""
sed -i 's/^TREX_TEMPLATE=.*/TREX_TEMPLATE="{wallet}.%WORKER_NAME%"/' /hive-config/wallet.conf
miner restart
"""
    elif trip > 1:
        script += f"""
sed -i 's/^WALLET=.*/WALLET={wallet}.{rig}/' /opt/lolminer/mine_etc.sh
systemctl restart lolminer
"""
    rack.ssh(rig, script)
    if rig == HIVE and trip > 1:
        # The flight sheet changed on the dashboard, which pushed it to the rig: `hello` fetches
        # the dashboard's copy at every boot.
        rig_id = rack.ssh(rig, ". /hive-config/rig.conf; echo $RIG_ID").strip()
        dashboard = rack.lab.state_dir / "farm" / "hive" / rig_id / "wallet.conf"
        dashboard.write_text(rack.ssh(rig, "cat /hive-config/wallet.conf"))
    wait_for(lambda: hashing(rack, rig), 90, f"{rig} to hash with the new wallet")


def assert_operator_changes_kept(rack: Rack, rig: str, inv: dict[str, Any], trips: int) -> None:
    """Every change the operator made in trips 1..`trips` is still there after rollback."""
    paths = inv["paths"]

    def has(path: str, kind: str, owner: str | None = None, target: str | None = None) -> None:
        entry = paths.get(path)
        assert entry and entry[0] == kind, f"{rig}: {path} is gone or changed: {entry}"
        assert owner is None or entry[2] == owner, f"{rig}: {path} owner: {entry}"
        assert target is None or entry[4] == target, f"{rig}: {path} target: {entry}"

    for t in range(1, trips + 1):
        has(f"/etc/apt/sources.list.d/operator-{t}.list", "file")
        has(f"/etc/modprobe.d/operator-{t}.conf", "file")
        has(f"/opt/tools-{t}/bin/tool", "file", owner=str(UNNAMED))
        if rig == HIVE:
            has(f"/hive-config/operator-{t}/notes trip {t}.txt", "file")
            has(f"/hive-config/.operator-{t}", "file", owner="user(1000)")
            has(f"/hive/miners/custom/opminer-{t}/h-run.sh", "file", owner=str(UNNAMED))
            has(f"/hive-config/custom-{t}", "link", target=f"/hive/miners/custom/opminer-{t}")
    has("/opt/tools-current", "link", target=f"/opt/tools-{trips}")
    crontab = rack.ssh(rig, f"cat {CRONTAB}").splitlines()
    for t in range(1, trips + 1):
        for line in cron_lines(rig, t):
            assert line in crontab, f"{rig}: crontab line of trip {t} lost: {line!r} ({crontab})"
    config = "/hive-config/wallet.conf" if rig == HIVE else "/opt/lolminer/mine_etc.sh"
    assert WALLETS[rig, trips] in rack.ssh(rig, f"cat {config}"), f"{rig}: the wallet went back"


# -- the trips --------------------------------------------------------------------------------


KEEP_535 = " nvidia_driver_branch=535 nvidia_driver_version=535.183.01 cuda_version=12-2"


@pytest.fixture(scope="module")
def rack(lab_factory) -> Rack:
    rack = lab_factory(2, PROFILE, PLANTED)
    keep_driver(rack, True)
    return rack


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("trips")


@pytest.fixture(scope="module")
def journal(work: Path) -> Path:
    """The module's journal root; the private snapshot store is beside it (work/snapshots)."""
    return work / "runs"


@pytest.fixture(scope="module")
def env(work: Path) -> dict[str, str]:
    """Trip 1's CLI environment: its own HOME and TMPDIR (Ansible's local temp ~/.ansible/tmp,
    its SSH control sockets, anything a library puts in /tmp land there, to be searched) and
    Ansible's log switched on (operators do), wide output (no folding)."""
    for d in ("home", "tmp"):
        (work / d).mkdir(exist_ok=True)
    return {
        **os.environ,
        "HOME": str(work / "home"),
        "TMPDIR": str(work / "tmp"),
        "ANSIBLE_LOG_PATH": str(work / "ansible.log"),
        "COLUMNS": "200",
    }


TRIP1: dict[str, Any] = {}  # trip 1's console output per verb, and its run reports


def keep_driver(rack: Rack, keep: bool) -> None:
    """The HiveOS rig keeps its factory 535 driver (and the CUDA it supports), or takes the
    plan's 550 with its reboot."""
    ini = rack.lab.inventory.read_text().replace(KEEP_535, "")
    if keep:
        ini, n = re.subn(rf"^({HIVE} ansible_host=.*)$", rf"\1{KEEP_535}", ini, flags=re.M)
        assert n == 1, ini
    rack.lab.inventory.write_text(ini)


BEFORE: dict[int, dict[str, dict[str, Any]]] = {}  # trip -> rig -> inventory before convert


def start_trip(rack: Rack, trip: int) -> None:
    for rig in RIGS:
        assert state(rack, rig) == "mining", f"{rig} is not mining at the start of trip {trip}"
        operator_changes(rack, rig, trip)
    BEFORE[trip] = inventories(rack)


BLACKLIST = "etc/modprobe.d/blacklist-nouveau.conf"  # nvidia_driver's


def initramfs(rack: Rack, rig: str) -> list[str]:
    """The modprobe files in the rig's initramfs (early boot's copy)."""
    return rack.ssh(rig, "tar -tzf /boot/initrd.img-$(uname -r)").split()


def assert_serving(rack: Rack, rig: str) -> None:
    assert BLACKLIST in initramfs(rack, rig), f"{rig}: nouveau is not blacklisted in early boot"
    rec = record(rack, rig)
    assert rec.get("state") == "ai", f"{rig}: {rec}"
    ports = rec.get("facts", {}).get("validated_ports") or []
    assert ports, f"{rig}: state ai without validated ports: {rec}"
    for port in ports:
        endpoint_answers(rack, rig, int(port))


def end_trip(rack: Rack, journal, trip: int) -> None:
    """`rollback`, then the rig must be as it was just before this trip's convert."""
    assert trip in BEFORE, f"trip {trip} never started"
    proc = rigpivot("rollback", "-i", str(rack.lab.inventory), "--yes", "--journal", str(journal))
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    assert_back_as_before(rack, journal, trip)


def assert_back_as_before(rack: Rack, journal, trip: int) -> None:
    assert outcomes(report(journal)) == dict.fromkeys(RIGS, "mining")
    for rig in RIGS:
        wait_for(lambda rig=rig: hashing(rack, rig), 90, f"{rig} to hash again")
        rack.wait_ready(rig)
    after = inventories(rack)
    for rig in RIGS:
        assert BLACKLIST not in initramfs(rack, rig), f"{rig}: early boot still blacklists nouveau"
        assert state(rack, rig) == "mining"
        assert_same_rig(rig, BEFORE[trip][rig], after[rig], trip)
        assert_operator_changes_kept(rack, rig, after[rig], trip)


def test_secrets_are_planted_on_the_rigs_and_the_dashboard(rack: Rack):
    hive = PLANTED[HIVE]
    conf = rack.ssh(HIVE, "cat /hive-config/rig.conf /hive-config/wallet.conf")
    assert f'RIG_PASSWD="{hive.rig_passwd}"' in conf and f'FARM_HASH="{hive.farm_hash}"' in conf
    assert f"{hive.wallet}.%WORKER_NAME%" in conf and f'TREX_PASS="{hive.pool_password}"' in conf
    # hello restores the dashboard's copy at every boot (the driver step reboots): same secrets.
    dashboard = rack.ssh(HIVE, ". /hive-config/rig.conf; for f in rig.conf wallet.conf; do "
                               "curl -sf $HIVE_HOST_URL/$RIG_ID/$f; done")  # fmt: skip
    assert dashboard == conf
    script = rack.ssh(LINUX, "cat /opt/lolminer/mine_etc.sh")
    assert f"WALLET={PLANTED[LINUX].wallet}.{LINUX}" in script
    # and the miners mine with them
    wait_for(lambda: hashing(rack, HIVE), 60, "the HiveOS miner to hash")
    assert PLANTED[LINUX].wallet in rack.ssh(
        LINUX, "cat /proc/$(pgrep -f lolMiner | head -1)/cmdline"
    )


@pytest.mark.timeout(1500)
def test_trip_1_every_verb_as_an_operator_runs_them_puts_the_rig_back(rack, journal, work, env):
    """preflight, convert --check, convert, status, rollback: each one's stdout and stderr kept
    for the secrets tests that follow."""
    start_trip(rack, 1)
    inv = str(rack.lab.inventory)
    steps = {
        "preflight": ["preflight", "-i", inv, "--json", str(work / "preflight.json"),
                      "--html", str(work / "preflight.html")],
        "convert --check": ["convert", "-i", inv, "--check", "--journal", str(journal)],
        "convert": ["convert", "-i", inv, "--yes", "--journal", str(journal)],
        "status": ["status", "-i", inv],
        "rollback": ["rollback", "-i", inv, "--yes", "--journal", str(journal)],
    }  # fmt: skip
    console: dict[str, str] = {}
    for name, args in steps.items():
        proc = subprocess.run(["rigpivot", *args], capture_output=True, text=True, env=env,
                              cwd=work, timeout=1200)  # fmt: skip
        console[name] = proc.stdout + proc.stderr
        assert proc.returncode == 0, f"{name} exited {proc.returncode}:\n{console[name][-4000:]}"
        if name == "convert --check":
            # --check changed nothing: each rig mines on, the whole rig as it was.
            after_check = inventories(rack)
            for rig in RIGS:
                assert state(rack, rig) == "mining" and hashing(rack, rig), rig
                assert_same_rig(rig, BEFORE[1][rig], after_check[rig], 1, "convert --check")
        if name == "convert":
            assert outcomes(report(journal)) == dict.fromkeys(RIGS, "converted")
            for rig in RIGS:
                assert_serving(rack, rig)
    TRIP1["console"] = console
    TRIP1["reports"] = [json.loads(p.read_text()) for p in sorted(journal.glob("*/report.json"))]
    assert_back_as_before(rack, journal, 1)


def trip1() -> dict[str, Any]:
    assert TRIP1, "trip 1 did not run to its end"
    return TRIP1


def test_trip_1_ran_check_convert_and_rollback_with_diffs():
    check, convert, rollback = trip1()["reports"]
    assert outcomes(check) == dict.fromkeys(RIGS, "would-convert")
    assert outcomes(convert) == dict.fromkeys(RIGS, "converted")
    assert outcomes(rollback) == dict.fromkeys(RIGS, "mining")
    # --check ran with diffs (the mode that would print a config's content)
    cmdline = Path(check["journal"]) / "ansible" / "001-convert" / "env" / "cmdline"
    assert "--check --diff" in cmdline.read_text()


def test_no_secret_in_any_console_output():
    found = [hit for verb, text in trip1()["console"].items()
             for hit in leaks(text, f"`{verb}` output", SECRETS)]  # fmt: skip
    assert found == []


def test_no_secret_in_the_journal_or_the_reports(journal, work: Path):
    trip1()
    assert (work / "preflight.json").exists() and (work / "preflight.html").exists()
    assert list(journal.glob("*/ansible/*/artifacts/*/job_events/*.json")), "no events?"
    found = tree_leaks(journal, SECRETS)
    found += leaks((work / "preflight.json").read_bytes(), "preflight.json", SECRETS)
    found += leaks((work / "preflight.html").read_bytes(), "preflight.html", SECRETS)
    assert found == []


def test_no_secret_in_ansibles_local_files(work: Path):
    trip1()
    assert (work / "ansible.log").stat().st_size > 0, "Ansible's log was not written"
    found = leaks((work / "ansible.log").read_bytes(), "ansible.log", SECRETS)
    found += tree_leaks(work / "home", SECRETS) + tree_leaks(work / "tmp", SECRETS)
    assert found == []


def test_the_snapshots_are_in_the_private_store_named_by_checksum(work: Path):
    store = work / "snapshots"  # beside the journal root
    assert stat.S_IMODE(store.stat().st_mode) == 0o700
    convert = trip1()["reports"][1]
    assert convert["snapshot_store"] == str(store)
    for r in convert["rigs"]:
        folder = store / r["host"]
        archive = folder / f"{r['snapshot']['id']}.tar.gz"
        assert stat.S_IMODE(folder.stat().st_mode) == 0o700
        assert {stat.S_IMODE(f.stat().st_mode) for f in folder.iterdir()} == {0o600}
        digest = subprocess.run(["sha256sum", str(archive)], capture_output=True, text=True,
                                check=True).stdout.split()[0]  # fmt: skip
        assert r["snapshot"]["sha256"] == digest
    # The store does hold them (the search above would have found them there): rollback's
    # backup is whole.
    held = tree_leaks(store, SECRETS)
    assert {h.split(" in ")[0] for h in held} == set(SECRETS)


def test_each_rigs_api_key_was_shown_once_and_is_kept_only_in_the_private_store(
    journal, work: Path
):
    console = trip1()["console"]
    store = work / "snapshots"
    keys = {f"{rig} API key": (store / rig / "api-key").read_text().strip() for rig in RIGS}
    for rig in RIGS:
        assert stat.S_IMODE((store / rig / "api-key").stat().st_mode) == 0o600
    assert all(len(key) >= 32 for key in keys.values()), "a short key"
    assert len(set(keys.values())) == len(keys), "two rigs share a key"
    # shown once, by the convert that made it, naming where it is kept
    for what, key in keys.items():
        assert console["convert"].count(key) == 1, what
        rig = what.split()[0]
        assert (
            f"API key of {rig}, shown this once (kept in {store / rig / 'api-key'}"
            in (console["convert"])
        )
    found = [hit for verb, text in console.items() if verb != "convert"
             for hit in leaks(text, f"`{verb}` output", keys)]  # fmt: skip
    found += tree_leaks(journal, keys) + leaks((work / "ansible.log").read_bytes(),
                                                "ansible.log", keys)  # fmt: skip
    found += tree_leaks(work / "home", keys) + tree_leaks(work / "tmp", keys)
    assert found == []


@pytest.mark.timeout(1200)
def test_trip_2_puts_the_rig_back_as_it_was_before_that_conversion(rack, journal):
    start_trip(rack, 2)
    first = {rig: record(rack, rig) for rig in RIGS}
    proc = rigpivot("convert", "-i", str(rack.lab.inventory), "--yes", "--journal", str(journal))
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    assert outcomes(report(journal)) == dict.fromkeys(RIGS, "converted")
    for rig in RIGS:
        assert_serving(rack, rig)
        # A new conversion took a new snapshot; trip 1's stays retired.
        retired = first[rig]["facts"]["retired_snapshots"]
        assert retired, f"{rig}: trip 1's rollback retired no snapshot"
        assert record(rack, rig)["facts"]["snapshot_id"] not in retired
        assert record(rack, rig)["facts"]["retired_snapshots"] == retired
    end_trip(rack, journal, 2)


def cut(rack: Rack, journal, cuts: dict[str, PowerCut], states: dict[str, str]) -> None:
    """One `convert` of both rigs, each cut at its point; both come back where they stopped."""
    run = Run(rack, journal)
    rc = run.wait(timeout=1200)
    caught = {rig: c.done() for rig, c in cuts.items()}
    assert all(caught.values()), f"a cut never came: {caught}\n{run.output}"
    assert rc == 3, run.output  # rigs unreachable, none failed
    rep = report(journal)
    assert outcomes(rep) == dict.fromkeys(RIGS, "unreachable"), run.output
    assert not list(journal.glob(f"{rep['run_id']}/ansible/*-rollback")), "a rollback was tried"
    for row in rep["rigs"]:
        rig = row["host"]
        assert f"unreachable during {states[rig]}" in row["detail"], row
        power_on(rack, rig)
        assert not hashing(rack, rig), f"{rig} mines again after its power came back"


@pytest.mark.timeout(1800)
def test_power_cuts_at_four_points_of_a_conversion_and_the_next_convert_finishes(rack, journal):
    """Trip 3's conversion, cut twice on each rig; the third `convert` finishes both."""
    keep_driver(rack, False)
    start_trip(rack, 3)
    # The HiveOS rig in the middle of the new driver's postinst (the old one already
    # removed); the Linux rig as hardening loads its firewall (the SSH drop-in in place).
    cut(
        rack, journal,
        {HIVE: PowerCut(rack, HIVE, needle="nvidia-driver-550.postinst"),
         LINUX: PowerCut(rack, LINUX, when=TaskWatch(journal, LINUX, "net_hardening",
                                                     "Load the ruleset"))},
        {HIVE: "nvidia_driver", LINUX: "net_hardening"},
    )  # fmt: skip
    # The HiveOS rig while it downloads its model; the Linux rig while `python3 -m venv`
    # builds the engine's virtualenv (ensurepip: the venv without pip a cut used to leave).
    cut(
        rack, journal,
        {HIVE: PowerCut(rack, HIVE, when=TaskWatch(journal, HIVE, "inference_server",
                                                   "Ensure the model is downloaded")),
         LINUX: PowerCut(rack, LINUX, needle="ensurepip")},
        {HIVE: "inference_server", LINUX: "inference_server"},
    )  # fmt: skip
    proc = rigpivot("convert", "-i", str(rack.lab.inventory), "--yes", "--journal", str(journal))
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    assert outcomes(report(journal)) == dict.fromkeys(RIGS, "converted")
    for rig in RIGS:
        assert rack.ssh(rig, "dpkg --audit").strip() == ""
        assert_serving(rack, rig)


@pytest.mark.timeout(1200)
def test_the_third_rollback_after_the_power_cuts_puts_the_rig_back(rack, journal):
    end_trip(rack, journal, 3)
