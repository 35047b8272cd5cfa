#!/usr/bin/env bash
# Install the Debian packages rigpivot and its lab need on a new Debian 12 machine, only those
# missing. Each package, and why it is here (`rigpivot lab up` checks the same list before it
# builds anything: toolkit/lab/hostcheck.py; tests/unit/test_hostcheck.py keeps the two equal):
#   podman        runs the lab rigs and the farm-services container (rootful)
#   runc          podman's OCI runtime here (crun fails on hybrid cgroup hosts)
#   netavark      podman's network backend; without it podman falls back to CNI, whose
#                 networks resolve no names (mirror.lab, pool.lab)
#   aardvark-dns  the name server netavark starts on each lab network
#   iptables      netavark 1.4 sets up every container network by calling `iptables`;
#                 without it every `podman run` on a network fails ("netavark: No such file")
#   uidmap        newuidmap/newgidmap, which podman calls for user namespaces
#   debootstrap   builds the rig image's Debian root without a container registry
#   dpkg-dev      dpkg-scanpackages indexes the farm mirror's apt repository
#   gcc libc6-dev builds the simulated NVML library and nvidia-smi
#   g++           builds the lab's llama.cpp wheel (the real inference engine on CPU)
#   openssh-client  the controller's ssh (Ansible) and ssh-keygen (lab keys)
#   python3-venv  the project's virtualenv
#   make          the README's two commands
#   pciutils      the lspci simulator's unit test runs the real lspci on the host
#   fdisk dosfstools e2fsprogs mount grub-common curl
#                 the reflash disk tests: a rig's GPT disk on loop devices (sfdisk, mkfs.vfat,
#                 mkfs.ext4, debugfs, losetup), GRUB's environment block (grub-editenv) and
#                 the staged image's download (curl)
#   mtools        the reflash OS image's EFI partition, written and read without mounting it
#   qemu-system-x86 ovmf
#                 boot the reflash OS image under UEFI (benchmarks/reflash_boot.py)
set -euo pipefail
pkgs=(podman runc netavark aardvark-dns iptables uidmap debootstrap dpkg-dev gcc libc6-dev g++
  openssh-client python3-venv make pciutils fdisk dosfstools e2fsprogs mount grub-common curl
  mtools qemu-system-x86 ovmf)
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
