"""Shared test setup. Lab-backed tests bring one lab rack up per test module
(tests/integration/conftest.py)."""

import os
import sys
from pathlib import Path

# The CLI under test and the Ansible it drives are the ones installed beside this Python.
os.environ["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
