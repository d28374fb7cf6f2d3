#!/usr/bin/env bash
# The main job, end to end: mount zramfs, configure zram0 exactly as one would
# the kernel's zram, attach a loop device, put ext4 on it, write real data,
# show what the compressed RAM disk holds, and clean everything up.
set -euo pipefail
cd "$(dirname "$0")/.."
ZRAMFS=${ZRAMFS:-.venv/bin/zramfs}
MNT=$(mktemp -d /tmp/zramfs-demo.XXXXXX)
FS=$(mktemp -d /tmp/zramfs-demo-fs.XXXXXX)
LOOP=""

cleanup() {
    set +e
    mountpoint -q "$FS" && umount "$FS"
    [ -n "$LOOP" ] && losetup -d "$LOOP"
    mountpoint -q "$MNT" && "$ZRAMFS" umount "$MNT"
    rmdir "$MNT" "$FS" 2>/dev/null
}
trap cleanup EXIT

say() { printf '\n\033[1m$ %s\033[0m\n' "$*"; }
run() { say "$*"; eval "$@"; }

run "$ZRAMFS" mount "$MNT"
Z=$MNT/sys/block/zram0
run cat "$Z/comp_algorithm"
run "echo lz4 > $Z/comp_algorithm"
run "echo 512M > $Z/disksize"
run "LOOP=\$(losetup --direct-io=on -f --show $MNT/dev/zram0); echo \$LOOP"
run mkfs.ext4 -q "$LOOP"
run mount "$LOOP" "$FS"
# Real data: Python's standard library (without site-packages) and the docs.
SRC=$(python3 -c 'import sysconfig; print(sysconfig.get_paths()["stdlib"])')
run "tar -C / --exclude=site-packages --exclude=__pycache__ -cf - ${SRC#/} usr/share/doc | tar -C $FS -xf - && sync"
run df -h "$FS"
say "cat $Z/mm_stat"
read -r orig compr total limit maxused same compacted huge hugesince < "$Z/mm_stat"
cat "$Z/mm_stat"
printf '%-16s %12s\n' orig_data_size "$orig" compr_data_size "$compr" mem_used_total "$total" \
    same_pages "$same" huge_pages "$huge"
python3 -c "print(f'compression ratio {$orig/$total:.2f}:1 (data / memory used)')"
run cat "$Z/io_stat"
run "rm -rf $FS/* && sync && fstrim -v $FS"
run cat "$Z/mm_stat" "$Z/io_stat"
