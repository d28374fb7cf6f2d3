#!/usr/bin/env bash
# The main job, end to end: mount zramfs, configure zram0 exactly as one would
# the kernel's zram, attach a loop device, put ext4 on it, write real data,
# show what the compressed RAM disk holds, and clean everything up.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$(dirname "$0")/lib.sh"  # run/say, on_undo/teardown, attach_loop, the EXIT trap
fresh_dir MNT /tmp/zramfs-demo.XXXXXX
fresh_dir FS /tmp/zramfs-demo-fs.XXXXXX

run "$ZRAMFS" mount "$MNT"
on_undo "$ZRAMFS umount $MNT"
Z=$MNT/sys/block/zram0
run cat "$Z/comp_algorithm"
run "echo lz4 > $Z/comp_algorithm"
run "echo 512M > $Z/disksize"
on_undo "echo 1 > $Z/reset"
attach_loop  # LOOP: zram0's image as a block device
run mkfs.ext4 -q "$LOOP"
run mount "$LOOP" "$FS"
on_undo "umount $FS"
# Real data: Python's standard library (without site-packages) and the docs.
SRC=$(python3 -c 'import sysconfig; print(sysconfig.get_paths()["stdlib"])')
run "tar -C / --exclude=site-packages --exclude=__pycache__ -cf - ${SRC#/} usr/share/doc | tar -C $FS -xf - && sync"
run df -h "$FS"
say "cat $Z/mm_stat"
read -r orig compr total _limit _maxused same _compacted huge _rest < "$Z/mm_stat"
cat "$Z/mm_stat"
printf '%-16s %12s\n' orig_data_size "$orig" compr_data_size "$compr" mem_used_total "$total" \
    same_pages "$same" huge_pages "$huge"
print_ratio "$Z/mm_stat"
run cat "$Z/io_stat"
run "rm -rf $FS/* && sync && fstrim -v $FS"
run cat "$Z/mm_stat" "$Z/io_stat"

teardown  # umount, losetup -d, echo 1 > reset, zramfs umount
echo "torn down"
