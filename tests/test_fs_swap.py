"""Swap on a zramfs image: mkswap, swapon --discard, /proc/swaps, swapoff, reset.

Small on purpose: swapping *through* a FUSE daemon can deadlock under real
memory pressure (the daemon needs memory to take pages), so nothing here pushes
the machine into swap; it checks the device is usable and comes back clean.
"""

from __future__ import annotations

import ctypes
import errno
import hashlib
import mmap
import os
import time
from collections.abc import Callable

import pytest

from tests.conftest import ZramfsMount, needs_fuse, needs_loop, run

pytestmark = [needs_fuse, needs_loop]

MiB = 1 << 20
PAGE = 4096
PRIO = 32767  # the highest swap priority
NOTIFY_FREE = 3

_libc = ctypes.CDLL(None, use_errno=True)


def proc_swaps() -> dict[str, list[str]]:
    """/proc/swaps: device → [type, size KiB, used KiB, priority]."""
    with open("/proc/swaps") as f:
        lines = f.read().splitlines()[1:]
    return {parts[0]: parts[1:] for parts in (line.split() for line in lines)}


def swapouts() -> int:
    """Pages the kernel has swapped out since boot, system-wide (``pswpout``).

    Machines like this one run a DAMON ``pageout`` scheme (a kdamond doing
    proactive reclaim of pages idle for about a second): once a swap device
    exists, cold pages of any process may be paged out to it at any moment
    (CI once saw 46 and 577 such pages land on these tests' swaps).  A test
    that counts what its own swap holds allows for exactly the pages swapped
    out meanwhile; with no swap-out, the exact figure is required.
    """
    with open("/proc/vmstat") as f:
        for line in f:
            if line.startswith("pswpout "):
                return int(line.split()[1])
    raise AssertionError("no pswpout in /proc/vmstat")


def test_swapon_discard_and_reset(zmount: ZramfsMount) -> None:
    m = zmount
    m.write_attr("disksize", "64M")
    loop = m.losetup()
    out = run("mkswap", loop).stdout
    assert "Setting up swapspace" in out, out
    with open(loop, "rb") as f:
        header = f.read(PAGE)
    assert header[-10:] == b"SWAPSPACE2"
    out0 = swapouts()
    m.swapon(loop, "--discard", "-p", str(PRIO))

    entry = proc_swaps().get(loop)
    assert entry is not None, proc_swaps()
    kind, size_kib, used_kib, prio = entry
    assert kind == "partition"
    assert int(size_kib) == 64 * 1024 - PAGE // 1024  # all but the header page
    assert int(used_kib) <= (swapouts() - out0) * PAGE // 1024  # 0 unless foreign pages
    assert int(prio) == PRIO
    show = run("swapon", "--show=NAME,PRIO", "--noheadings", "--raw").stdout
    assert f"{loop} {PRIO}" in show.splitlines(), show
    # swapon --discard discarded the whole swap area, header page excluded:
    # loop → fallocate(PUNCH_HOLE) → notify_free.  The header survived.
    assert m.io_stat()[NOTIFY_FREE] >= 64 * MiB // PAGE - 1
    mm = m.mm_stat()
    foreign = swapouts() - out0
    assert PAGE <= mm[0] <= PAGE + foreign * PAGE, (mm, foreign)  # only the header page

    # The image is held: reset, hot_remove and disksize refuse.
    for attr, value in (("reset", "1"), ("disksize", "32M")):
        with pytest.raises(OSError) as e:
            m.write_attr(attr, value)
        assert e.value.errno == errno.EBUSY, attr
    with pytest.raises(OSError) as e:
        (m.path / "sys/class/zram-control/hot_remove").write_text("0")
    assert e.value.errno == errno.EBUSY

    m.swapoff(loop)
    assert loop not in proc_swaps()
    # still a valid swap area after swapoff; and swapon again works (no discard)
    m.swapon(loop)
    assert loop in proc_swaps()
    m.swapoff(loop)

    m.detach(loop)
    m.write_attr("reset", "1")
    assert m.read_attr("initstate") == "0\n"
    assert m.read_attr("disksize") == "0\n"
    assert m.mm_stat()[:3] == [0, 0, 0]
    assert m.io_stat() == [0, 0, 0, 0]
    assert os.stat(m.image()).st_size == 0
    # ... and the device is reusable: a fresh swap on a fresh size.
    m.write_attr("disksize", "32M")
    loop = m.losetup()
    run("mkswap", loop)
    m.swapon(loop, "--discard=once")
    assert int(proc_swaps()[loop][1]) == 32 * 1024 - PAGE // 1024
    m.swapoff(loop)
    m.detach(loop)


def test_swapon_discard_pages_and_failure_is_clean(zmount: ZramfsMount) -> None:
    """``--discard=pages`` works; swapon on a non-swap image fails and leaves nothing."""
    m = zmount
    m.write_attr("comp_algorithm", "zstd")
    m.write_attr("disksize", "16M")
    loop = m.losetup()
    res = run("swapon", loop, check=False)  # no signature yet
    assert res.returncode != 0
    assert loop not in proc_swaps()
    run("mkswap", "-L", "zramswap", loop)
    m.swapon(loop, "--discard=pages", "-p", "5")
    assert proc_swaps()[loop][3] == "5"
    m.swapoff(loop)
    m.detach(loop)
    m.write_attr("reset", "1")


MADV_PAGEOUT = getattr(mmap, "MADV_PAGEOUT", 21)  # Linux 5.4


def wait_for(cond: Callable[[], bool], timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(0.05)
    return cond()


def test_pages_really_swap_out_and_back_in(zmount: ZramfsMount) -> None:
    """16 MiB of this process's memory through the swap on zramfs, with no memory pressure.

    ``madvise(MADV_PAGEOUT)`` reclaims exactly these pages now: they go to the
    highest-priority swap (ours), i.e. loop → FUSE → the daemon, which is
    another process with plenty of free memory, so nothing can deadlock.  Then
    the pages come back in (locked, so the kernel frees their swap slots as
    it does so) and must be intact, and ``--discard`` tells zramfs of the
    freed slots (loop has no slot-free notify): the memory comes back.
    """
    m = zmount
    m.write_attr("disksize", "64M")
    loop = m.losetup()
    run("mkswap", loop)
    m.swapon(loop, "--discard", "-p", str(PRIO))
    base = m.mm_stat()[0]
    n = 16 * MiB
    text = b"".join(b"zram swap line %08d\n" % i for i in range(n // 24 + 1))
    with mmap.mmap(-1, n, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS) as mem:
        for off in range(0, n, 2 * PAGE):  # half compressible text, half random
            mem[off : off + PAGE] = text[off : off + PAGE]
            mem[off + PAGE : off + 2 * PAGE] = os.urandom(PAGE)
        digest = hashlib.sha256(mem).hexdigest()
        try:
            mem.madvise(MADV_PAGEOUT)
        except OSError as e:
            pytest.skip(f"MADV_PAGEOUT: {e}")
        assert wait_for(lambda: m.mm_stat()[0] >= base + n * 9 // 10), m.mm_stat()
        mm = m.mm_stat()
        assert int(proc_swaps()[loop][2]) >= n * 9 // 10 // 1024  # "Used" KiB
        assert mm[1] < mm[0] * 3 // 4, mm  # the text half compressed
        assert mm[7] >= n // PAGE // 2 * 9 // 10, mm  # the random half is stored huge
        # Back in through mlock: the kernel frees the swap slot of a page it
        # swaps in for a locked mapping.  Read back by plain faults, a page may
        # stay in the swap cache with its slot held after the unmap, until
        # memory pressure, and swap discards only whole free clusters (with
        # kernel 6.18 here, 2.4 MiB stayed stored for good in one run of six).
        buf = (ctypes.c_char * n).from_buffer(mem)
        try:
            addr, size = ctypes.c_void_p(ctypes.addressof(buf)), ctypes.c_size_t(n)
            assert _libc.mlock(addr, size) == 0, os.strerror(ctypes.get_errno())
            assert hashlib.sha256(mem).hexdigest() == digest  # swapped back in intact
            assert _libc.munlock(addr, size) == 0, os.strerror(ctypes.get_errno())
        finally:
            del buf
        # (their slots were freed at the swap-in, while still mapped)
        assert wait_for(lambda: int(proc_swaps()[loop][2]) <= 64), proc_swaps()[loop]
    assert m.io_stat()[:2] == [0, 0]
    # the slots are free, swap discards them, the pages go
    assert wait_for(lambda: m.mm_stat()[0] <= base + 2 * MiB), m.mm_stat()
    m.swapoff(loop)
    m.detach(loop)
    m.write_attr("reset", "1")


def test_swapon_discard_of_a_big_fresh_device_is_cheap(zmount: ZramfsMount) -> None:
    """``swapon --discard`` on a large, never-written device must not grow the daemon.

    The slot table is demand-paged so that a big disksize costs nothing until
    written (SPEC §5, slots.py); discarding pages that hold nothing must keep
    it that way, as it frees nothing.
    """
    m = zmount
    m.write_attr("disksize", "4G")
    loop = m.losetup()
    run("mkswap", loop)
    before = m.rss()
    out0 = swapouts()
    t0 = time.monotonic()
    m.swapon(loop, "--discard")
    took = time.monotonic() - t0
    grown = m.rss() - before
    m.swapoff(loop)
    foreign = swapouts() - out0  # pages the system swapped out meanwhile (see swapouts)
    assert PAGE <= m.mm_stat()[0] <= PAGE + foreign * PAGE, (m.mm_stat(), foreign)
    limit = 2 * MiB + foreign * PAGE
    assert grown < limit, f"daemon grew {grown / MiB:.1f} MiB discarding 4 GiB ({took:.1f} s)"
