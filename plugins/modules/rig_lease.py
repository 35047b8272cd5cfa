#!/usr/bin/python3
"""rig_lease: which run may change the rig now, kept in the rig's pivot record.

A farm has several operators, shells, cron jobs and AWX driving the same rigs, from different
machines and folders: a lock on one controller guards nothing. The lease lives on the rig, in
/var/lib/rigpivot/state.json (`lease`: run id, holder, controller host, pid, taken, expires),
taken and released under the record's lock, so two sessions asking at once get one answer.

- `state: present` takes the lease for `run`, or renews it when `run` holds it already. A live
  lease of another run fails the task, naming the holder and the time it has left
  (`held_by`). An expired one is taken over, and the result says whose it was (`took_over`),
  as is a live one of a run named in `replace` (its controller knows it is dead).
- `state: absent` releases the lease if `run` holds it, and leaves another run's alone.

Every write of the record by `rig_state` while the lease is live renews it, so a run that is
working keeps its rigs; a controller that died lets go after `ttl` seconds.
"""

DOCUMENTATION = r"""
module: rig_lease
short_description: Take, renew or release a rig's lease (one run changes a rig at a time).
description:
  - Which run may change the rig now, kept in the rig's pivot record and taken or released under the record's lock, whichever controller, cron job or AWX job asks.
  - A live lease of another run fails the task (C(held_by)); an expired one is taken over (C(took_over)).
author: rigpivot maintainers
options:
  run:
    description: The run's id (rigpivot's journal run id, an AWX job id).
    type: str
    required: true
  holder:
    description: Who runs it, for the refusal another run prints (command, user@host, pid).
    type: str
    default: ""
  controller:
    description: The controller host running it.
    type: str
    default: ""
  pid:
    description: The controller process holding it.
    type: int
    default: 0
  ttl:
    description: Seconds the lease lasts unless renewed (each record write renews it).
    type: int
    default: 3600
  replace:
    description: >-
      Runs whose lease may be taken over though it has not expired: the controller that ran
      them knows they are dead (same host, process gone), as after a rig lost power mid-run.
    type: list
    elements: str
    default: []
  state:
    description: present takes or renews the lease, absent releases it.
    type: str
    default: present
    choices: [present, absent]
  set_aside_damaged:
    description:
      - When the record is damaged (not JSON), move it aside (state.json.damaged-<time>) and hold the lease in a new record, instead of failing.
      - Only for a rollback that restores the rig from the controller's copy of its snapshot (the damaged record names none).
    type: bool
    default: false
  path:
    description: Where the pivot record lives.
    type: path
    default: /var/lib/rigpivot/state.json
"""

RETURN = r"""
lease:
  description: The lease as the record holds it after the task (null when none).
  returned: always
  type: dict
held_by:
  description: Another run's live lease, when the task failed because of it.
  returned: failure
  type: dict
left:
  description: Seconds that lease has left.
  returned: failure
  type: int
took_over:
  description: The expired lease of another run that this one took over.
  returned: when it happened
  type: dict
set_aside:
  description: Where a damaged record was moved (set_aside_damaged), else null.
  returned: always
  type: str
"""

import contextlib
import datetime
import os

from ansible.module_utils.basic import AnsibleModule

# The library path (ansible.cfg `library`/`module_utils`: the CLI, the roles run from the
# repository) first; an installed collection (rigpivot.farm) when that is not there.
try:
    from ansible.module_utils.rigpivot_rig import (
        DamagedRecord,
        lease_left,
        load_record_or_set_aside,
        new_record,
        record_locked,
        save_record,
        utc_now,
        utc_text,
    )
except ImportError:
    from ansible_collections.rigpivot.farm.plugins.module_utils.rigpivot_rig import (
        DamagedRecord,
        lease_left,
        load_record_or_set_aside,
        new_record,
        record_locked,
        save_record,
        utc_now,
        utc_text,
    )


def decide(record, p, now):
    """(lease after, failure message or None, the expired lease taken over or None)."""
    lease = record.get("lease") if isinstance(record.get("lease"), dict) else None
    mine = lease is not None and lease.get("run") == p["run"]
    if p["state"] == "absent":
        return (None if mine else lease), None, None
    left = lease_left(lease, now)
    if lease is not None and not mine and left > 0 and lease.get("run") not in p["replace"]:
        refusal = (
            "leased by %s (run %s) since %s, %d min %02d s left: wait for that run to end, "
            "or for the lease to expire"
            % (lease.get("holder") or "another run", lease.get("run"), lease.get("taken"),
               left // 60, left % 60)
        )  # fmt: skip
        return lease, refusal, None
    taken = lease["taken"] if lease is not None and mine else utc_text(now)
    new = {
        "run": p["run"],
        "holder": p["holder"],
        "controller": p["controller"],
        "pid": p["pid"],
        "taken": taken,
        "ttl": p["ttl"],
        "expires": utc_text(now + datetime.timedelta(seconds=p["ttl"])),
    }
    return new, None, (lease if lease is not None and not mine else None)


def remove_empty_folder(folder):
    with contextlib.suppress(OSError):  # not empty: it holds more than the record
        os.rmdir(folder)


def main():
    module = AnsibleModule(
        argument_spec=dict(
            run=dict(type="str", required=True),
            holder=dict(type="str", default=""),
            controller=dict(type="str", default=""),
            pid=dict(type="int", default=0),
            ttl=dict(type="int", default=3600),
            replace=dict(type="list", elements="str", default=[]),
            state=dict(type="str", default="present", choices=["present", "absent"]),
            set_aside_damaged=dict(type="bool", default=False),
            path=dict(type="path", default="/var/lib/rigpivot/state.json"),
        ),
        supports_check_mode=True,
    )
    p = module.params
    if p["ttl"] < 60:
        module.fail_json(
            msg="ttl is %d s: a lease shorter than a minute expires mid-task" % p["ttl"]
        )
    releasing = p["state"] == "absent"
    if releasing and not os.path.exists(p["path"]):
        module.exit_json(changed=False, lease=None)
    with record_locked(p["path"], write=not module.check_mode):
        # A damaged record holds no lease anyone could read: a rollback restoring the rig
        # from the controller's copy sets it aside, and the record starts again with its lease.
        try:
            record, set_aside = load_record_or_set_aside(p["path"], p["set_aside_damaged"])
        except DamagedRecord as e:
            module.fail_json(msg=str(e))
        before = record.get("lease")
        lease, refusal, took_over = decide(record, p, utc_now())
        if refusal:
            module.fail_json(msg=refusal, held_by=lease, left=lease_left(lease), lease=lease)
        changed = lease != before
        if set_aside and not module.check_mode:
            os.rename(p["path"], set_aside)
        if changed and not module.check_mode:
            if lease is None:
                record.pop("lease", None)
            else:
                record["lease"] = lease
            if record == new_record():
                # The lease was all the record held: the rig was never converted, and is left
                # as it was, with no record (and no folder, where rigpivot made it).
                os.remove(p["path"])
                remove_empty_folder(os.path.dirname(p["path"]))
            else:
                save_record(p["path"], record)
    result = dict(changed=changed, lease=lease, set_aside=set_aside)
    if took_over:
        result["took_over"] = took_over
        module.warn(
            "took over the expired lease of %s (run %s, expired %s)"
            % (took_over.get("holder"), took_over.get("run"), took_over.get("expires"))
        )
    module.exit_json(**result)


if __name__ == "__main__":
    main()
