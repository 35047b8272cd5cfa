"""Domain exceptions. The CLI turns each into a message and an exit code, once."""

from __future__ import annotations


class RigpivotError(Exception):
    """Base of every error rigpivot reports to its user."""

    exit_code = 1


class BadInputError(RigpivotError):
    """The user's input (inventory, variables, options, catalog) is wrong: nothing was touched."""

    exit_code = 2


class UnreachableError(RigpivotError):
    """Some hosts could not be reached."""

    exit_code = 3


class InterruptedRunError(RigpivotError):
    """The operator stopped the run (Ctrl-C / SIGINT): 128 + SIGINT, as shells report it."""

    exit_code = 130


class LabError(RigpivotError):
    """The lab (podman, image build, rig containers) failed."""

    exit_code = 4


def describe_validation_error(error: object) -> str:
    """A pydantic ValidationError as `location: message` lines, the way an operator reads them."""
    from pydantic import ValidationError

    if not isinstance(error, ValidationError):
        return str(error)
    lines = []
    for e in error.errors():
        loc = ".".join(str(p) for p in e["loc"]) or "(top level)"
        msg = e["msg"].removeprefix("Value error, ")
        lines.append(f"  {loc}: {msg}")
    return "\n".join(lines)


class LeasedError(RigpivotError):
    """Another run holds the lease of a rig this run would change."""

    exit_code = 5
