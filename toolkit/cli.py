"""rigpivot's command line. Domain errors become messages and exit codes here, and only here."""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.logging import RichHandler
from rich.markup import escape
from rich.table import Table

from toolkit.errors import BadInputError, RigpivotError, UnreachableError
from toolkit.models import FleetReport
from toolkit.preflight import run_preflight
from toolkit.probe import ProbeOptions, ProbeResult
from toolkit.report import preflight_html, preflight_json

if TYPE_CHECKING:
    from toolkit.lab.rack import Lab

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
    from toolkit.lab.rack import DEFAULT_STATE_DIR, Lab

    lab = Lab(dir_ or DEFAULT_STATE_DIR, name=name, rack_size=rack_size)
    with console.status("lab up") as status:
        lab.up(rigs, profile, say=lambda m: status.update(f"lab up: {m}"))
    _print_status(lab)
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

    _print_status(Lab(dir_ or DEFAULT_STATE_DIR, name=name))


def _print_status(lab: Lab) -> None:
    table = Table(title=f"lab {lab.name!r}")
    for col in ("rig", "rack", "profile", "ssh port", "container", "miner", "reboots"):
        table.add_column(col)
    rows = lab.status()
    for s in rows:
        table.add_row(s.name, s.rack, s.profile, str(s.port), s.state, s.miner, str(s.reboots))
    if rows:
        console.print(table)
    else:
        console.print(f"lab {lab.name!r} has no rigs: `rigpivot lab up --rigs 6 --profile mixed`")


Inventory = Annotated[
    Path,
    typer.Option(
        "--inventory", "-i", help="The farm's Ansible inventory (INI).", show_default=False
    ),
]
Limit = Annotated[
    str | None, typer.Option("--limit", "-l", help="Hosts or groups, Ansible --limit syntax.")
]


@app.command()
def preflight(
    inventory: Inventory,
    limit: Limit = None,
    json_out: Annotated[
        Path | None, typer.Option("--json", help="Write the report as JSON.")
    ] = None,
    html_out: Annotated[
        Path | None, typer.Option("--html", help="Write the report as HTML.")
    ] = None,
    accept_new_host_keys: Annotated[
        bool, typer.Option(help="Trust host keys not yet in known_hosts (changed keys: never).")
    ] = False,
    known_hosts: Annotated[
        Path | None, typer.Option(help="known_hosts to check rigs against.")
    ] = None,
    concurrency: Annotated[int, typer.Option(min=1, help="Rigs probed at once.")] = 32,
    timeout: Annotated[float, typer.Option(min=1, help="Per-rig SSH timeout, seconds.")] = 30,
    gpu_source: Annotated[
        str, typer.Option(help="auto (NVML, then nvidia-smi), nvml or nvidia-smi.")
    ] = "auto",
) -> None:
    """Probe every rig over SSH and decide which cards and rigs are fit for AI, and why not.

    Changes nothing. Exit 0: done; 2: bad input (nothing probed); 3: some rigs unreachable.
    """
    if gpu_source not in ("auto", "nvml", "nvidia-smi"):
        raise BadInputError("--gpu-source must be auto, nvml or nvidia-smi")
    opts = ProbeOptions(
        known_hosts=known_hosts,
        accept_new_host_keys=accept_new_host_keys,
        concurrency=concurrency,
        timeout=timeout,
        gpu_source=gpu_source,
    )
    with console.status("probing rigs") as status:
        done: list[str] = []

        def seen(res: ProbeResult) -> None:
            done.append(res.host)
            status.update(f"probing rigs: {len(done)} answered")

        report = run_preflight(inventory, limit, opts, seen)
    _print_preflight(report)
    if json_out:
        json_out.write_text(preflight_json(report))
        console.print(f"JSON report: {json_out}")
    if html_out:
        html_out.write_text(preflight_html(report))
        console.print(f"HTML report: {html_out}")
    if report.unreachable:
        raise UnreachableError(
            f"{len(report.unreachable)} rig(s) unreachable: {', '.join(report.unreachable)}"
        )


def _print_preflight(report: FleetReport) -> None:
    table = Table(title=f"preflight: {report.inventory}", show_lines=True)
    for col in ("rig", "cards", "verdict", "engine", "model per card", "why / warnings"):
        table.add_column(col, overflow="fold")
    style = {"fit": "green", "unfit": "red", "unknown": "yellow"}
    for r in report.rigs:
        cards: dict[str, int] = {}
        for c in r.cards:
            label = f"{c.name} {c.vram_mib // 1024 if c.vram_mib else '?'}G"
            cards[label] = cards.get(label, 0) + 1
        model = (
            f"{r.model.model_name} {r.model.quant} ×{r.instances}\n"
            f"ctx≤{r.model.max_context} ≤{r.model.decode_tokens_s} tok/s"
            if r.model
            else "-"
        )
        why = "\n".join(
            [escape(x) for x in r.reasons] + [f"[yellow]{escape(w)}[/]" for w in r.warnings]
        )
        table.add_row(
            r.host,
            "\n".join(f"{n}× {k}" for k, n in cards.items()) or "-",
            f"[{style[r.verdict]}]{r.verdict}[/]",
            r.engine or "-",
            model,
            why,
        )
    console.print(table)
    console.print(
        f"[bold]{report.cards_fit} of {report.cards_total} cards fit, "
        f"{report.rigs_convertible} of {len(report.rigs)} rigs convertible[/]"
        + (f", {len(report.unreachable)} unreachable" if report.unreachable else "")
    )


def main() -> None:
    logging.basicConfig(
        level=logging.INFO,
        format="%(message)s",
        handlers=[RichHandler(console=err_console, show_path=False, show_time=False)],
    )
    logging.getLogger("paramiko").setLevel(logging.WARNING)
    try:
        app()
    except RigpivotError as e:
        err_console.print(f"[red]error:[/] {escape(str(e))}", soft_wrap=True)
        sys.exit(e.exit_code)


def preflight_main() -> None:
    """The `preflight` shortcut: `preflight --inventory farm.ini` = `rigpivot preflight ...`."""
    sys.argv.insert(1, "preflight")
    main()
