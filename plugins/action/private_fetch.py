"""private_fetch: fetch files from the rig into the controller's private store, owner-only.

    store: the store's folder on the controller (made 0700 if it is not)
    files: [{src: path on the rig, dest: path under `store`}, ...]

Each file is fetched as `ansible.builtin.fetch` (flat) does, then the store, every folder
between it and the file, and the file itself are made owner-only (0700 folders, 0600 files):
the store holds wallets, rig passwords and API keys. One task and no module run on the
controller, where a `file` task per folder and file started a Python each. Check mode fetches
nothing and changes no mode (fetch does not support it)."""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Any

from ansible.plugins.action import ActionBase


def _owner_only(path: Path, mode: int) -> bool:
    if stat.S_IMODE(path.stat().st_mode) == mode:
        return False
    path.chmod(mode)
    return True


class ActionModule(ActionBase):  # type: ignore[misc]
    TRANSFERS_FILES = False  # the fetch it runs needs no remote temporary folder
    _VALID_ARGS = frozenset(("store", "files"))

    def run(self, tmp: Any = None, task_vars: dict[str, Any] | None = None) -> dict[str, Any]:
        result: dict[str, Any] = super().run(tmp, task_vars)
        store = self._task.args.get("store")
        files = self._task.args.get("files")
        if not isinstance(store, str) or not store or not isinstance(files, list):
            msg = "private_fetch needs `store` (a folder) and `files` (a list)"
            return {**result, "failed": True, "msg": msg}
        root = Path(os.path.abspath(store))
        bad = [f for f in files if not isinstance(f, dict) or not f.get("src")
               or root not in Path(os.path.abspath(str(f.get("dest", "")))).parents]  # fmt: skip
        if bad:
            return {**result, "failed": True,
                    "msg": f"each file needs a src and a dest under {root}: {bad!r}"}  # fmt: skip
        if self._task.check_mode:
            return {**result, "changed": False, "skipped": True,
                    "msg": "check mode: nothing fetched"}  # fmt: skip
        root.mkdir(parents=True, exist_ok=True)
        changed = _owner_only(root, 0o700)
        fetched = []
        for f in files:
            dest = Path(os.path.abspath(str(f["dest"])))
            dest.parent.mkdir(parents=True, exist_ok=True)
            for d in [p for p in dest.parents if root in p.parents]:  # the folders under the store
                changed |= _owner_only(d, 0o700)
            task = self._task.copy()
            task.args = {"src": f["src"], "dest": str(dest), "flat": True}
            fetch = self._shared_loader_obj.action_loader.get(
                "ansible.builtin.fetch", task=task, connection=self._connection,
                play_context=self._play_context, loader=self._loader, templar=self._templar,
                shared_loader_obj=self._shared_loader_obj,
            )  # fmt: skip
            # This task's own worker process: files fetched are never readable by others,
            # not even between their write and the chmod below.
            umask = os.umask(0o077)
            try:
                res = fetch.run(task_vars=task_vars)
            finally:
                os.umask(umask)
            if res.get("failed"):
                return {**result, **res, "changed": changed}
            changed |= bool(res.get("changed")) | _owner_only(dest, 0o600)
            fetched.append(str(dest))
        return {**result, "changed": changed, "fetched": fetched}
