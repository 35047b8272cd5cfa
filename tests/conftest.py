"""Shared test setup. Lab-backed tests bring one lab rack up per test module
(tests/integration/conftest.py).

`make test` runs the suite on two pytest-xdist workers (`--dist loadgroup`): a test module
is one group (its tests share a lab rack and run in file order, as an operator's session
would), and each Molecule scenario is a group of its own (each brings up its own rack). The
longest groups start first (GROUP_SECONDS)."""

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


# Worker seconds of the slowest groups in the last clean run (`make test`, --durations): the
# longest start first, so that the run does not end with one worker on a long group while the
# other idles. Only the order depends on these; a group not listed counts as a minute (lab) or
# a second (unit tests, which then fill the end of the run).
GROUP_SECONDS = {
    "tests/integration/test_round_trips.py": 808,
    "tests/integration/test_pivot.py": 694,
    "tests/integration/test_faults_farm.py": 586,
    "tests/integration/test_faults_interrupt.py": 540,
    "tests/integration/test_molecule.py::test_role_scenario[molecule/pivot]": 335,
    "tests/integration/test_molecule.py::test_role_scenario[roles/mining_restore/molecule/default]": 305,
    "tests/integration/test_secrets.py": 291,
    "tests/integration/test_safety.py": 201,
    "tests/integration/test_hardening.py": 180,
    "tests/integration/test_advise.py": 138,
}


def group_of(item: pytest.Item) -> str:
    molecule = item.nodeid.startswith("tests/integration/test_molecule.py")
    return item.nodeid if molecule else item.nodeid.split("::")[0]


def group_seconds(group: str) -> int:
    if group in GROUP_SECONDS:
        return GROUP_SECONDS[group]
    return 60 if group.startswith("tests/integration/") else 1


# First: xdist's own hook reads the groups to spread the tests, in this order (the Makefile
# runs xdist with --no-loadscope-reorder, which would otherwise order groups by test count).
@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        item.add_marker(pytest.mark.xdist_group(group_of(item)))
    # stable: a module's tests keep their file order
    items.sort(key=lambda item: -group_seconds(group_of(item)))
