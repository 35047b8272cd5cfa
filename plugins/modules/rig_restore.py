#!/usr/bin/python3
"""rig_restore: put a snapshot's files back on the rig in one call, or check they are back.

`state: restored` does for every file of the snapshot's manifest what `ansible.builtin.copy`
(remote_src, mode, owner, group) and `ansible.builtin.file` (state=link, force) did one call
per file: a file whose content, mode or owner differs is written beside itself and renamed
into place; a link is made (or replaced) to point where it did. Then it removes the paths it
is given (`ansible.builtin.file` state=absent): what the conversion created. `state: verified`
compares every file and link with the manifest and fails naming each one that differs.

Paths only in results (the snapshot holds wallets and rig passwords); content diffs only for
the paths under `diff_paths` (the SSH daemon's configuration), in --check --diff too.
"""

DOCUMENTATION = r"""
module: rig_restore
short_description: Restore (or verify) a rig's files from its rigpivot snapshot in one call.
description:
  - Copies each file of the snapshot's manifest back byte for byte with its mode and owner, makes its links again, and removes the paths given (what the conversion created).
  - With C(state=verified), fails naming every file or link that differs from the snapshot.
author: rigpivot maintainers
options:
  snapshot_dir: {type: path, required: true, description: The snapshot (manifest.json and files/).}
  state: {type: str, default: restored, choices: [restored, verified], description: Restore or check.}
  exclude: {type: list, elements: path, default: [], description: Manifest paths left alone here.}
  only:
    type: list
    elements: path
    description: When given, only these of the manifest's paths are restored (the others are left alone).
  remove: {type: list, elements: path, default: [], description: Paths to remove (files or folders).}
  diff_paths:
    type: list
    elements: str
    default: [/etc/ssh/]
    description: Path prefixes whose content may be shown in a diff (never wallets).
"""

import grp
import json
import os
import pwd
import shutil
import tempfile

from ansible.module_utils.basic import AnsibleModule

# The library path (ansible.cfg `library`/`module_utils`: the CLI, the roles run from the
# repository) first; an installed collection (rigpivot.farm) when that is not there.
try:
    from ansible.module_utils.rigpivot_rig import owner_names, sha256
except ImportError:
    from ansible_collections.rigpivot.farm.plugins.module_utils.rigpivot_rig import (
        owner_names,
        sha256,
    )

DIFF_MAX_BYTES = 64 * 1024


def _text(path):
    try:
        if os.path.getsize(path) > DIFF_MAX_BYTES:
            return None
        with open(path, "rb") as f:
            return f.read().decode("utf-8")
    except (OSError, UnicodeDecodeError):
        return None


def _ids(owner, group):
    """uid and gid of the manifest's names (or numbers, where the rig had no name)."""
    uid = int(owner) if owner.isdigit() else pwd.getpwnam(owner).pw_uid
    gid = int(group) if group.isdigit() else grp.getgrnam(group).gr_gid
    return uid, gid


def file_differs(path, entry):
    """Why `path` is not the manifest's regular file `entry`, or '' when it is."""
    if os.path.islink(path) or not os.path.isfile(path):
        return "missing" if not os.path.lexists(path) else "not a regular file"
    if sha256(path) != entry["sha256"]:
        return "content differs"
    st = os.lstat(path)
    if "%04o" % (st.st_mode & 0o7777) != entry["mode"]:
        return "mode differs"
    if owner_names(st) != (entry["owner"], entry["group"]):
        return "owner differs"
    return ""


def link_differs(path, entry):
    if not os.path.islink(path):
        return "missing" if not os.path.lexists(path) else "not a link"
    return "" if os.readlink(path) == entry["link"] else "points elsewhere"


def put_file(path, source, entry):
    """Write `source` over `path` atomically, with the manifest's mode and owner."""
    folder = os.path.dirname(path)
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".rigpivot-restore-")
    try:
        with os.fdopen(fd, "wb") as out, open(source, "rb") as src:
            shutil.copyfileobj(src, out)
        os.chown(tmp, *_ids(entry["owner"], entry["group"]))
        os.chmod(tmp, int(entry["mode"], 8))
        os.replace(tmp, path)
    except BaseException:
        if os.path.lexists(tmp):
            os.unlink(tmp)
        raise


def put_link(path, target):
    if os.path.isdir(path) and not os.path.islink(path):
        if os.listdir(path):
            raise OSError("%s is a folder that is not empty; it was a link to %s" % (path, target))
        os.rmdir(path)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = path + ".rigpivot-link"
    if os.path.lexists(tmp):
        os.unlink(tmp)
    os.symlink(target, tmp)
    os.replace(tmp, path)


def remove(path):
    if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path)
    else:
        os.unlink(path)


def restore(module, manifest, files_dir):
    p = module.params
    restored, removed, diffs = [], [], []
    only = None if p["only"] is None else set(p["only"])
    for path, entry in sorted(manifest["files"].items()):
        if path in p["exclude"] or (only is not None and path not in only):
            continue
        if "link" in entry:
            if link_differs(path, entry):
                restored.append(path)
                if not module.check_mode:
                    put_link(path, entry["link"])
            continue
        source = files_dir + path
        why = file_differs(path, entry)
        if not why:
            continue
        restored.append(path)
        if why in ("content differs", "missing") and path.startswith(tuple(p["diff_paths"])):
            before, after = _text(path) if why != "missing" else "", _text(source)
            if before is not None and after is not None:
                diffs.append({"before_header": path, "after_header": path + " (snapshot)",
                              "before": before, "after": after})  # fmt: skip
        if not module.check_mode:
            put_file(path, source, entry)
    for path in p["remove"]:
        if path in manifest["files"] or not os.path.lexists(path):
            continue
        removed.append(path)
        if not module.check_mode:
            remove(path)
    return restored, removed, diffs


def verify(manifest):
    """The paths that differ from the snapshot, with why. Content is compared (a link to a
    file by its target's), and where each link points; modes and owners are restore's job."""
    differ = []
    for path, entry in sorted(manifest["files"].items()):
        if "link" in entry:
            why = link_differs(path, entry)
            if why:
                differ.append("%s: %s (was a link to %s)" % (path, why, entry["link"]))
                continue
        if entry.get("sha256") is None:
            continue  # a link to a folder or to nothing: its target is all there is
        if not os.path.isfile(path):
            differ.append("%s: missing" % path)
        elif sha256(path) != entry["sha256"]:
            differ.append("%s: content differs" % path)
    return differ


def main():
    module = AnsibleModule(
        argument_spec=dict(
            snapshot_dir=dict(type="path", required=True),
            state=dict(type="str", default="restored", choices=["restored", "verified"]),
            exclude=dict(type="list", elements="path", default=[]),
            only=dict(type="list", elements="path"),
            remove=dict(type="list", elements="path", default=[]),
            diff_paths=dict(type="list", elements="str", default=["/etc/ssh/"]),
        ),
        supports_check_mode=True,
    )
    snap = module.params["snapshot_dir"]
    try:
        with open(os.path.join(snap, "manifest.json")) as f:
            manifest = json.load(f)
    except (OSError, ValueError) as e:
        module.fail_json(msg="cannot read the snapshot's manifest in %s: %s" % (snap, e))
    if module.params["state"] == "verified":
        differ = verify(manifest)
        if differ:
            module.fail_json(
                msg="%d of the snapshot's files differ from it on the rig: %s"
                % (len(differ), "; ".join(differ)),
                differ=differ,
            )
        module.exit_json(changed=False, checked=len(manifest["files"]))
    try:
        restored, removed, diffs = restore(module, manifest, os.path.join(snap, "files"))
    except (OSError, KeyError) as e:
        module.fail_json(msg="restoring the snapshot's files failed: %s" % e)
    result = {"changed": bool(restored or removed), "restored": restored, "removed": removed}
    if module._diff and diffs:
        result["diff"] = diffs
    module.exit_json(**result)


if __name__ == "__main__":
    main()
