"""Swap on zramfs under real memory pressure (issue 6).

A memory-hungry process runs in a memory-limited cgroup (64 MiB, swap
unlimited) whose only swap is zramfs over loop (``losetup --direct-io=on``,
``mkswap``, ``swapon``).  It allocates three times its limit in pages — a mix
of random (huge), text (compressible), half-zero and same-filled pages, each
derived from its page number and a generation — writes them all, rewrites
them all (each checked on the way: all but the last ~64 MiB written come
back from swap for it), then checks every page again.  It must exit 0: it
survived, and every byte came back.  ``mm_stat`` and ``/proc/swaps``, polled
during the run, must show the pages went to zramfs.

The daemon is *outside* the limited cgroup — the honest limit of swapping
through a userspace daemon: the daemon needs memory to store the page whose
swap-out is meant to free memory.  Inside the limited cgroup it would have to
reclaim from its own group to do so, which means swapping out through itself
(or, with ``--mlock``, reclaiming nothing and leaving only the OOM killer).
That deadlock is documented in docs/reliability.md, not demonstrated here: a
task stuck on a FUSE request that can never be answered sits in
uninterruptible sleep, and the cleanup (swapoff) could then hang the test
machine's swap state.

Run with and without ``--mlock``; the daemon's ``VmSwap`` (and ``VmLck``) are
reported.  With this set-up both are expected at 0 swap: the pressure is
confined to the cgroup, and the machine has no other swap for the daemon to be
pushed into — except zramfs itself, which is what ``--mlock`` rules out.

cgroup v2 (``memory.max``, ``memory.swap.max``) is used when the memory
controller is on the unified hierarchy; otherwise cgroup v1
(``memory.limit_in_bytes``; ``memory.memsw.limit_in_bytes`` left unlimited).
The group, the swap, the loop device and the mount are always removed, even
on failure; leftover processes in the group are killed first.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import ZramfsMount, needs_fuse, needs_loop, run

pytestmark = [needs_fuse, needs_loop, pytest.mark.timeout(600)]

MiB = 1 << 20
PAGE = 4096
LIMIT = 64 * MiB
HUNGRY = 3 * LIMIT
SWAP_SIZE = 512 * MiB
CHILD_TIMEOUT = 400.0
CGROUP_ROOT = Path("/sys/fs/cgroup")

# The memory-hungry child.  Page i of generation g is fully determined by
# (i, g), so every page can be checked exactly after it came back from swap.
CHILD = textwrap.dedent(
    r"""
    import json, mmap, random, struct, sys, time

    PAGE = 4096
    n = int(sys.argv[1]) // PAGE
    text = b"".join(b"hungry page text line %06d, nothing to see here\n" % k for k in range(200))

    def page(i, g):
        kind = i % 4
        if kind == 0:  # random: stored huge
            return random.Random(i * 4 + g).randbytes(PAGE)
        if kind == 1:  # text: compresses well
            k = (i * 131 + g * 17) % (len(text) - PAGE)
            return struct.pack("<QQ", i, g) + text[k : k + PAGE - 16]
        if kind == 2:  # half random, half zeros
            return random.Random(i * 4 + g).randbytes(PAGE // 2) + bytes(PAGE // 2)
        return struct.pack("<Q", (i << 8) | g) * (PAGE // 8)  # same-filled

    mem = mmap.mmap(-1, n * PAGE, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    t0 = time.monotonic()
    for i in range(n):  # first touch
        mem[i * PAGE : (i + 1) * PAGE] = page(i, 1)
    bad = 0
    for i in range(n):  # second touch: check, then rewrite
        if mem[i * PAGE : (i + 1) * PAGE] != page(i, 1):
            bad += 1
        mem[i * PAGE : (i + 1) * PAGE] = page(i, 2)
    for i in range(n):  # final check of every page
        if mem[i * PAGE : (i + 1) * PAGE] != page(i, 2):
            bad += 1
    swap_kib = 0
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmSwap:"):
                swap_kib = int(line.split()[1])
    print(json.dumps({"pages": n, "bad": bad, "seconds": time.monotonic() - t0,
                      "vmswap_kib": swap_kib}))
    sys.exit(1 if bad else 0)
    """
)


# ---------------------------------------------------------------------------
# cgroups


@dataclass
class MemCgroup:
    path: Path
    v2: bool

    def limit(self, nbytes: int) -> None:
        if self.v2:
            (self.path / "memory.max").write_text(str(nbytes))
            (self.path / "memory.swap.max").write_text("max")
        else:
            (self.path / "memory.limit_in_bytes").write_text(str(nbytes))
            # memsw (memory + swap) stays unlimited: swap itself is not capped.

    def procs(self) -> list[int]:
        try:
            return [int(x) for x in (self.path / "cgroup.procs").read_text().split()]
        except OSError:
            return []

    def report(self) -> dict[str, str]:
        names = (
            ["memory.events", "memory.swap.current", "memory.peak"]
            if self.v2
            else ["memory.failcnt", "memory.max_usage_in_bytes",
                  "memory.memsw.max_usage_in_bytes", "memory.oom_control"]
        )  # fmt: skip
        out = {}
        for name in names:
            with contextlib.suppress(OSError):
                out[name] = (self.path / name).read_text().strip().replace("\n", "; ")
        return out


def _v1_self_path() -> str | None:
    with open("/proc/self/cgroup") as f:
        for line in f:
            _, controllers, path = line.rstrip("\n").split(":", 2)
            if "memory" in controllers.split(","):
                return path
    return None


@contextlib.contextmanager
def memory_cgroup(name: str) -> Iterator[MemCgroup]:
    """A fresh memory cgroup; removed afterwards (its processes killed first).

    v2: a child of the root, with ``memory`` enabled in the root's
    ``cgroup.subtree_control`` if it was not (and disabled again after).
    v1: a child of this process's own memory cgroup (so the machine's own
    accounting above it stays intact).
    """
    restore_subtree = False
    v2_controllers = CGROUP_ROOT / "cgroup.controllers"
    if v2_controllers.exists() and "memory" in v2_controllers.read_text().split():
        parent, v2 = CGROUP_ROOT, True
        subtree = CGROUP_ROOT / "cgroup.subtree_control"
        if "memory" not in subtree.read_text().split():
            subtree.write_text("+memory")
            restore_subtree = True
    elif (CGROUP_ROOT / "memory" / "memory.limit_in_bytes").exists():
        own = _v1_self_path()
        if own is None:
            pytest.skip("no v1 memory cgroup for this process")
        parent, v2 = CGROUP_ROOT / "memory" / own.lstrip("/"), False
    else:
        pytest.skip("no memory cgroup controller (v1 or v2)")
    cg = MemCgroup(parent / name, v2)
    cg.path.mkdir()
    try:
        yield cg
    finally:
        deadline = time.monotonic() + 30
        while cg.procs() and time.monotonic() < deadline:
            for pid in cg.procs():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            time.sleep(0.1)
        for _ in range(50):
            try:
                cg.path.rmdir()
                break
            except FileNotFoundError:
                break
            except OSError:
                time.sleep(0.1)
        if restore_subtree:
            with contextlib.suppress(OSError):
                (CGROUP_ROOT / "cgroup.subtree_control").write_text("-memory")


# ---------------------------------------------------------------------------


def status_kib(pid: int, key: str) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    raise AssertionError(f"no {key} for {pid}")


def swap_used_kib(device: str) -> int:
    with open("/proc/swaps") as f:
        for line in f.read().splitlines()[1:]:
            parts = line.split()
            if parts[0] == device:
                return int(parts[3])
    return 0


class Peaks:
    """Polls mm_stat and /proc/swaps while the child runs; keeps the maxima."""

    def __init__(self, m: ZramfsMount, loop: str) -> None:
        self.m, self.loop = m, loop
        self.orig = self.compr = self.mem_used = self.swap_kib = 0
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._poll, daemon=True)

    def _poll(self) -> None:
        while not self.stop.wait(0.2):
            try:
                mm = self.m.mm_stat()
                used = swap_used_kib(self.loop)
            except OSError:
                continue
            if mm[0] > self.orig:
                self.orig, self.compr = mm[0], mm[1]
            self.mem_used = max(self.mem_used, mm[2])
            self.swap_kib = max(self.swap_kib, used)

    def __enter__(self) -> Peaks:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(5)


@pytest.mark.parametrize("mlock", [False, True], ids=["no-mlock", "mlock"])
def test_hungry_process_in_limited_cgroup_survives_on_zramfs_swap(
    mount_factory: object, mlock: bool, capsys: pytest.CaptureFixture[str]
) -> None:
    assert callable(mount_factory)
    m: ZramfsMount = mount_factory(*(["--mlock"] if mlock else []))
    with open("/proc/swaps") as f:
        if len(f.read().splitlines()) > 1:
            pytest.skip("another swap device is active: the pages could go there")
    m.write_attr("comp_algorithm", "lz4")
    m.write_attr("disksize", str(SWAP_SIZE))
    loop = m.losetup()
    run("mkswap", loop)
    # A low priority: a concurrent test's swap (e.g. test_fs_swap, 32767) keeps its own pages.
    m.swapon(loop, "--discard", "-p", "10")
    daemon = m.proc.pid

    with memory_cgroup(f"zramfs-swap-test-{os.getpid()}") as cg:
        cg.limit(LIMIT)
        # The child joins the group before exec: nothing of it runs unlimited.
        cmd = ["sh", "-c", 'echo $$ > "$0/cgroup.procs" && exec "$@"', str(cg.path),
               sys.executable, "-c", CHILD, str(HUNGRY)]  # fmt: skip
        t0 = time.monotonic()
        with Peaks(m, loop) as peaks:
            child = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            try:
                out, err = child.communicate(timeout=CHILD_TIMEOUT)
            except subprocess.TimeoutExpired:
                child.kill()
                out, err = child.communicate()
                raise AssertionError(
                    f"hungry child still running after {CHILD_TIMEOUT:.0f} s: {cg.report()}"
                ) from None
        took = time.monotonic() - t0
        cg_report = cg.report()
    vmswap, vmlck = status_kib(daemon, "VmSwap"), status_kib(daemon, "VmLck")

    result = json.loads(out.strip().splitlines()[-1]) if child.returncode == 0 else {}
    lines = [
        "",
        f"swap pressure ({'--mlock' if mlock else 'no --mlock'}): child exit {child.returncode} "
        f"after {took:.1f} s; {result}",
        f"  peak stored on zramfs: orig {peaks.orig / MiB:.0f} MiB, compr "
        f"{peaks.compr / MiB:.0f} MiB, mem_used max {peaks.mem_used / MiB:.0f} MiB; "
        f"/proc/swaps used max {peaks.swap_kib / 1024:.0f} MiB",
        f"  cgroup: {cg_report}",
        f"  daemon VmSwap {vmswap} kB, VmLck {vmlck} kB; io_stat {m.io_stat()}",
    ]
    with capsys.disabled():
        print("\n".join(lines))

    assert child.returncode == 0, f"hungry child failed ({child.returncode}): {err[-2000:]}"
    assert result["bad"] == 0 and result["pages"] == HUNGRY // PAGE, result
    # At least half of what it allocated sat in zramfs at one time (3x the
    # limit means >= 2/3 must be out of RAM at the end of each pass).
    assert peaks.orig >= HUNGRY // 2, peaks.orig
    assert peaks.swap_kib * 1024 >= HUNGRY // 2, peaks.swap_kib
    assert peaks.compr < peaks.orig, (peaks.compr, peaks.orig)  # the mix compressed
    assert m.io_stat()[:2] == [0, 0]
    if mlock:
        assert vmlck > 0
        assert vmswap == 0
    assert m.alive() and "Traceback" not in m.log_text()
    m.swapoff(loop)
    m.detach(loop)
