# A controller-side speed-up, no output: enable it in ansible.cfg (callbacks_enabled).
from __future__ import annotations

DOCUMENTATION = r"""
name: controller_cache
type: aggregate
short_description: Keep built modules between runs; spare the task forks a garbage collection
description:
  - Ansible builds each module it sends to a rig (the module and the module_utils it imports,
    found by compiling them) once per ansible-playbook process, in that process's private
    temporary folder, and throws the result away at exit. On a small controller that is most
    of a short run's CPU. This plugin points the build cache at a folder kept between runs,
    named by a digest of everything a build depends on (ansible-core's version and files, the
    Python version, and the modules and module_utils on the configured search paths), so a
    change to any of them starts a new, empty cache.
  - When the play starts, it moves the objects parsed so far (playbooks, roles, inventory) to
    the garbage collector's permanent generation (gc.freeze), so the worker forked for each
    task does not scan and copy them.
options:
  cache_dir:
    description: Where the build caches live (one sub-folder per digest).
    default: ~/.cache/rigpivot/ansiballz
    env:
      - name: RIGPIVOT_ANSIBALLZ_CACHE
    ini:
      - section: rigpivot
        key: ansiballz_cache
requirements: []
"""

import gc
import hashlib
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any

from ansible import constants as C
from ansible import release
from ansible.plugins.callback import CallbackBase
from ansible.plugins.loader import module_loader, module_utils_loader


def _digest(paths: list[str]) -> str:
    """What every module build depends on, as one digest: versions, and the path, size and
    modification time of every file that can be a module or a module_util."""
    h = hashlib.sha256(f"{release.__version__} {sys.version}".encode())
    for root in sorted(set(paths)):
        for top, dirs, files in os.walk(root):
            dirs.sort()
            for name in sorted(files):
                path = os.path.join(top, name)
                try:
                    st = os.stat(path)
                except OSError:
                    continue
                h.update(f"{path}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return h.hexdigest()[:20]


class CallbackModule(CallbackBase):  # type: ignore[misc]  # ansible has no type hints
    CALLBACK_VERSION = 2.0
    CALLBACK_TYPE = "aggregate"
    CALLBACK_NAME = "controller_cache"
    CALLBACK_NEEDS_ENABLED = True

    def set_options(self, *args: Any, **kwargs: Any) -> None:
        super().set_options(*args, **kwargs)
        root = Path(os.path.expanduser(str(self.get_option("cache_dir"))))
        ansible_root = os.path.dirname(release.__file__)
        searched = [ansible_root, *module_loader._get_paths(), *module_utils_loader._get_paths()]
        shared = root / _digest([p for p in searched if os.path.isdir(p)])
        own = Path(C.DEFAULT_LOCAL_TMP) / "ansiballz_cache"
        try:
            shared.mkdir(parents=True, exist_ok=True, mode=0o700)
            if own.is_symlink() or not own.exists():
                own.unlink(missing_ok=True)
                own.symlink_to(shared, target_is_directory=True)
            os.utime(shared)
            # Other digests are builds of files that changed since; one no run used for a day
            # is dropped (a run still going keeps its own fresh).
            for old in root.iterdir():
                if old != shared and old.is_dir() and old.stat().st_mtime < time.time() - 86400:
                    shutil.rmtree(old, ignore_errors=True)
        except OSError as e:
            self._display.warning(f"controller_cache: builds are not kept between runs: {e}")

    def v2_playbook_on_play_start(self, play: Any) -> None:
        gc.collect()
        gc.freeze()
