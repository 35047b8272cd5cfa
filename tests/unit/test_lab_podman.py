"""The lab's podman door: what a killed run leaves behind does not break the next rack."""

from __future__ import annotations

from pathlib import Path

from toolkit.lab.podman import forget_stale_dns


def test_a_gone_networks_name_records_are_removed_and_others_kept(tmp_path: Path):
    # netavark's per-network file: the gateway aardvark listens on, then one line per container
    (tmp_path / "rigpivot-mol-x").write_text("10.89.0.1\nabc 10.89.0.2  farm,mirror.lab\n")
    (tmp_path / "rigpivot-other").write_text("10.89.7.1\n")
    assert forget_stale_dns("rigpivot-mol-x", tmp_path)
    assert not (tmp_path / "rigpivot-mol-x").exists()
    assert (tmp_path / "rigpivot-other").exists()
    assert not forget_stale_dns("rigpivot-mol-x", tmp_path)  # nothing left: nothing done
