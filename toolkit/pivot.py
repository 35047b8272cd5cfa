"""convert and rollback: preflight, plan, rolling batches through ansible-runner, automatic
rollback of rigs that fail, a run journal and a report.

The orchestration only: what each rig's outcome is follows toolkit/outcomes.py's rules, the
journal and the private snapshot store are toolkit/journal.py's, the rigs' leases
toolkit/lease.py's.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from toolkit import outcomes
from toolkit.errors import BadInputError, RigpivotError
from toolkit.inventory import Host
from toolkit.journal import (
    new_journal,
    now,
    restorable_snapshot,
    retire_stored,
    save_report,
    stored_snapshot,
)
from toolkit.lease import lease_vars, leased
from toolkit.models import FleetReport, RigResult, RunReport
from toolkit.outcomes import INTERRUPTED, Recorded
from toolkit.plan import Plan, plan_conversion
from toolkit.playvars import convert_inventory, rollback_inventory
from toolkit.preflight import check_farm, judge_fleet
from toolkit.probe import ProbeOptions, probe_fleet
from toolkit.rolevars import check_convert_vars
from toolkit.runner import PlayResult, TaskEvent, run_playbook

log = logging.getLogger(__name__)


@dataclass
class RunOptions:
    limit: str | None = None
    check: bool = False
    batch_size: int = 2
    max_fail_percent: float = 0.0
    journal_root: Path = Path("runs")
    probe: ProbeOptions | None = None
    # Where the snapshots fetched from the rigs are kept; default `snapshots/` beside the
    # journal root (runs/ -> snapshots/).
    snapshot_store: Path | None = None

    @property
    def store(self) -> Path:
        return (self.snapshot_store or self.journal_root.resolve().parent / "snapshots").resolve()


def _recorded(
    hosts: list[Host],
    plays: list[PlayResult],
    opts: RunOptions,
    before: dict[str, str | None],
) -> dict[str, Recorded]:
    """Each rig's pivot record now: read from the rig (read-only probe) when it answers, else
    the last record a play saw, else the state preflight read before the run."""
    names = [h.name for h in hosts]
    found: dict[str, Recorded] = {h: (before.get(h), None) for h in names}
    for play in plays:
        for h in names:
            rec = play.rigs[h].record if h in play.rigs else None
            if rec:
                found[h] = (rec.get("state"), rec.get("step"))
    try:
        live = probe_fleet(hosts, dataclasses.replace(opts.probe or ProbeOptions(), timeout=10))
    except RigpivotError as e:
        log.warning("could not read the pivot records back: %s", e)
        return found
    for res in live:
        if res.facts is not None:
            pv = res.facts.pivot
            found[res.host] = (pv.state or "mining", pv.step) if pv else ("mining", None)
    return found


def convert(
    inventory: Path,
    opts: RunOptions,
    confirm: Callable[[Plan, FleetReport], bool],
    on_event: Callable[[TaskEvent], None] = lambda _e: None,
    on_stage: Callable[[str], None] = lambda _s: None,
    should_stop: Callable[[], bool] = lambda: False,
) -> RunReport:
    """Preflight, plan, then convert fit rigs in rolling batches; rigs that fail are rolled
    back to mining (or quarantined when rollback fails too).

    When `should_stop` turns true (the operator's Ctrl-C) the running play is stopped, no
    rollback and no further batch starts, and the report names each rig that was stopped
    mid-way with the state its pivot record holds: a later `convert` resumes from there."""
    # Bad input is refused before the lock, the journal or any rig is touched.
    selected, policies = check_farm(inventory, opts.limit)
    farm = {h.name: h for h in selected}
    on_stage("preflight")
    fleet = judge_fleet(inventory, selected, policies, opts.probe)
    plan = plan_conversion(fleet, opts.batch_size)
    check_convert_vars([farm[r.host] for r in plan.of("convert") if r.host in farm])
    run_id, journal = new_journal(opts.journal_root)
    (journal / "preflight.json").write_text(fleet.model_dump_json(indent=2))
    (journal / "plan.json").write_text(plan.model_dump_json(indent=2))
    report = RunReport(
        run_id=run_id, command="convert", inventory=str(inventory), check=opts.check,
        journal=str(journal), started=now(),
    )  # fmt: skip
    report.rigs += [
        outcomes.unplanned(rp) for rp in plan.rigs if rp.action not in ("convert", "return")
    ]
    returning = [rp.host for rp in plan.of("return")]
    if not (plan.batches or returning) or not confirm(plan, fleet):
        report.rigs += [outcomes.unplanned(rp) for rp in plan.of("return")]
        report.finished = now()
        save_report(journal, report)
        return report
    if not opts.check:
        report.snapshot_store = str(opts.store)
    plan_inv = convert_inventory(journal, plan, farm, opts.store, opts.probe, opts.check)
    inventories = [plan_inv, inventory]
    lvars = lease_vars(run_id, "convert")
    planned = [rp.host for rp in plan.of("convert") + plan.of("return")]
    with leased(inventories, planned, lvars, journal, check=opts.check) as took_over:
        report.leases_taken_over = took_over
        if returning:
            on_stage(f"returning to mining: {', '.join(returning)}")
            back = run_playbook(
                "rollback.yml", inventories, returning, journal / "ansible" / "000-return",
                extravars=lvars, check=opts.check, on_event=on_event, should_stop=should_stop,
            )  # fmt: skip
            report.rigs += [
                outcomes.returned(rp, back, check=opts.check) for rp in plan.of("return")
            ]
        addresses = {v.host: v.address for v in fleet.rigs}
        by_host = {r.host: r for r in plan.rigs}

        def stop_here(n: int, why: str) -> None:
            rest = [h for b in plan.batches[n - 1 :] for h in b]
            report.stopped_early = f"{why}; {len(rest)} rigs not started"
            report.rigs += [RigResult(host=h, outcome="not-started") for h in rest]

        for n, batch in enumerate(plan.batches, 1):
            if should_stop():
                report.interrupted = True
                stop_here(n, f"{INTERRUPTED} before batch {n}")
                break
            on_stage(f"batch {n}/{len(plan.batches)}: {', '.join(batch)}")
            # The play's own max_fail_percentage would abort every rig of the batch at the first
            # failure, leaving the others half-converted: here each rig of a batch finishes,
            # and --max-fail-percent is applied between batches; failed rigs are rolled back
            # after the batch (the play's own rollback is for runs without this controller).
            play = run_playbook(
                "convert.yml", inventories, batch, journal / "ansible" / f"{n:03d}-convert",
                extravars={**lvars, "rigpivot_batch_size": len(batch),
                           "rigpivot_max_fail_percent": 100,
                           "rigpivot_rollback_on_failure": False},
                check=opts.check, on_event=on_event, should_stop=should_stop,
            )  # fmt: skip
            if not opts.check and not play.canceled:
                outcomes.mark_unfinished(play)
            touched = outcomes.to_roll_back(play, {r.host: r.state for r in plan.rigs})
            rolled: PlayResult | None = None
            if touched and not opts.check and not should_stop():
                on_stage(f"batch {n}: rolling back {', '.join(touched)}")
                rolled = run_playbook(
                    "rollback.yml", inventories, touched,
                    journal / "ansible" / f"{n:03d}-rollback", extravars=lvars, on_event=on_event,
                    should_stop=should_stop,
                )  # fmt: skip
            left = outcomes.left_midway(batch, play, touched, rolled)
            recorded = (
                _recorded([farm[h] for h in left], [p for p in (play, rolled) if p], opts,
                          {r.host: r.state for r in plan.rigs})
                if left else {}
            )  # fmt: skip
            for host in batch:
                res = outcomes.converted(
                    by_host[host], play.rigs[host], rolled, batch=n, check=opts.check,
                    canceled=play.canceled, address=addresses[host],
                    recorded=recorded.get(host),
                )  # fmt: skip
                if not opts.check:
                    res.snapshot = stored_snapshot(opts.store, host, play.rigs[host].record)
                    if res.outcome == "rolled-back":
                        retire_stored(opts.store, host)
                report.rigs.append(res)
            if outcomes.batch_stopped(play, rolled, touched, opts.check):
                report.interrupted = True
                if n < len(plan.batches):
                    stop_here(n + 1, f"{INTERRUPTED} in batch {n}")
                else:
                    report.stopped_early = f"{INTERRUPTED} in batch {n}"
                break
            failed = [] if play.canceled else play.failed()
            share = 100.0 * len(failed) / len(batch)
            if failed and share > opts.max_fail_percent and n < len(plan.batches):
                stop_here(
                    n + 1,
                    f"batch {n}: {len(failed)} of {len(batch)} rigs failed ({share:.0f}% > "
                    f"--max-fail-percent {opts.max_fail_percent:g})",
                )
                break
        report.finished = now()
        save_report(journal, report)
        return report


def rollback(
    inventory: Path,
    opts: RunOptions,
    confirm: Callable[[list[str]], bool],
    on_event: Callable[[TaskEvent], None] = lambda _e: None,
    should_stop: Callable[[], bool] = lambda: False,
) -> RunReport:
    """Put rigs back to mining from their snapshots. Rigs with no snapshot are refused before
    anything runs. `should_stop` stops the play as in `convert`; a rig stopped mid-restore
    keeps its snapshot, and the next `rollback` finishes it."""
    hosts, _ = check_farm(inventory, opts.limit)
    probed = probe_fleet(hosts, opts.probe or ProbeOptions())
    records = {r.host: r.facts.pivot for r in probed if r.facts is not None}
    # A rig that mines and is in no conversion has nothing to undo (its last rollback
    # retired that conversion's snapshot): a no-op that says so.
    mining = [
        h for h, pv in records.items()
        if not (pv and pv.snapshot_id) and (pv is None or pv.state in (None, "mining"))
    ]  # fmt: skip
    # A damaged record names no snapshot: the private store's copy stands in for it.
    stored = {
        h: restorable_snapshot(opts.store, h)
        for h, pv in records.items() if pv is not None and pv.state == "damaged"
    }  # fmt: skip
    no_snapshot = [
        h for h, pv in records.items()
        if h not in mining and not (pv and pv.snapshot_id) and not stored.get(h)
    ]  # fmt: skip
    if no_snapshot:
        raise BadInputError(
            ", ".join(f"{h} ({records[h].state})" for h in no_snapshot)  # type: ignore[union-attr]
            + ": no snapshot named in the rig's pivot record (nor, for a damaged record, one "
            f"in the private store {opts.store}), so nothing to roll back to: see `rigpivot "
            "status` and the rig's /var/lib/rigpivot/state.json, and leave them out with "
            "--limit; nothing was changed"
        )
    todo = [h for h in records if h not in mining]
    before = {r.host: (r.facts.pivot.state if r.facts and r.facts.pivot else None) for r in probed}
    run_id, journal = new_journal(opts.journal_root)
    report = RunReport(
        run_id=run_id, command="rollback", inventory=str(inventory), check=opts.check,
        journal=str(journal), started=now(),
    )  # fmt: skip
    report.rigs += [
        RigResult(host=r.host, outcome="unreachable", detail=r.error or "")
        for r in probed
        if r.facts is None
    ]
    report.rigs += [
        RigResult(host=h, outcome="mining", state="mining",
                  detail="mining and in no conversion: nothing to roll back")
        for h in mining
    ]  # fmt: skip
    go = bool(todo) and confirm(todo)
    if go and should_stop():
        report.interrupted, report.stopped_early = True, f"{INTERRUPTED} before the play"
        report.rigs += [RigResult(host=h, outcome="not-started") for h in todo]
    elif go:
        targets = [h for h in hosts if h.name in todo]
        ssh_inv = rollback_inventory(journal, targets, stored, opts.probe)
        lvars = lease_vars(run_id, "rollback")
        with leased([ssh_inv, inventory], todo, lvars, journal, check=opts.check) as took_over:
            report.leases_taken_over = took_over
            play = run_playbook(
                "rollback.yml", [ssh_inv, inventory], todo, journal / "ansible" / "001-rollback",
                extravars={**lvars, "rigpivot_batch_size": max(1, opts.batch_size)},
                check=opts.check, on_event=on_event, should_stop=should_stop,
            )  # fmt: skip
            report.interrupted = play.canceled
            if play.canceled:
                report.stopped_early = INTERRUPTED
            left = outcomes.left_midway(todo, play, [], None)
            by_name = {h.name: h for h in hosts}
            recorded = _recorded([by_name[h] for h in left], [play], opts, before) if left else {}
            report.rigs += [
                outcomes.restored(h, play, check=opts.check, recorded=recorded.get(h)) for h in todo
            ]
            for r in report.rigs:
                if r.outcome == "mining" and r.host in todo and not opts.check:
                    retire_stored(opts.store, r.host)
    report.finished = now()
    save_report(journal, report)
    return report
