"""`rigpivot advise`: per rig, mine or serve AI, with the numbers and the reason."""

from __future__ import annotations

import datetime
from pathlib import Path
from typing import Annotated

import typer

from toolkit.console import console, print_advice, write_reports
from toolkit.economics.engine import AdviceReport, Decision, advise_fleet
from toolkit.economics.history import (
    default_history_path,
    load_history,
    read_journal,
    save_history,
)
from toolkit.economics.inputs import build_inputs, load_measurements
from toolkit.economics.prices import default_cache_dir, load_prices, load_whattomine
from toolkit.errors import BadInputError, UnreachableError
from toolkit.inventory import Host
from toolkit.preflight import check_farm, judge_fleet
from toolkit.probe import ProbeOptions
from toolkit.report import advise_html

DECISION_FILES: dict[Decision, str] = {"convert": "convert.hosts", "switch-back": "rollback.hosts"}


def _power_percent(hosts: list[Host]) -> dict[str, float]:
    """The power_profile role's cap where the farm file sets it for a rig."""
    out = {}
    for h in hosts:
        v = h.vars.get("power_profile_limit_percent")
        if v is None:
            continue
        try:
            out[h.name] = float(v)
        except (TypeError, ValueError):
            raise BadInputError(
                f"{h.origin.get('power_profile_limit_percent', 'inventory')}: "
                f"power_profile_limit_percent for host {h.name}: {v!r} is not a number"
            ) from None
    return out


def write_decisions(report: AdviceReport, folder: Path) -> dict[str, str]:
    """One file per move, one host per line: `convert --limit @<folder>/convert.hosts`,
    `rollback --limit @<folder>/rollback.hosts`. Both are written, empty when nobody moves, so
    a file left from an earlier run never stands in for this one."""
    folder.mkdir(parents=True, exist_ok=True)
    written: dict[str, str] = {}
    for decision, name in DECISION_FILES.items():
        path = folder / name
        hosts = report.hosts(decision)
        path.write_text("".join(f"{h}\n" for h in hosts))
        written[decision] = str(path)
    return written


def advise(
    inventory: Annotated[
        Path,
        typer.Option(
            "--inventory", "-i", help="The farm's Ansible inventory (INI).", show_default=False
        ),
    ],
    prices: Annotated[
        Path, typer.Option("--prices", help="prices.yml (docs/economics.md).", show_default=False)
    ],
    measurements: Annotated[
        Path | None,
        typer.Option(
            "--measurements",
            help="JSON of measured hashrates and watts per rig and card (what the probe will "
            "read from the miners and NVML).",
        ),
    ] = None,
    limit: Annotated[
        str | None, typer.Option("--limit", "-l", help="Hosts or groups, Ansible --limit syntax.")
    ] = None,
    json_out: Annotated[
        Path | None, typer.Option("--json", help="Write the advice as JSON.")
    ] = None,
    html_out: Annotated[
        Path | None, typer.Option("--html", help="Write the advice as HTML, with charts.")
    ] = None,
    decisions_out: Annotated[
        Path | None,
        typer.Option(
            "--decisions-out",
            help="Folder for convert.hosts and rollback.hosts (one host per line), for "
            "`convert --limit @DIR/convert.hosts` and `rollback --limit @DIR/rollback.hosts`.",
        ),
    ] = None,
    history: Annotated[
        Path | None,
        typer.Option(
            "--history",
            help="Where advise keeps each rig's side and the recent prices between runs.",
            show_default=".rigpivot-advise-history.json beside the farm file",
        ),
    ] = None,
    journal: Annotated[
        Path, typer.Option("--journal", help="The run journals (switch times, downtime).")
    ] = Path("runs"),
    known_hosts: Annotated[
        Path | None, typer.Option(help="known_hosts to check rigs against.")
    ] = None,
    accept_new_host_keys: Annotated[
        bool, typer.Option(help="Trust host keys not yet in known_hosts (changed keys: never).")
    ] = False,
    timeout: Annotated[float, typer.Option(min=1, help="Per-rig SSH timeout, seconds.")] = 30,
) -> None:
    """Per rig: does mining or serving AI pay more, and is a switch worth it now.

    Changes no rig. Exit 0: done; 1: the mining price source failed with no cached copy;
    2: bad input (nothing probed); 3: some rigs unreachable (the others advised).
    """
    price_file = load_prices(prices)
    measured = load_measurements(measurements) if measurements else None
    history_path = history or default_history_path(inventory)
    past = load_history(history_path)
    hosts, policies = check_farm(inventory, limit)
    percent = _power_percent(hosts)
    coins, notes = load_whattomine(
        price_file.mining.whattomine, default_cache_dir(), price_file.mining.fetch_timeout_s
    )
    opts = ProbeOptions(
        known_hosts=known_hosts, accept_new_host_keys=accept_new_host_keys, timeout=timeout
    )
    with console.status("probing rigs"):
        fleet = judge_fleet(inventory, hosts, policies, opts)
    rigs, input_notes = build_inputs(fleet, measured, percent)
    report = advise_fleet(
        rigs, price_file, coins, past, read_journal(journal), datetime.datetime.now(datetime.UTC),
        inventory=str(inventory), prices_file=str(prices), notes=[*notes, *input_notes],
    )  # fmt: skip
    save_history(history_path, past)
    if decisions_out:
        report.decision_files = write_decisions(report, decisions_out)
    print_advice(report)
    write_reports(
        json_out, lambda: report.model_dump_json(indent=2), html_out, lambda: advise_html(report)
    )
    if fleet.unreachable:
        raise UnreachableError(
            f"{len(fleet.unreachable)} rig(s) unreachable, not advised: "
            f"{', '.join(fleet.unreachable)}"
        )
