#!/bin/sh
# The rig side of a reflash (docs/reflash.md). POSIX sh and coreutils, util-linux, gzip, curl
# and grub-editenv only: it runs over plain SSH (Ansible's `script`/`raw`) on rigs whose Python
# Ansible cannot use (HiveOS on Ubuntu 18.04 ships 3.6).
#
# The new OS never overwrites the mining OS: its root is an image file staged in the mining
# OS's root file system (rigpivot-reflash/), booted once through a GRUB entry of its own, and
# only made the default once the controller has checked it. Everything this script adds is
# undone exactly by `disarm`; `restore` writes a disk backup back, for the disaster case.
#
# usage: rig-reflash.sh [--root DIR] COMMAND [ARGS]
#   facts                    what the controller decides with: key=value lines
#   backup DEVICE [--freeze MOUNTPOINT]
#                            DEVICE's bytes, gzip'ed, on stdout; its size and sha256 on stderr
#   restore DEVICE SHA256    write a backup (gzip'ed, on stdin) to DEVICE, then check it
#   stage URL [NEED_MIB]     download URL/manifest.sha256 and the files it lists, checked
#   identity                 copy this rig's identity into the staged root image
#   arm                      boot the staged root at the next boot only
#   commit                   make the staged root the default boot
#   disarm                   remove all of the above (not while running on the staged root)
# --root DIR: the mining OS's root mounted at DIR (default /), as tests and rescue boots have it.
set -eu

ROOT=/
if [ "${1:-}" = --root ]; then ROOT=$2; shift 2; fi
ROOT=${ROOT%/}
STAGE=$ROOT/rigpivot-reflash
GRUB_DIR=$ROOT/boot/grub
CUSTOM=$GRUB_DIR/custom.cfg
GRUBENV=$GRUB_DIR/grubenv
ENTRY=rigpivot-reflash
BEGIN="### BEGIN rigpivot-reflash (rigpivot adds this block; rollback removes it)"
END="### END rigpivot-reflash"
# What makes the rig itself: reachable at the same address with the same host key, by the
# same admins, mining as the same rig (HiveOS's rig.conf and the folders hive-replace keeps).
IDENTITY="etc/ssh/ssh_host_*_key etc/ssh/ssh_host_*_key.pub etc/hostname etc/hosts etc/machine-id
etc/network/interfaces etc/network/interfaces.d etc/systemd/network etc/netplan
root/.ssh/authorized_keys hive-config/rig.conf hive-config/network hive-config/openvpn
hive-config/watchdog"

die() { echo "rig-reflash: $*" >&2; exit 1; }

# The block device and file system under a directory ("" when it is not one).
source_of() { findmnt -n -o SOURCE --target "$1" 2>/dev/null | sed 's/\[.*//' || true; }

facts() {
    rootdev=$(source_of "$ROOT/")
    disk=""
    if [ -b "$rootdev" ]; then
        parent=$(lsblk -n -d -o PKNAME "$rootdev" 2>/dev/null || true)
        disk=/dev/${parent:-$(basename "$rootdev")}
    fi
    echo "root_device=$rootdev"
    echo "root_fstype=$(findmnt -n -o FSTYPE --target "$ROOT/" 2>/dev/null || true)"
    echo "root_uuid=$(findmnt -n -o UUID --target "$ROOT/" 2>/dev/null || true)"
    echo "disk=$disk"
    echo "disk_bytes=$( [ -b "$disk" ] && blockdev --getsize64 "$disk" || echo 0)"
    echo "free_mib=$(df -Pm "$ROOT/" | awk 'NR == 2 { print $4 }')"
    echo "ram_mib=$(awk '/^MemTotal:/ { print int($2 / 1024) }' /proc/meminfo)"
    echo "efi=$( [ -d /sys/firmware/efi ] && echo yes || echo no)"
    sb=unknown
    for f in /sys/firmware/efi/efivars/SecureBoot-*; do
        [ -r "$f" ] || continue
        # 4 bytes of attributes, then the value
        sb=$(od -An -t u1 -j 4 -N 1 "$f" | tr -d ' ')
        [ "$sb" = 1 ] && sb=enabled || sb=disabled
    done
    echo "secure_boot=$sb"
    echo "grubenv=$( [ -f "$GRUBENV" ] && echo "$GRUBENV" || echo none)"
    # GRUB cannot write its environment block on RAID or LVM: a one-shot entry would stay.
    case $rootdev in
        /dev/md*|/dev/mapper/*|/dev/dm-*) echo "grubenv_writable_at_boot=no" ;;
        *) echo "grubenv_writable_at_boot=yes" ;;
    esac
    echo "python=$(python3 -c 'import platform; print(platform.python_version())' 2>/dev/null || echo none)"
    echo "staged=$( [ -f "$STAGE/staged" ] && echo yes || echo no)"
    echo "armed=$(armed)"
    echo "committed=$(committed)"
}

armed() { grub-editenv "$GRUBENV" list 2>/dev/null | grep -qx "next_entry=$ENTRY" && echo yes || echo no; }
committed() { grep -qx "  set default=$ENTRY" "$CUSTOM" 2>/dev/null && echo yes || echo no; }

backup() {
    dev=$1; freeze=""
    [ "${2:-}" = --freeze ] && freeze=$3
    [ -r "$dev" ] || die "cannot read $dev"
    tmp=$(mktemp -d)
    mkfifo "$tmp/raw"
    sha256sum <"$tmp/raw" >"$tmp/sum" &
    summer=$!
    if [ -n "$freeze" ]; then
        # A consistent image of a mounted file system: writes wait while dd reads. If this
        # connection dies, the file system thaws by itself after ten minutes.
        fsfreeze --freeze "$freeze"
        (
            trap 'kill "$nap" 2>/dev/null; exit 0' TERM
            sleep 600 & nap=$!
            wait "$nap" && fsfreeze --unfreeze "$freeze" 2>/dev/null
        ) </dev/null >/dev/null 2>&1 &
        thaw=$!
    fi
    { dd if="$dev" bs=4M status=none || : >"$tmp/failed"; } | tee "$tmp/raw" | gzip -1
    if [ -n "$freeze" ]; then fsfreeze --unfreeze "$freeze"; kill "$thaw" 2>/dev/null || true; fi
    wait "$summer"
    [ ! -e "$tmp/failed" ] || die "reading $dev failed"
    if [ -b "$dev" ]; then size=$(blockdev --getsize64 "$dev"); else size=$(stat -c %s "$dev"); fi
    echo "rigpivot-backup bytes=$size sha256=$(cut -d' ' -f1 "$tmp/sum")" >&2
    rm -rf "$tmp"
}

restore() {
    dev=$1; want=$2
    [ -w "$dev" ] || die "cannot write $dev"
    gzip -dc | dd of="$dev" bs=4M conv=fsync status=none
    if [ -b "$dev" ]; then size=$(blockdev --getsize64 "$dev"); else size=$(stat -c %s "$dev"); fi
    got=$(head -c "$size" "$dev" | sha256sum | cut -d' ' -f1)
    [ "$got" = "$want" ] || die "$dev after restore has sha256 $got, the backup's is $want"
    echo "rigpivot-restore bytes=$size sha256=$got" >&2
}

stage() {
    url=${1%/}; need=${2:-0}
    free=$(df -Pm "$ROOT/" | awk 'NR == 2 { print $4 }')
    [ "$free" -ge "$need" ] || die "$free MiB free on the root file system, the image needs $need MiB"
    [ "$(armed)" = no ] && [ "$(committed)" = no ] \
        || die "a staged root is armed or committed: disarm it before staging another"
    mkdir -p "$STAGE"
    rm -f "$STAGE/staged"
    curl -fsS -o "$STAGE/manifest.sha256.part" "$url/manifest.sha256" \
        || die "cannot download $url/manifest.sha256"
    mv "$STAGE/manifest.sha256.part" "$STAGE/manifest.sha256"
    while read -r sum name; do
        case $name in */*|.*|"") die "manifest names $name: only plain file names" ;; esac
        if [ -f "$STAGE/$name" ] && [ "$(sha256sum <"$STAGE/$name" | cut -d' ' -f1)" = "$sum" ]; then
            continue  # a stage cut short kept this one whole
        fi
        curl -fsS -o "$STAGE/$name.part" "$url/$name" || die "cannot download $url/$name"
        got=$(sha256sum <"$STAGE/$name.part" | cut -d' ' -f1)
        [ "$got" = "$sum" ] || die "$url/$name has sha256 $got, the manifest says $sum"
        mv "$STAGE/$name.part" "$STAGE/$name"
    done <"$STAGE/manifest.sha256"
    for f in root.img vmlinuz initrd.img; do
        [ -f "$STAGE/$f" ] || die "the manifest at $url lists no $f"
    done
    sync
    touch "$STAGE/staged"
}

need_staged() { [ -f "$STAGE/staged" ] || die "nothing is staged in $STAGE: run stage first"; }

identity() {
    need_staged
    mnt=$(mktemp -d)
    mount -o loop "$STAGE/root.img" "$mnt"
    : >"$STAGE/identity.list"
    for pattern in $IDENTITY; do
        for src in "$ROOT"/$pattern; do
            [ -e "$src" ] || continue
            rel=${src#"$ROOT"/}
            mkdir -p "$mnt/$(dirname "$rel")"
            rm -rf "${mnt:?}/$rel"
            cp -a "$src" "$mnt/$rel"
            echo "$rel" >>"$STAGE/identity.list"
        done
    done
    umount "$mnt"
    rmdir "$mnt"
}

entry_block() {
    uuid=$(findmnt -n -o UUID --target "$ROOT/")
    [ -n "$uuid" ] || die "the root file system at $ROOT/ has no UUID GRUB can find it by"
    echo "$BEGIN"
    echo "menuentry 'rigpivot: the reflashed OS' --id $ENTRY {"
    echo "  search --no-floppy --fs-uuid --set=root $uuid"
    echo "  linux /rigpivot-reflash/vmlinuz root=UUID=$uuid rigpivot.loop=/rigpivot-reflash/root.img rw"
    echo "  initrd /rigpivot-reflash/initrd.img"
    echo "}"
    if [ "${1:-}" = commit ]; then
        echo "if [ \"\${boot_once}\" != true ]; then"
        echo "  set default=$ENTRY"
        echo "fi"
    fi
    echo "$END"
}

# custom.cfg without rigpivot's block (the operator's own lines, byte for byte).
without_block() { [ -f "$CUSTOM" ] && sed "/^$BEGIN\$/,/^$END\$/d" "$CUSTOM" || true; }

write_block() {
    [ -f "$GRUBENV" ] || die "no GRUB environment block at $GRUBENV: this rig does not boot with GRUB 2"
    tmp=$CUSTOM.rigpivot
    without_block >"$tmp"
    entry_block "$@" >>"$tmp"
    [ -f "$CUSTOM" ] || touch "$STAGE/custom.cfg.created"
    mv "$tmp" "$CUSTOM"
}

arm() {
    need_staged
    write_block
    grub-editenv "$GRUBENV" set "next_entry=$ENTRY"
}

commit() {
    need_staged
    write_block commit
    grub-editenv "$GRUBENV" unset next_entry
}

disarm() {
    if [ -z "$ROOT" ] && grep -q "rigpivot.loop=" /proc/cmdline; then
        die "running on the staged root: boot the mining OS before disarming"
    fi
    [ "$(armed)" = no ] || grub-editenv "$GRUBENV" unset next_entry
    if [ -f "$CUSTOM" ]; then
        if [ -f "$STAGE/custom.cfg.created" ] && [ -z "$(without_block)" ]; then
            rm -f "$CUSTOM"
        else
            without_block >"$CUSTOM.rigpivot"
            mv "$CUSTOM.rigpivot" "$CUSTOM"
        fi
    fi
    rm -rf "$STAGE"
}

cmd=${1:-}
[ $# -gt 0 ] && shift
case $cmd in
    facts) facts ;;
    backup) [ $# -ge 1 ] || die "usage: backup DEVICE [--freeze MOUNTPOINT]"; backup "$@" ;;
    restore) [ $# -eq 2 ] || die "usage: restore DEVICE SHA256 <backup.gz"; restore "$@" ;;
    stage) [ $# -ge 1 ] || die "usage: stage URL [NEED_MIB]"; stage "$@" ;;
    identity) identity ;;
    arm) arm ;;
    commit) commit ;;
    disarm) disarm ;;
    *) die "unknown command '$cmd' (facts, backup, restore, stage, identity, arm, commit, disarm)" ;;
esac
