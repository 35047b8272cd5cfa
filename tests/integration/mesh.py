"""AWX's execution mesh on one machine: a job's data goes out with `ansible-runner transmit`,
runs in `ansible-runner worker` inside an execution-node container (the execution
environment's image, toolkit/lab/ee.py), and its results come back through
`ansible-runner process`, as AWX's controller and its receptor execution nodes do.

A sliced job (AWX's job slicing) gives each node its own slice of the farm: an inventory that
holds only the slice's rigs. The job carries what AWX would inject: the machine credential
(`env/ssh_key`, which the worker hands to an ssh-agent) and the farm's known hosts; nothing of
the controller's files is mounted into a node but the snapshot volume (`mining_snapshot_fetch_dir`:
an execution node keeps nothing after its job)."""

from __future__ import annotations

import re
import shutil
import subprocess
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import ansible_runner

from toolkit.lab.podman import podman_env

# The node's own path for the snapshot volume (an AWX instance group's volume mount).
SNAPSHOTS = "/snapshots"


@dataclass
class Job:
    """One slice's job, as `ansible-runner process` gave it back."""

    hosts: list[str]
    status: str
    artifacts: Path  # the job's artifacts folder, as process wrote it
    events: list[dict[str, Any]] = field(default_factory=list)

    @property
    def stats(self) -> dict[str, Any]:
        (stats,) = [e["event_data"] for e in self.events if e.get("event") == "playbook_on_stats"]
        return dict(stats)

    @property
    def stdout(self) -> str:
        return "\n".join(e.get("stdout", "") for e in self.events)


def slice_inventory(farm: str, keep: list[str], all_rigs: list[str]) -> str:
    """The farm file with only the slice's rigs; the node's own paths for the credential-free
    SSH settings (the known hosts travel with the job, beside its inventory)."""
    drop = set(all_rigs) - set(keep)
    lines = [ln for ln in farm.splitlines() if not (ln.split() and ln.split()[0] in drop)]
    text = "\n".join(lines) + "\n"
    text = re.sub(r"^ansible_ssh_private_key_file=.*\n", "", text, flags=re.M)  # env/ssh_key
    known = "{{ inventory_dir }}/../known_hosts"
    text = re.sub(r"UserKnownHostsFile=\S+", f"UserKnownHostsFile={known}", text)
    return re.sub(r"^rigpivot_known_hosts=.*$", f"rigpivot_known_hosts={known}", text, flags=re.M)


class Mesh:
    """Run a playbook of the installed collection as sliced jobs on execution-node containers."""

    def __init__(self, ee: str, farm: Path, key: Path, known_hosts: Path, rigs: list[str],
                 work: Path, snapshots: Path) -> None:  # fmt: skip
        self.ee, self.farm, self.key, self.known_hosts = ee, farm, key, known_hosts
        self.rigs, self.work, self.snapshots = rigs, work, snapshots
        self.count = 0

    def _job_dir(self, name: str, hosts: list[str]) -> Path:
        job = self.work / name
        (job / "inventory").mkdir(parents=True)
        (job / "env").mkdir()
        (job / "project").mkdir()
        text = slice_inventory(self.farm.read_text(), hosts, self.rigs)
        (job / "inventory" / "hosts").write_text(text)
        shutil.copy(self.known_hosts, job / "known_hosts")
        shutil.copy(self.key, job / "env" / "ssh_key")
        return job

    def _one(self, name: str, playbook: str, hosts: list[str], extravars: dict[str, Any]) -> Job:
        job = self._job_dir(name, hosts)
        out_stream, back_stream = self.work / f"{name}.job", self.work / f"{name}.results"
        with out_stream.open("wb") as out:
            ansible_runner.run(
                private_data_dir=str(job), playbook=playbook, streamer="transmit", _output=out,
                extravars={"mining_snapshot_fetch_dir": SNAPSHOTS, **extravars},
                envvars={"ANSIBLE_PIPELINING": "True"},  # as the repository's ansible.cfg has it
            )  # fmt: skip
        with out_stream.open("rb") as stdin, back_stream.open("wb") as stdout:
            worker = subprocess.run(
                ["podman", "run", "--rm", "-i", "--name", f"rigpivot-node-{name}",
                 "--network", "host", "--volume", f"{self.snapshots}:{SNAPSHOTS}",
                 self.ee, "ansible-runner", "worker"],
                stdin=stdin, stdout=stdout, stderr=subprocess.PIPE, env=podman_env(),
                timeout=1800, check=False,
            )  # fmt: skip
        # The worker's exit code is the job's (a failed rig fails it): its results say more.
        assert back_stream.stat().st_size, worker.stderr.decode(errors="replace")[-3000:]
        back = self.work / f"{name}.processed"
        events: list[dict[str, Any]] = []

        def keep(event: dict[str, Any]) -> bool:
            events.append(event)
            return True

        with back_stream.open("rb") as stdin:
            done = ansible_runner.run(
                private_data_dir=str(back), streamer="process", _input=stdin, event_handler=keep
            )
        return Job(hosts, done.status, back / "artifacts", events)

    def run(self, playbook: str, slices: list[list[str]], **extravars: Any) -> list[Job]:
        """The sliced job: one execution node per slice, side by side."""
        self.count += 1
        with ThreadPoolExecutor(max_workers=len(slices)) as pool:
            futures = [
                pool.submit(self._one, f"{self.count}-{i}", playbook, hosts, extravars)
                for i, hosts in enumerate(slices, 1)
            ]
            return [f.result() for f in futures]
