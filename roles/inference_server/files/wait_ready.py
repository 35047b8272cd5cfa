#!/usr/bin/env python3
"""Wait until every inference instance answers GET /v1/models, giving up early on one that
systemd keeps restarting (a crash loop: a corrupt model, too little memory) or that failed.

Run on the rig by the inference_server role (stdlib only: mining OS images carry little).
Prints one JSON object: {"instances": [{"gpu", "port", "ready", "reason"}, ...]}.
The API key, when the instances need one, comes in RIGPIVOT_API_KEY, never on the command line.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import subprocess
import sys
import time
import urllib.request


def answers(port: int, key: str) -> bool:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    req = urllib.request.Request(f"http://127.0.0.1:{port}/v1/models", headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status == 200
    # URLError is an OSError; a half-started server can also answer garbage (HTTPException).
    except (OSError, ValueError, http.client.HTTPException):
        return False


def unit_state(unit: str) -> tuple[int, str]:
    """systemd's restart count and active state of `unit`."""
    out = subprocess.run(
        ["systemctl", "show", "--property=NRestarts", "--property=ActiveState", unit],
        capture_output=True, text=True, check=False,
    ).stdout  # fmt: skip
    props = dict(line.split("=", 1) for line in out.splitlines() if "=" in line)
    restarts = props.get("NRestarts", "0")
    return int(restarts) if restarts.isdigit() else 0, props.get("ActiveState", "unknown")


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--unit", required=True, help="template unit, e.g. rigpivot-inference@")
    ap.add_argument("--base-port", type=int, required=True)
    ap.add_argument("--timeout", type=float, required=True)
    ap.add_argument("--max-restarts", type=int, required=True)
    ap.add_argument("--delay", type=float, default=2.0)
    ap.add_argument("gpus", type=int, nargs="+")
    args = ap.parse_args()
    key = os.environ.get("RIGPIVOT_API_KEY", "")

    units = {g: f"{args.unit}{g}.service" for g in args.gpus}
    first = {g: unit_state(u)[0] for g, u in units.items()}
    result: dict[int, dict[str, object]] = {}
    deadline = time.monotonic() + args.timeout
    while True:
        for g in args.gpus:
            if g in result:
                continue
            port = args.base_port + g
            if answers(port, key):
                result[g] = {"ready": True, "reason": ""}
                continue
            restarts, active = unit_state(units[g])
            if restarts - first[g] >= args.max_restarts:
                result[g] = {"ready": False, "reason": (
                    f"systemd restarted it {restarts - first[g]} times while waiting: the engine "
                    "keeps crashing"
                )}  # fmt: skip
            elif active == "failed":
                result[g] = {"ready": False, "reason": "its unit failed"}
        if len(result) == len(args.gpus):
            break
        if time.monotonic() >= deadline:
            silent = {"ready": False, "reason": f"no answer in {args.timeout:.0f} s"}
            for g in args.gpus:
                result.setdefault(g, silent)
            break
        time.sleep(args.delay)
    out = [{"gpu": g, "port": args.base_port + g, **result[g]} for g in args.gpus]
    json.dump({"instances": out}, sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
