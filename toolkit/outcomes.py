"""What became of each rig: the rules that turn a play's results into a run report's outcomes.

Pure functions of the plan, the plays' per-rig results and the pivot records read back; no I/O.
A rig counts as converted only when its record says `ai`; a rig that failed is rolled back
when the play reached it and it still answers; a rig left mid-way (interrupted, unreachable)
is reported with the state its record holds, which is where the next run resumes it.
"""

from __future__ import annotations

from toolkit.models import Outcome, RigResult, ServedInstance
from toolkit.plan import RigPlan
from toolkit.runner import PlayResult, RigOutcome

RESUME_HINT = "`convert` resumes it, `rollback` returns it to mining"
INTERRUPTED = "interrupted by the operator (SIGINT)"

Recorded = tuple[str | None, str | None]  # a pivot record's (state, step)


def where(rig: RigOutcome) -> str:
    """The step and task a rig was at when it stopped."""
    step = rig.last_role or rig.failed_task or "the play"
    return f"{step}: {rig.last_task}" if rig.last_role and rig.last_task else step


def state_text(state: str | None, step: str | None) -> str:
    if state is None:
        return "no pivot record read"
    return f"recorded state {state}" + (f" (step {step})" if step else "")


def endpoints(address: str, ports: list[int]) -> list[str]:
    host = address.rsplit(":", 1)[0]
    return [f"http://{host}:{p}/v1" for p in ports]


def unplanned(rp: RigPlan) -> RigResult:
    """A rig the plan does not convert: already serving, unreachable, quarantined, or unfit."""
    outcome: Outcome = (
        "not-started" if rp.action == "return"
        else "already-ai" if rp.action == "already-ai"
        else "unreachable" if rp.action == "unreachable"
        else "quarantined" if rp.action == "quarantined"
        else "untouched"
    )  # fmt: skip
    return RigResult(host=rp.host, outcome=outcome, detail=rp.reason, engine=rp.engine,
                     model=rp.model)  # fmt: skip


def mark_unfinished(play: PlayResult) -> None:
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


def unchanged(rig: RigOutcome, before: str | None) -> bool:
    """The play failed the rig before it changed anything: the rig was mining when the run
    began and its record never left `mining` (the snapshot, the first step, records
    `snapshotted` before the drain touches the rig)."""
    state = (rig.record or {}).get("state")
    return before in (None, "mining") and state in (None, "mining")


def to_roll_back(play: PlayResult, before: dict[str, str | None]) -> list[str]:
    """The failed rigs to roll back now. A rig the play never reached (it failed to start), or
    failed before it changed anything (a snapshot that could not be taken), has nothing to
    undo. An unreachable rig cannot be rolled back now; its record says where it stands."""
    failed = [] if play.canceled else play.failed()
    return [
        h for h in failed
        if play.rigs[h].reached and not play.rigs[h].unreachable
        and not unchanged(play.rigs[h], before.get(h))
    ]  # fmt: skip


def batch_stopped(
    play: PlayResult, rolled: PlayResult | None, touched: list[str], check: bool
) -> bool:
    """The operator stopped the batch: its play, or the rollback it needed, did not run out."""
    return (
        play.canceled
        or (rolled is not None and rolled.canceled)
        or (bool(touched) and rolled is None and not check)
    )


def left_midway(
    batch: list[str], play: PlayResult, touched: list[str], rolled: PlayResult | None
) -> list[str]:
    """The rigs of a batch left mid-way, whose pivot record must be read back for the report."""
    return [
        h for h in batch
        if play.rigs[h].reached and (
            play.canceled or play.rigs[h].unreachable
            or (h in touched and (rolled is None or rolled.canceled
                                  or rolled.rigs[h].unreachable))
        )
    ]  # fmt: skip


def converted(
    rp: RigPlan,
    rig: RigOutcome,
    rolled: PlayResult | None,
    *,
    batch: int,
    check: bool,
    canceled: bool,
    address: str,
    recorded: Recorded | None = None,
) -> RigResult:
    """A rig of a convert batch: converted, would-convert (--check), interrupted, unreachable,
    rolled back, or quarantined when its rollback failed too."""
    res = RigResult(host=rp.host, outcome="converted", batch=batch, engine=rp.engine,
                    model=rp.model)  # fmt: skip
    if recorded is not None:
        res.state, res.step = recorded
    if canceled and rig.ok:
        if rig.reached:
            res.outcome = "interrupted"
            res.detail = (
                f"{INTERRUPTED} during {where(rig)}; "
                f"{state_text(res.state, res.step)}: {RESUME_HINT}"
            )
        else:
            res.outcome, res.detail = "not-started", INTERRUPTED
    elif check:
        res.outcome = "would-convert" if rig.ok else "failed"
        res.detail = "" if rig.ok else f"{rig.failed_task}: {rig.message}"
    elif rig.ok:
        facts = (rig.record or {}).get("facts") or {}
        res.state, res.step = "ai", "validate"
        ports = facts.get("inference_ports") or [8000 + i for i in rp.gpus]
        res.endpoints = endpoints(address, ports)
        res.instances = [
            ServedInstance.model_validate(i) for i in facts.get("inference_instances") or []
        ]
        served = (facts.get("inference_engine"), facts.get("inference_model"))
        if served[0] and (served[0], served[1]) != (rp.engine, rp.model):
            # The farm file pinned something else than preflight chose (the lab serves a tiny
            # model on CPU): report what the rig serves.
            res.engine, res.model = served[0], served[1]
            res.detail = f"preflight chose {rp.engine} {rp.model}; the inventory pins this"
    elif not rig.reached:
        res.outcome, res.detail = "failed", f"not started: {rig.message}"
    elif not rig.unreachable and unchanged(rig, rp.state):
        res.outcome, res.state = "not-started", "mining"
        res.detail = (
            f"convert failed at {rig.failed_task} before changing the rig: {rig.message}; "
            "it keeps mining"
        )
    elif rig.unreachable:
        res.outcome = "unreachable"
        res.detail = (
            f"unreachable during {where(rig)} ({rig.message}); "
            f"{state_text(res.state, res.step)}: once it answers, {RESUME_HINT}"
        )
    else:
        why = f"{rig.failed_task}: {rig.message}"
        back = rolled.rigs[rp.host] if rolled else None
        if back and back.ok:
            res.outcome, res.detail = "rolled-back", f"convert failed at {why}"
            res.state, res.step = "mining", "mining_restore"
        elif rolled is None or rolled.canceled:
            res.outcome = "interrupted"
            res.detail = (
                f"convert failed at {why}; {INTERRUPTED} before its rollback finished; "
                f"{state_text(res.state, res.step)}: `rollback` returns it to mining"
            )
        elif back and back.unreachable:
            res.outcome = "unreachable"
            res.detail = (
                f"convert failed at {why}; unreachable during its rollback ({back.message}); "
                f"{state_text(res.state, res.step)}: once it answers, `rollback` returns it "
                "to mining"
            )
        else:
            res.outcome = "quarantined"
            res.state, res.step = "quarantined", "mining_restore"
            res.detail = f"convert failed at {why}; rollback failed too: {back and back.message}"
    return res


def restored(
    host: str, play: PlayResult, *, check: bool, recorded: Recorded | None = None
) -> RigResult:
    """A rig of a rollback play: mining, interrupted, failed, unreachable or quarantined."""
    rig = play.rigs[host]
    res = RigResult(host=host, outcome="mining", state="mining", step="mining_restore")
    if recorded is not None:
        res.state, res.step = recorded
    state = (rig.record or {}).get("state")
    if play.canceled and rig.ok:
        res.outcome = "interrupted" if rig.reached else "not-started"
        res.detail = (
            f"{INTERRUPTED} during {where(rig)}; {state_text(res.state, res.step)}: the next "
            "`rollback` finishes it"
            if rig.reached
            else INTERRUPTED
        )
    elif rig.ok and not check and state != "mining":
        # The play ended before this rig's restore finished (a whole serial batch failed
        # before it): it is not mining, whatever else it is.
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
            f"unreachable during {where(rig)} ({rig.message}); "
            f"{state_text(res.state, res.step)}: once it answers, the next `rollback` "
            "finishes it"
        )
    else:
        res.outcome = "failed" if not rig.reached else "quarantined"
        res.state, res.step = (None, None) if not rig.reached else ("quarantined", "mining_restore")
        res.detail = f"{rig.failed_task}: {rig.message}"
    return res


def returned(rp: RigPlan, play: PlayResult, *, check: bool) -> RigResult:
    """A rig left mid-way that preflight no longer finds fit, put back to mining."""
    res = restored(rp.host, play, check=check)
    if res.outcome == "mining":
        res.outcome = "rolled-back"
    res.detail = f"{rp.reason}" + (f"; {res.detail}" if res.detail else "")
    return res
