"""When the farm breaks: the mirror down, a broken package, a full disk, an engine that never
answers, two runs at once, a batch failing past --max-fail-percent. After each, every rig is
either `ai` (endpoints answer) or `mining` (miner hashing, files as before by checksum),
never in between; the run report names the step that failed, and the exit code says so.

One rack of three plain-Linux 1x RTX 3090 rigs (the profile that converts fastest) for the
module. The faults that belong to one rig are injected together into one convert run, one
per rig, so the rack goes through two convert runs in all (each with its rollbacks).
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.integration.conftest import Rack, wait_for
from tests.integration.endstate import (
    assert_ai_or_mining,
    outcomes,
    record,
    report,
    rigpivot,
)
from toolkit.lab import podman as pm
from toolkit.lab.models import MODEL_FILE
from toolkit.lab.rack import Lab

pytestmark = pytest.mark.lab

RIGS = ["rig01", "rig02", "rig03"]
MODELS = "/var/lib/rigpivot/models"
# A newer cuda-toolkit-12-2 than the lab's, whose postinst fails; rig03 is pinned to that series.
BROKEN_DEB = "cuda-toolkit-12-2_12.2.9-1lab_amd64.deb"


@pytest.fixture(scope="module")
def rack(lab_factory) -> Rack:
    return lab_factory(3, "linux-3090x1")


def farm_dir(lab: Lab) -> Path:
    """The farm mirror's files, bind-mounted into the farm container as /srv/farm."""
    return lab.state_dir / "farm"


def mirror_answers(lab: Lab) -> bool:
    url = f"http://127.0.0.1:{lab.state().farm_http_port}/apt/Release"
    try:
        with urllib.request.urlopen(url, timeout=2) as r:
            return bool(r.status == 200)
    except OSError:
        return False


def stop_mirror(lab: Lab) -> None:
    pm.podman("stop", "-t", "2", lab.farm_container)


def start_mirror(lab: Lab) -> None:
    pm.podman("start", lab.farm_container)
    wait_for(lambda: mirror_answers(lab), 60, "the farm mirror to answer again", every=0.5)


@contextlib.contextmanager
def mirror_down(lab: Lab) -> Iterator[None]:
    """The farm container (apt mirror, model store) stopped; started again on the way out."""
    stop_mirror(lab)
    try:
        yield
    finally:
        start_mirror(lab)


def reindex(lab: Lab) -> None:
    Lab._build_apt_repo(farm_dir(lab) / "apt")


def build_broken_deb(out: Path) -> None:
    """cuda-toolkit-12-2 whose postinst fails, as a bad build on the mirror would."""
    root = out.parent / "broken-pkg"
    (root / "DEBIAN").mkdir(parents=True)
    (root / "usr/local/cuda-12.2").mkdir(parents=True)
    (root / "usr/local/cuda-12.2/version.json").write_text('{"cuda": {"version": "12.2.9"}}\n')
    (root / "DEBIAN/control").write_text(
        "Package: cuda-toolkit-12-2\nVersion: 12.2.9-1lab\nArchitecture: amd64\n"
        "Maintainer: rigpivot lab <lab@rigpivot.invalid>\nDepends: nvidia-driver (>= 535.104.05)\n"
        "Description: a CUDA toolkit build whose postinst fails\n"
    )
    postinst = root / "DEBIAN/postinst"
    postinst.write_text("#!/bin/sh\necho 'cuda-toolkit-12-2: cannot register' >&2\nexit 1\n")
    postinst.chmod(0o755)
    subprocess.run(["dpkg-deb", "--root-owner-group", "--build", str(root), str(out)],
                   check=True, capture_output=True)  # fmt: skip


def with_host_vars(inventory: Path, host_vars: dict[str, str]) -> str:
    """The lab's farm file with extra variables on some host lines."""
    lines = []
    for line in inventory.read_text().splitlines():
        name = line.split(" ", 1)[0]
        lines.append(f"{line} {host_vars[name]}" if name in host_vars and " " in line else line)
    return "\n".join(lines) + "\n"


def rig_of(rep: dict[str, Any], host: str) -> dict[str, Any]:
    """A rig's line of the run report, its detail on one line (messages quote journals)."""
    rig = dict(next(r for r in rep["rigs"] if r["host"] == host))
    rig["detail"] = " ".join(rig["detail"].split())
    return rig


def untouched(rack: Rack, rig: str) -> bool:
    return rack.ssh(rig, "test -e /var/lib/rigpivot && echo yes", check=False) == ""


# -- the mirror down; a batch failing past --max-fail-percent ------------------------------


@pytest.fixture(scope="module")
def mirror_down_run(rack: Rack, journal: Path, before) -> dict[str, Any]:
    """convert in batches of one while the mirror is down: the first rig fails at the driver
    step's apt refresh and is rolled back (its driver never changed: nothing to fetch), and
    the run stops before the next batch (--max-fail-percent 0)."""
    with mirror_down(rack.lab):
        proc = rigpivot("convert", "-i", str(rack.lab.inventory), "--yes", "--batch-size", "1",
                        "--max-fail-percent", "0", "--journal", str(journal))  # fmt: skip
    return {"proc": proc, "report": report(journal)}


def test_mirror_down_rolls_the_failed_rig_back_to_mining(rack, before, mirror_down_run):
    proc, rep = mirror_down_run["proc"], mirror_down_run["report"]
    assert proc.returncode == 1, proc.stdout[-3000:] + proc.stderr[-3000:]
    rig01 = rig_of(rep, "rig01")
    assert rig01["outcome"] == "rolled-back", rig01
    assert rig01["detail"].startswith("convert failed at nvidia_driver: "), rig01
    assert "mirror.lab" in rig01["detail"], rig01  # the operator sees which mirror failed
    assert assert_ai_or_mining(rack, "rig01", before["rig01"]) == "mining"
    assert record(rack, "rig01")["step"] == "mining_restore"


def test_a_batch_over_max_fail_percent_stops_the_run_before_the_next(rack, before, mirror_down_run):
    rep = mirror_down_run["report"]
    assert outcomes(rep) == {"rig01": "rolled-back", "rig02": "not-started",
                             "rig03": "not-started"}  # fmt: skip
    assert rep["stopped_early"].startswith("batch 1: 1 of 1 rigs failed (100% > ")
    assert "2 rigs not started" in rep["stopped_early"]
    assert "stopped early" in mirror_down_run["proc"].stdout
    # only the first batch's plays ran
    plays = sorted(p.name for p in (Path(rep["journal"]) / "ansible").iterdir())
    assert [p for p in plays if "lease" not in p] == ["001-convert", "001-rollback"]
    for rig in ("rig02", "rig03"):
        assert untouched(rack, rig), f"{rig} was touched"
        assert assert_ai_or_mining(rack, rig, before[rig]) == "mining"


# -- one fault per rig in one run; a second run at the same time ---------------------------


@pytest.fixture(scope="module")
def faulty_run(rack: Rack, journal: Path, before, tmp_path_factory) -> dict[str, Any]:
    """One convert of the three rigs, each meeting its own fault:
    rig01: the filesystem holding the model directory is full (a tmpfs with no free inode,
           mounted over it: preflight still sees gigabytes free, the download cannot write);
    rig02: the model store serves a corrupt model: the engine dies at start and systemd keeps
           restarting it (caught in seconds under the default 10-minute readiness timeout);
    rig03: pinned to CUDA 12-2, whose newest package on the mirror fails in its postinst.
    While it runs, a second convert of the same farm file is started and must refuse.
    The faults are undone before the tests look at the rigs' end state."""
    lab = rack.lab
    wd = tmp_path_factory.mktemp("faulty")
    inv = wd / "farm.ini"
    inv.write_text(with_host_vars(lab.inventory, {
        "rig03": "cuda_version=12-2",
    }))  # fmt: skip

    apt, models = farm_dir(lab) / "apt", farm_dir(lab) / "models"
    build_broken_deb(apt / BROKEN_DEB)
    reindex(lab)
    good_model = models / MODEL_FILE
    kept_model = wd / MODEL_FILE
    os.replace(good_model, kept_model)
    (models / f".{MODEL_FILE}.tmp").write_bytes(b"GGUF\x03\x00\x00\x00" + b"\xff" * 4096)
    os.replace(models / f".{MODEL_FILE}.tmp", good_model)
    mount = pm.exec_in(rack.container("rig01"), "sh", "-c",
                       f"mkdir -p {MODELS} && mount -t tmpfs -o size=64g,nr_inodes=1 "
                       f"models-disk {MODELS}")  # fmt: skip
    assert mount.returncode == 0, mount.stderr
    runs_before = set(journal.iterdir())
    first: subprocess.Popen[str] | None = None
    try:
        args = ["convert", "-i", str(inv), "--yes", "--batch-size", "3",
                "--max-fail-percent", "100", "--journal", str(journal)]  # fmt: skip
        first = subprocess.Popen(["rigpivot", *args], stdout=subprocess.PIPE,
                                 stderr=subprocess.PIPE, text=True)  # fmt: skip
        # The second run comes from another folder, with another journal: only the rigs' own
        # leases can tell it the first one is at work.
        wait_for(lambda: "lease" in record(rack, "rig01"), 300,
                 "the first convert to hold the rigs' leases", every=0.5)  # fmt: skip
        elsewhere = wd / "elsewhere"
        elsewhere.mkdir()
        second = subprocess.run(
            ["rigpivot", *args[:-1], str(elsewhere / "runs")], cwd=elsewhere,
            capture_output=True, text=True, timeout=300,
        )  # fmt: skip
        out, err = first.communicate(timeout=1800)
        new_runs = list(set(journal.iterdir()) - runs_before)
        models_disk = rack.ssh("rig01", f"mountpoint -q {MODELS} && ls -A {MODELS} | wc -l",
                               check=False)  # fmt: skip
        leases_left = {r: record(rack, r)["lease"] for r in ("rig01", "rig02", "rig03")
                       if "lease" in record(rack, r)}  # fmt: skip
        return {"first": first, "first_out": out + err, "second": second,
                "leases_left": leases_left,
                "report": report(journal), "new_runs": new_runs,
                "models_disk_files": models_disk.strip()}  # fmt: skip
    finally:
        if first is not None and first.poll() is None:
            first.kill()
        os.replace(kept_model, good_model)
        (apt / BROKEN_DEB).unlink(missing_ok=True)
        reindex(lab)
        pm.exec_in(rack.container("rig01"), "sh", "-c", f"umount {MODELS}; rmdir {MODELS}")


def test_a_second_convert_from_elsewhere_refuses_naming_who_holds_the_rigs(faulty_run):
    first, second = faulty_run["first"], faulty_run["second"]
    assert second.returncode == 5, second.stdout[-2000:] + second.stderr[-2000:]
    err = " ".join(second.stderr.split())
    assert "leased to another run, so nothing was changed" in err, err
    for rig in ("rig01", "rig02", "rig03"):
        assert f"{rig}: `rigpivot convert` pid {first.pid} by " in err, err
    assert f"@{socket.gethostname()} (run " in err and "until 20" in err, err
    assert "wait for that run to end" in err
    # the first run's journal is the only new one here; its rigs' leases are all let go
    assert faulty_run["new_runs"] == [Path(faulty_run["report"]["journal"])]
    assert not faulty_run["leases_left"], faulty_run["leases_left"]
    assert first.returncode == 1, faulty_run["first_out"][-3000:]


def test_disk_full_at_model_download_names_the_disk_and_rolls_back(rack, before, faulty_run):
    rig01 = rig_of(faulty_run["report"], "rig01")
    assert rig01["outcome"] == "rolled-back", rig01
    detail = rig01["detail"]
    assert detail.startswith("convert failed at inference_server: Fail, naming the model"), detail
    assert (
        f"the disk holding {MODELS} is full: models-disk (tmpfs, size 64G, free 64G, free "
        "inodes 0); free space there, then run convert again." in detail
    ), detail
    assert f"Downloading {MODEL_FILE} from http://mirror.lab:8080/models/" in detail
    assert assert_ai_or_mining(rack, "rig01", before["rig01"]) == "mining"
    # the models disk stayed mounted, emptied
    assert faulty_run["models_disk_files"] == "0"


def test_engine_never_ready_fails_serve_and_rolls_back(rack, before, faulty_run):
    rig02 = rig_of(faulty_run["report"], "rig02")
    assert rig02["outcome"] == "rolled-back", rig02
    detail = rig02["detail"]
    assert detail.startswith("convert failed at inference_server: Fail when an instance did not"
                             " come up."), detail  # fmt: skip
    # The default readiness timeout is 10 minutes: the crash loop is noticed long before.
    assert (
        "did not answer /v1/models (systemd restarted it 2 times while waiting: the engine keeps "
        "crashing); the engine's last words: ValueError: Failed to load model from file: "
        f"{MODELS}/{MODEL_FILE}" in detail
    ), detail
    assert assert_ai_or_mining(rack, "rig02", before["rig02"]) == "mining"
    assert rack.ssh("rig02", "systemctl list-units --all 'rigpivot-*' --no-legend") == ""


def test_broken_package_rolls_back_leaving_no_half_installed_package(rack, before, faulty_run):
    rig03 = rig_of(faulty_run["report"], "rig03")
    assert rig03["outcome"] == "rolled-back", rig03
    detail = rig03["detail"]
    assert detail.startswith("convert failed at cuda: Install the CUDA toolkit."), detail
    assert "returned an error code" in detail, detail
    assert assert_ai_or_mining(rack, "rig03", before["rig03"]) == "mining"
    # dpkg is clean: the half-configured toolkit went with the rest of the AI stack
    assert rack.ssh("rig03", "dpkg --audit") == ""
    assert rack.ssh("rig03", "dpkg-query -W 'cuda-*' 2>/dev/null | wc -l", check=False) == "0\n"


# -- the mirror down when rollback needs it ------------------------------------------------


def test_mirror_down_after_the_driver_changed_quarantines_and_the_next_rollback_finishes(
    rack, journal, before, tmp_path
):
    """rig01's farm file pins driver 535 (the rig mines on 550): the conversion changes the
    driver, then the mirror goes down. The CUDA download fails, and rollback cannot
    fetch driver 550 back: the rig is quarantined with that reason, keeping the driver it
    has. Once the mirror is back, the operator's `rollback` puts it back to mining."""
    lab = rack.lab
    inv = tmp_path / "farm.ini"
    inv.write_text(with_host_vars(lab.inventory, {
        "rig01": "nvidia_driver_branch=535 nvidia_driver_version=535.183.01 cuda_version=12-2",
    }))  # fmt: skip
    conv = subprocess.Popen(["rigpivot", "convert", "-i", str(inv), "--limit", "rig01", "--yes",
                             "--journal", str(journal)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)  # fmt: skip
    probe = "dpkg-query -W -f='${Status}' nvidia-driver-535 2>/dev/null"

    def driver_changed() -> bool:
        if conv.poll() is not None:
            return True
        return "install ok installed" in rack.ssh("rig01", probe, check=False, timeout=10)

    try:
        wait_for(driver_changed, 900, "rig01 to get driver 535", every=0.5)
        assert conv.poll() is None, "convert ended before the driver changed"
        stop_mirror(lab)
        out, err = conv.communicate(timeout=1800)
    finally:
        if conv.poll() is None:
            conv.kill()
        start_mirror(lab)
    assert conv.returncode == 1, out[-3000:] + err[-3000:]
    rig01 = rig_of(report(journal), "rig01")
    assert rig01["outcome"] == "quarantined", rig01
    detail = rig01["detail"]
    assert detail.startswith("convert failed at cuda: "), detail
    assert "rollback failed too: restore failed at " in detail, detail
    assert "cannot fetch nvidia-driver-550=550.127.05-1lab" in detail, detail
    assert "Bring the farm mirror http://mirror.lab:8080 back, then run rollback again" in detail
    rec = record(rack, "rig01")
    assert rec["state"] == "quarantined" and "cannot fetch" in rec["facts"]["quarantine_reason"]
    # never without a driver: the one it got stays until rollback can put 550 back
    assert "535.183.01" in rack.ssh("rig01", "nvidia-smi --query-gpu=driver_version "
                                             "--format=csv,noheader")  # fmt: skip
    status = subprocess.run(["rigpivot", "status", "-i", str(lab.inventory), "--limit", "rig01"],
                            capture_output=True, text=True, timeout=120,
                            env={**os.environ, "COLUMNS": "200"})  # fmt: skip
    assert status.returncode == 0 and "│ quarantined │" in status.stdout, status.stdout

    proc = rigpivot("rollback", "-i", str(lab.inventory), "--limit", "rig01", "--yes",
                    "--journal", str(journal))  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert outcomes(report(journal)) == {"rig01": "mining"}
    assert assert_ai_or_mining(rack, "rig01", before["rig01"]) == "mining"
    assert (
        rack.ssh("rig01", "dpkg-query -W 'nvidia-driver-*'")
        == "nvidia-driver-550\t550.127.05-1lab\n"
    )
