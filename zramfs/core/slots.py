"""The slot table: 16 bytes per 4 KiB page, demand-paged.

Mirrors ``struct zram_table_entry`` after "zram: use u32 for entry ac_time
tracking": a handle word and an attribute word per page.

``handle[i]`` (u64)
    zsmalloc handle of the stored object; for ``SAME`` slots the repeated
    8-byte word itself; for ``WB`` slots the backing-store block index.
``attr[i]`` (u64)
    bits 0–12 object size (0..4096), then the page flags, the entry-lock bits
    owned by `entrylock.EntryLocks`, and in the high 32 bits the last-access
    time in whole seconds of ``CLOCK_BOOTTIME`` (u32, as the kernel since P2).

Both arrays live in anonymous private mappings, so the kernel hands out their
pages on first touch: a 100 GiB device (26 M slots, 400 MiB of table) costs a
few page-table entries until it is written, and initializing it is instant.
That is the "allocated lazily in chunks" of the design, with the chunk being
the MMU page and the allocator being the kernel's demand paging.
"""

from __future__ import annotations

import mmap
from collections.abc import Iterator
from itertools import repeat as _repeat
from operator import and_ as _and

from .entrylock import LOCK_MASK, EntryLocks

PAGE_SHIFT = 12
PAGE_SIZE = 1 << PAGE_SHIFT

# Page flags (enum zram_pageflags). Size occupies bits 0..12.
SIZE_MASK = (1 << 13) - 1
SAME = 1 << 13
WB = 1 << 14
PP_SLOT = 1 << 15
HUGE = 1 << 16
IDLE = 1 << 17
INCOMPRESSIBLE = 1 << 18
PRIO_SHIFT = 19
PRIO_MASK = 3 << PRIO_SHIFT
# bits 21..30: entry lock (entrylock.LOCK_MASK)
ACTIME_SHIFT = 32
ACTIME_MASK = 0xFFFFFFFF << ACTIME_SHIFT
FLAGS_MASK = SAME | WB | PP_SLOT | HUGE | IDLE | INCOMPRESSIBLE | PRIO_MASK

assert not (FLAGS_MASK | SIZE_MASK) & LOCK_MASK
assert not ACTIME_MASK & LOCK_MASK and LOCK_MASK < (1 << ACTIME_SHIFT)


_SCAN = 512  # slots per 4 KiB page of the attr array
_ZERO_WORDS = bytes(_SCAN * 8)


class SlotTable:
    """``npages`` slots with their entry locks."""

    __slots__ = ("npages", "_maps", "handle", "attr", "locks")

    def __init__(self, npages: int) -> None:
        self.npages = npages
        nbytes = max(8 * npages, mmap.PAGESIZE)
        flags = mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS | getattr(mmap, "MAP_NORESERVE", 0)
        self._maps = (mmap.mmap(-1, nbytes, flags=flags), mmap.mmap(-1, nbytes, flags=flags))
        self.handle = memoryview(self._maps[0]).cast("Q")
        self.attr = memoryview(self._maps[1]).cast("Q")
        self.locks = EntryLocks(self.attr)

    def allocated(self, i: int) -> bool:
        """zram_allocated(): an object, a same-filled word or a written-back block."""
        a = self.attr[i]
        return bool(a & (SIZE_MASK | SAME | WB))

    def size(self, i: int) -> int:
        return self.attr[i] & SIZE_MASK

    def prio(self, i: int) -> int:
        return (self.attr[i] & PRIO_MASK) >> PRIO_SHIFT

    def actime(self, i: int) -> int:
        return self.attr[i] >> ACTIME_SHIFT

    def clear(self, first: int, stop: int) -> bool:
        """True if every slot of ``[first, stop)`` has an all-zero attr word:
        nothing stored, no flags, nobody holding or waiting for its lock.
        (One memcmp per 512 slots.)"""
        raw = self._maps[1]
        for lo in range(first, stop, _SCAN):
            hi = min(lo + _SCAN, stop)
            if raw[lo * 8 : hi * 8] != _ZERO_WORDS[: (hi - lo) * 8]:
                return False
        return True

    def unlocked(self, first: int, stop: int) -> bool:
        """True if no slot of ``[first, stop)`` is held or awaited (no entry
        lock bits), whatever it stores.  (One C-level pass over the words.)"""
        return not any(map(_and, self.attr[first:stop], _repeat(LOCK_MASK)))

    def only_bits(self, first: int, stop: int, bits: int) -> bool:
        """True if every attr word of ``[first, stop)`` is exactly ``bits``
        (e.g. WRITER: held by the caller, nothing stored, nobody waiting)."""
        return self.attr[first:stop].tolist() == [bits] * (stop - first)

    def touched(self, first: int, stop: int) -> Iterator[tuple[int, int]]:
        """Sub-ranges of ``[first, stop)`` whose attr words may be non-zero.

        Scans the attr array one 4 KiB table page (512 slots) at a time and
        skips pages that are all zero — never written, nothing allocated,
        nothing locked — with one memcmp, so whole-device scans (idle,
        block_state, discard) cost little on a large sparse device and never
        fault table pages in.
        """
        raw = self._maps[1]
        for base in range(first - first % _SCAN, stop, _SCAN):
            lo = max(base, first)
            hi = min(base + _SCAN, stop)
            if raw[lo * 8 : hi * 8] != _ZERO_WORDS[: (hi - lo) * 8]:
                yield lo, hi

    def close(self) -> None:
        """Unmap the table (device reset).  No lock may be held or awaited."""
        if self.locks.contended_slots:
            raise RuntimeError("slot table closed with tasks waiting on entry locks")
        self.handle.release()
        self.attr.release()
        for m in self._maps:
            m.close()
