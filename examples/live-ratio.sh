#!/usr/bin/env bash
# Watch the compression ratio of every initialized device of a zramfs mount.
#
#   examples/live-ratio.sh MNT [INTERVAL] [COUNT]
#
# Every INTERVAL seconds (default 1; fractions allowed) prints one line per
# device whose disksize is non-zero, from MNT/sys/block/zramN/mm_stat:
#   TIME DEVICE ORIG COMPR MEM_USED RATIO SAME_PAGES HUGE_PAGES
# ORIG, COMPR and MEM_USED are bytes; RATIO is orig / mem_used ("-" while
# nothing is stored). Stops after COUNT rounds (default: runs until killed).
# Read-only: it never changes the devices.
set -euo pipefail

case ${1:-} in
    -h|--help) sed -n '2,11p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    "") sed -n '2,11p' "$0" | sed 's/^# \{0,1\}//'; exit 2 ;;
esac
MNT=$1
INTERVAL=${2:-1}
COUNT=${3:-0}
if [ ! -d "$MNT/sys/block" ]; then
    echo "live-ratio.sh: $MNT is not a zramfs mount (no $MNT/sys/block)" >&2
    exit 1
fi
case $COUNT in
    ''|*[!0-9]*) echo "live-ratio.sh: COUNT must be a whole number" >&2; exit 2 ;;
esac

printf '%-8s %-6s %12s %12s %12s %7s %10s %10s\n' \
    TIME DEVICE ORIG COMPR MEM_USED RATIO SAME_PAGES HUGE_PAGES
round=0
while :; do
    now=$(date +%H:%M:%S)
    for sys in "$MNT"/sys/block/zram*; do
        [ -d "$sys" ] || continue
        # A device can be removed (hot_remove) or reset between reads: skip it.
        disksize=$(cat "$sys/disksize" 2>/dev/null) || continue
        [ "$disksize" != 0 ] || continue
        stat=$(cat "$sys/mm_stat" 2>/dev/null) || continue
        read -r orig compr used _limit _max same _compacted huge _ <<< "$stat"
        ratio=$(awk -v o="$orig" -v u="$used" 'BEGIN { if (u > 0) printf "%.2f", o / u; else print "-" }')
        printf '%-8s %-6s %12s %12s %12s %7s %10s %10s\n' \
            "$now" "${sys##*/}" "$orig" "$compr" "$used" "$ratio" "$same" "$huge"
    done
    round=$((round + 1))
    if [ "$COUNT" != 0 ] && [ "$round" -ge "$COUNT" ]; then break; fi
    sleep "$INTERVAL"
done
