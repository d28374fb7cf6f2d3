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
cd "$(dirname "$0")/.."
ZRAMFS=${ZRAMFS:-.venv/bin/zramfs}

KEEP=0
SIZE=256M
DIR=""
POS=0
for arg in "$@"; do
    case $arg in
        --keep) KEEP=1 ;;
        -h|--help) sed -n '2,12p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        -*) echo "tmp-ext4.sh: unknown option $arg" >&2; exit 2 ;;
        *)
            POS=$((POS + 1))
            case $POS in
                1) SIZE=$arg ;;
                2) DIR=$arg ;;
                *) echo "tmp-ext4.sh: too many arguments" >&2; exit 2 ;;
            esac ;;
    esac
done

if [ -n "${ZRAMFS_ROOT:-}" ]; then
    MNT=$ZRAMFS_ROOT; mkdir -p "$MNT"; MADE_MNT=0
else
    MNT=$(mktemp -d /tmp/zramfs-tmproot.XXXXXX); MADE_MNT=1
fi
if [ -z "$DIR" ]; then
    DIR=$(mktemp -d /tmp/zramfs-tmp.XXXXXX); MADE_DIR=1
elif [ -d "$DIR" ]; then
    MADE_DIR=0
    if mountpoint -q "$DIR"; then echo "tmp-ext4.sh: $DIR is already a mount point" >&2; exit 1; fi
else
    mkdir -p "$DIR"; MADE_DIR=1
fi
Z=$MNT/sys/block/zram0
LOOP=""
FS_MOUNTED=0
DONE=0

wait_released() {  # the loop device lets go of the image asynchronously
    for _ in $(seq 100); do
        losetup -j "$MNT/dev/zram0" | grep -q . || return 0
        sleep 0.05
    done
}

cleanup() {
    local rc=$?
    set +e
    if [ "$DONE" = 1 ] && [ "$KEEP" = 1 ]; then exit "$rc"; fi
    [ "$FS_MOUNTED" = 1 ] && umount "$DIR"
    [ -n "$LOOP" ] && losetup -d "$LOOP" && wait_released
    [ -e "$Z/reset" ] && echo 1 > "$Z/reset"
    mountpoint -q "$MNT" && "$ZRAMFS" umount "$MNT"
    [ "$MADE_MNT" = 1 ] && rmdir "$MNT" 2>/dev/null
    [ "$MADE_DIR" = 1 ] && rmdir "$DIR" 2>/dev/null
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
run "echo zstd > $Z/comp_algorithm"
run "echo $SIZE > $Z/disksize"
run "LOOP=\$(losetup --direct-io=on -f --show $MNT/dev/zram0); echo \$LOOP"
# No reserved blocks (it is scratch space), no lazy init work in the background.
run mkfs.ext4 -q -m 0 -E lazy_itable_init=0,lazy_journal_init=0 "$LOOP"
run mount -o discard,nosuid,nodev "$LOOP" "$DIR"
FS_MOUNTED=1
run chmod 1777 "$DIR"
run stat -c "'%A %n'" "$DIR"
# Some real /tmp-ish content: a few packages of Python's standard library.
SRC=$(python3 -c 'import sysconfig; print(sysconfig.get_paths()["stdlib"])')
run "cp -r $SRC/json $SRC/email $SRC/http $DIR/ && sync"
run df -h "$DIR"
run cat "$Z/mm_stat"
read -r orig compr total _ < "$Z/mm_stat"
python3 -c "print(f'compression ratio {$orig/max($total,1):.2f}:1 (data / memory used)')"

if [ "$KEEP" = 1 ]; then
    DONE=1
    cat <<EOT

$DIR is mounted (ext4 on $LOOP, image $MNT/dev/zram0). To undo:
  umount $DIR && losetup -d $LOOP && echo 1 > $Z/reset && $ZRAMFS umount $MNT
EOT
    exit 0
fi

run umount "$DIR"
FS_MOUNTED=0
run losetup -d "$LOOP"
LOOP=""
wait_released
run "echo 1 > $Z/reset"
run "$ZRAMFS" umount "$MNT"
echo "torn down"
