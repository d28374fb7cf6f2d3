#!/usr/bin/env bash
# A compressed /tmp-style scratch file system on zramfs: zstd, ext4 mounted
# with -o discard (deleted files give their memory back), mode 1777.
#
#   examples/tmp-ext4.sh [--keep] [SIZE] [DIR]
#
# SIZE is memparse syntax (default 256M); DIR is where the ext4 is mounted
# (default a fresh /tmp/zramfs-tmp.XXXXXX; created if missing, must not be a
# mount point already). The zramfs mount point is $ZRAMFS_ROOT if set, else a
# fresh /tmp/zramfs-tmproot.XXXXXX. Without --keep everything is torn down at
# the end (umount, losetup -d, reset, zramfs umount); with --keep it stays
# mounted and the undo commands are printed.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$(dirname "$0")/lib.sh"  # run/say, on_undo/teardown/keep, attach_loop, the EXIT trap

KEEP=0
SIZE=256M
DIR=""
POS=0
for arg in "$@"; do
    case $arg in
        --keep) KEEP=1 ;;
        -h|--help) usage; exit 0 ;;
        -*) die "unknown option $arg" 2 ;;
        *)
            POS=$((POS + 1))
            case $POS in
                1) SIZE=$arg ;;
                2) DIR=$arg ;;
                *) die "too many arguments" 2 ;;
            esac ;;
    esac
done

zramfs_root /tmp/zramfs-tmproot.XXXXXX  # MNT
if [ -z "$DIR" ]; then
    fresh_dir DIR /tmp/zramfs-tmp.XXXXXX
elif [ -d "$DIR" ]; then
    if mountpoint -q "$DIR"; then die "$DIR is already a mount point"; fi
else
    mkdir -p "$DIR"; MADE_DIRS+=("$DIR")
fi
Z=$MNT/sys/block/zram0

run "$ZRAMFS" mount "$MNT"
on_undo "$ZRAMFS umount $MNT"
run "echo zstd > $Z/comp_algorithm"
run "echo $SIZE > $Z/disksize"
on_undo "echo 1 > $Z/reset"
attach_loop  # LOOP: zram0's image as a block device
# No reserved blocks (it is scratch space), no lazy init work in the background.
run mkfs.ext4 -q -m 0 -E lazy_itable_init=0,lazy_journal_init=0 "$LOOP"
run mount -o discard,nosuid,nodev "$LOOP" "$DIR"
on_undo "umount $DIR"
run chmod 1777 "$DIR"
run stat -c "'%A %n'" "$DIR"
# Some real /tmp-ish content: a few packages of Python's standard library.
SRC=$(python3 -c 'import sysconfig; print(sysconfig.get_paths()["stdlib"])')
run "cp -r $SRC/json $SRC/email $SRC/http $DIR/ && sync"
run df -h "$DIR"
run cat "$Z/mm_stat"
print_ratio "$Z/mm_stat"

if [ "$KEEP" = 1 ]; then
    keep "$DIR is mounted (ext4 on $LOOP, image $MNT/dev/zram0)."
fi
teardown  # umount, losetup -d, echo 1 > reset, zramfs umount
echo "torn down"
