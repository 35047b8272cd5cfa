"""`rigpivot lab`: bring a simulated mining rack up, show it, take it down."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from toolkit.console import console, print_lab_status

lab_app = typer.Typer(
    help="The lab: a simulated mining rack (podman rigs reached over real SSH).",
    no_args_is_help=True,
)

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
    secrets: Annotated[
        Path | None,
        typer.Option(
            help="YAML: rig name -> {wallet, pool_password, rig_passwd, farm_hash} to plant "
            "instead of the lab's derived ones (e.g. to check they never leak)."
        ),
    ] = None,
    dir_: LabDir = None,
    name: LabName = "lab",
) -> None:
    """Bring up (or reconcile) a lab rack and write its inventory."""
    from toolkit.lab.catalog import load_secrets
    from toolkit.lab.rack import DEFAULT_STATE_DIR, Lab

    chosen = load_secrets(secrets) if secrets else None
    lab = Lab(dir_ or DEFAULT_STATE_DIR, name=name, rack_size=rack_size)
    with console.status("lab up") as status:
        lab.up(rigs, profile, say=lambda m: status.update(f"lab up: {m}"), lab_secrets=chosen)
    print_lab_status(lab)
    console.print(f"inventory: [bold]{lab.inventory}[/]  ssh: ssh -F {lab.ssh_config} rig01")


@lab_app.command("down")
def lab_down(dir_: LabDir = None, name: LabName = "lab") -> None:
    """Remove the lab's rigs and network (the image cache stays)."""
    from toolkit.lab.rack import DEFAULT_STATE_DIR, Lab

    removed = Lab(dir_ or DEFAULT_STATE_DIR, name=name).down()
    console.print(f"removed {len(removed)} container(s)")


@lab_app.command("status")
def lab_status(dir_: LabDir = None, name: LabName = "lab") -> None:
    """Show each lab rig: container, boot, miner, reboots."""
    from toolkit.lab.rack import DEFAULT_STATE_DIR, Lab

    print_lab_status(Lab(dir_ or DEFAULT_STATE_DIR, name=name))


@lab_app.command("ee")
def lab_ee() -> None:
    """Build the execution environment's image (execution-environment.yml on the lab's Debian
    base; rebuilt only when the collection, the package or the definition changed)."""
    from toolkit.lab.ee import ensure_ee_image

    with console.status("building the execution environment (a few minutes the first time)"):
        tag = ensure_ee_image()
    console.print(f"execution environment: [bold]{tag}[/]")
    console.print(
        "run a playbook in it: ansible-navigator run rigpivot.farm.status "
        f"-i inventories/lab/farm.ini --eei {tag} --pp never --mode stdout --co=--network=host"
    )
