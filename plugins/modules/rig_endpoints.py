#!/usr/bin/python3
"""rig_endpoints: ask every inference endpoint on the rig which model it serves, and for a
completion, in one module call (a rig with twelve cards is asked once, not twenty-four times).

Read-only: a completion changes nothing on the rig, so it runs in check mode too. Every
endpoint is asked whatever the others answered; the result says, per port, what each request
got (HTTP status, or why nothing came back), for the validate role to name every failure.
"""

DOCUMENTATION = r"""
module: rig_endpoints
short_description: Ask the rig's OpenAI-compatible endpoints for their models and for a completion.
description:
  - For each port, GET /v1/models, then POST /v1/completions with the first model listed. Read-only; runs in check mode too.
author: rigpivot maintainers
options:
  host: {description: Where the endpoints listen, seen from the rig, type: str, default: 127.0.0.1}
  ports: {description: The endpoints' ports, type: list, elements: int, required: true}
  api_key: {description: The bearer key the endpoints require (empty for none), type: str, default: "", no_log: true}
  api_key_file: {description: "Where the rig keeps its key: read (on the rig) when C(api_key) is empty", type: path, default: ""}
  prompt: {description: The completion's prompt, type: str, default: The rig is}
  max_tokens: {description: The completion's length, type: int, default: 8}
  timeout: {description: Seconds each request may take, type: float, default: 60}
"""

RETURN = r"""
endpoints:
  description: >-
    Per port, in the order asked: port; models {status (-1 when nothing answered), msg, ids};
    completion {status, msg, choices} (status -2 when not asked: no model was listed).
  type: list
"""

import json
from urllib.error import HTTPError
from urllib.request import ProxyHandler, Request, build_opener

from ansible.module_utils.basic import AnsibleModule

# The endpoints are the rig's own: never through a proxy the environment names.
OPENER = build_opener(ProxyHandler({}))


def ask(url, headers, timeout, body=None):
    """(status, msg, parsed JSON or None): status -1 when nothing answered."""
    data = json.dumps(body).encode() if body is not None else None
    if data is not None:
        headers = dict(headers, **{"Content-Type": "application/json"})
    try:
        with OPENER.open(Request(url, data=data, headers=headers), timeout=timeout) as resp:
            status, raw = resp.status, resp.read()
    except HTTPError as e:
        return e.code, "HTTP Error %s: %s" % (e.code, e.reason), None
    except Exception as e:  # refused, reset, timed out: nothing answered
        return -1, "Request failed: %s" % getattr(e, "reason", e), None
    try:
        return status, "OK", json.loads(raw.decode("utf-8", "replace"))
    except ValueError:
        return status, "the answer is not JSON", None


def main():
    module = AnsibleModule(
        argument_spec={
            "host": {"type": "str", "default": "127.0.0.1"},
            "ports": {"type": "list", "elements": "int", "required": True},
            "api_key": {"type": "str", "default": "", "no_log": True},
            "api_key_file": {"type": "path", "default": ""},
            "prompt": {"type": "str", "default": "The rig is"},
            "max_tokens": {"type": "int", "default": 8},
            "timeout": {"type": "float", "default": 60},
        },
        supports_check_mode=True,
    )
    p = module.params
    key = p["api_key"]
    if not key and p["api_key_file"]:
        try:
            with open(p["api_key_file"]) as f:
                key = f.read().strip()
        except OSError:
            key = ""  # no key kept: the endpoints are asked without one
        if key:
            module.no_log_values.add(key)
    headers = {"Authorization": "Bearer " + key} if key else {}
    results = []
    for port in p["ports"]:
        base = "http://%s:%d/v1" % (p["host"], port)
        status, msg, doc = ask(base + "/models", headers, p["timeout"])
        data = (doc or {}).get("data") if isinstance(doc, dict) else None
        ids = [m.get("id") for m in data if isinstance(m, dict)] if isinstance(data, list) else []
        completion = {"status": -2, "msg": "not asked: no model listed", "choices": 0}
        if status == 200 and ids:
            body = {"model": ids[0], "prompt": p["prompt"], "max_tokens": p["max_tokens"]}
            c_status, c_msg, c_doc = ask(base + "/completions", headers, p["timeout"], body)
            choices = (c_doc or {}).get("choices") if isinstance(c_doc, dict) else None
            completion = {
                "status": c_status,
                "msg": c_msg,
                "choices": len(choices) if isinstance(choices, list) else 0,
            }
        results.append(
            {
                "port": port,
                "models": {"status": status, "msg": msg, "ids": ids},
                "completion": completion,
            }
        )
    module.exit_json(changed=False, endpoints=results)


if __name__ == "__main__":
    main()
