#!/usr/bin/python3
"""rig_files: put a step's folders and files on the rig in one call, ledger first.

What a role did with a `rig_state` ledger write, a `file` task per folder and a `copy` or
`template` task per file (each a module run on the rig and a task on the controller), in one
module call: the paths that do not exist yet join the pivot record's ledger (`created`) before
any is made, so a rollback removes exactly what this step made; then each folder is made (or
its mode and owner set), each file whose content, mode or owner differs is written beside
itself, checked with its `validate` command (as `copy`'s: `%s` is the new file) and renamed
into place; then the files of `prune` folders that match its patterns and are not kept are
removed. Check mode reports what would change and writes nothing, the ledger included;
--diff shows each file's content before and after, except a `secret` one's (keys).
"""

DOCUMENTATION = r"""
module: rig_files
short_description: Make a step's folders and write its files in one call, recording them in the ledger first.
description:
  - Folders (mode, owner), then files (content, mode, owner, optional validate command), then prune - each only where it differs.
  - Paths that do not exist yet join the pivot record's ledger before any is made (C(step) given).
author: rigpivot maintainers
options:
  step:
    type: str
    default: ""
    description: The step making these paths; when given, new paths join the pivot record's ledger first.
  record: {type: path, default: /var/lib/rigpivot/state.json, description: The pivot record.}
  ledger:
    type: list
    elements: path
    default: []
    description: Other paths this step is about to make (another module makes them); those missing now join the ledger too.
  directories:
    type: list
    elements: dict
    default: []
    description: Each C(path), C(mode) and optional C(owner), C(group) (root).
  files:
    type: list
    elements: dict
    default: []
    description:
      - Each C(path), C(mode), C(content) or C(secret) (content never shown - keys), and optional C(owner), C(group) (root), C(validate) (a command, C(%s) the new file).
  prune:
    type: list
    elements: dict
    default: []
    description: Each C(path) (a folder), C(patterns) (globs) and C(keep) (paths) - the matching files not kept are removed.
"""

import fnmatch
import grp
import os
import pwd
import shlex
import tempfile

from ansible.module_utils.basic import AnsibleModule

# The library path (ansible.cfg `library`/`module_utils`: the CLI, the roles run from the
# repository) first; an installed collection (rigpivot.farm) when that is not there.
try:
    from ansible.module_utils.rigpivot_rig import DamagedRecord, record_created
except ImportError:
    from ansible_collections.rigpivot.farm.plugins.module_utils.rigpivot_rig import (
        DamagedRecord,
        record_created,
    )

OWNED = dict(
    path=dict(type="path", required=True),
    mode=dict(type="str", required=True),
    owner=dict(type="str", default="root"),
    group=dict(type="str", default="root"),
)


class Refused(Exception):
    pass


def _ids(entry):
    try:
        return pwd.getpwnam(entry["owner"]).pw_uid, grp.getgrnam(entry["group"]).gr_gid
    except KeyError:
        raise Refused("%s: no user %s or group %s on the rig" % (
            entry["path"], entry["owner"], entry["group"])) from None  # fmt: skip


def _attrs_differ(path, entry, check_mode):
    if not os.path.lexists(path):
        return True
    try:
        uid, gid = _ids(entry)
    except Refused:
        if check_mode:  # a user an earlier task would have made
            return True
        raise
    st = os.lstat(path)
    return (st.st_mode & 0o7777, st.st_uid, st.st_gid) != (entry["mode"], uid, gid)


def _read(path):
    try:
        with open(path, "rb") as f:
            return f.read()
    except FileNotFoundError:
        return None


def _text(data):
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return "(binary)"


def put_directory(entry):
    path = entry["path"]
    if os.path.lexists(path) and not os.path.isdir(path):
        raise Refused("%s exists and is not a folder" % path)
    os.makedirs(path, exist_ok=True)
    os.chown(path, *_ids(entry))
    os.chmod(path, entry["mode"])


def put_file(module, entry, data):
    path = entry["path"]
    folder = os.path.dirname(path)
    if not os.path.isdir(folder):
        raise Refused("%s: its folder %s does not exist" % (path, folder))
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".rigpivot-")
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(data)
        os.chown(tmp, *_ids(entry))
        os.chmod(tmp, entry["mode"])
        if entry["validate"]:
            if "%s" not in entry["validate"]:
                raise Refused("%s: validate must name the file as %%s" % path)
            rc, out, err = module.run_command(shlex.split(entry["validate"] % tmp))
            if rc != 0:
                raise Refused("%s: failed validation (%s): %s" % (
                    path, entry["validate"], (err or out).strip()))  # fmt: skip
        os.replace(tmp, path)
    finally:
        if os.path.lexists(tmp):
            os.unlink(tmp)


def _octal(entries):
    return [dict(e, mode=int(e["mode"], 8)) for e in entries]


def plan(directories, files, prune, check_mode):
    """What differs: (folders to set, (file, new bytes, bytes now) to write, paths to prune)."""
    dirs = [d for d in directories
            if not os.path.isdir(d["path"]) or _attrs_differ(d["path"], d, check_mode)]  # fmt: skip
    writes = []
    for f in files:
        data = (f["content"] if f["secret"] is None else f["secret"]).encode("utf-8")
        if os.path.islink(f["path"]) or (
            os.path.lexists(f["path"]) and not os.path.isfile(f["path"])
        ):
            raise Refused("%s exists and is not a regular file" % f["path"])
        now = _read(f["path"])
        if now != data or _attrs_differ(f["path"], f, check_mode):
            writes.append((f, data, now))
    pruned = []
    for p in prune:
        try:
            names = sorted(os.listdir(p["path"]))
        except FileNotFoundError:
            continue
        for name in names:
            path = os.path.join(p["path"], name)
            if (any(fnmatch.fnmatch(name, pat) for pat in p["patterns"])
                    and path not in p["keep"] and not os.path.isdir(path)):  # fmt: skip
                pruned.append(path)
    return dirs, writes, pruned


def main():
    module = AnsibleModule(
        argument_spec=dict(
            step=dict(type="str", default=""),
            record=dict(type="path", default="/var/lib/rigpivot/state.json"),
            ledger=dict(type="list", elements="path", default=[]),
            directories=dict(type="list", elements="dict", default=[], options=OWNED),
            files=dict(
                type="list",
                elements="dict",
                default=[],
                options=dict(
                    OWNED,
                    content=dict(type="str"),
                    # a file holding a key: never in a diff, a result or a log
                    secret=dict(type="str", no_log=True),
                    validate=dict(type="str", default=""),
                ),
                mutually_exclusive=[("content", "secret")],
                required_one_of=[("content", "secret")],
            ),
            prune=dict(
                type="list",
                elements="dict",
                default=[],
                options=dict(
                    path=dict(type="path", required=True),
                    patterns=dict(type="list", elements="str", required=True),
                    keep=dict(type="list", elements="path", default=[]),
                ),
            ),
        ),
        supports_check_mode=True,
    )
    p = module.params
    try:
        dirs, writes, pruned = plan(
            _octal(p["directories"]), _octal(p["files"]), p["prune"], module.check_mode
        )
    except (Refused, OSError, ValueError) as e:
        module.fail_json(msg=str(e))
    wanted = [d["path"] for d in dirs] + [f["path"] for f, _, _ in writes]
    created = [path for path in wanted if not os.path.lexists(path)]
    diffs = [
        {"before_header": f["path"], "after_header": f["path"],
         "before": "" if before is None else _text(before), "after": _text(data)}
        for f, data, before in writes
        if module._diff and f["secret"] is None
    ]  # fmt: skip
    if not module.check_mode:
        try:
            if p["step"]:
                record_created(created + p["ledger"], p["record"])
            for d in dirs:
                put_directory(d)
            for f, data, _ in writes:
                put_file(module, f, data)
            for path in pruned:
                os.unlink(path)
        except (Refused, OSError, DamagedRecord) as e:
            module.fail_json(msg=str(e), created=created)
    result = dict(changed=bool(wanted or pruned), changed_paths=wanted, created=created,
                  pruned=pruned)  # fmt: skip
    if diffs:
        result["diff"] = diffs
    module.exit_json(**result)


if __name__ == "__main__":
    main()
