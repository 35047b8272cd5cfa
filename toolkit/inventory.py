"""The farm file, read by Ansible's own inventory machinery, with errors that name file and line.

Ansible's inventory plugins (INI or YAML), its `group_vars/` and `host_vars/` beside the
inventory, host ranges (`rig[01:40]`) and variable precedence decide every value here: what
rigpivot checks is exactly what the roles will get (`ansible-inventory --host` prints the
same). An INI value is not YAML to Ansible: `x=[a,b]` is the string "[a,b]" and `x=false`
the string "false". This module only adds what Ansible does not say: where each value was
set (file and line), and a refusal of the mistakes Ansible passes over in silence (a host
range that runs backwards, one rig listed twice with variables).
"""

from __future__ import annotations

import difflib
import re
import shlex
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from toolkit.errors import BadInputError


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


def is_yaml_source(path: Path) -> bool:
    return path.suffix in (".yml", ".yaml", ".json")


def load_inventory(path: Path) -> Inventory:
    if not path.exists():
        raise BadInputError(
            f"inventory {path} does not exist: pass the farm's Ansible INI inventory (or a YAML "
            "one) with --inventory (inventories/example/farm.ini shows the format; "
            "`rigpivot lab up` writes the lab's)"
        )
    if path.is_dir():
        raise BadInputError(
            f"inventory {path} is a directory: pass the INI file in it with --inventory"
        )
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as e:
        raise BadInputError(f"inventory {path}: cannot read it: {e}") from e

    _refuse_unreadable(path, text)
    index = _IniIndex.scan(path, text) if not is_yaml_source(path) else None
    if index:
        index.refuse_silent_mistakes()

    from ansible.parsing.dataloader import DataLoader
    from ansible.vars.manager import VariableManager

    loader = DataLoader()
    manager = _manager(loader, path)
    variables = VariableManager(loader=loader, inventory=manager)
    hosts: dict[str, Host] = {}
    for h in manager.get_hosts("all"):
        name = str(h.name)
        raw = _ansible_host_vars(variables.get_vars(host=h, include_hostvars=False, stage="all"))
        host = Host(name=name, groups=[str(g.name) for g in h.get_groups() if g.name != "all"])
        host.vars = {str(k): _plain(v) for k, v in raw.items()}
        ordered = [str(g.name) for g in sorted(h.get_groups(), key=_precedence, reverse=True)]
        for var, value in raw.items():
            host.origin[str(var)] = _origin(value) or _scan_origin(
                path, text, index, name, ordered, str(var)
            )
        first = index.first_line(name) if index else _yaml_line(path, text, name)
        host.line = first or str(path)
        hosts[name] = host
    if not hosts:
        raise BadInputError(
            f"inventory {path} lists no hosts: add the rigs under a [group] section, one per "
            "line (rig01 ansible_host=10.0.1.1)"
        )
    groups = {
        str(name): [str(h.name) for h in g.get_hosts()]
        for name, g in manager.groups.items()
        if name != "ungrouped" or g.get_hosts()
    }
    groups["all"] = list(hosts)
    return Inventory(path=path, hosts=hosts, groups=groups)


def _manager(loader: Any, path: Path) -> Any:
    from ansible.inventory.manager import InventoryManager

    # Ansible tags every value with the absolute path it came from, and refuses a relative one.
    return InventoryManager(loader=loader, sources=[str(path.resolve())])


def _precedence(group: Any) -> tuple[int, int, str]:
    # Ansible's order: deeper groups win over their parents, then priority, then name.
    return (int(group.depth), int(group.priority), str(group.name))


def _ansible_host_vars(found: dict[str, Any]) -> dict[str, Any]:
    """A host's variables as `ansible-inventory --host` shows them (Ansible's own magic
    variables left out)."""
    from ansible import constants

    return {k: v for k, v in found.items() if k not in constants.INTERNAL_STATIC_VARS}


def _plain(value: Any) -> Any:
    """Ansible's value without its data tags (plain str, int, list...), as JSON would show it."""
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, str):
        return str(value)
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return float(value)
    if isinstance(value, dict):
        return {_plain(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set):
        return [_plain(v) for v in value]
    return value


def _origin(value: Any) -> str | None:
    """Where Ansible read `value` (file:line), from the tag ansible-core puts on what it loads."""
    try:
        from ansible._internal._datatag._tags import Origin
    except ImportError:  # pragma: no cover - ansible-core before data tags
        return None
    tag = Origin.get_tag(value)
    if tag is None or not tag.path:
        return None
    return f"{tag.path}:{tag.line_num}" if tag.line_num else str(tag.path)


# -- what Ansible refuses, said with the line -------------------------------------------------


def _refuse_unreadable(path: Path, text: str) -> None:
    """Parse the file with the plugin Ansible would use; a failure names the line it is on."""
    problem = _plugin_problem(path)
    if problem is None:
        return
    if is_yaml_source(path):
        raise BadInputError(f"{path}: Ansible cannot read it as a YAML inventory: {problem}")
    lines = text.splitlines()
    # The INI plugin does not say the line: the first prefix of the file it refuses ends there.
    with tempfile.TemporaryDirectory() as tmp:
        part = Path(tmp) / path.name
        for n in range(1, len(lines) + 1):
            part.write_text("\n".join(lines[:n]) + "\n")
            if _plugin_problem(part) is not None:
                raise BadInputError(_ini_message(f"{path}:{n}", lines[n - 1].strip(), problem))
    raise BadInputError(f"{path}: Ansible cannot read it as an inventory: {problem}")


def _plugin_problem(path: Path) -> str | None:
    from ansible.inventory.data import InventoryData
    from ansible.parsing.dataloader import DataLoader
    from ansible.plugins.loader import inventory_loader

    name = "yaml" if is_yaml_source(path) else "ini"
    plugin = inventory_loader.get(name)
    try:
        plugin.parse(InventoryData(), DataLoader(), str(path.resolve()), cache=False)
    except Exception as e:
        cause = e.__cause__ or e
        return str(getattr(cause, "message", None) or cause).strip()
    return None


def _ini_message(where: str, line: str, problem: str) -> str:
    if "No closing quotation" in problem:
        return (
            f"{where}: No closing quotation in {line!r}; close the quote (or escape it with a "
            "backslash)"
        )
    if line.startswith("["):
        return (
            f"{where}: cannot read section header {line!r} ({problem}); a section is [group], "
            "[group:vars] or [group:children]"
        )
    if m := re.search(r"Expected key=value host variable assignment, got: (.*)", problem):
        return (
            f"{where}: expected key=value, found {m.group(1)!r}; variables after a host name "
            "are written key=value"
        )
    if m := re.search(r"Section \[(.+):children\] includes undefined group '(.+)'", problem):
        return (
            f"{where}: group {m.group(1)!r} lists unknown child group {m.group(2)!r}; add a "
            f"[{m.group(2)}] section with its hosts, or remove it from [{m.group(1)}:children]"
        )
    return f"{where}: Ansible cannot read {line!r}: {problem}"


# -- where a value was set, when Ansible's tag does not say (true, false, null) ---------------

_SECTION = re.compile(r"^\[([^\]\s:]+)(?::(\w+))?\]\s*(?:[#;].*)?$")


@dataclass
class _HostLine:
    line: int
    section: str
    variables: list[str]


@dataclass
class _IniIndex:
    """Where each host and group variable is written in an INI farm file (lines only: the
    values are Ansible's)."""

    path: Path
    hosts: dict[str, list[_HostLine]] = field(default_factory=dict)
    group_vars: dict[str, dict[str, int]] = field(default_factory=dict)
    backwards: list[tuple[int, str]] = field(default_factory=list)

    @classmethod
    def scan(cls, path: Path, text: str) -> _IniIndex:
        from ansible.parsing.utils.addresses import parse_address
        from ansible.plugins.inventory import detect_range, expand_hostname_range

        index = cls(path)
        section, kind = "ungrouped", "hosts"
        for n, raw in enumerate(text.splitlines(), 1):
            s = raw.strip()
            if not s or s[0] in "#;":
                continue
            if m := _SECTION.match(s):
                section, kind = m.group(1), m.group(2) or "hosts"
                continue
            if kind == "vars" and "=" in s:
                index.group_vars.setdefault(section, {})[s.split("=", 1)[0].strip()] = n
            elif kind == "hosts":
                tokens = shlex.split(s, comments=True)
                name, _port = parse_address(tokens[0], allow_ranges=True)
                names = [name]
                if detect_range(name):
                    names = expand_hostname_range(name)
                    if not names:
                        index.backwards.append((n, tokens[0]))
                variables = [t.split("=", 1)[0] for t in tokens[1:]]
                for h in names:
                    index.hosts.setdefault(h, []).append(_HostLine(n, section, variables))
        return index

    def refuse_silent_mistakes(self) -> None:
        """What Ansible reads without a word but no farm means: rigs that vanish, a rig whose
        variables are split over two lines."""
        for n, pattern in self.backwards:
            rng = re.search(r"\[([^\]]+)\]", pattern)
            lo, hi = [*rng.group(1).split(":"), ""][:2] if rng else ("", "")
            raise BadInputError(
                f"{self.path}:{n}: host range {rng.group(0) if rng else pattern} runs backwards "
                f"(Ansible reads it as no host at all); write it low to high ([{hi}:{lo}])"
            )
        for name, lines in self.hosts.items():
            first = lines[0]
            for again in lines[1:]:
                if again.section == first.section or (again.variables and first.variables):
                    raise BadInputError(
                        f"{self.path}:{again.line}: host {name} is listed again (first at "
                        f"{self.path}:{first.line}); list each rig once and put shared settings "
                        "in group vars"
                    )

    def first_line(self, host: str) -> str | None:
        lines = self.hosts.get(host)
        return f"{self.path}:{lines[0].line}" if lines else None

    def origin(self, host: str, groups: list[str], var: str) -> str | None:
        for hl in reversed(self.hosts.get(host, [])):
            if var in hl.variables:
                return f"{self.path}:{hl.line}"
        for g in groups:
            if var in self.group_vars.get(g, {}):
                return f"{self.path}:{self.group_vars[g][var]}"
        return None


def _scan_origin(
    path: Path, text: str, index: _IniIndex | None, host: str, groups: list[str], var: str
) -> str:
    if index and (where := index.origin(host, groups, var)):
        return where
    if not index and (where := _yaml_line(path, text, var)):
        return where
    for f in _vars_files(path.parent, host, groups):
        if where := _yaml_line(f, f.read_text(errors="replace"), var):
            return where
    return str(path)


def _vars_files(base: Path, host: str, groups: list[str]) -> Iterator[Path]:
    """host_vars/ then group_vars/ files that may set a host's variable, most specific first."""
    for kind, names in (("host_vars", [host]), ("group_vars", [*groups, "all"])):
        for name in names:
            d = base / kind
            for candidate in (d / name, d / f"{name}.yml", d / f"{name}.yaml"):
                if candidate.is_dir():
                    yield from sorted(candidate.glob("*.y*ml"))
                elif candidate.is_file():
                    yield candidate


def _yaml_line(path: Path, text: str, key: str) -> str | None:
    rx = re.compile(rf"^\s*{re.escape(key)}\s*:")
    for n, line in enumerate(text.splitlines(), 1):
        if rx.match(line):
            return f"{path}:{n}"
    return None
