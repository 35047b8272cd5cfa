"""Shared test setup. Lab-backed tests bring one lab rack up per test module
(tests/integration/conftest.py).

`make test` runs the suite on two pytest-xdist workers (`--dist loadgroup`): a test module
is one group (its tests share a lab rack and run in file order, as an operator's session
would), and each Molecule scenario is a group of its own (each brings up its own rack)."""

import importlib.util
import os
import sys
from pathlib import Path

import pytest

# The CLI under test and the Ansible it drives are the ones installed beside this Python.
os.environ["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"


def _rig_library() -> None:
    """The rig-side modules import their shared library as Ansible ships it beside them
    (`ansible.module_utils.rigpivot_rig`): tests that import a module directly get it the same
    way."""
    name = "ansible.module_utils.rigpivot_rig"
    path = Path(__file__).resolve().parents[1] / "plugins" / "module_utils" / "rigpivot_rig.py"
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    sys.modules[name] = module


_rig_library()


# First: xdist's own hook reads the groups to spread the tests. xdist starts the groups with
# the most tests first. Starting the longest groups first instead (by their measured worker
# seconds) was tried: the two heaviest then ran side by side, each slowed by the other, and
# the run took 4 minutes more.
@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        molecule = item.nodeid.startswith("tests/integration/test_molecule.py")
        group = item.nodeid if molecule else item.nodeid.split("::")[0]
        item.add_marker(pytest.mark.xdist_group(group))
