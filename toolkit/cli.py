"""rigpivot's command line. Domain errors become messages and exit codes here, and only here."""

from __future__ import annotations

import contextlib
import logging
import signal
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Annotated

import typer
from rich.logging import RichHandler
from rich.markup import escape

from toolkit.catalog_cli import models_app
from toolkit.console import (
    Progress,
    console,
    err_console,
    print_api_keys,
    print_plan,
    print_preflight,
    print_run,
    print_status,
    write_reports,
)
from toolkit.economics.cli import advise
from toolkit.errors import BadInputError, InterruptedRunError, RigpivotError, UnreachableError
from toolkit.journal import api_keys_to_show
from toolkit.lab.cli import lab_app
from toolkit.models import FleetReport
from toolkit.plan import Plan
from toolkit.preflight import run_preflight
from toolkit.probe import ProbeOptions, ProbeResult
from toolkit.report import preflight_html, preflight_json

if TYPE_CHECKING:
    from toolkit.models import RunReport

app = typer.Typer(
    help="Move mining rigs to AI inference and back.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
app.add_typer(lab_app, name="lab")
app.add_typer(models_app, name="models")
image_app = typer.Typer(
    help="The OS image a reflash stages on rigs that cannot be converted in place.",
    no_args_is_help=True,
)
app.add_typer(image_app, name="image")
app.command("advise")(advise)

Inventory = Annotated[
    Path,
    typer.Option(
        "--inventory", "-i", help="The farm's Ansible inventory (INI).", show_default=False
    ),
]
AcceptNewKeys = Annotated[
    bool, typer.Option(help="Trust host keys not yet in known_hosts (changed keys: never).")
]
KnownHosts = Annotated[Path | None, typer.Option(help="known_hosts to check rigs against.")]
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
    accept_new_host_keys: AcceptNewKeys = False,
    known_hosts: KnownHosts = None,
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
    print_preflight(report)
    write_reports(
        json_out, lambda: preflight_json(report), html_out, lambda: preflight_html(report)
    )
    if report.unreachable:
        raise UnreachableError(
            f"{len(report.unreachable)} rig(s) unreachable: {', '.join(report.unreachable)}"
        )


JournalDir = Annotated[
    Path, typer.Option("--journal", help="Where run journals and reports are written.")
]
SnapshotStore = Annotated[
    Path | None,
    typer.Option(
        "--snapshot-store",
        envvar="RIGPIVOT_SNAPSHOT_STORE",
        help="Private store (0700) for the snapshots fetched from rigs: they hold wallets and "
        "rig passwords, so they never go into the journal.",
        show_default="snapshots/ beside the journal",
    ),
]


def _probe_options(accept_new_host_keys: bool, known_hosts: Path | None) -> ProbeOptions:
    return ProbeOptions(known_hosts=known_hosts, accept_new_host_keys=accept_new_host_keys)


def _can_ask() -> bool:
    return sys.stdin.isatty()


def _confirmed(verb: str, question: str, yes: bool, check: bool) -> bool:
    """The operator's go-ahead: given by --yes, not needed for --check, else asked at a
    terminal (refused as bad input where there is none to ask at)."""
    if yes or check:
        return True
    if not _can_ask():
        raise BadInputError(f"{verb} changes rigs: confirm at a terminal or pass --yes")
    return typer.confirm(question, default=False)


@contextlib.contextmanager
def _stop_on_ctrl_c() -> Iterator[threading.Event]:
    """The first Ctrl-C (SIGINT) asks the run to stop cleanly: the running play is killed, no
    rollback or batch starts, the report is written and the rigs' leases let go. A second
    Ctrl-C quits at once (the play's processes are killed all the same)."""
    stop = threading.Event()

    def on_sigint(_signum: int, _frame: FrameType | None) -> None:
        if stop.is_set():
            signal.signal(signal.SIGINT, signal.default_int_handler)
            raise KeyboardInterrupt
        stop.set()
        err_console.print(
            "[yellow]interrupted: stopping the play; each rig keeps the state it recorded "
            "(Ctrl-C again to quit at once)[/]"
        )

    previous = signal.signal(signal.SIGINT, on_sigint)
    try:
        yield stop
    except KeyboardInterrupt:
        raise InterruptedRunError(
            "quit at the second Ctrl-C before the report was written; each rig keeps the state "
            "it recorded: `rigpivot status` shows it, `convert` resumes, `rollback` returns "
            "to mining"
        ) from None
    finally:
        signal.signal(signal.SIGINT, previous)


@app.command()
def convert(
    inventory: Inventory,
    limit: Limit = None,
    check: Annotated[
        bool, typer.Option("--check", help="Ansible check + diff: show what would change.")
    ] = False,
    batch_size: Annotated[int, typer.Option(min=1, help="Rigs converted at once.")] = 2,
    max_fail_percent: Annotated[
        float,
        typer.Option(min=0, max=100, help="Stop before the next batch above this failure share."),
    ] = 0,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
    journal: JournalDir = Path("runs"),
    snapshot_store: SnapshotStore = None,
    accept_new_host_keys: AcceptNewKeys = False,
    known_hosts: KnownHosts = None,
) -> None:
    """Convert every fit rig to AI inference, in rolling batches; failed rigs go back to mining.

    Exit 0: done (or nothing to do); 1: some rigs failed or were rolled back; 2: bad input
    (nothing touched); 3: some rigs were or went unreachable (host key changed, down; re-run to
    resume them); 5: a rig is leased to another live run (nothing changed); 130: interrupted
    (Ctrl-C), rigs keep their recorded state.
    """
    from toolkit.pivot import RunOptions
    from toolkit.pivot import convert as run_convert

    opts = RunOptions(
        limit=limit, check=check, batch_size=batch_size, max_fail_percent=max_fail_percent,
        journal_root=journal, probe=_probe_options(accept_new_host_keys, known_hosts),
        snapshot_store=snapshot_store,
    )  # fmt: skip

    def confirm(plan: Plan, fleet: FleetReport) -> bool:
        print_preflight(fleet)
        print_plan(plan, check)
        return _confirmed("convert", "Convert these rigs?", yes, check)

    with _stop_on_ctrl_c() as stop, Progress() as progress:
        report = run_convert(inventory, opts, confirm, progress.event, progress.stage, stop.is_set)
    _finish(report)


@app.command()
def rollback(
    inventory: Inventory,
    limit: Limit = None,
    check: Annotated[bool, typer.Option("--check", help="Show what would change.")] = False,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
    journal: JournalDir = Path("runs"),
    accept_new_host_keys: AcceptNewKeys = False,
    known_hosts: KnownHosts = None,
) -> None:
    """Put rigs back to mining from their snapshots: configs byte-identical, miner hashing.

    Exit 0: done; 1: some rigs failed (quarantined); 2: bad input or a rig without a snapshot
    (nothing touched); 3: some rigs unreachable, the others done; 5: a rig is leased to
    another live run (nothing changed); 130: interrupted.
    """
    from toolkit.pivot import RunOptions
    from toolkit.pivot import rollback as run_rollback

    opts = RunOptions(
        limit=limit, check=check, journal_root=journal,
        probe=_probe_options(accept_new_host_keys, known_hosts),
    )  # fmt: skip

    def confirm(hosts: list[str]) -> bool:
        console.print(f"rollback to mining: {', '.join(hosts)}")
        return _confirmed("rollback", "Roll these rigs back to mining?", yes, check)

    with _stop_on_ctrl_c() as stop, Progress() as progress:
        report = run_rollback(inventory, opts, confirm, progress.event, stop.is_set)
    _finish(report)


@app.command()
def status(
    inventory: Inventory,
    limit: Limit = None,
    known_hosts: KnownHosts = None,
) -> None:
    """Show where each rig stands: mining, a step of the pivot, ai, or quarantined.

    Changes nothing. Exit 0: done; 2: bad input (nothing probed); 3: some rigs unreachable.
    """
    from toolkit.preflight import check_farm
    from toolkit.probe import probe_fleet

    hosts, _ = check_farm(inventory, limit)
    results = probe_fleet(hosts, _probe_options(False, known_hosts))
    print_status(inventory, results)
    if any(r.facts is None for r in results):
        raise UnreachableError("some rigs are unreachable")


def _finish(report: RunReport) -> None:
    print_run(report)
    if report.command == "convert" and report.snapshot_store and not report.check:
        converted = [r.host for r in report.rigs if r.outcome == "converted"]
        print_api_keys(api_keys_to_show(Path(report.snapshot_store), converted),
                       Path(report.snapshot_store))  # fmt: skip
    if report.interrupted:
        left = [r.host for r in report.rigs if r.outcome == "interrupted"]
        raise InterruptedRunError(
            f"{report.command} interrupted; "
            + (f"stopped mid-way, at their recorded state: {', '.join(left)}; " if left else "")
            + f"re-run `{report.command}` to continue"
            + (", or `rollback` to return them to mining" if report.command == "convert" else "")
        )
    if report.failed:
        raise typer.Exit(1)
    if report.unreachable:
        raise UnreachableError(
            f"unreachable: {', '.join(report.unreachable)}; once they answer, re-run "
            f"`{report.command}` to finish them"
        )


@image_app.command("build")
def image_build(
    mirror: Annotated[
        str | None,
        typer.Option(help="The farm's Debian mirror (default: the one this machine's apt uses)."),
    ] = None,
) -> None:
    """Build the reflash image (Debian 12: root image, kernel, initramfs, a bootable GPT disk)
    from the farm's Debian mirror, once per set of inputs; print where it is."""
    from toolkit import osimage

    out = osimage.build(mirror)
    console.print(f"image: {out}")
    for line in (out / "manifest.sha256").read_text().splitlines():
        console.print(f"  {line}")


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


def convert_main() -> None:
    sys.argv.insert(1, "convert")
    main()


def rollback_main() -> None:
    sys.argv.insert(1, "rollback")
    main()
