"""The rig-side modules that replace tasks the roles used to copy: finishing an interrupted dpkg
(rig_dpkg_recover) and looking for NVIDIA cards on the PCI bus (rig_gpus), run through Ansible
with stand-in dpkg and lspci."""

from __future__ import annotations

from pathlib import Path

from tests.unit.rig_modules import run_module, stand_in

# dpkg as the module calls it: --admindir=DIR, then --audit (prints DIR/audit.txt) or
# --configure -a (logs the call to DIR/ran, exits DIR/configure_rc, and on success leaves
# nothing to finish).
DPKG = """admin=${1#--admindir=}; shift
case "$1" in
  --audit) cat "$admin/audit.txt" 2>/dev/null; [ -s "$admin/audit.txt" ] && exit 1; exit 0 ;;
  --configure)
    echo "$*" >> "$admin/ran"; rc=$(cat "$admin/configure_rc" 2>/dev/null || echo 0)
    [ "$rc" = 0 ] && { rm -f "$admin/audit.txt" "$admin"/updates/*; echo "Setting up x (1.0) ..."; }
    exit "$rc" ;;
esac
exit 2
"""


def dpkg_rig(tmp_path: Path, audit: str = "", journal: tuple[str, ...] = ()) -> Path:
    admin = tmp_path / "dpkg"
    (admin / "updates").mkdir(parents=True)
    for name in journal:
        (admin / "updates" / name).write_text("")
    if audit:
        (admin / "audit.txt").write_text(audit)
    stand_in(tmp_path / "bin", "dpkg", DPKG)
    return admin


def recover(tmp_path: Path, admin: Path, check: bool = False) -> dict[str, object]:
    return run_module(tmp_path, "rig_dpkg_recover", {"admindir": str(admin)}, check=check,
                      stand_ins=tmp_path / "bin")  # fmt: skip


HALF_CONFIGURED = "The following packages are only half configured:\n nvidia-driver-550\n"


def test_dpkg_is_left_alone_when_it_has_nothing_to_finish(tmp_path: Path):
    admin = dpkg_rig(tmp_path, journal=("tmp.i",))  # not a journal entry dpkg replays
    r = recover(tmp_path, admin)
    assert not r["changed"] and not r["pending"] and not r["ran"], r
    assert not (admin / "ran").exists()


def test_a_half_configured_package_is_finished_once(tmp_path: Path):
    admin = dpkg_rig(tmp_path, audit=HALF_CONFIGURED)
    r = recover(tmp_path, admin)
    assert r["changed"] and r["ran"] and r["configure_rc"] == 0, r
    assert (admin / "ran").read_text() == "--configure -a\n"
    assert not recover(tmp_path, admin)["changed"]  # idempotent
    assert (admin / "ran").read_text() == "--configure -a\n"


def test_a_journal_left_by_a_killed_dpkg_is_replayed(tmp_path: Path):
    admin = dpkg_rig(tmp_path, journal=("0001",))
    r = recover(tmp_path, admin)
    assert r["changed"] and r["ran"], r


def test_the_packages_asked_for_are_read_after_dpkg_finished(tmp_path: Path):
    admin = dpkg_rig(tmp_path, audit=HALF_CONFIGURED)
    # dpkg-query as dpkg knows the packages: half-configured until --configure -a ran
    stand_in(tmp_path / "bin", "dpkg-query", """admin=${1#--admindir=}
state=$([ -e "$admin/ran" ] && echo hi || echo hF)
printf 'nvidia-driver-550\\t550.54-1\\t%s \\nnvidia-driver-535\\t535.1-1\\trc \\n' "$state"
exit 1  # a pattern matched nothing
""")  # fmt: skip
    r = run_module(tmp_path, "rig_dpkg_recover",
                   {"admindir": str(admin), "query": ["nvidia-driver-*", "cuda-toolkit-12-4"]},
                   stand_ins=tmp_path / "bin")  # fmt: skip
    assert r["packages"] == [
        {"name": "nvidia-driver-550", "version": "550.54-1", "status": "hi"},
        {"name": "nvidia-driver-535", "version": "535.1-1", "status": "rc"},
    ], r


def test_check_mode_says_it_would_run_and_runs_nothing(tmp_path: Path):
    admin = dpkg_rig(tmp_path, audit=HALF_CONFIGURED)
    r = recover(tmp_path, admin, check=True)
    assert r["changed"] and r["pending"] and not r["ran"], r
    assert not (admin / "ran").exists()


def test_a_package_whose_script_keeps_failing_is_left_for_apt_best_effort(tmp_path: Path):
    admin = dpkg_rig(tmp_path, audit=HALF_CONFIGURED)
    (admin / "configure_rc").write_text("1")
    r = recover(tmp_path, admin)
    assert not r.get("failed") and r["ran"] and r["configure_rc"] == 1, r
    assert not r["changed"]  # nothing moved: a re-run stays idempotent


# lspci -vmm -nn -D as a mixed rig shows it: an NVIDIA VGA card, a headless P106 (3D
# controller), an AMD card, and NVIDIA's audio function (not a GPU).
LSPCI = """cat <<'END'
Slot:\t0000:01:00.0
Class:\tVGA compatible controller [0300]
Vendor:\tNVIDIA Corporation [10de]
Device:\tGA106 [GeForce RTX 3060] [2503]

Slot:\t0000:01:00.1
Class:\tAudio device [0403]
Vendor:\tNVIDIA Corporation [10de]
Device:\tGA106 High Definition Audio Controller [228e]

Slot:\t0000:02:00.0
Class:\t3D controller [0302]
Vendor:\tNVIDIA Corporation [10de]
Device:\tGP106 [P106-100] [1c07]

Slot:\t0000:03:00.0
Class:\tVGA compatible controller [0300]
Vendor:\tAdvanced Micro Devices, Inc. [AMD/ATI] [1002]
Device:\tEllesmere [Radeon RX 470/480/570/570X/580/580X/590] [67df]
END
"""


def test_the_nvidia_cards_are_found_whatever_their_pci_class(tmp_path: Path):
    stand_in(tmp_path / "bin", "lspci", LSPCI)
    r = run_module(tmp_path, "rig_gpus", {}, stand_ins=tmp_path / "bin")
    assert r["present"] and not r["changed"], r
    assert [(g["slot"], g["class"], g["device_id"]) for g in r["gpus"]] == [  # type: ignore[attr-defined]
        ("0000:01:00.0", "0300", "2503"), ("0000:02:00.0", "0302", "1c07"),
    ]  # fmt: skip


def test_an_amd_only_rig_has_no_nvidia_card(tmp_path: Path):
    amd_only = LSPCI.split("Slot:\t0000:03:00.0")[1]
    stand_in(tmp_path / "bin", "lspci", "cat <<'END'\nSlot:\t0000:03:00.0" + amd_only)
    r = run_module(tmp_path, "rig_gpus", {}, stand_ins=tmp_path / "bin", check=True)
    assert not r["present"] and r["gpus"] == [] and not r["changed"], r


def test_an_lspci_that_fails_fails_the_task_rather_than_skip_the_rig(tmp_path: Path):
    stand_in(tmp_path / "bin", "lspci", "echo 'pcilib: Cannot open /proc/bus/pci' >&2\nexit 1\n")
    r = run_module(tmp_path, "rig_gpus", {}, stand_ins=tmp_path / "bin")
    assert r.get("failed") and "Cannot open /proc/bus/pci" in str(r["msg"]), r
