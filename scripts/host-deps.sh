#!/usr/bin/env bash
# Install the Debian packages rigpivot and its lab need, only those missing.
# podman+runc run the lab rigs (crun fails on hybrid cgroup hosts); netavark and aardvark-dns
# give the lab network its names (mirror.lab, pool.lab): installed without recommends, podman
# falls back to CNI, whose networks resolve no names; debootstrap builds the
# rig image without a registry, dpkg-dev indexes the farm mirror, gcc builds the simulated
# NVML library (g++: the lab's llama.cpp wheel), openssh-client is the controller's SSH, pciutils lets the
# lspci simulator's unit test run on the host.
set -euo pipefail
pkgs=(podman runc netavark aardvark-dns debootstrap uidmap openssh-client dpkg-dev gcc g++ libc6-dev python3-venv make pciutils)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0
sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"
echo "installing: ${missing[*]}"
$sudo apt-get update -qq
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
