"""The lab catalog: profiles expand into the rigs the lab simulates."""

from pathlib import Path

import pytest
import yaml

from toolkit.errors import BadInputError
from toolkit.lab.catalog import CATALOG_PATH, LabSecrets, build_rig, load_catalog, load_secrets


@pytest.fixture(scope="module")
def catalog():
    return load_catalog()


def test_catalog_has_the_rigs_the_farm_runs(catalog):
    for profile in (
        "hive-3060x6",
        "hive-p106x8",
        "linux-3090x2",
        "hive-cmp90hx4",
        "hive-rx580x6",
        "hive-mixed6",
    ):
        assert profile in catalog.rigs


def test_mixed_rack_cycles_through_every_rig_profile(catalog):
    names = catalog.rack_profiles("mixed", 8)
    assert names[:6] == catalog.racks["mixed"]
    assert names[6:] == catalog.racks["mixed"][:2]


def test_unknown_profile_names_the_choices(catalog):
    with pytest.raises(BadInputError, match=r"unknown lab profile 'gold'.*mixed"):
        catalog.rack_profiles("gold", 2)


def test_rtx3060_rig_sits_on_x1_gen1_risers(catalog):
    rig = build_rig(catalog, "rig01", "rack1", "hive-3060x6", "t")
    assert len(rig.gpus) == 6
    card = rig.gpus[0]
    assert (card.name, card.vram_mib, card.compute_cap) == ("NVIDIA GeForce RTX 3060", 12288, "8.6")
    assert (card.pcie_width_current, card.pcie_gen_current, card.pcie_gen_max_gpu) == (1, 1, 4)
    assert rig.platform == "hiveos" and rig.hive is not None


def test_cmp_link_is_capped_by_the_card_not_the_slot(catalog):
    rig = build_rig(catalog, "rig04", "rack1", "hive-cmp90hx4", "t")
    assert {(g.pcie_gen_current, g.pcie_width_current) for g in rig.gpus} == {(1, 4)}


def test_rig_identities_are_stable_per_lab_and_distinct_across_labs(catalog):
    a = build_rig(catalog, "rig01", "rack1", "hive-3060x6", "lab-a")
    again = build_rig(catalog, "rig01", "rack1", "hive-3060x6", "lab-a")
    b = build_rig(catalog, "rig01", "rack1", "hive-3060x6", "lab-b")
    assert a.gpus[0].uuid == again.gpus[0].uuid
    assert a.gpus[0].uuid != b.gpus[0].uuid
    assert len({g.uuid for g in a.gpus}) == 6
    assert a.miner.wallet != b.miner.wallet


def test_amd_rig_has_no_nvidia_driver(catalog):
    rig = build_rig(catalog, "rig05", "rack2", "hive-rx580x6", "t")
    assert rig.driver is None and rig.nvidia_gpus == []


def test_broken_catalog_is_reported_with_its_path(tmp_path: Path):
    bad = tmp_path / "profiles.yml"
    bad.write_text(
        "cards: {}\nrigs:\n  r: {description: x, platform: hiveos, driver: null,"
        " miner: t-rex, host_pcie_gen: 3, cards: [{card: nope, count: 1,"
        " link_gen: 1, link_width: 1}]}\nracks: {}\n"
    )
    with pytest.raises(
        BadInputError, match=f"(?s){bad}: invalid lab catalog:.*rig profile r: unknown card 'nope'"
    ):
        load_catalog(bad)


def test_chosen_secrets_replace_the_derived_ones(catalog):
    chosen = LabSecrets(wallet="0xfeedbeef1234", pool_password="poolpw-1234",
                        rig_passwd="rigpw-5678", farm_hash="ab" * 20)  # fmt: skip
    hive = build_rig(catalog, "rig01", "rack1", "hive-3060x6", "lab1", secrets=chosen)
    assert hive.miner.wallet == "0xfeedbeef1234" and hive.miner.password == "poolpw-1234"
    assert hive.hive and (hive.hive.rig_passwd, hive.hive.farm_hash) == ("rigpw-5678", "ab" * 20)
    derived = build_rig(catalog, "rig01", "rack1", "hive-3060x6", "lab1")
    assert derived.miner.wallet != chosen.wallet and derived.miner.password == "x"
    partial = build_rig(catalog, "rig01", "rack1", "hive-3060x6", "lab1",
                        secrets=LabSecrets(rig_passwd="only-this"))  # fmt: skip
    assert partial.miner.wallet == derived.miner.wallet
    assert partial.hive and partial.hive.rig_passwd == "only-this"


def test_lab_secrets_file_is_validated(tmp_path: Path):
    good = tmp_path / "good.yml"
    good.write_text("rig01: {wallet: '0xabcdef123456', farm_hash: '" + "0" * 40 + "'}\n")
    assert load_secrets(good)["rig01"].wallet == "0xabcdef123456"
    bad = tmp_path / "bad.yml"
    bad.write_text("rig01: {farm_hash: not-hex, colour: blue}\n")
    with pytest.raises(BadInputError) as e:
        load_secrets(bad)
    assert "for rig01" in str(e.value)
    assert "farm_hash: String should match pattern" in str(e.value) and "colour" in str(e.value)


def test_a_debian_rig_installs_debians_unversioned_driver_package(catalog):
    rig = build_rig(catalog, "rig01", "rack1", "linux-3060x1-debian", "lab-x")
    assert (rig.driver, rig.driver_package) == ("535.183.01", "nvidia-driver")
    hive = build_rig(catalog, "rig01", "rack1", "hive-3060x6", "lab-x")
    assert hive.driver_package == f"nvidia-driver-{hive.driver.split('.')[0]}"


def test_debians_packaging_of_a_driver_the_lab_lacks_is_refused(tmp_path: Path):
    data = yaml.safe_load(CATALOG_PATH.read_text())
    data["rigs"]["linux-3060x1-debian"]["driver"] = "550.127.05"
    broken = tmp_path / "profiles.yml"
    broken.write_text(yaml.safe_dump(data))
    with pytest.raises(BadInputError, match=r"Debian's driver package only in 535\.183\.01"):
        load_catalog(broken)
