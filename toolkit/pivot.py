"""convert and rollback: preflight, plan, rolling batches through ansible-runner, automatic
rollback of rigs that fail, a run journal and a report.

The run journal (`runs/<run id>/`) holds the preflight report, the plan, each play's
ansible-runner private data directory (with its artifacts), and the run report (JSON and
HTML). It holds no secret: the snapshots fetched from the rigs (rig.conf, wallet.conf, miner
scripts: wallets, rig passwords, farm hashes) go to a separate store, `snapshots/` beside the
journal root (directories 0700, files 0600), and the journal names them by rig, snapshot id
and sha256 only.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import fcntl
import getpass
import hashlib
import logging
import os
import secrets
import socket
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel

from toolkit.errors import BadInputError, RigpivotError
from toolkit.hostkeys import ssh_vars as _ssh_vars
from toolkit.inventory import Host
from toolkit.models import FleetReport
from toolkit.plan import Plan, plan_conversion
from toolkit.preflight import check_farm, judge_fleet
from toolkit.probe import ProbeOptions, probe_fleet
from toolkit.report import run_html
from toolkit.rolevars import check_convert_vars
from toolkit.runner import PlayResult, RigOutcome, TaskEvent, run_playbook

log = logging.getLogger(__name__)


class LockedError(RigpivotError):
    """Another run holds the farm's lock."""

    exit_code = 5


Outcome = Literal[
    "converted", "already-ai", "rolled-back", "quarantined", "failed", "untouched",
    "unreachable", "not-started", "would-convert", "mining", "interrupted",
]  # fmt: skip


class SnapshotRef(BaseModel):
    """The controller's copy of a rig's snapshot, named without its content: the archive is
    `<snapshot store>/<rig>/<id>.tar.gz` (and `<id>.manifest.json` beside it)."""

    id: str
    sha256: str  # of the archive


class RigResult(BaseModel):
    host: str
    outcome: Outcome
    detail: str = ""
    engine: str | None = None
    model: str | None = None
    endpoints: list[str] = []
    batch: int | None = None
    snapshot: SnapshotRef | None = None
    # The rig's pivot record (/var/lib/rigpivot/state.json) as last seen: where a rig that
    # went away or was interrupted stands, and so where the next run resumes it from.
    state: str | None = None
    step: str | None = None


class RunReport(BaseModel):
    run_id: str
    command: Literal["convert", "rollback"]
    inventory: str
    check: bool
    journal: str
    snapshot_store: str | None = None
    started: str
    finished: str = ""
    stopped_early: str | None = None
    interrupted: bool = False  # the operator stopped the run (SIGINT)
    rigs: list[RigResult] = []

    def count(self, outcome: Outcome) -> int:
        return sum(1 for r in self.rigs if r.outcome == outcome)

    @property
    def failed(self) -> bool:
        return any(r.outcome in ("failed", "quarantined", "rolled-back") for r in self.rigs)

    @property
    def unreachable(self) -> list[str]:
        return [r.host for r in self.rigs if r.outcome == "unreachable"]


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


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@contextlib.contextmanager
def farm_lock(journal_root: Path, inventory: Path, command: str) -> Iterator[None]:
    """One convert/rollback at a time per farm file: a second run refuses, naming the holder."""
    locks = journal_root / ".locks"
    locks.mkdir(parents=True, exist_ok=True)
    key = hashlib.sha256(str(inventory.resolve()).encode()).hexdigest()[:16]
    path = locks / f"{key}.lock"
    with path.open("a+") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.seek(0)
            holder = f.read().strip() or "another rigpivot process"
            raise LockedError(
                f"{inventory} is locked by {holder}; wait for that run to end "
                f"(the lock is released when its process exits: {path})"
            ) from None
        f.seek(0)
        f.truncate()
        f.write(
            f"`rigpivot {command}` pid {os.getpid()} by {getpass.getuser()}@"
            f"{socket.gethostname()} since {_now()}\n"
        )
        f.flush()
        try:
            yield
        finally:
            f.truncate(0)
            fcntl.flock(f, fcntl.LOCK_UN)


def _new_journal(root: Path) -> tuple[str, Path]:
    run_id = (
        datetime.datetime.now(datetime.UTC).strftime("%Y%m%dT%H%M%SZ") + "-" + secrets.token_hex(2)
    )
    path = root / run_id
    path.mkdir(parents=True)
    return run_id, path


def _private_dir(path: Path) -> Path:
    """A directory only its owner can enter (the snapshot store and its per-rig folders)."""
    path.mkdir(parents=True, exist_ok=True)
    path.chmod(0o700)
    return path


def _stored_snapshot(
    store: Path, host: str, record: dict[str, object] | None
) -> SnapshotRef | None:
    """Lock down what the play fetched for `host` and name it by id and checksum."""
    facts = (record or {}).get("facts")
    snapshot_id = facts.get("snapshot_id") if isinstance(facts, dict) else None
    folder = store / host
    archive = folder / f"{snapshot_id}.tar.gz"
    if not snapshot_id or not archive.is_file():
        return None
    _private_dir(folder)
    for f in folder.iterdir():
        if f.is_file():
            f.chmod(0o600)
    digest = hashlib.sha256()
    with archive.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 16), b""):
            digest.update(chunk)
    return SnapshotRef(id=str(snapshot_id), sha256=digest.hexdigest())


def _endpoints(address: str, ports: list[int]) -> list[str]:
    host = address.rsplit(":", 1)[0]
    return [f"http://{host}:{p}/v1" for p in ports]


RESUME_HINT = "`convert` resumes it, `rollback` returns it to mining"
INTERRUPTED = "interrupted by the operator (SIGINT)"


def _where(rig: RigOutcome) -> str:
    step = rig.last_role or rig.failed_task or "the play"
    return f"{step}: {rig.last_task}" if rig.last_role and rig.last_task else step


def _recorded(
    hosts: list[Host],
    plays: list[PlayResult],
    opts: RunOptions,
    before: dict[str, str | None],
) -> dict[str, tuple[str | None, str | None]]:
    """Each rig's pivot record now: read from the rig (read-only probe) when it answers, else
    the last record a play saw, else the state preflight read before the run."""
    names = [h.name for h in hosts]
    found: dict[str, tuple[str | None, str | None]] = {h: (before.get(h), None) for h in names}
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


def _state_text(state: str | None, step: str | None) -> str:
    if state is None:
        return "no pivot record read"
    return f"recorded state {state}" + (f" (step {step})" if step else "")


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
    with farm_lock(opts.journal_root, inventory, "convert"):
        on_stage("preflight")
        fleet = judge_fleet(inventory, selected, policies, opts.probe)
        plan = plan_conversion(fleet, opts.batch_size)
        check_convert_vars([farm[r.host] for r in plan.of("convert") if r.host in farm])
        run_id, journal = _new_journal(opts.journal_root)
        (journal / "preflight.json").write_text(fleet.model_dump_json(indent=2))
        (journal / "plan.json").write_text(plan.model_dump_json(indent=2))
        report = RunReport(
            run_id=run_id, command="convert", inventory=str(inventory), check=opts.check,
            journal=str(journal), started=_now(),
        )  # fmt: skip
        verdicts = {v.host: v for v in fleet.rigs}
        for rp in plan.rigs:
            if rp.action != "convert":
                outcome: Outcome = (
                    "already-ai" if rp.action == "already-ai"
                    else "unreachable" if rp.action == "unreachable"
                    else "quarantined" if rp.action == "quarantined"
                    else "untouched"
                )  # fmt: skip
                report.rigs.append(RigResult(host=rp.host, outcome=outcome, detail=rp.reason,
                                             engine=rp.engine, model=rp.model))  # fmt: skip
        if not plan.batches or not confirm(plan, fleet):
            report.finished = _now()
            _save(journal, report)
            return report

        # The plan's choices go in as host variables the roles' defaults fall back to.
        plan_inv = journal / "plan-inventory.yml"
        hosts = {r.host: r.role_vars() for r in plan.of("convert")}
        for name, v in hosts.items():
            v.update(_ssh_vars(farm[name], opts.probe))
        # Snapshots hold wallets and rig passwords: fetched into the private store, never
        # into the journal.
        store = opts.store
        if not opts.check:  # --check fetches nothing
            _private_dir(store)
            report.snapshot_store = str(store)
        for host, v in hosts.items():
            v["mining_snapshot_fetch_dir"] = str(store)
            if not opts.check:
                _private_dir(store / host)
        plan_inv.write_text(yaml.safe_dump({"all": {"hosts": hosts}}, sort_keys=True))
        inventories = [plan_inv, inventory]

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
            # and --max-fail-percent is applied between batches.
            play = run_playbook(
                "convert.yml", inventories, batch, journal / "ansible" / f"{n:03d}-convert",
                extravars={"rigpivot_batch_size": len(batch), "rigpivot_max_fail_percent": 100},
                check=opts.check, on_event=on_event, should_stop=should_stop,
            )  # fmt: skip
            if not opts.check and not play.canceled:
                _unfinished_is_failed(play)
            failed = [] if play.canceled else play.failed()
            # Rigs the play never reached (it failed to start) were not changed: nothing to undo.
            # An unreachable rig cannot be rolled back now; its record says where it stands.
            touched = [h for h in failed if play.rigs[h].reached and not play.rigs[h].unreachable]
            rolled: PlayResult | None = None
            if touched and not opts.check and not should_stop():
                on_stage(f"batch {n}: rolling back {', '.join(touched)}")
                rolled = run_playbook(
                    "rollback.yml", inventories, touched,
                    journal / "ansible" / f"{n:03d}-rollback", on_event=on_event,
                    should_stop=should_stop,
                )  # fmt: skip
            stopped = (
                play.canceled
                or (rolled is not None and rolled.canceled)
                or (bool(touched) and rolled is None and not opts.check)
            )
            # The rigs left mid-way: their pivot record is read back for the report.
            left = [
                h for h in batch
                if play.rigs[h].reached and (
                    play.canceled or play.rigs[h].unreachable
                    or (h in touched and (rolled is None or rolled.canceled
                                          or rolled.rigs[h].unreachable))
                )
            ]  # fmt: skip
            recorded = (
                _recorded([farm[h] for h in left], [p for p in (play, rolled) if p], opts,
                          {r.host: r.state for r in plan.rigs})
                if left else {}
            )  # fmt: skip
            for host in batch:
                rp = next(r for r in plan.rigs if r.host == host)
                rig = play.rigs[host]
                res = RigResult(host=host, outcome="converted", batch=n, engine=rp.engine,
                                model=rp.model)  # fmt: skip
                if host in recorded:
                    res.state, res.step = recorded[host]
                if not opts.check:
                    res.snapshot = _stored_snapshot(store, host, rig.record)
                if play.canceled and rig.ok:
                    if rig.reached:
                        res.outcome = "interrupted"
                        res.detail = (
                            f"{INTERRUPTED} during {_where(rig)}; "
                            f"{_state_text(res.state, res.step)}: {RESUME_HINT}"
                        )
                    else:
                        res.outcome, res.detail = "not-started", INTERRUPTED
                elif opts.check:
                    res.outcome = "would-convert" if rig.ok else "failed"
                    res.detail = "" if rig.ok else f"{rig.failed_task}: {rig.message}"
                elif rig.ok:
                    facts = (rig.record or {}).get("facts") or {}
                    res.state, res.step = "ai", "validate"
                    ports = facts.get("inference_ports") or [8000 + i for i in rp.gpus]
                    res.endpoints = _endpoints(verdicts[host].address, ports)
                    served = (facts.get("inference_engine"), facts.get("inference_model"))
                    if served[0] and (served[0], served[1]) != (rp.engine, rp.model):
                        # The farm file pinned something else than preflight chose (the lab
                        # serves a tiny model on CPU): report what the rig serves.
                        res.engine, res.model = served[0], served[1]
                        res.detail = (
                            f"preflight chose {rp.engine} {rp.model}; the inventory pins this"
                        )
                elif not rig.reached:
                    res.outcome, res.detail = "failed", f"not started: {rig.message}"
                elif rig.unreachable:
                    res.outcome = "unreachable"
                    res.detail = (
                        f"unreachable during {_where(rig)} ({rig.message}); "
                        f"{_state_text(res.state, res.step)}: once it answers, {RESUME_HINT}"
                    )
                else:
                    why = f"{rig.failed_task}: {rig.message}"
                    back = rolled.rigs[host] if rolled else None
                    if back and back.ok:
                        res.outcome, res.detail = "rolled-back", f"convert failed at {why}"
                        res.state, res.step = "mining", "mining_restore"
                    elif rolled is None or rolled.canceled:
                        res.outcome = "interrupted"
                        res.detail = (
                            f"convert failed at {why}; {INTERRUPTED} before its rollback "
                            f"finished; {_state_text(res.state, res.step)}: `rollback` "
                            "returns it to mining"
                        )
                    elif back and back.unreachable:
                        res.outcome = "unreachable"
                        res.detail = (
                            f"convert failed at {why}; unreachable during its rollback "
                            f"({back.message}); {_state_text(res.state, res.step)}: once it "
                            "answers, `rollback` returns it to mining"
                        )
                    else:
                        res.outcome = "quarantined"
                        res.state, res.step = "quarantined", "mining_restore"
                        res.detail = (
                            f"convert failed at {why}; rollback failed too: {back and back.message}"
                        )
                report.rigs.append(res)
            if stopped:
                report.interrupted = True
                if n < len(plan.batches):
                    stop_here(n + 1, f"{INTERRUPTED} in batch {n}")
                else:
                    report.stopped_early = f"{INTERRUPTED} in batch {n}"
                break
            share = 100.0 * len(failed) / len(batch)
            if failed and share > opts.max_fail_percent and n < len(plan.batches):
                stop_here(
                    n + 1,
                    f"batch {n}: {len(failed)} of {len(batch)} rigs failed ({share:.0f}% > "
                    f"--max-fail-percent {opts.max_fail_percent:g})",
                )
                break
        report.finished = _now()
        _save(journal, report)
        return report


def _unfinished_is_failed(play: PlayResult) -> None:
    """A rig is converted only when its pivot record says `ai`. One the play left earlier
    without a failed task (the play was cut short) is half-way: it counts as failed, so that it
    is rolled back like any other."""
    for rig in play.rigs.values():
        state = (rig.record or {}).get("state")
        if rig.ok and rig.reached and state != "ai":
            rig.ok = False
            rig.failed_task = rig.last_task or "convert.yml"
            rig.message = (
                f"the play ended before the rig finished (its record says {state or 'nothing'}, "
                f"not ai; {play.playbook} {play.status}, rc {play.rc})"
            )


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
    with farm_lock(opts.journal_root, inventory, "rollback"):
        probed = probe_fleet(hosts, opts.probe or ProbeOptions())
        no_snapshot = [
            r.host for r in probed
            if r.facts is not None and not (r.facts.pivot and r.facts.pivot.snapshot_id)
        ]  # fmt: skip
        if no_snapshot:
            raise BadInputError(
                f"{', '.join(no_snapshot)}: no rigpivot snapshot on the rig (never converted), "
                "so there is nothing to roll back to: leave them out with --limit "
                "(`rigpivot status` shows which rigs have one); nothing was changed"
            )
        todo = [r.host for r in probed if r.facts is not None]
        before = {
            r.host: (r.facts.pivot.state if r.facts and r.facts.pivot else None) for r in probed
        }
        run_id, journal = _new_journal(opts.journal_root)
        report = RunReport(
            run_id=run_id, command="rollback", inventory=str(inventory), check=opts.check,
            journal=str(journal), started=_now(),
        )  # fmt: skip
        report.rigs += [
            RigResult(host=r.host, outcome="unreachable", detail=r.error or "")
            for r in probed
            if r.facts is None
        ]
        go = bool(todo) and confirm(todo)
        if go and should_stop():
            report.interrupted, report.stopped_early = True, f"{INTERRUPTED} before the play"
            report.rigs += [RigResult(host=h, outcome="not-started") for h in todo]
        elif go:
            ssh_inv = journal / "ssh-inventory.yml"
            ssh_vars = {h.name: _ssh_vars(h, opts.probe) for h in hosts if h.name in todo}
            ssh_inv.write_text(yaml.safe_dump({"all": {"hosts": ssh_vars}}, sort_keys=True))
            play = run_playbook(
                "rollback.yml", [ssh_inv, inventory], todo, journal / "ansible" / "001-rollback",
                extravars={"rigpivot_batch_size": max(1, opts.batch_size)}, check=opts.check,
                on_event=on_event, should_stop=should_stop,
            )  # fmt: skip
            report.interrupted = play.canceled
            if play.canceled:
                report.stopped_early = INTERRUPTED
            left = [
                h for h in todo
                if play.rigs[h].reached and (play.canceled or play.rigs[h].unreachable)
            ]  # fmt: skip
            by_name = {h.name: h for h in hosts}
            recorded = _recorded([by_name[h] for h in left], [play], opts, before) if left else {}
            for host in todo:
                rig = play.rigs[host]
                res = RigResult(host=host, outcome="mining", state="mining", step="mining_restore")
                if host in recorded:
                    res.state, res.step = recorded[host]
                state = (rig.record or {}).get("state")
                if play.canceled and rig.ok:
                    res.outcome = "interrupted" if rig.reached else "not-started"
                    res.detail = (
                        f"{INTERRUPTED} during {_where(rig)}; {_state_text(res.state, res.step)}:"
                        " the next `rollback` finishes it"
                        if rig.reached
                        else INTERRUPTED
                    )
                elif rig.ok and not opts.check and state != "mining":
                    # The play ended before this rig's restore finished (a whole serial batch
                    # failed before it): it is not mining, whatever else it is.
                    res.outcome, res.state = "failed", state
                    res.detail = (
                        f"not restored: the play ended first ({play.playbook} {play.status}); "
                        f"its record says {state or 'nothing new'}; run rollback again"
                    )
                elif rig.ok:
                    pass
                elif rig.unreachable:
                    res.outcome = "unreachable"
                    res.detail = (
                        f"unreachable during {_where(rig)} ({rig.message}); "
                        f"{_state_text(res.state, res.step)}: once it answers, the next "
                        "`rollback` finishes it"
                    )
                else:
                    res.outcome = "failed" if not rig.reached else "quarantined"
                    res.state, res.step = (
                        (None, None) if not rig.reached else ("quarantined", "mining_restore")
                    )
                    res.detail = f"{rig.failed_task}: {rig.message}"
                report.rigs.append(res)
        report.finished = _now()
        _save(journal, report)
        return report


def _save(journal: Path, report: RunReport) -> None:
    (journal / "report.json").write_text(report.model_dump_json(indent=2))
    (journal / "report.html").write_text(run_html(report))
