"""farm_plan: preflight and plan for one rig inside a play, with the rules `rigpivot preflight`
and `rigpivot convert` use (the rigpivot Python package's toolkit.preflight and toolkit.plan:
one source of truth, so the controller or the execution environment needs that package).

Runs rig_facts on the rig (read-only), then judges it on the controller: the verdict and the
plan are returned, and a rig that cannot be reached is a verdict too (`unreachable`), as in
the CLI's report, rather than a failed host."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ansible.errors import AnsibleConnectionFailure
from ansible.plugins.action import ActionBase

COLLECTION = "rigpivot.farm."


class ActionModule(ActionBase):  # type: ignore[misc]
    TRANSFERS_FILES = False
    _VALID_ARGS = frozenset(("gpu_source",))

    def run(self, tmp: Any = None, task_vars: dict[str, Any] | None = None) -> dict[str, Any]:
        result: dict[str, Any] = super().run(tmp, task_vars)
        task_vars = task_vars or {}
        try:
            from toolkit.errors import RigpivotError
            from toolkit.preflight import (
                judge_and_plan,
                play_host,
                play_policy,
                unreachable,
                wanted_in_play,
            )
        except ImportError as e:
            return {**result, "failed": True, "msg": (
                f"farm_plan judges rigs with the rigpivot Python package, which this controller "
                f"lacks ({e}): install it beside ansible-core (`pip install rigpivot`; the "
                "execution environment has it)")}  # fmt: skip
        name = task_vars["inventory_hostname"]
        variables = {
            k: self._templar.template(v) for k, v in task_vars.items() if wanted_in_play(k)
        }
        host = play_host(name, variables)
        inventory_file = task_vars.get("inventory_file")
        try:
            policy = play_policy(host, Path(inventory_file) if inventory_file else None)
        except RigpivotError as e:
            return {**result, "failed": True, "msg": str(e)}
        # From the collection, its own rig_facts; from the repository, the library path's.
        fqcn = str(getattr(self._task, "resolved_action", "") or "").startswith(COLLECTION)
        module = f"{COLLECTION}rig_facts" if fqcn else "rig_facts"
        args = {"gpu_source": self._task.args.get("gpu_source", "auto"),
                "model_path": policy.model_path}  # fmt: skip
        try:
            probed = self._execute_module(module_name=module, module_args=args,
                                          task_vars=task_vars)  # fmt: skip
        except AnsibleConnectionFailure as e:
            probed = {"failed": True, "unreachable": True, "msg": e.message}
        facts = probed.get("ansible_facts", {}).get("rig_facts")
        if facts is None:
            why = str(probed.get("msg") or probed.get("module_stderr") or "no facts").strip()
            error = (f"cannot reach {name}: {why}" if probed.get("unreachable")
                     else f"probe on {name} failed ({why[-300:]})")  # fmt: skip
            verdict = unreachable(host, error)
            plan = {"host": name, "action": "unreachable", "reason": error}
        else:
            try:
                judged, planned = judge_and_plan(host, facts, policy)
            except RigpivotError as e:
                return {**result, "failed": True, "msg": str(e)}
            verdict = judged
            plan = {**planned.model_dump(mode="json"), **planned.role_vars()}
        return {**result, "changed": False, "verdict": verdict.model_dump(mode="json"),
                "plan": plan}  # fmt: skip
