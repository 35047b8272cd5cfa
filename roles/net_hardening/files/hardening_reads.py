#!/usr/bin/python3
"""What net_hardening reads on the rig, in one run (read-only).

Usage: hardening_reads.py SNAPSHOT_DIR GLOBS BLOCKED ALLOWED RECORD TABLE
       (GLOBS, BLOCKED and ALLOWED comma-separated)

- The egress endpoints of the mining rig, for the firewall: reads the mining configs (GLOBS:
  absolute shell globs such as /hive-config/wallet.conf) from the snapshot's files/ tree, or
  from the live system when there is no snapshot, and keeps every pool or API endpoint they
  name: URLs (stratum+tcp://pool:4444, http://api:8000/...) and bare host:port words. Those,
  plus BLOCKED, are resolved to addresses on the rig; so is ALLOWED. The rig's DNS servers.
- The ports sshd listens on (`sshd -T`), the inference ports the pivot record (RECORD) names,
  and the live firewall's table TABLE (`nft list table inet TABLE`, "" when there is none).

Prints JSON with host, port and addresses only of what the configs hold: they hold wallets,
rig passwords and farm hashes, and nothing of them but the endpoints' host and port leaves
this script.
"""

import glob
import ipaddress
import json
import os
import re
import socket
import subprocess
import sys

DEFAULT_PORTS = {"http": 80, "https": 443, "ws": 80, "wss": 443}
LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
ENDPOINT = re.compile(
    r"(?:(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*)://)?"  # stratum+tcp://, http://, ...
    r"(?:[^\s/@'\"]+@)?"  # wallet.worker@ (dropped)
    rf"(?P<host>\[[0-9A-Fa-f:.]+\]|{LABEL}(?:\.{LABEL})+)"
    r"(?::(?P<port>\d{1,5}))?(?![A-Za-z0-9.-])"
)
MAX_BYTES = 1 << 20


def _is_local(host):
    try:
        ip = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return host in ("localhost", "localhost.localdomain")
    return ip.is_loopback or ip.is_unspecified or ip.is_link_local


def endpoints_in(text):
    found = []
    for m in ENDPOINT.finditer(text):
        scheme, host, port = (m.group("scheme") or "").lower(), m.group("host"), m.group("port")
        if port is None:
            if scheme not in DEFAULT_PORTS:
                continue  # a dotted word without a port is no endpoint (wallet.worker, file.sh)
            port = DEFAULT_PORTS[scheme]
        port = int(port)
        if not 0 < port < 65536 or _is_local(host):
            continue
        found.append((host.strip("[]").lower(), port))
    return found


def parse_entry(entry):
    """'host:port', '[v6]:port', 'host' (every port) -> (host, port or None)."""
    entry = entry.strip()
    m = re.fullmatch(r"\[([0-9A-Fa-f:.]+)\](?::(\d{1,5}))?", entry)
    if m:
        return m.group(1).lower(), int(m.group(2)) if m.group(2) else None
    if entry.count(":") > 1:  # a bare IPv6 address
        return entry.lower(), None
    host, _, port = entry.partition(":")
    return host.lower(), int(port) if port.isdigit() else None


def resolve(host, port):
    try:
        infos = socket.getaddrinfo(host, port or 0, proto=socket.IPPROTO_TCP)
    except (OSError, UnicodeError):
        return []
    return sorted({i[4][0] for i in infos})


def describe(host, port):
    shown = f"[{host}]" if ":" in host else host
    return f"{shown}:{port}" if port else shown


def resolvers(path="/etc/resolv.conf"):
    """The rig's DNS servers ({"addresses", "loopback"}): a default-deny egress keeps them.
    A loopback one (systemd-resolved's stub, a local cache) forwards to servers this cannot
    name: then DNS to any server stays open."""
    found = []
    try:
        with open(path) as f:
            for line in f:
                words = line.split()
                if len(words) >= 2 and words[0] == "nameserver":
                    found.append(words[1].split("%")[0])
    except OSError:
        pass
    loopback = [a for a in found if a.startswith("127.") or a == "::1"]
    return {"addresses": sorted(set(found) - set(loopback)), "loopback": bool(loopback)}


def output(argv):
    """What a program prints, or "" when it fails or is missing."""
    try:
        p = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                           universal_newlines=True, timeout=60)  # fmt: skip
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return p.stdout if p.returncode == 0 else ""


def sshd_ports():
    return sorted({int(line.split()[1]) for line in output(["/usr/sbin/sshd", "-T"]).splitlines()
                   if re.fullmatch(r"port \d+", line.strip())})  # fmt: skip


def record_ports(path):
    try:
        with open(path) as f:
            record = json.load(f)
        return list(record.get("facts", {}).get("inference_ports", []))
    except (OSError, ValueError, AttributeError):
        return []


def main(argv):
    snapshot, globs, blocked, allowed, record, table = (argv[1:] + [""] * 6)[:6]
    files_root = os.path.join(snapshot, "files")
    use_snapshot = bool(snapshot) and os.path.isdir(files_root)
    found = {}
    for pattern in filter(None, globs.split(",")):
        base = files_root + pattern if use_snapshot else pattern
        for path in sorted(glob.glob(base)):
            if not os.path.isfile(path):
                continue
            with open(path, "rb") as f:
                text = f.read(MAX_BYTES).decode("utf-8", "replace")
            shown = path[len(files_root):] if use_snapshot else path
            for ep in endpoints_in(text):
                found.setdefault(ep, set()).add(shown)

    def entries(items, origin):
        out = []
        for (host, port), sources in items:
            out.append({
                "endpoint": describe(host, port),
                "host": host,
                "port": port,
                "from": sorted(sources) if sources else [origin],
                "addresses": resolve(host, port),
            })
        return out

    configured_blocked = [(parse_entry(e), set()) for e in blocked.split(",") if e.strip()]
    configured_allowed = [(parse_entry(e), set()) for e in allowed.split(",") if e.strip()]
    result = {
        "source": "snapshot" if use_snapshot else "live",
        "blocked": entries(sorted(found.items()), "mining config")
        + entries(configured_blocked, "net_hardening_blocked_egress"),
        "allowed": entries(configured_allowed, "net_hardening_allowed_egress"),
        "resolvers": resolvers(),
        "sshd_ports": sshd_ports(),
        "record_ports": record_ports(record) if record else [],
        "live_table": output(["nft", "list", "table", "inet", table]) if table else "",
    }
    result["unresolved"] = sorted(
        {e["endpoint"] for e in result["blocked"] + result["allowed"] if not e["addresses"]}
    )
    json.dump(result, sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
