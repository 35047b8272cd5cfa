"""Read an Ansible INI inventory the way Ansible does, with errors that name file and line.

Supported: `[group]`, `[group:vars]`, `[group:children]`, host lines with `key=value` vars,
host ranges (`rig[01:40]`), comments, and YAML `group_vars/` and `host_vars/` beside the
inventory. Ansible itself reads the same file when the roles run; this reader exists so that
preflight can refuse a bad farm file before anything is probed, and say exactly where.
"""

from __future__ import annotations

import difflib
import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from toolkit.errors import BadInputError

_SECTION = re.compile(r"^\[([^\]\s:]+)(?::(vars|children))?\]\s*$")
_RANGE = re.compile(r"\[([0-9a-z]+):([0-9a-z]+)\]")
_NAME = re.compile(r"^[A-Za-z0-9_.\-\[\]:]+$")


@dataclass
class Host:
    name: str
    groups: list[str] = field(default_factory=list)
    vars: dict[str, Any] = field(default_factory=dict)
    # Where each variable was set, for error messages: var -> "file:line".
    origin: dict[str, str] = field(default_factory=dict)
    line: str = ""

    @property
    def address(self) -> str:
        return str(self.vars.get("ansible_host", self.name))

    @property
    def port(self) -> int:
        return int(self.vars.get("ansible_port", 22))


def _limit_patterns(limit: str) -> list[str]:
    out: list[str] = []
    for part in limit.split(","):
        if not part.strip().startswith("@"):
            out += re.split(r"[,:]", part)
            continue
        path = Path(part.strip()[1:])
        try:
            lines = path.read_text().splitlines()
        except OSError as e:
            raise BadInputError(f"--limit {part.strip()}: cannot read {path}: {e.strerror}") from e
        names = [ln.strip() for ln in lines if ln.strip() and not ln.lstrip().startswith("#")]
        if not names:
            raise BadInputError(f"--limit {part.strip()}: {path} lists no host; nothing to do")
        out += names
    return out


@dataclass
class Inventory:
    path: Path
    hosts: dict[str, Host]
    groups: dict[str, list[str]]  # group -> host names (children expanded)

    def select(self, limit: str | None) -> list[Host]:
        """Hosts matching an Ansible-style --limit: names or groups, `:`/`,` separated,
        `!x` to exclude, `*` globs, `@file` for the patterns in a file, one per line (what
        `advise --decisions-out` writes)."""
        if not limit:
            return list(self.hosts.values())
        chosen: list[str] = []
        excluded: set[str] = set()
        for raw in _limit_patterns(limit):
            pat = raw.strip()
            if not pat:
                continue
            neg = pat.startswith("!")
            pat = pat.lstrip("!&")
            names = self._match(pat)
            if neg:
                excluded.update(names)
            else:
                chosen += [n for n in names if n not in chosen]
        hosts = [self.hosts[n] for n in chosen if n not in excluded]
        if not hosts:
            names = [*sorted(self.groups), *self.hosts]
            near = difflib.get_close_matches(limit.strip().lstrip("!&"), names, n=1)
            hint = f"did you mean {near[0]!r}? " if near else ""
            shown = ", ".join(list(self.hosts)[:8]) + (" …" if len(self.hosts) > 8 else "")
            raise BadInputError(
                f"--limit {limit!r} matches no host in {self.path}: {hint}"
                f"name hosts or groups of the inventory (groups: "
                f"{', '.join(sorted(self.groups))}; hosts: {shown})"
            )
        return hosts

    def _match(self, pat: str) -> list[str]:
        if pat in ("all", "*"):
            return list(self.hosts)
        if pat in self.groups:
            return self.groups[pat]
        rx = re.compile("^" + re.escape(pat).replace(r"\*", ".*") + "$")
        return [n for n in self.hosts if rx.match(n)]


def _expand(name: str, where: str) -> list[str]:
    m = _RANGE.search(name)
    if not m:
        return [name]
    lo, hi = m.group(1), m.group(2)
    head, tail = name[: m.start()], name[m.end() :]
    if lo.isdigit() and hi.isdigit():
        width = len(lo) if lo.startswith("0") else 0
        if int(lo) > int(hi):
            raise BadInputError(
                f"{where}: host range {m.group(0)} runs backwards; write it low to high "
                f"([{hi}:{lo}])"
            )
        items = [str(i).zfill(width) for i in range(int(lo), int(hi) + 1)]
    elif len(lo) == len(hi) == 1 and lo.isalpha():
        items = [chr(c) for c in range(ord(lo), ord(hi) + 1)]
    else:
        raise BadInputError(
            f"{where}: cannot read host range {m.group(0)}; "
            "use [01:40] (numbers) or [a:f] (letters)"
        )
    return [n for i in items for n in _expand(head + i + tail, where)]


def _value(raw: str) -> Any:
    """INI values are YAML-ish scalars for Ansible (`true`, `3`, `[a, b]`)."""
    try:
        return yaml.safe_load(raw) if raw != "" else ""
    except yaml.YAMLError:
        return raw


def _kv_pairs(tokens: list[str], where: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for tok in tokens:
        if "=" not in tok:
            raise BadInputError(
                f"{where}: expected key=value, found {tok!r}; variables after a host name "
                "(or under [group:vars]) are written key=value"
            )
        k, v = tok.split("=", 1)
        if not re.match(r"^[A-Za-z_][A-Za-z0-9_]*$", k):
            raise BadInputError(
                f"{where}: {k!r} is not a valid variable name; use letters, digits and _, "
                "not starting with a digit"
            )
        out[k] = _value(v)
    return out


def load_inventory(path: Path) -> Inventory:
    if not path.exists():
        raise BadInputError(
            f"inventory {path} does not exist: pass the farm's Ansible INI inventory with "
            "--inventory (inventories/example/farm.ini shows the format; `rigpivot lab up` "
            "writes the lab's)"
        )
    if path.is_dir():
        raise BadInputError(
            f"inventory {path} is a directory: pass the INI file in it with --inventory"
        )
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as e:
        raise BadInputError(f"inventory {path}: cannot read it: {e}") from e

    hosts: dict[str, Host] = {}
    direct: dict[str, list[str]] = {}
    children: dict[str, list[str]] = {}
    group_vars: dict[str, dict[str, tuple[Any, str]]] = {}
    section, kind = "ungrouped", ""
    for n, line in enumerate(text.splitlines(), 1):
        where = f"{path}:{n}"
        s = line.strip()
        if not s or s.startswith(("#", ";")):
            continue
        if s.startswith("["):
            m = _SECTION.match(s)
            if not m:
                raise BadInputError(
                    f"{where}: cannot read section header {s!r}; a section is [group], "
                    "[group:vars] or [group:children]"
                )
            section, kind = m.group(1), m.group(2) or ""
            if kind == "children":
                children.setdefault(section, [])
            elif kind == "":
                direct.setdefault(section, [])
            continue
        try:
            tokens = shlex.split(s, comments=True)
        except ValueError as e:
            raise BadInputError(
                f"{where}: {e} in {s!r}; close the quote (or escape it with a backslash)"
            ) from e
        if kind == "vars":
            for k, v in _kv_pairs(tokens, where).items():
                group_vars.setdefault(section, {})[k] = (v, where)
        elif kind == "children":
            children[section].append(tokens[0])
        else:
            if not _NAME.match(tokens[0]):
                raise BadInputError(
                    f"{where}: {tokens[0]!r} is not a valid host name; a host line starts with "
                    "the rig's name (letters, digits, . - _), then key=value variables"
                )
            hvars = _kv_pairs(tokens[1:], where)
            for name in _expand(tokens[0], where):
                host = hosts.get(name)
                if host is None:
                    host = hosts[name] = Host(name=name, line=where)
                elif name in direct.get(section, []) or (hvars and host.vars):
                    raise BadInputError(
                        f"{where}: host {name} is listed again (first at {host.line}); "
                        "list each rig once and put shared settings in group vars"
                    )
                direct.setdefault(section, []).append(name)
                for k, v in hvars.items():
                    host.vars[k], host.origin[k] = v, where

    for g, kids in children.items():
        for kid in kids:
            if kid not in direct and kid not in children:
                raise BadInputError(
                    f"{path}: group {g!r} lists unknown child group {kid!r}; add a [{kid}] "
                    f"section with its hosts, or remove it from [{g}:children]"
                )

    def members(g: str, seen: tuple[str, ...] = ()) -> list[str]:
        if g in seen:
            raise BadInputError(
                f"{path}: group {g!r} is its own descendant; remove the loop from the "
                "[…:children] sections"
            )
        out = list(direct.get(g, []))
        for kid in children.get(g, []):
            out += [h for h in members(kid, (*seen, g)) if h not in out]
        return out

    groups = {g: members(g) for g in {*direct, *children}}
    groups["all"] = list(hosts)

    # Depth of each group below `all`: deeper groups' vars win, as in Ansible.
    def depth(g: str) -> int:
        parents = [p for p, kids in children.items() if g in kids]
        return 1 + max((depth(p) for p in parents), default=0)

    gv_dir = _vars_dir(path.parent / "group_vars")
    hv_dir = _vars_dir(path.parent / "host_vars")
    for host in hosts.values():
        host.groups = [g for g, ms in groups.items() if host.name in ms and g != "all"]
        layered: dict[str, tuple[Any, str]] = {}
        for g in ["all", *sorted(host.groups, key=lambda g: (depth(g), g))]:
            layered.update(gv_dir.get(g, {}))
            layered.update(group_vars.get(g, {}))
        layered.update(hv_dir.get(host.name, {}))
        for k, (v, where) in layered.items():
            if k not in host.vars:  # host line vars win over group vars
                host.vars[k], host.origin[k] = v, where
    if not hosts:
        raise BadInputError(
            f"inventory {path} lists no hosts: add the rigs under a [group] section, one per "
            "line (rig01 ansible_host=10.0.1.1)"
        )
    return Inventory(path=path, hosts=hosts, groups=groups)


def _vars_dir(d: Path) -> dict[str, dict[str, tuple[Any, str]]]:
    """group_vars/NAME.yml (or NAME/*.yml) -> {NAME: {var: (value, file)}}."""
    out: dict[str, dict[str, tuple[Any, str]]] = {}
    if not d.is_dir():
        return out
    for f in sorted(d.glob("*")):
        files = sorted(f.glob("*.y*ml")) if f.is_dir() else [f]
        name = f.name if f.is_dir() else f.stem
        for y in files:
            if y.suffix not in (".yml", ".yaml"):
                continue
            try:
                data = yaml.safe_load(y.read_text()) or {}
            except yaml.YAMLError as e:
                mark = getattr(e, "problem_mark", None)
                line = f":{mark.line + 1}" if mark else ""
                raise BadInputError(f"{y}{line}: not valid YAML: {e}; fix the file") from e
            if not isinstance(data, dict):
                raise BadInputError(f"{y}: expected a mapping of variables (name: value lines)")
            for k, v in data.items():
                out.setdefault(name, {})[str(k)] = (v, str(y))
    return out
