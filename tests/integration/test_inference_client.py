"""A converted rig answers the real `openai` client: the inference_server role on a lab rig
(llama.cpp on CPU, the lab's tiny model, GPUs 0 and 1), then chat and completion calls on
each instance's port.

Rig ports are not published on the host. The client reaches them through an SSH local
forward (`ssh -F ssh_config -N -L`, the lab's `Rack.forward`): the same key and pinned host
key Ansible uses, and what an operator does from a workstation; the client stays a plain
HTTP client on 127.0.0.1, with no paramiko channel plumbing in between.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from openai import OpenAI

from tests.integration.conftest import Rack

pytestmark = pytest.mark.lab

REPO = Path(__file__).resolve().parents[2]
GPUS = [0, 1]
BASE_PORT = 8000
MODEL = "tiny-llama-f32"


@pytest.fixture(scope="module")
def rack(lab_factory: Callable[..., Rack], tmp_path_factory: pytest.TempPathFactory) -> Rack:
    rack = lab_factory(1, "hive-3060x6")
    play = tmp_path_factory.mktemp("play") / "serve.yml"
    play.write_text(
        "- name: Serve the lab's model.\n"
        "  hosts: all\n"
        "  gather_facts: false\n"
        "  roles:\n"
        "    - role: inference_server\n"
    )
    # The lab's inventory already says: llama.cpp, no GPU offload, the lab's tiny model.
    env = dict(
        os.environ,
        ANSIBLE_CONFIG=str(REPO / "ansible.cfg"),
        ANSIBLE_ROLES_PATH=str(REPO / "roles"),
        ANSIBLE_LIBRARY=str(REPO / "toolkit" / "modules"),
    )
    proc = subprocess.run(
        [
            str(Path(sys.executable).parent / "ansible-playbook"),
            "-i", str(rack.lab.inventory), str(play),
            "-e", f'{{"inference_server_gpus": {GPUS}, "inference_server_context": 512}}',
        ],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    tail = "\n".join(proc.stdout.splitlines()[-40:])
    assert proc.returncode == 0, f"inference_server failed:\n{tail}\n{proc.stderr[-2000:]}"
    return rack


@pytest.mark.parametrize("gpu", GPUS)
def test_each_instance_answers_the_openai_client(rack: Rack, gpu: int) -> None:
    with rack.forward("rig01", BASE_PORT + gpu) as local:
        client = OpenAI(base_url=f"http://127.0.0.1:{local}/v1", api_key="unused", max_retries=0)

        assert [m.id for m in client.models.list()] == [MODEL]

        chat = client.chat.completions.create(
            model=MODEL,
            messages=[{"role": "user", "content": "Is the rig serving?"}],
            max_tokens=8,
        )
        assert chat.choices, "a chat completion with no choices"
        answer = chat.choices[0].message.content or ""
        assert answer.strip(), "an empty chat answer"
        # the lab's model never emits control or raw byte tokens: its text is printable
        assert answer.isprintable(), repr(answer)
        assert chat.usage is not None and 0 < chat.usage.completion_tokens <= 8

        completion = client.completions.create(model=MODEL, prompt="The rig is", max_tokens=8)
        assert completion.choices and completion.choices[0].text.strip()
        assert completion.choices[0].finish_reason in ("length", "stop")

        stream = client.chat.completions.create(
            model=MODEL,
            messages=[{"role": "user", "content": "hello"}],
            max_tokens=8,
            stream=True,
        )
        streamed = "".join(
            chunk.choices[0].delta.content or "" for chunk in stream if chunk.choices
        )
        assert streamed.strip(), "streaming gave no text"


def test_each_gpu_has_its_own_instance_and_port(rack: Rack) -> None:
    out = rack.ssh(
        "rig01",
        "for i in 0 1; do systemctl is-active rigpivot-inference@$i; "
        "grep -h -E '^(CUDA_VISIBLE_DEVICES|RIGPIVOT_PORT)=' /etc/rigpivot/inference/$i.env; done; "
        "ls /etc/rigpivot/inference",
    )
    assert out.split() == [
        "active", "CUDA_VISIBLE_DEVICES=0", "RIGPIVOT_PORT=8000",
        "active", "CUDA_VISIBLE_DEVICES=1", "RIGPIVOT_PORT=8001",
        "0.env", "1.env",
    ]  # fmt: skip
