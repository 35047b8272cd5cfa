"""rigpivot's command line. Domain errors become messages and exit codes here, and only here."""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.logging import RichHandler
from rich.table import Table

from toolkit.errors import RigpivotError
from toolkit.lab.rack import DEFAULT_STATE_DIR, Lab

console = Console()
err_console = Console(stderr=True)

app = typer.Typer(
    help="Move mining rigs to AI inference and back.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
lab_app = typer.Typer(
    help="The lab: a simulated mining rack (podman rigs reached over real SSH).",
    no_args_is_help=True,
)
app.add_typer(lab_app, name="lab")

LabDir = Annotated[
    Path | None,
    typer.Option(
        "--dir",
        envvar="RIGPIVOT_LAB_DIR",
        help="Where the lab writes its inventory, keys and known_hosts.",
        show_default="inventories/lab",
    ),
]
LabName = Annotated[
    str, typer.Option("--name", help="Lab name: several labs can run side by side.")
]


@lab_app.command("up")
def lab_up(
    rigs: Annotated[int, typer.Option("--rigs", help="How many rigs.")] = 6,
    profile: Annotated[
        str, typer.Option("--profile", help="A rack mix (mixed, nvidia) or one rig profile.")
    ] = "mixed",
    rack_size: Annotated[int, typer.Option(help="Rigs per rack (inventory group).")] = 4,
    dir_: LabDir = None,
    name: LabName = "lab",
) -> None:
    """Bring up (or reconcile) a lab rack and write its inventory."""
    lab = Lab(dir_ or DEFAULT_STATE_DIR, name=name, rack_size=rack_size)
    with console.status("lab up") as status:
        lab.up(rigs, profile, say=lambda m: status.update(f"lab up: {m}"))
    _print_status(lab)
    console.print(f"inventory: [bold]{lab.inventory}[/]  ssh: ssh -F {lab.ssh_config} rig01")


@lab_app.command("down")
def lab_down(dir_: LabDir = None, name: LabName = "lab") -> None:
    """Remove the lab's rigs and network (the image cache stays)."""
    removed = Lab(dir_ or DEFAULT_STATE_DIR, name=name).down()
    console.print(f"removed {len(removed)} container(s)")


@lab_app.command("status")
def lab_status(dir_: LabDir = None, name: LabName = "lab") -> None:
    """Show each lab rig: container, boot, miner, reboots."""
    _print_status(Lab(dir_ or DEFAULT_STATE_DIR, name=name))


def _print_status(lab: Lab) -> None:
    table = Table(title=f"lab {lab.name!r}")
    for col in ("rig", "rack", "profile", "ssh port", "container", "miner", "reboots"):
        table.add_column(col)
    rows = lab.status()
    for s in rows:
        table.add_row(
            s.name, s.rack, s.profile, str(s.port), s.state, s.miner, str(s.reboots)
        )
    if rows:
        console.print(table)
    else:
        console.print(f"lab {lab.name!r} has no rigs: `rigpivot lab up --rigs 6 --profile mixed`")


def main() -> None:
    logging.basicConfig(
        level=logging.INFO,
        format="%(message)s",
        handlers=[RichHandler(console=err_console, show_path=False, show_time=False)],
    )
    try:
        app()
    except RigpivotError as e:
        err_console.print(f"[red]error:[/] {e}")
        sys.exit(e.exit_code)
