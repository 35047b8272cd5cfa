"""What earlier advise runs saw, kept in a JSON file (by default `.rigpivot-advise-history.json`
beside the farm file): each rig's side and since when, so the minimum stay holds across runs,
and the recent prices, so an outlier can be told from a move.

Also what the run journals say: when each rig last switched (`runs/<id>/report.json`), and how
long its conversions and rollbacks kept it down."""

from __future__ import annotations

import datetime
import json
import statistics
from pathlib import Path

from pydantic import BaseModel, ValidationError

from toolkit.economics.inputs import Side
from toolkit.errors import BadInputError, describe_validation_error
from toolkit.models import RunReport

HISTORY_NAME = ".rigpivot-advise-history.json"


class Observation(BaseModel):
    at: datetime.datetime
    value: float
    rejected: bool = False


class RigRecord(BaseModel):
    side: Side
    since: datetime.datetime | None  # None: on that side since before any record
    last_decision: str | None = None
    last_at: datetime.datetime | None = None


class AdviseHistory(BaseModel):
    version: int = 1
    rigs: dict[str, RigRecord] = {}
    prices: dict[str, list[Observation]] = {}


def default_history_path(inventory: Path) -> Path:
    return inventory.resolve().parent / HISTORY_NAME


def load_history(path: Path) -> AdviseHistory:
    if not path.exists():
        return AdviseHistory()
    try:
        return AdviseHistory.model_validate(json.loads(path.read_text()))
    except json.JSONDecodeError as e:
        raise BadInputError(
            f"{path}:{e.lineno}: the advise history is not JSON ({e.msg}); move it aside to "
            "start a new one (the minimum stay then counts from the run journals only)"
        ) from e
    except ValidationError as e:
        raise BadInputError(f"{path}: not an advise history\n{describe_validation_error(e)}") from e


def save_history(path: Path, history: AdviseHistory) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(history.model_dump_json(indent=2))
    tmp.replace(path)


# -- the run journals ------------------------------------------------------------------------

_SWITCHED = {"converted": "ai", "mining": "mining"}  # a run's outcome → the side it left


def _when(stamp: str) -> datetime.datetime | None:
    try:
        return datetime.datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=datetime.UTC)
    except ValueError:
        return None


def read_journal(journal_root: Path) -> list[RunReport]:
    """Finished, real (not --check) runs, oldest first; unreadable reports are skipped."""
    runs = []
    for f in sorted(journal_root.glob("*/report.json")):
        try:
            r = RunReport.model_validate_json(f.read_text())
        except (OSError, ValidationError):
            continue
        if not r.check and r.finished and _when(r.started) and _when(r.finished):
            runs.append(r)
    return sorted(runs, key=lambda r: r.started)


def last_switch(runs: list[RunReport], host: str) -> tuple[Side, datetime.datetime] | None:
    """The side a rig's last successful convert or rollback left it on, and when."""
    found: tuple[Side, datetime.datetime] | None = None
    for r in runs:
        for rr in r.rigs:
            side = _SWITCHED.get(rr.outcome)
            end = _when(r.finished)
            if rr.host == host and side in ("ai", "mining") and end:
                found = ("ai" if side == "ai" else "mining", end)
    return found


class Downtime(BaseModel):
    hours: float
    source: str


def measured_downtime(runs: list[RunReport], host: str, command: str) -> Downtime | None:
    """How long a convert (or rollback) keeps a rig down, from the journals: the rig's own runs
    if it has any, else every rig's. A convert runs in batches and the report times the whole
    run, so a rig's share is the run's time over its batches."""

    def spans(only: str | None) -> list[float]:
        out = []
        for r in runs:
            if r.command != command:
                continue
            ok = "converted" if command == "convert" else "mining"
            done = [rr for rr in r.rigs if rr.outcome == ok]
            if only is not None:
                done = [rr for rr in done if rr.host == only]
            if not done:
                continue
            start, end = _when(r.started), _when(r.finished)
            assert start and end
            batches = len({rr.batch for rr in r.rigs if rr.batch is not None}) or 1
            out.append((end - start).total_seconds() / 3600 / batches)
        return out

    own = spans(host)
    if own:
        return Downtime(
            hours=statistics.median(own), source=f"median of this rig's {len(own)} {command}(s)"
        )
    farm = spans(None)
    if farm:
        return Downtime(
            hours=statistics.median(farm), source=f"median of the farm's {len(farm)} {command}(s)"
        )
    return None
