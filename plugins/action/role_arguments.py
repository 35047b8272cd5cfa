"""role_arguments: check several roles' arguments against their argument specs in one task.

Ansible checks a role's arguments (meta/argument_specs.yml) with a task of its own at the start
of the role, for every rig: a task result per role and rig on the controller. A play that
imports many roles (convert.yml: eight) checks them all here instead, once per rig and before
any of them changes the rig, and imports them with `rolespec_validate: false`. The check is
ansible.builtin.validate_argument_spec's (the role's `main` entry point, the values from the
task's variables, templated), for each role named; the task fails naming every role and
argument that is wrong. Runs on the controller, needs no connection.
"""

from __future__ import annotations

from typing import Any

from ansible.errors import AnsibleActionFail
from ansible.module_utils.common.arg_spec import ArgumentSpecValidator
from ansible.plugins.action import ActionBase


def _play_of(task: Any) -> Any:
    obj = task
    while obj is not None and getattr(obj, "_play", None) is None:
        obj = getattr(obj, "_parent", None)
    return obj._play if obj is not None else None


class ActionModule(ActionBase):  # type: ignore[misc]
    TRANSFERS_FILES = False
    _requires_connection = False

    def run(self, tmp: Any = None, task_vars: dict[str, Any] | None = None) -> dict[str, Any]:
        task_vars = task_vars or {}
        result: dict[str, Any] = dict(super().run(tmp, task_vars))
        names = self._task.args.get("roles") or []
        play = _play_of(self._task)
        roles: dict[str, Any] = {}
        for role in play.roles if play is not None else []:
            # by its name in the play (rigpivot.farm.cuda in the collection), and its own (cuda)
            roles[role.get_name()] = role
            roles.setdefault(role.get_name(include_role_fqcn=False), role)
        missing = [n for n in names if n not in roles]
        if missing:
            raise AnsibleActionFail(
                f"role_arguments: {', '.join(missing)} not imported by this play"
            )
        errors: list[str] = []
        for name in names:
            spec = roles[name]._get_role_argspecs().get("main", {}).get("options", {})
            provided = self._templar.template({k: task_vars[k] for k in spec if k in task_vars})
            found = ArgumentSpecValidator(spec).validate(provided, validate_role_argument_spec=True)
            errors += [f"{name}: {message}" for message in found.error_messages]
        if errors:
            result.update(failed=True, argument_errors=errors,
                          msg="Validation of arguments failed:\n" + "\n".join(errors))  # fmt: skip
            return result
        result.update(changed=False, msg=f"the arguments of {', '.join(names)} pass their specs")
        return result
