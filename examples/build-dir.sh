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
cd "$(dirname "$0")/.."
ZRAMFS=${ZRAMFS:-.venv/bin/zramfs}

SIZE=256M
for arg in "$@"; do
    case $arg in
        -h|--help) sed -n '2,9p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        -*) echo "build-dir.sh: unknown option $arg" >&2; exit 2 ;;
        *) SIZE=$arg ;;
    esac
done

if [ -n "${ZRAMFS_ROOT:-}" ]; then
    MNT=$ZRAMFS_ROOT; mkdir -p "$MNT"; MADE_MNT=0
else
    MNT=$(mktemp -d /tmp/zramfs-build.XXXXXX); MADE_MNT=1
fi
BUILD=$(mktemp -d /tmp/zramfs-build-dir.XXXXXX)
Z=$MNT/sys/block/zram0
LOOP=""
FS_MOUNTED=0

wait_released() {  # the loop device lets go of the image asynchronously
    for _ in $(seq 100); do
        losetup -j "$MNT/dev/zram0" | grep -q . || return 0
        sleep 0.05
    done
}

cleanup() {
    local rc=$?
    set +e
    [ "$FS_MOUNTED" = 1 ] && umount "$BUILD"
    [ -n "$LOOP" ] && losetup -d "$LOOP" && wait_released
    [ -e "$Z/reset" ] && echo 1 > "$Z/reset"
    mountpoint -q "$MNT" && "$ZRAMFS" umount "$MNT"
    [ "$MADE_MNT" = 1 ] && rmdir "$MNT" 2>/dev/null
    rmdir "$BUILD" 2>/dev/null
    exit "$rc"
}
trap cleanup EXIT

if [ -t 1 ]; then
    say() { printf '\n\033[1m$ %s\033[0m\n' "$*"; }
else
    say() { printf '\n$ %s\n' "$*"; }
fi
run() { say "$*"; eval "$@"; }

run "$ZRAMFS" mount "$MNT"
run "echo lz4 > $Z/comp_algorithm"
run "echo $SIZE > $Z/disksize"
run "LOOP=\$(losetup --direct-io=on -f --show $MNT/dev/zram0); echo \$LOOP"
run mkfs.ext4 -q -m 0 -E lazy_itable_init=0,lazy_journal_init=0 "$LOOP"
run mount -o noatime,discard "$LOOP" "$BUILD"
FS_MOUNTED=1

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
read -r orig compr total _ < "$Z/mm_stat"
python3 -c "print(f'compression ratio {$orig/max($total,1):.2f}:1 (data / memory used)')"

run umount "$BUILD"
FS_MOUNTED=0
run losetup -d "$LOOP"
LOOP=""
wait_released
run "echo 1 > $Z/reset"
run "$ZRAMFS" umount "$MNT"
echo "torn down"
