"""rigpivot's command line. Domain errors become messages and exit codes here, and only here."""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import sys
import threading
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.live import Live
from rich.logging import RichHandler
from rich.markup import escape
from rich.table import Table

from toolkit.catalog_cli import models_app
from toolkit.errors import BadInputError, InterruptedRunError, RigpivotError, UnreachableError
from toolkit.models import FleetReport
from toolkit.plan import Plan
from toolkit.preflight import run_preflight
from toolkit.probe import ProbeOptions, ProbeResult
from toolkit.report import preflight_html, preflight_json
from toolkit.runner import TaskEvent

if TYPE_CHECKING:
    from toolkit.lab.rack import Lab
    from toolkit.pivot import RunReport

# Where output is not a terminal (CI logs, `| tee`, a file) rich would fold every table to 80
# columns, one word per line in the detail column; a wide page keeps each rig on a few lines.
# COLUMNS, when set, still wins.
PIPE_WIDTH = 160


def _make_console(stderr: bool = False) -> Console:
    c = Console(stderr=stderr)
    if not c.is_terminal and "COLUMNS" not in os.environ:
        c = Console(stderr=stderr, width=PIPE_WIDTH)
    return c


console = _make_console()
err_console = _make_console(stderr=True)

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
app.add_typer(models_app, name="models")

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
    for col in ("rig", "rack", "profile", "ssh port", "container", "miner", "pivot", "reboots"):
        table.add_column(col)
    rows = lab.status()
    for s in rows:
        table.add_row(
            s.name, s.rack, s.profile, str(s.port), s.state, s.miner, s.pivot, str(s.reboots)
        )
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
        model = "\n".join(r.plan_lines()) or "-"
        why = "\n".join(
            [escape(x) for x in r.reasons]
            + [f"[yellow]{escape(w)}[/]" for w in r.warnings]
            + [f"[dim]{escape(n)}[/]" for n in r.card_notes()]
        )
        table.add_row(
            r.host,
            "\n".join(f"{n}× {k}" for k, n in cards.items()) or "-",
            f"[{style[r.verdict]}]{r.verdict}[/]",
            ", ".join(r.engines) or "-",
            model,
            why,
        )
    console.print(table)
    console.print(
        f"[bold]{report.cards_fit} of {report.cards_total} cards fit, "
        f"{report.rigs_convertible} of {len(report.rigs)} rigs convertible[/]"
        + (f", {len(report.unreachable)} unreachable" if report.unreachable else "")
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


@contextlib.contextmanager
def _stop_on_ctrl_c() -> Iterator[threading.Event]:
    """The first Ctrl-C (SIGINT) asks the run to stop cleanly: the running play is killed, no
    rollback or batch starts, the report is written and the farm lock released. A second
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
    resume them); 5: another run holds the farm's lock; 130: interrupted (Ctrl-C), rigs keep
    their recorded state.
    """
    from toolkit.pivot import RunOptions
    from toolkit.pivot import convert as run_convert

    opts = RunOptions(
        limit=limit, check=check, batch_size=batch_size, max_fail_percent=max_fail_percent,
        journal_root=journal, probe=_probe_options(accept_new_host_keys, known_hosts),
        snapshot_store=snapshot_store,
    )  # fmt: skip

    def confirm(plan: Plan, fleet: FleetReport) -> bool:
        _print_preflight(fleet)
        _print_plan(plan, check)
        if yes or check:
            return True
        if not _can_ask():
            raise BadInputError("convert changes rigs: confirm at a terminal or pass --yes")
        return typer.confirm("Convert these rigs?", default=False)

    with _stop_on_ctrl_c() as stop, _Progress() as progress:
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
    (nothing touched); 3: some rigs unreachable, the others done; 5: another run holds the
    farm's lock; 130: interrupted.
    """
    from toolkit.pivot import RunOptions
    from toolkit.pivot import rollback as run_rollback

    opts = RunOptions(
        limit=limit, check=check, journal_root=journal,
        probe=_probe_options(accept_new_host_keys, known_hosts),
    )  # fmt: skip

    def confirm(hosts: list[str]) -> bool:
        console.print(f"rollback to mining: {', '.join(hosts)}")
        if yes or check:
            return True
        if not _can_ask():
            raise BadInputError("rollback changes rigs: confirm at a terminal or pass --yes")
        return typer.confirm("Roll these rigs back to mining?", default=False)

    with _stop_on_ctrl_c() as stop, _Progress() as progress:
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
    table = Table(title=f"status: {inventory}")
    for col in ("rig", "state", "step", "snapshot", "platform", "miner", "driver"):
        table.add_column(col)
    for r in results:
        f = r.facts
        if f is None:
            table.add_row(r.host, "[red]unreachable[/]", escape(r.error or ""), "", "", "", "")
            continue
        pv = f.pivot
        table.add_row(
            r.host, pv.state or "mining" if pv else "mining", (pv.step or "-") if pv else "-",
            (pv.snapshot_id or "-") if pv else "-", f.platform,
            ", ".join(m.name for m in f.miners) or "stopped", f.nvidia_driver or "-",
        )  # fmt: skip
    console.print(table)
    if any(r.facts is None for r in results):
        raise UnreachableError("some rigs are unreachable")


def _print_plan(plan: Plan, check: bool) -> None:
    table = Table(title="plan" + (" (check: nothing will change)" if check else ""))
    for col in ("rig", "action", "engine", "model", "GPUs", "why"):
        table.add_column(col, overflow="fold")
    for r in plan.rigs:
        table.add_row(
            r.host, r.action, r.engine or "-", r.model or "-",
            ",".join(map(str, r.gpus)) or "-", escape(r.reason),
        )  # fmt: skip
    console.print(table)
    batches = " | ".join(", ".join(b) for b in plan.batches) or "nothing to convert"
    console.print(f"batches: {batches}")


class _Progress:
    """One live table for the run: each rig's current step (role) and last result."""

    def __init__(self) -> None:
        self.rows: dict[str, tuple[str, str]] = {}
        self.stage_text = ""
        self.live = Live(self._render(), console=console, refresh_per_second=4, transient=True)

    def __enter__(self) -> _Progress:
        self.live.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self.live.__exit__(None, None, None)

    def _render(self) -> Table:
        t = Table(title=self.stage_text or "starting", show_edge=False)
        for col in ("rig", "step", "last"):
            t.add_column(col)
        for host, (step, last) in sorted(self.rows.items()):
            t.add_row(host, step, last)
        return t

    def stage(self, text: str) -> None:
        self.stage_text = text
        self.live.console.print(f"[bold]{escape(text)}[/]")
        self.live.update(self._render())

    def event(self, ev: TaskEvent) -> None:
        step = ev.role or "-"
        if ev.status == "failed":
            self.live.console.print(f"[red]{ev.host}: {escape(ev.task)} failed[/]")
        self.rows[ev.host] = (step, f"{ev.status}: {ev.task}"[:70])
        self.live.update(self._render())


def _finish(report: RunReport) -> None:
    table = Table(title=f"{report.command}{' --check' if report.check else ''}: {report.run_id}")
    for col in ("rig", "outcome", "state", "engine / model", "endpoints", "detail"):
        table.add_column(col, overflow="fold")
    colour = {"converted": "green", "mining": "green", "already-ai": "green",
              "would-convert": "green", "rolled-back": "yellow", "not-started": "yellow",
              "interrupted": "yellow", "untouched": "dim"}  # fmt: skip
    for r in report.rigs:
        c = colour.get(r.outcome, "red")
        table.add_row(
            r.host, f"[{c}]{r.outcome}[/]", r.state or "",
            f"{r.engine or ''} {r.model or ''}".strip(), "\n".join(r.endpoints), escape(r.detail),
        )  # fmt: skip
    console.print(table)
    counts = Counter(r.outcome for r in report.rigs)
    console.print(", ".join(f"{n} {o}" for o, n in sorted(counts.items())) or "nothing to do")
    if report.stopped_early:
        console.print(f"[red]stopped early:[/] {escape(report.stopped_early)}")
    console.print(f"journal: {report.journal} (report.json, report.html)")
    if any(r.snapshot for r in report.rigs):
        console.print(f"snapshots: {report.snapshot_store} (private: wallets, rig passwords)")
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
