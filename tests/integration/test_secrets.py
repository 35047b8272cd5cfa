"""Secrets never leak (issue 5): wallets, pool and rig passwords and farm hashes planted in the
lab's mining configs appear in no console output, run journal, report or Ansible local file of
preflight, convert --check, convert, status and rollback; the snapshot that holds them is kept
in the private store, and rollback still puts the configs back byte for byte.

One rack for the module: a HiveOS rig and a plain-Linux rig, both fit. Tests run in file order.
"""

from __future__ import annotations

import base64
import gzip
import io
import json
import os
import re
import stat
import subprocess
import tarfile
from collections.abc import Iterator
from pathlib import Path
from secrets import token_hex

import pytest

from tests.integration.conftest import Rack, wait_for
from toolkit.lab.catalog import LabSecrets

pytestmark = pytest.mark.lab

PROFILE = "hive-3060x1,linux-3090x1"
HIVE, LINUX = "rig01", "rig02"
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
CONFIGS = ("/hive-config", "/opt/lolminer", "/etc/systemd/system/lolminer.service")


def _encodings(secret: str) -> list[bytes]:
    """The secret as bytes, and the part of its base64 that any base64 of data containing it
    holds (one per alignment): slurp results and job events carry file content as base64."""
    raw = secret.encode()
    forms = [raw]
    for pad in range(3):
        enc = base64.b64encode(b"\0" * pad + raw)
        forms.append(enc[4 if pad else 0 : -4])
    return forms


def _contents(path: Path) -> Iterator[bytes]:
    """A file's bytes, and what a gzip or tar archive in it holds."""
    data = path.read_bytes()
    yield data
    if data[:2] == b"\x1f\x8b":
        data = gzip.decompress(data)
        yield data
    if tarfile.is_tarfile(io.BytesIO(data)):
        with tarfile.open(fileobj=io.BytesIO(data)) as tar:
            for member in tar.getmembers():
                f = tar.extractfile(member) if member.isfile() else None
                if f is not None:
                    yield f.read()


def leaks(data: bytes | str, where: str, secrets: dict[str, str] = SECRETS) -> list[str]:
    if isinstance(data, str):
        # Rich folds long cells over lines and draws borders: look at the text without them.
        data = (data + "\n" + re.sub(r"[\s│┃|]", "", data)).encode()
    return [
        f"{what} in {where}"
        for what, secret in secrets.items()
        if any(form in data for form in _encodings(secret))
    ]


def tree_leaks(root: Path, secrets: dict[str, str] = SECRETS) -> list[str]:
    found: list[str] = []
    for path in sorted(p for p in root.rglob("*") if p.is_file() and not p.is_symlink()):
        for blob in _contents(path):
            found += leaks(blob, str(path), secrets)
    return sorted(set(found))


@pytest.fixture(scope="module")
def rack(lab_factory) -> Rack:
    return lab_factory(2, PROFILE, PLANTED)


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("secrets")


@pytest.fixture(scope="module")
def before(rack: Rack) -> dict[str, dict[str, str]]:
    return {rig: rack.sha256s(rig, *CONFIGS) for rig in rack.rigs}


@pytest.fixture(scope="module")
def env(work: Path) -> dict[str, str]:
    """The CLI's environment: its own HOME and TMPDIR (Ansible's local temp ~/.ansible/tmp,
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


@pytest.fixture(scope="module")
def console(rack: Rack, work: Path, env: dict[str, str], before) -> dict[str, str]:
    """Every verb, as an operator runs them; each one's stdout and stderr."""
    inv = str(rack.lab.inventory)
    journal = str(work / "runs")
    steps = {
        "preflight": ["preflight", "-i", inv, "--json", str(work / "preflight.json"),
                      "--html", str(work / "preflight.html")],
        "convert --check": ["convert", "-i", inv, "--check", "--journal", journal],
        "convert": ["convert", "-i", inv, "--yes", "--journal", journal],
        "status": ["status", "-i", inv],
        "rollback": ["rollback", "-i", inv, "--yes", "--journal", journal],
    }  # fmt: skip
    out: dict[str, str] = {}
    for name, args in steps.items():
        proc = subprocess.run(["rigpivot", *args], capture_output=True, text=True, env=env,
                              cwd=work, timeout=1200)  # fmt: skip
        out[name] = proc.stdout + proc.stderr
        assert proc.returncode == 0, f"{name} exited {proc.returncode}:\n{out[name][-4000:]}"
    return out


def reports(work: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted((work / "runs").glob("*/report.json"))]


def test_secrets_are_planted_on_the_rigs_and_the_dashboard(rack: Rack, before):
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
    wait_for(lambda: float(rack.ssh(HIVE, "cat /run/hive/khs", check=False) or 0) > 0, 60,
             "the HiveOS miner to hash")  # fmt: skip
    assert PLANTED[LINUX].wallet in rack.ssh(
        LINUX, "cat /proc/$(pgrep -f lolMiner | head -1)/cmdline"
    )
    assert before[HIVE] and before[LINUX]


def test_every_verb_ran(console, work: Path):
    check, convert, rollback = reports(work)
    assert {r["host"]: r["outcome"] for r in check["rigs"]} == dict.fromkeys(
        [HIVE, LINUX], "would-convert"
    )
    assert {r["host"]: r["outcome"] for r in convert["rigs"]} == dict.fromkeys(
        [HIVE, LINUX], "converted"
    )
    assert {r["host"]: r["outcome"] for r in rollback["rigs"]} == dict.fromkeys(
        [HIVE, LINUX], "mining"
    )
    # --check ran with diffs (the mode that would print a config's content)
    cmdline = Path(check["journal"]) / "ansible" / "001-convert" / "env" / "cmdline"
    assert "--check --diff" in cmdline.read_text()


def test_no_secret_in_any_console_output(console):
    found = [hit for verb, text in console.items() for hit in leaks(text, f"`{verb}` output")]
    assert found == []


def test_no_secret_in_the_journal_or_the_reports(console, work: Path):
    assert (work / "preflight.json").exists() and (work / "preflight.html").exists()
    assert list((work / "runs").glob("*/ansible/*/artifacts/*/job_events/*.json")), "no events?"
    found = tree_leaks(work / "runs")
    found += leaks((work / "preflight.json").read_bytes(), "preflight.json")
    found += leaks((work / "preflight.html").read_bytes(), "preflight.html")
    assert found == []


def test_no_secret_in_ansibles_local_files(console, work: Path):
    assert (work / "ansible.log").stat().st_size > 0, "Ansible's log was not written"
    found = leaks((work / "ansible.log").read_bytes(), "ansible.log")
    found += tree_leaks(work / "home") + tree_leaks(work / "tmp")
    assert found == []


def test_the_snapshots_are_in_the_private_store_named_by_checksum(console, work: Path):
    store = work / "snapshots"  # beside the journal root
    assert stat.S_IMODE(store.stat().st_mode) == 0o700
    convert = reports(work)[1]
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
    held = tree_leaks(store)
    assert {h.split(" in ")[0] for h in held} == set(SECRETS)


def test_rollback_restored_the_configs_byte_for_byte(rack: Rack, console, before):
    for rig in rack.rigs:
        assert rack.sha256s(rig, *CONFIGS) == before[rig], f"{rig}: configs differ"
    assert rack.ssh(HIVE, "systemctl is-active hive-watchdog").strip() == "active"
    wait_for(lambda: float(rack.ssh(HIVE, "cat /run/hive/khs", check=False) or 0) > 0, 60,
             "the HiveOS miner to hash again")  # fmt: skip
    wait_for(lambda: rack.ssh(LINUX, "pgrep -f lolMiner", check=False) != "", 60,
             "lolMiner to run again")  # fmt: skip


def test_each_rigs_api_key_was_shown_once_and_is_kept_only_in_the_private_store(
    console, work: Path
):
    store = work / "snapshots"
    keys = {f"{rig} API key": (store / rig / "api-key").read_text().strip() for rig in PLANTED}
    for rig in PLANTED:
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
    found += tree_leaks(work / "runs", keys) + leaks((work / "ansible.log").read_bytes(),
                                                      "ansible.log", keys)  # fmt: skip
    found += tree_leaks(work / "home", keys) + tree_leaks(work / "tmp", keys)
    assert found == []
