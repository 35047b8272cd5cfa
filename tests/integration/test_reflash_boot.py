"""A reflashed rig's first boot of its staged root, under QEMU (toolkit/lab/vm.py): the kernel
and initramfs of the reflash image, started with `rigpivot.loop=/rigpivot-reflash/root.img`
and the mining disk as root, come up with the image mounted from the mining root as /, the
mining root at /host, sshd presenting the host key the rig was given (checked strictly), and
the rig's HiveOS identity readable. About 25 s to sshd here without KVM (README, Benchmarks)."""

from __future__ import annotations

import os

import pytest

from toolkit import osimage
from toolkit.lab import vm

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0, reason="the image build needs root (CI runs as root)"
)


def test_the_staged_root_boots_from_the_mining_root_with_the_rigs_host_key():
    boot = vm.boot(osimage.build(), "staged")
    # vm.boot logged in with StrictHostKeyChecking against the key the staged root was given.
    root, host, release, *rest = boot.report
    assert root.split() == ["/dev/loop0", "/"], boot.report
    assert host.split() == ["/dev/vda", "/host"], boot.report
    assert release == "debian 12"
    assert "RIG_ID=4242" in rest, boot.report
