"""What rigpivot prints: every table and the live progress of a run. The verbs (toolkit/cli.py,
toolkit/lab/cli.py) decide; this module only renders."""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from rich.console import Console
from rich.live import Live
from rich.markup import escape
from rich.table import Table

from toolkit.journal import now
from toolkit.models import FleetReport, RunReport, served_lines
from toolkit.plan import Plan
from toolkit.probe import ProbeResult
from toolkit.runner import TaskEvent

if TYPE_CHECKING:
    from toolkit.economics.engine import AdviceReport
    from toolkit.lab.rack import Lab

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


def write_reports(
    json_out: Path | None,
    to_json: Callable[[], str],
    html_out: Path | None,
    to_html: Callable[[], str],
) -> None:
    """Write the JSON and HTML reports asked for, and say where."""
    for path, render, kind in ((json_out, to_json, "JSON"), (html_out, to_html, "HTML")):
        if path:
            path.write_text(render())
            console.print(f"{kind} report: {path}")


def print_preflight(report: FleetReport) -> None:
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


def print_plan(plan: Plan, check: bool) -> None:
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


class Progress:
    """One live table for the run: each rig's current step (role) and last result."""

    def __init__(self) -> None:
        self.rows: dict[str, tuple[str, str]] = {}
        self.stage_text = ""
        self.live = Live(self._render(), console=console, refresh_per_second=4, transient=True)

    def __enter__(self) -> Progress:
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


def print_run(report: RunReport) -> None:
    """The run report: each rig's outcome, state, what it serves and why."""
    table = Table(title=f"{report.command}{' --check' if report.check else ''}: {report.run_id}")
    for col in ("rig", "outcome", "state", "engine / model", "endpoints", "detail"):
        table.add_column(col, overflow="fold")
    colour = {"converted": "green", "mining": "green", "already-ai": "green",
              "would-convert": "green", "rolled-back": "yellow", "not-started": "yellow",
              "interrupted": "yellow", "untouched": "dim"}  # fmt: skip
    for r in report.rigs:
        c = colour.get(r.outcome, "red")
        serves = "\n".join(served_lines(r.instances)) or f"{r.engine or ''} {r.model or ''}".strip()
        table.add_row(
            r.host, f"[{c}]{r.outcome}[/]", r.state or "", serves, "\n".join(r.endpoints),
            escape(r.detail),
        )  # fmt: skip
    console.print(table)
    counts = Counter(r.outcome for r in report.rigs)
    console.print(", ".join(f"{n} {o}" for o, n in sorted(counts.items())) or "nothing to do")
    for line in report.leases_taken_over:
        console.print(f"[yellow]lease:[/] {escape(line)}")
    if report.stopped_early:
        console.print(f"[red]stopped early:[/] {escape(report.stopped_early)}")
    console.print(f"journal: {report.journal} (report.json, report.html)")
    if any(r.snapshot for r in report.rigs):
        console.print(f"snapshots: {report.snapshot_store} (private: wallets, rig passwords)")


def print_api_keys(keys: dict[str, str], store: Path) -> None:
    """Each new rig's API key, shown once (the private store keeps it; nothing logs it)."""
    for host, key in sorted(keys.items()):
        console.print(
            f"API key of {host}, shown this once (kept in {store / host / 'api-key'}, and on "
            f"the rig in /etc/rigpivot/api-key): {key}",
            soft_wrap=True, highlight=False,
        )  # fmt: skip


def print_status(inventory: Path, results: list[ProbeResult]) -> None:
    """Where each rig stands: its pivot record, platform, miners and driver."""
    table = Table(title=f"status: {inventory}")
    for col in ("rig", "state", "step", "snapshot", "platform", "miner", "serves", "driver"):
        table.add_column(col)
    for r in results:
        f = r.facts
        if f is None:
            table.add_row(r.host, "[red]unreachable[/]", escape(r.error or ""), *[""] * 6)
            continue
        pv = f.pivot
        state = pv.state or "mining" if pv else "mining"
        if pv and pv.lease and pv.lease.live(now()):
            state += (
                f"\nleased by {escape(pv.lease.holder or pv.lease.run)} until {pv.lease.expires}"
            )
        table.add_row(
            r.host, state, (pv.step or "-") if pv else "-",
            (pv.snapshot_id or "-") if pv else "-", f.platform,
            ", ".join(m.name for m in f.miners) or "stopped",
            "\n".join(served_lines(pv.instances)) if pv and pv.instances else "-",
            f.nvidia_driver or "-",
        )  # fmt: skip
    console.print(table)


def _money(v: float | None) -> str:
    return "?" if v is None else f"{v:,.2f}"


def print_advice(report: AdviceReport) -> None:
    """Per rig: mining and AI per day (revenue − power = profit), the decision and why."""
    cur = report.currency
    table = Table(
        title=f"advise: {report.inventory} (per day, {cur}; power {report.power_price_mean:.3g}"
        f"/kWh mean, {report.power_price_now:.3g} now)",
        show_lines=True,
    )
    for col in ("rig", "on", "mining", "AI", "lead", "switch cost", "break-even", "decision",
                "why"):  # fmt: skip
        table.add_column(col, overflow="fold")
    colour = {"convert": "green", "switch-back": "yellow", "keep-mining": "dim", "stay": "dim",
              "undecided": "red"}  # fmt: skip

    def side(rev: float | None, watts: float | None, profit: float | None) -> str:
        if rev is None and profit is None:
            return "?"
        w = f" {watts:.0f} W" if watts is not None else " ? W"
        return f"{_money(profit)}\n[dim]{_money(rev)} rev,{w}[/]"

    for r in report.rigs:
        why = [escape(r.reason)]
        why += [f"[red]missing: {escape(m)}[/]" for m in r.missing[:4]]
        if len(r.missing) > 4:
            why.append(f"[red]… {len(r.missing) - 4} more missing (see JSON)[/]")
        why += [f"[yellow]{escape(n)}[/]" for n in r.notes]
        be = f"{r.break_even_power_price:.3g}/kWh" if r.break_even_power_price else "-"
        c = colour[r.decision]
        table.add_row(
            r.host, r.side or r.state or "?",
            side(r.mining_revenue, r.mining_watts, r.mining_profit),
            side(r.ai_revenue, r.ai_watts, r.ai_profit) if r.fit else "[dim]unfit[/]",
            f"{r.lead:+.0%}" if r.lead is not None else "-",
            f"{r.switch_cost:.2f}\n[dim]{r.downtime_hours:.2g} h down[/]"
            if r.switch_cost is not None and r.downtime_hours is not None else "-",
            be, f"[{c}]{r.decision}[/]", "\n".join(why),
        )  # fmt: skip
    console.print(table)
    console.print(
        f"[bold]farm per day: mining {_money(report.total('mining_profit'))}, AI "
        f"{_money(report.total('ai_profit'))}, as advised {_money(report.as_advised)} {cur}[/] "
        f"(known figures only); convert: {', '.join(report.hosts('convert')) or 'none'}; "
        f"switch back: {', '.join(report.hosts('switch-back')) or 'none'}"
    )
    for n in report.notes:
        console.print(f"[yellow]note:[/] {escape(n)}")
    for d, f in report.decision_files.items():
        verb = "convert" if d == "convert" else "rollback"
        console.print(f"{d}: {f} (`rigpivot {verb} --limit @{f}`)")


def print_lab_status(lab: Lab) -> None:
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
