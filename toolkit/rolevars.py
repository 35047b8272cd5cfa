"""Check a farm file's role variables against the roles' `meta/argument_specs.yml`, before
any rig is touched: a misspelt `inference_server_engin` would otherwise be silently ignored
and the role would run with its default."""

from __future__ import annotations

import difflib
import functools
import ipaddress
import json
import re
from pathlib import Path
from typing import Any

import yaml

from toolkit.errors import BadInputError
from toolkit.inventory import Host

ROLES = Path(__file__).resolve().parents[1] / "roles"

_TYPES: dict[str, tuple[type, ...]] = {
    "str": (str,),
    "path": (str,),
    "raw": (object,),
    "int": (int,),
    "float": (int, float),
    "bool": (bool,),
    "list": (list,),
    "dict": (dict,),
}


@functools.cache
def role_options() -> dict[str, dict[str, dict[str, Any]]]:
    """role name -> {variable: its argument spec}"""
    out: dict[str, dict[str, dict[str, Any]]] = {}
    for spec in sorted(ROLES.glob("*/meta/argument_specs.yml")):
        data = yaml.safe_load(spec.read_text()) or {}
        options: dict[str, dict[str, Any]] = {}
        for entry in (data.get("argument_specs") or {}).values():
            options.update(entry.get("options") or {})
        out[spec.parents[1].name] = options
    return out


def _role_of(var: str) -> str | None:
    # the longest role name that prefixes the variable: `mining_restore_x` is mining_restore's
    matches = [r for r in role_options() if var.startswith(r + "_")]
    return max(matches, key=len) if matches else None


def _is_cidr_list(var: str, spec: dict[str, Any]) -> bool:
    """The convention: a role's list variable named `*_networks` is a list of CIDR strings."""
    return var.endswith("_networks") and spec.get("type") == "list"


def _cidr_problem(value: Any) -> str | None:
    """Why a `*_networks` value is not a list of CIDR strings, with what to write instead."""
    example = '["192.0.2.10/32", "10.20.0.0/24"]'
    if not isinstance(value, list):
        return f"must be a list of CIDR networks such as {example}, got {value!r}"
    for item in value:
        if isinstance(item, str) and "{{" in item:
            continue  # a template: Ansible resolves it at run time
        try:
            ipaddress.ip_network(str(item).strip(), strict=False)
            if isinstance(item, str) and item.strip():
                continue
        except ValueError:
            pass
        return (
            f"has {item!r}, which is not a CIDR network: write an address as 192.0.2.10/32 "
            f"and a network as 10.20.0.0/24, e.g. {example}"
        )
    return None


def _all_options() -> list[str]:
    return [v for opts in role_options().values() for v in opts]


# A model file the farm file names is refused when it is *almost* a catalog model's file (a
# typo that would only surface as a 404 mid-conversion); a name unlike any catalog model is
# the farm's own model (the lab serves a tiny one) and goes through as is.
_MODEL_SUFFIXES = (".tar.gz", ".tgz", ".tar", ".gguf")


def _catalog_model_files() -> tuple[dict[str, str], list[str]]:
    """catalog file stems (`qwen2.5-14b-awq`) -> model key, and the quantisation suffixes."""
    from toolkit.hardware import model_catalog

    cat = model_catalog()
    quants = sorted({q.lower() for qs in cat.quantizations.values() for q in qs}, key=len)
    stems = {f"{key}-{q}": key for key in cat.models for q in quants}
    return stems, quants


def _model_file_problem(value: str) -> str | None:
    stem = value.lower()
    for suffix in _MODEL_SUFFIXES:
        if stem.endswith(suffix):
            stem = stem.removesuffix(suffix)
            break
    stems, quants = _catalog_model_files()
    if stem in stems:
        return None
    from toolkit.hardware import model_catalog

    models = list(model_catalog().models)
    for q in reversed(quants):  # longest first: q4_k_m before a shorter match
        if stem.endswith("-" + q):
            key = stem.removesuffix("-" + q)
            near = difflib.get_close_matches(key, models, n=1, cutoff=0.8)
            if near:
                return (
                    f"model {key!r} is not in the model catalog; did you mean {near[0]!r} "
                    f"({near[0]}-{q}{value[len(stem) :]})?"
                )
    near = difflib.get_close_matches(stem, list(stems), n=1, cutoff=0.85)
    if near:
        return f"is not a model file of the catalog; did you mean {near[0]}{value[len(stem) :]}?"
    return None


_BOOL_WORDS = {"true": True, "yes": True, "on": True, "false": False, "no": False, "off": False}


def _written_where(where: str) -> str:
    """How the value at `where` (file:line) is written: `host` (an INI host line), `vars` (an
    INI [group:vars] line) or `yaml` (a YAML inventory, group_vars or host_vars file)."""
    file, _, line = where.rpartition(":")
    path = Path(file)
    if path.suffix in (".yml", ".yaml", ".json") or not line.isdigit() or not path.is_file():
        return "yaml"
    try:
        text = path.read_text().splitlines()[int(line) - 1].strip()
    except (OSError, IndexError, UnicodeDecodeError):
        return "yaml"
    return "vars" if re.match(r"^[A-Za-z_][A-Za-z0-9_]*\s*=", text) else "host"


def _list_items(value: str) -> list[str]:
    inner = value.strip().removeprefix("[").removesuffix("]")
    return [i.strip().strip("'\"") for i in inner.split(",") if i.strip().strip("'\"")]


def _how_to_write(where: str, var: str, value: Any, kind: str) -> str:
    """What to write instead, for the two ways an INI farm file says one thing to a reader and
    another to Ansible: a list without JSON quoting, and a lowercase true/false."""
    form = _written_where(where)
    if kind == "list" and isinstance(value, str):
        items = json.dumps(_list_items(value), separators=(",", ":"))
        said = "Ansible reads it as a string, not a list"
        if form == "host":
            return f"; {said}: on a host line write {var}='{items}'"
        if form == "vars":
            return f"; {said}: under [group:vars] write {var}={items}"
        return f"; write a YAML list: {var}: {items}"
    if kind == "bool" and isinstance(value, str) and value.strip().lower() in _BOOL_WORDS:
        word = _BOOL_WORDS[value.strip().lower()]
        # Ansible's argument check lets "false" through as a bool, but the role's tasks get
        # the string: mining_restore's `when: not mining_restore_skip_reboot` reads it as true.
        said = f"Ansible passes the string {value!r} to the role, where a `when:` reads it as true"
        if form == "yaml":
            return f"; {said}: write {var}: {str(word).lower()}"
        return f"; {said}: in an INI file write {var}={word}"
    return ""


def check_role_vars(host: Host) -> None:
    problems: list[str] = []
    for var, value in host.vars.items():
        role = _role_of(var)
        where = host.origin.get(var, "inventory")
        if role is None:
            if var.startswith(("ansible_", "rigpivot_")):
                continue
            # A misspelt role prefix (`inference_sever_engine`) matches no role at all.
            near = difflib.get_close_matches(var, _all_options(), n=1, cutoff=0.9)
            if near:
                problems.append(
                    f"{where}: {var} (host {host.name}) is not a variable of any role; "
                    f"did you mean {near[0]}?"
                )
            continue
        spec = role_options()[role].get(var)
        if spec is None:
            near = difflib.get_close_matches(var, list(role_options()[role]), n=1)
            hint = (
                f"; did you mean {near[0]}?"
                if near
                else f"; see roles/{role}/meta/argument_specs.yml"
            )
            problems.append(
                f"{where}: {var} (host {host.name}) is not a variable of role {role}{hint}"
            )
            continue
        kind = str(spec.get("type", "str"))
        if isinstance(value, str) and "{{" in value:
            continue  # a template: Ansible resolves it at run time
        ok = isinstance(value, _TYPES.get(kind, (object,)))
        if kind in ("int", "float") and isinstance(value, bool):
            ok = False
        if kind == "str" and isinstance(value, int | float) and not isinstance(value, bool):
            ok = True  # INI `x=550` means the string "550" to Ansible's str options
        if not ok:
            problems.append(
                f"{where}: {var} (host {host.name}) must be {kind}, got {value!r}"
                + _how_to_write(where, var, value, kind)
            )
        elif spec.get("choices") and value not in spec["choices"]:
            problems.append(
                f"{where}: {var} (host {host.name}) must be one of {spec['choices']}, got {value!r}"
            )
        elif _is_cidr_list(var, spec) and (problem := _cidr_problem(value)):
            problems.append(f"{where}: {var} (host {host.name}) {problem}")
        elif var == "inference_server_model_file" and isinstance(value, str) and value:
            why = _model_file_problem(value)
            if why:
                problems.append(
                    f"{where}: {var} (host {host.name}) {value!r}: {why} "
                    "(catalog: toolkit/data/models.yml)"
                )
    if problems:
        raise BadInputError("\n".join(problems))


def check_convert_vars(hosts: list[Host]) -> None:
    """What convert needs from the farm file for the rigs it will convert, checked before any
    rig is touched: net_hardening refuses to run without the admin networks SSH stays open
    to, and a refusal that late would roll back a fully converted rig."""
    missing = [h for h in hosts if not h.vars.get("net_hardening_admin_networks")]
    if missing:
        names = ", ".join(h.name for h in missing)
        raise BadInputError(
            f"net_hardening_admin_networks is not set for {names}: convert's hardening step "
            "would refuse to run (SSH would be accepted from nowhere). Set it in the farm file "
            "to the networks SSH is accepted from, including this controller's address as the "
            'rigs see it, e.g. net_hardening_admin_networks=["192.0.2.10/32","10.20.0.0/24"] '
            "under [all:vars]"
        )
