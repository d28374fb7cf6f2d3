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
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$(dirname "$0")/lib.sh"  # run/say, on_undo/teardown/keep, attach_loop, the EXIT trap

KEEP=0
SIZE=256M
for arg in "$@"; do
    case $arg in
        --keep) KEEP=1 ;;
        -h|--help) usage; exit 0 ;;
        -*) die "unknown option $arg" 2 ;;
        *) SIZE=$arg ;;
    esac
done

zramfs_root /tmp/zramfs-swap.XXXXXX  # MNT
Z=$MNT/sys/block/zram0

# --mlock: the daemon's own memory must never be swapped out to itself.
run "$ZRAMFS" mount --mlock "$MNT"
on_undo "$ZRAMFS umount $MNT"
run "echo lz4 > $Z/comp_algorithm"
run "echo $SIZE > $Z/disksize"
on_undo "echo 1 > $Z/reset"
attach_loop  # LOOP: zram0's image as a block device
run mkswap "$LOOP"
run swapon --discard -p 100 "$LOOP"
on_undo "swapoff $LOOP"
run cat /proc/swaps
run cat "$Z/mm_stat"

if [ "$KEEP" = 1 ]; then
    keep "swap is on: $LOOP (image $MNT/dev/zram0)."
fi
teardown  # swapoff, losetup -d, echo 1 > reset, zramfs umount
echo "torn down"
