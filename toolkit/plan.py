"""Plan a conversion: which rigs to convert, in which batches, with which engine and GPUs.

Pure: from preflight's verdicts to a plan. Unfit rigs are never in a batch; rigs already
serving (`ai`) are left alone; unreachable rigs are skipped and reported.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel

from toolkit.models import FleetReport, ModelFit, RigVerdict

Action = Literal["convert", "return", "already-ai", "untouched", "unreachable", "quarantined"]
# Pivot states of a rig part-way through a conversion (or a rollback cut short): such a rig is
# always finished or returned to mining, whatever preflight thinks of it now.
MIDWAY = ("snapshotted", "drained", "hardened", "stack_installed", "serving", "restoring")


class RigPlan(BaseModel):
    host: str
    action: Action
    reason: str = ""
    engine: str | None = None
    model: str | None = None
    model_file: str | None = None
    gpus: list[int] = []
    nvidia_gpus: int = 0  # NVIDIA cards preflight saw: all must still answer after conversion
    state: str | None = None
    # Each card's own instance: [{gpu, engine, model, quant, context, model_file}, ...]
    instances: list[dict[str, Any]] = []
    engines: list[str] = []  # every engine the instances use: all are installed

    def role_vars(self) -> dict[str, Any]:
        """Preflight's choices for the rig, as `rigpivot_plan_*` host variables (with them,
        convert.yml does not plan again). The roles'
        defaults fall back to them (`inference_server_engine` defaults to
        `rigpivot_plan_engine`), so anything the farm file sets, at any level, wins: the lab
        pins a CPU engine and its tiny model that way.

        `rigpivot_plan_engine` and `rigpivot_plan_model_file` are the rig's summary (the plan
        most cards have); `rigpivot_plan_instances` gives each card its own engine, model,
        quantisation and context, and `rigpivot_plan_engines` every engine they use."""
        return {
            "rigpivot_plan_action": self.action,
            "rigpivot_plan_engine": self.engine,
            "rigpivot_plan_gpus": self.gpus,
            "rigpivot_plan_model_file": self.model_file,
            "rigpivot_plan_nvidia_gpus": self.nvidia_gpus,
            "rigpivot_plan_engines": self.engines,
            "rigpivot_plan_instances": self.instances,
        }


class Plan(BaseModel):
    rigs: list[RigPlan]
    batches: list[list[str]]

    def of(self, action: Action) -> list[RigPlan]:
        return [r for r in self.rigs if r.action == action]


def model_file(fit: ModelFit | None) -> str | None:
    if fit is None:
        return None
    # The farm's model store names files model-quant (a GGUF for llama.cpp, a directory for vLLM).
    suffix = ".gguf" if fit.engine == "llama.cpp" else ""
    return f"{fit.model}-{fit.quant.lower()}{suffix}"


def _instances(v: RigVerdict) -> list[dict[str, Any]]:
    return [
        {
            "gpu": p.gpu,
            "engine": p.fit.engine,
            "model": p.fit.model,
            "quant": p.fit.quant,
            "context": p.fit.max_context,
            "model_file": model_file(p.fit),
        }
        for p in v.plans
        if p.gpu is not None
    ]


def plan_conversion(report: FleetReport, batch_size: int) -> Plan:
    rigs: list[RigPlan] = []
    for v in report.rigs:
        pivot = v.facts.pivot if v.facts else None
        state = pivot.state if pivot else None
        if v.status == "unreachable":
            rigs.append(RigPlan(host=v.host, action="unreachable", reason=v.error or ""))
        elif state == "quarantined":
            why = "quarantined by an earlier run: inspect it, then roll it back"
            rigs.append(RigPlan(host=v.host, action="quarantined", state=state, reason=why))
        elif state == "damaged":
            why = (
                f"its pivot record (/var/lib/rigpivot/state.json) is damaged ({pivot.error}): "
                "find out where the rig stands (`rigpivot status`, the run journal), then move "
                "the file away; nothing was touched"
                if pivot
                else "its pivot record is damaged"
            )
            rigs.append(RigPlan(host=v.host, action="quarantined", state=state, reason=why))
        elif v.verdict != "fit" and state in MIDWAY:
            # The verdict decides whether a conversion starts, never whether one ends: a rig
            # left mid-way that preflight no longer finds fit (a driver installed but not yet
            # loaded hides its cards) goes back to mining rather than staying drained.
            why = (
                f"stopped mid-conversion (recorded state {state}) and no longer fit: "
                + ("; ".join(v.reasons) or "no plan")
                + "; returning it to mining"
            )
            rigs.append(RigPlan(host=v.host, action="return", state=state, reason=why))
        elif v.verdict != "fit":
            rigs.append(RigPlan(host=v.host, action="untouched", reason="; ".join(v.reasons)))
        elif state == "ai":
            model = v.model.model_name if v.model else None
            rigs.append(
                RigPlan(host=v.host, action="already-ai", state=state, engine=v.engine, model=model)
            )
        else:
            rigs.append(
                RigPlan(
                    host=v.host,
                    action="convert",
                    state=state or "mining",
                    engine=v.engine,
                    model=f"{v.model.model_name} {v.model.quant}" if v.model else None,
                    model_file=model_file(v.model),
                    gpus=sorted(c.index for c in v.cards if c.fit and c.index is not None),
                    nvidia_gpus=sum(
                        1 for c in v.cards if c.vendor == "nvidia" and c.index is not None
                    ),
                    reason="resuming from " + state if state and state != "mining" else "",
                    instances=_instances(v),
                    engines=list(v.engines),
                )
            )
    todo = [r.host for r in rigs if r.action == "convert"]
    size = max(1, batch_size)
    return Plan(rigs=rigs, batches=[todo[i : i + size] for i in range(0, len(todo), size)])
