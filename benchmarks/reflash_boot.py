"""How long the reflash image takes to boot to sshd under QEMU, the two ways a rig boots it
(toolkit/lab/vm.py; not a test: timings are printed, never asserted).

- `staged`: a reflashed rig booting its staged root image from the mining root (the way
  tests/integration/test_reflash_boot.py checks).
- `disk`: the image's own GPT disk under UEFI (OVMF → GRUB → kernel).

This machine has no KVM: QEMU emulates the CPU (TCG), far slower than a rig boots.

    sudo .venv/bin/python benchmarks/reflash_boot.py            # both
    sudo .venv/bin/python benchmarks/reflash_boot.py disk       # one
"""

from __future__ import annotations

import argparse
import json
import time

from toolkit import osimage
from toolkit.lab import vm


def main() -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    ap.add_argument("modes", nargs="*", default=["staged", "disk"], choices=["staged", "disk"])
    args = ap.parse_args()
    image = osimage.build()
    for mode in args.modes:
        t0 = time.monotonic()
        boot = vm.boot(image, mode)
        total = time.monotonic() - t0
        took = {"to_sshd_s": boot.to_sshd_s, "with_preparation_s": round(total, 1)}
        print(json.dumps({"mode": mode, **took, "report": boot.report}))


if __name__ == "__main__":
    main()
