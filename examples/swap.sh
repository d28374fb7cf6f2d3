#!/usr/bin/env bash
# Compressed swap on zramfs, set up the way zram-generator sets up zram swap:
# lz4, a disksize, a loop device, mkswap, swapon --discard at a high priority.
#
#   examples/swap.sh [--keep] [SIZE]      (SIZE: memparse syntax, default 256M)
#
# The mount point is $ZRAMFS_ROOT if set, else a fresh /tmp/zramfs-swap.XXXXXX.
# Without --keep everything is torn down at the end (swapoff, losetup -d,
# reset, umount); with --keep the swap stays on and the undo commands are
# printed. On any failure the trap undoes whatever was already set up.
set -euo pipefail
cd "$(dirname "$0")/.."
ZRAMFS=${ZRAMFS:-.venv/bin/zramfs}

KEEP=0
SIZE=256M
for arg in "$@"; do
    case $arg in
        --keep) KEEP=1 ;;
        -h|--help) sed -n '2,11p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        -*) echo "swap.sh: unknown option $arg" >&2; exit 2 ;;
        *) SIZE=$arg ;;
    esac
done

if [ -n "${ZRAMFS_ROOT:-}" ]; then
    MNT=$ZRAMFS_ROOT; mkdir -p "$MNT"; MADE_MNT=0
else
    MNT=$(mktemp -d /tmp/zramfs-swap.XXXXXX); MADE_MNT=1
fi
Z=$MNT/sys/block/zram0
LOOP=""
SWAPON=0
DONE=0

cleanup() {
    local rc=$?
    set +e
    if [ "$DONE" = 1 ] && [ "$KEEP" = 1 ]; then exit "$rc"; fi
    [ "$SWAPON" = 1 ] && swapoff "$LOOP"
    [ -n "$LOOP" ] && losetup -d "$LOOP"
    # The loop device lets go of the image asynchronously: wait for it.
    if [ -n "$LOOP" ]; then
        for _ in $(seq 100); do
            losetup -j "$MNT/dev/zram0" | grep -q . || break
            sleep 0.05
        done
    fi
    [ -e "$Z/reset" ] && echo 1 > "$Z/reset"
    mountpoint -q "$MNT" && "$ZRAMFS" umount "$MNT"
    [ "$MADE_MNT" = 1 ] && rmdir "$MNT" 2>/dev/null
    exit "$rc"
}
trap cleanup EXIT

if [ -t 1 ]; then
    say() { printf '\n\033[1m$ %s\033[0m\n' "$*"; }
else
    say() { printf '\n$ %s\n' "$*"; }
fi
run() { say "$*"; eval "$@"; }

# --mlock: the daemon's own memory must never be swapped out to itself.
run "$ZRAMFS" mount --mlock "$MNT"
run "echo lz4 > $Z/comp_algorithm"
run "echo $SIZE > $Z/disksize"
run "LOOP=\$(losetup --direct-io=on -f --show $MNT/dev/zram0); echo \$LOOP"
run mkswap "$LOOP"
run swapon --discard -p 100 "$LOOP"
SWAPON=1
run cat /proc/swaps
run cat "$Z/mm_stat"

if [ "$KEEP" = 1 ]; then
    DONE=1
    cat <<EOT

swap is on: $LOOP (image $MNT/dev/zram0). To undo:
  swapoff $LOOP && losetup -d $LOOP && echo 1 > $Z/reset && $ZRAMFS umount $MNT
EOT
    exit 0
fi

run swapoff "$LOOP"
SWAPON=0
run losetup -d "$LOOP"
for _ in $(seq 100); do
    losetup -j "$MNT/dev/zram0" | grep -q . || break
    sleep 0.05
done
LOOP=""
run "echo 1 > $Z/reset"
run "$ZRAMFS" umount "$MNT"
echo "torn down"
