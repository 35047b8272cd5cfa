#!/usr/bin/python3
"""rig_gpus: the NVIDIA cards on the rig's PCI bus, whatever their driver says.

Read-only. A card is a device of one of the library's GPU_CLASSES (VGA, 3D controller as
headless mining SKUs show, display controller) with NVIDIA's vendor id, as lspci lists it:
the same rule as preflight's probe (module_utils/rigpivot_rig.py `pci_gpus`). The roles that
leave a rig without NVIDIA cards alone (nvidia_driver, cuda, power_profile) ask this.
"""

DOCUMENTATION = r"""
module: rig_gpus
short_description: List the NVIDIA VGA, 3D and display controllers on a rig's PCI bus (lspci).
description:
  - Read-only. The NVIDIA cards on the rig's PCI bus (VGA, 3D and display controllers with NVIDIA's vendor id, as lspci lists them), whatever their driver says.
author: rigpivot maintainers
options: {}
"""

RETURN = r"""
present: {description: Whether the rig has at least one NVIDIA card, type: bool}
gpus:
  description: Each NVIDIA card (slot, class, vendor_id, vendor, device_id, device), as lspci names it
  type: list
"""

from ansible.module_utils.basic import AnsibleModule

# The library path (ansible.cfg `library`/`module_utils`: the CLI, the roles run from the
# repository) first; an installed collection (rigpivot.farm) when that is not there.
try:
    from ansible.module_utils.rigpivot_rig import NVIDIA_VENDOR, pci_gpus
except ImportError:
    from ansible_collections.rigpivot.farm.plugins.module_utils.rigpivot_rig import (
        NVIDIA_VENDOR,
        pci_gpus,
    )


def main():
    module = AnsibleModule(argument_spec={}, supports_check_mode=True)
    try:
        gpus = pci_gpus(vendor=NVIDIA_VENDOR)
    except RuntimeError as e:
        module.fail_json(msg="lspci cannot list the PCI bus: %s" % e)
    module.exit_json(changed=False, present=bool(gpus), gpus=gpus)


if __name__ == "__main__":
    main()
