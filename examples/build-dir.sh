#!/usr/bin/env bash
# A build directory on zramfs: ext4 (noatime) on an lz4 device, a small real
# build in it — byte-compiling a copy of part of Python's standard library —
# then the compression ratio of what the build left there. Always tears down.
#
#   examples/build-dir.sh [SIZE]          (SIZE: memparse syntax, default 256M)
#
# The mount point is $ZRAMFS_ROOT if set, else a fresh /tmp/zramfs-build.XXXXXX.
# Needs nothing from the network.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$(dirname "$0")/lib.sh"  # run/say, on_undo/teardown, attach_loop, the EXIT trap

SIZE=256M
for arg in "$@"; do
    case $arg in
        -h|--help) usage; exit 0 ;;
        -*) die "unknown option $arg" 2 ;;
        *) SIZE=$arg ;;
    esac
done

zramfs_root /tmp/zramfs-build.XXXXXX  # MNT
fresh_dir BUILD /tmp/zramfs-build-dir.XXXXXX
Z=$MNT/sys/block/zram0

run "$ZRAMFS" mount "$MNT"
on_undo "$ZRAMFS umount $MNT"
run "echo lz4 > $Z/comp_algorithm"
run "echo $SIZE > $Z/disksize"
on_undo "echo 1 > $Z/reset"
attach_loop  # LOOP: zram0's image as a block device
run mkfs.ext4 -q -m 0 -E lazy_itable_init=0,lazy_journal_init=0 "$LOOP"
run mount -o noatime,discard "$LOOP" "$BUILD"
on_undo "umount $BUILD"

# The "sources": a copy of a few standard-library packages, without caches.
SRC=$(python3 -c 'import sysconfig; print(sysconfig.get_paths()["stdlib"])')
run "mkdir $BUILD/src && tar -C $SRC --exclude=__pycache__ -cf - json email http xml logging asyncio unittest | tar -C $BUILD/src -xf -"
# The build: byte-compile all of it, in parallel, into __pycache__ next to it.
run python3 -m compileall -q -j 0 "$BUILD/src"
run "sync"
SOURCES=$(find "$BUILD/src" -name '*.py' | wc -l)
OBJECTS=$(find "$BUILD/src" -name '*.pyc' | wc -l)
echo "built $OBJECTS .pyc files from $SOURCES .py files"
run du -sh "$BUILD/src"
run cat "$Z/mm_stat"
print_ratio "$Z/mm_stat"

teardown  # umount, losetup -d, echo 1 > reset, zramfs umount
echo "torn down"
