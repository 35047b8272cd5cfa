"""`lab up` is re-runnable and `lab down` leaves nothing behind."""

from __future__ import annotations

import pytest

from tests.integration.conftest import Rack
from toolkit.lab import podman as pm

pytestmark = pytest.mark.lab


def test_lab_up_again_keeps_running_rigs_and_down_leaves_no_container(lab_factory):
    rack: Rack = lab_factory(2, "nvidia")
    lab = rack.lab
    ids = {c["Id"] for c in pm.containers(f"rigpivot.lab={lab.name}")}
    assert len(ids) == 3  # two rigs and the farm services

    lab.up(2, "nvidia")
    assert {c["Id"] for c in pm.containers(f"rigpivot.lab={lab.name}")} == ids

    lab.up(1, "nvidia")  # shrinking the rack removes the extra rig
    assert [r.name for r in lab.state().rigs] == ["rig01"]
    assert len(pm.containers(f"rigpivot.lab={lab.name}")) == 2

    removed = lab.down()
    assert len(removed) == 2
    assert pm.containers(f"rigpivot.lab={lab.name}") == []
    assert pm.podman("network", "exists", lab.network, check=False).returncode != 0
    assert not lab.inventory.exists()
