# shellcheck shell=bash
# The plumbing the examples share, sourced by them (not run on its own):
# where the zramfs CLI is, scratch directories, echoing each step before it
# runs, and undoing what was set up, last first, even when a step fails.
#
# The zram steps themselves stay in each example. After each step that needs
# undoing, the example registers the undo with `on_undo`; at the end it calls
# `teardown` (shows and runs them) or, with --keep, `keep` (prints them as one
# command line and leaves everything up). If the script stops early, the EXIT
# trap runs the registered undos quietly.

# This checkout's CLI unless $ZRAMFS names another one.
ZRAMFS=${ZRAMFS:-$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)/.venv/bin/zramfs}

UNDO_SHOW=()  # each undo as shown to the reader (and in `keep`'s undo line)
UNDO_RUN=()   # each undo as run (the same, or with plumbing added)
MADE_DIRS=()  # directories this script created: removed at exit
KEPT=0

usage() {  # the script's header comment, without the "# "
    awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"
}

die() {  # die MESSAGE [STATUS]
    echo "${0##*/}: $1" >&2
    exit "${2:-1}"
}

if [ -t 1 ]; then
    say() { printf '\n\033[1m$ %s\033[0m\n' "$*"; }
else
    say() { printf '\n$ %s\n' "$*"; }
fi

run() {  # show a shell command line, then run it
    say "$*"
    eval "$*"
}

fresh_dir() {  # fresh_dir VAR TEMPLATE: VAR := a new `mktemp -d TEMPLATE`, removed at exit
    local dir
    dir=$(mktemp -d "$2")
    MADE_DIRS+=("$dir")
    printf -v "$1" '%s' "$dir"
}

zramfs_root() {  # zramfs_root TEMPLATE: MNT := $ZRAMFS_ROOT (created if missing, kept) or a fresh_dir
    if [ -n "${ZRAMFS_ROOT:-}" ]; then
        MNT=$ZRAMFS_ROOT
        mkdir -p "$MNT"
    else
        fresh_dir MNT "$1"
    fi
}

on_undo() {  # on_undo CMDLINE [AS_RUN]: undo the step just done; AS_RUN defaults to CMDLINE
    UNDO_SHOW+=("$1")
    UNDO_RUN+=("${2:-$1}")
}

wait_released() {  # the loop device lets go of the image asynchronously
    for _ in $(seq 100); do
        losetup -j "$MNT/dev/zram0" | grep -q . || return 0
        sleep 0.05
    done
}

attach_loop() {  # LOOP := a loop device on zram0's image (the /dev/zram0 of the kernel)
    run "LOOP=\$(losetup --direct-io=on -f --show $MNT/dev/zram0); echo \$LOOP"
    on_undo "losetup -d $LOOP" "losetup -d $LOOP && wait_released"
}

print_ratio() {  # print_ratio MM_STAT: orig_data_size / mem_used_total, its 1st and 3rd columns
    local orig _compr total _rest
    read -r orig _compr total _rest < "$1"
    awk -v o="$orig" -v t="$total" \
        'BEGIN { printf "compression ratio %.2f:1 (data / memory used)\n", o / (t > 0 ? t : 1) }'
}

teardown() {  # show and run every registered undo, last first
    local i cmd
    for ((i = ${#UNDO_RUN[@]} - 1; i >= 0; i--)); do
        say "${UNDO_SHOW[i]}"
        cmd=${UNDO_RUN[i]}
        unset 'UNDO_SHOW[i]' 'UNDO_RUN[i]'  # done (or failed): not again at exit
        eval "$cmd"
    done
}

keep() {  # keep WHAT: leave everything up; print WHAT and the command line that undoes it
    local i line=""
    for ((i = ${#UNDO_SHOW[@]} - 1; i >= 0; i--)); do
        line+=${line:+ && }${UNDO_SHOW[i]}
    done
    printf '\n%s To undo:\n  %s\n' "$1" "$line"
    KEPT=1
    exit 0
}

cleanup() {  # the EXIT trap
    local rc=$? i
    set +e
    [ "$KEPT" = 1 ] && exit "$rc"
    for ((i = ${#UNDO_RUN[@]} - 1; i >= 0; i--)); do
        eval "${UNDO_RUN[i]}"
    done
    for ((i = ${#MADE_DIRS[@]} - 1; i >= 0; i--)); do
        rmdir "${MADE_DIRS[i]}" 2>/dev/null
    done
    exit "$rc"
}
trap cleanup EXIT
