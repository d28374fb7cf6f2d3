"""Post-processing: ``recompress``, ``writeback``, ``backing_dev`` and the writeback knobs.

What zram does to pages after they are stored (reference §5, §8), with the
kernel's syntax, errno and accounting (``recompress_store`` /
``writeback_store`` of zram_drv.c), run so that the device keeps serving I/O.

Locking — the design choice
===========================

The kernel takes ``dev_lock`` for *write* in ``recompress_store`` and
``writeback_store``.  That costs it nothing, because kernel I/O never takes
``dev_lock``.  Here every read and write takes ``dev_lock`` *shared*, so an
exclusive hold would stall the whole device for the length of a recompression
(minutes of brotli-11).  Instead:

* ``dev_lock`` is taken *shared*, for the whole operation: I/O goes on,
  while ``reset`` / ``hot_remove`` / ``disksize`` (exclusive) wait until the
  operation is over — nothing is torn down under it, as in the kernel.
  Caveat: an exclusive taker queued meanwhile (``disksize``/algorithm stores
  on an uninitialized device cannot be; ``mem_limit`` deliberately takes no
  lock) would make later I/O queue behind it until the operation ends,
  because ``DevLock`` is fair (FIFO).  ``reset`` itself never queues while
  the image is open (EBUSY first).
* then ``dev.pp_lock`` (a device-level `trio.Lock`, "post-processing"):
  ``writeback`` and ``recompress`` serialize against each other and against
  themselves.  A second caller *blocks* until the first is done — the
  behaviour of C1, where both take ``dev_lock`` for write (the 6.12–6.19
  alternative, ``-EAGAIN`` via ``pp_in_progress``, is not used).  Taking it
  inside ``dev_lock`` keeps C1's FIFO order: a ``writeback`` that arrived
  before a ``reset`` runs before it (the waiter already holds ``dev_lock``
  shared), one that arrives after it finds the device reset (EINVAL).
* Slots: the candidate scan marks ``PP_SLOT`` (any access or free clears it,
  exactly the kernel's invalidation rule).  Work then goes in batches: a batch
  of slots is entry-locked in ascending index order (the device's multi-slot
  rule, so no deadlock with multi-page writes), each slot re-checked
  (``PP_SLOT`` still set), its object copied out of the pool (pool views never
  survive an ``await``), and the slow part — decompress plus secondary
  compression, or backing-store ``pwrite`` — runs in a worker thread
  (``trio.to_thread.run_sync``) with the batch's entry locks held across the
  await.  One thread hop per batch, not per page.  Afterwards each slot is
  committed on the trio thread: the handle is re-read from the table (pool
  compaction may have moved the object while we waited), the old object
  freed via ``_slot_free``, the new content stored.  While a slot is locked,
  readers and writers of *that* slot wait; every other slot is untouched.
* Recompression batches are sized by time: the batch size follows a decaying
  maximum of the measured per-page cost (growing at most 2x a batch) to fill
  `RECOMP_BATCH_TARGET_NS`, and the worker stops starting pages once that
  budget is spent (the rest of the batch is put back, unattempted).  So a
  reader that hits a locked slot waits about that long at most, plus one
  page, even with brotli quality 11 (~10-20 ms a page).  Writeback
  batches are ``writeback_batch_size`` pages ("that many pages in flight"),
  capped at `WB_MAX_INFLIGHT`.
* ``writeback_limit``, ``writeback_limit_enable`` and ``writeback_batch_size``
  take no lock (one int assignment on the trio thread); a writeback in
  progress sees a new budget at its next page.  ``backing_dev`` and
  ``compressed_writeback`` are pre-init only and take ``dev_lock`` for write
  (no I/O exists on an uninitialized device).

Differences from the kernel, on purpose
=======================================

* Writeback holds the entry lock while the page is written (the kernel drops
  it and re-checks ``PP_SLOT`` at completion).  A slot being written back is
  therefore never freed under the I/O; a read of it just waits for the batch.
* ``huge_pages`` counts huge objects in RAM only: with
  ``compressed_writeback`` the kernel re-sets ``HUGE`` on the written-back
  slot and decrements ``huge_pages`` a second time when it is freed; here the
  device's ``_slot_free`` ignores ``HUGE`` on ``WB`` slots.
* A block reserved for a candidate that turned out stale is returned at the
  end (the kernel leaks it until reset).
* Failed writeback I/O: the error is returned (like the kernel's last bio
  error) and the page stays in RAM; the budget and the block are rolled back.
  A batch counts as written only once ``fdatasync`` of the backing store has
  succeeded (the kernel waits for its bios instead): a page-cache write error
  fails the whole batch rather than losing its pages later.
"""

from __future__ import annotations

import errno
import logging
import os
import time
from array import array
from collections.abc import Sequence
from typing import TYPE_CHECKING

import trio

from ..backends.base import Codec
from ..errors import ZramError, einval
from . import kparse
from .backing import BLOCK_SIZE, BackingStore
from .slots import (
    HUGE,
    IDLE,
    INCOMPRESSIBLE,
    PAGE_SIZE,
    PP_SLOT,
    PRIO_MASK,
    PRIO_SHIFT,
    SAME,
    SIZE_MASK,
    WB,
    SlotTable,
)
from .zsmalloc import ZS_HANDLE_SIZE, ZsPool

if TYPE_CHECKING:
    from .device import ZramDevice

log = logging.getLogger(__name__)

ZRAM_MAX_COMPS = 4
ZRAM_SECONDARY_COMP = 1
ALLOCATED = SIZE_MASK | SAME | WB

#: A post-processing bucket spans this many bytes of object size (kernel).
PP_BUCKET_SIZE_RANGE = 64
NUM_PP_BUCKETS = PAGE_SIZE // PP_BUCKET_SIZE_RANGE + 1

#: Slots examined per scan step before yielding to other tasks.
SCAN_STEP = 512
_ZERO_STEP = bytes(SCAN_STEP * 8)

#: Target duration of one recompression batch (entry locks held that long).
RECOMP_BATCH_TARGET_NS = 20_000_000
RECOMP_BATCH_MAX = 64
#: Worker threads per recompression batch: leave a CPU to the trio thread.
RECOMP_THREADS = max(1, min(2, (os.cpu_count() or 1) - 1))

#: At most this many writeback pages in flight whatever writeback_batch_size
#: says (the kernel likewise works with the requests it could allocate).
WB_MAX_INFLIGHT = 1024

# writeback modes (zram_drv.c)
HUGE_WRITEBACK = 1 << 0
IDLE_WRITEBACK = 1 << 1
INCOMPRESSIBLE_WRITEBACK = 1 << 2
RECOMPRESS_IDLE = 1 << 0
RECOMPRESS_HUGE = 1 << 1


# ---------------------------------------------------------------------------
# candidate buckets (struct zram_pp_ctl)
# ---------------------------------------------------------------------------


class PPCtl:
    """``zram_pp_ctl``: slots selected for post-processing, by size bucket.

    `select` returns the most recently placed slot of the highest non-empty
    bucket (``list_add`` + ``list_first_entry``): largest objects first.
    Buckets are ``array('L')``: 8 bytes a candidate, no object per slot (the
    kernel spends a kmalloc'ed ``zram_pp_slot`` on each).
    """

    __slots__ = ("buckets", "_top")

    def __init__(self) -> None:
        self.buckets: list[array[int]] = [array("L") for _ in range(NUM_PP_BUCKETS)]
        self._top = NUM_PP_BUCKETS - 1

    def place(self, attr: memoryview, idx: int, a: int) -> None:
        """``place_pp_slot``: queue ``idx`` and flag it ``PP_SLOT``."""
        self.buckets[(a & SIZE_MASK) // PP_BUCKET_SIZE_RANGE].append(idx)
        attr[idx] = a | PP_SLOT

    def requeue(self, idx: int, a: int) -> None:
        """Put a selected slot back on top of its bucket (selected next)."""
        bid = (a & SIZE_MASK) // PP_BUCKET_SIZE_RANGE
        self.buckets[bid].append(idx)
        if bid > self._top:
            self._top = bid

    def select(self) -> int | None:
        while self._top >= 0:
            b = self.buckets[self._top]
            if b:
                return b.pop()
            self._top -= 1
        return None

    def __len__(self) -> int:
        return sum(len(b) for b in self.buckets)

    def release_all(self, attr: memoryview) -> None:
        """``release_pp_ctl``: clear ``PP_SLOT`` on whatever was not processed."""
        for b in self.buckets:
            for idx in b:
                attr[idx] &= ~PP_SLOT
            del b[:]
        self._top = -1


async def scan_slots(
    table: SlotTable,
    ctl: PPCtl,
    lo: int,
    hi: int,
    *,
    need: int = 0,
    skip: int = WB | SAME,
    prio_max: int | None = None,
) -> None:
    """``scan_slots_for_{writeback,recompress}`` over ``[lo, hi)``.

    Places allocated slots that have every flag of ``need``, none of ``skip``,
    and (recompression) a priority below ``prio_max - 1``.  No entry lock is
    needed: the scan runs on the trio thread between awaits, so each word is
    read whole; a slot that changes afterwards loses ``PP_SLOT``.  Yields every
    `SCAN_STEP` slots; steps whose table words are all zero are skipped fast.
    """
    attr = table.attr
    with attr.cast("B") as raw:
        base = lo
        while base < hi:
            stop = min(hi, (base // SCAN_STEP + 1) * SCAN_STEP)
            # bytes compare (memcmp) skips never-written table pages fast
            if raw[base * 8 : stop * 8].tobytes() != _ZERO_STEP[: (stop - base) * 8]:
                for idx in range(base, stop):
                    a = attr[idx]
                    if not a & ALLOCATED or a & (skip | PP_SLOT) or (a & need) != need:
                        continue
                    if prio_max is not None and ((a & PRIO_MASK) >> PRIO_SHIFT) + 1 >= prio_max:
                        continue
                    ctl.place(attr, idx, a)
            base = stop
            await trio.lowlevel.checkpoint()


def _pick(ctl: PPCtl, attr: memoryview, limit: int, threshold: int = 0) -> list[int]:
    """Up to ``limit`` distinct still-valid candidates, in selection order."""
    picked: list[int] = []
    seen: set[int] = set()
    while len(picked) < limit:
        idx = ctl.select()
        if idx is None:
            break
        a = attr[idx]
        if idx in seen or not a & PP_SLOT:
            continue
        if (a & SIZE_MASK) < threshold:
            # recompress_slot(): "small enough", not an attempt.
            attr[idx] = a & ~PP_SLOT
            continue
        seen.add(idx)
        picked.append(idx)
    return picked


async def _lock_ascending(table: SlotTable, picked: Sequence[int], locked: list[int]) -> None:
    """Entry-lock ``picked`` in ascending order, recording each in ``locked``."""
    locks = table.locks
    for idx in sorted(picked):
        await locks.lock(idx)
        locked.append(idx)


def _unlock(
    table: SlotTable, picked: Sequence[int], locked: Sequence[int], keep: Sequence[int] = ()
) -> None:
    """Release a batch: clear ``PP_SLOT`` (except on ``keep``), unlock."""
    attr = table.attr
    for idx in picked:
        if idx not in keep:
            attr[idx] &= ~PP_SLOT
    for idx in locked:
        table.locks.unlock(idx)


# ---------------------------------------------------------------------------
# recompress
# ---------------------------------------------------------------------------


def class_index_table(pool: ZsPool) -> list[int]:
    """``zs_lookup_class_index(size)`` for sizes 0..PAGE_SIZE.

    Note the kernel looks up the *raw* compressed length here (no
    ``ZS_HANDLE_SIZE``, unlike ``zs_malloc``), and gets the merged class's
    index: recompression succeeds only if that index gets smaller.
    """
    out = [0] * (PAGE_SIZE + 1)
    for n in range(1, PAGE_SIZE + 1):
        # size_class(m) looks up m + ZS_HANDLE_SIZE; for n <= 32 both are 0.
        out[n] = pool.size_class(max(n - ZS_HANDLE_SIZE, 1)).index
    return out


RecompResult = tuple[int, bytes] | ZramError | None


class _NotDone:
    """A job a worker left for a later batch: its time slice ran out first."""


NOT_DONE = _NotDone()
JobResult = RecompResult | _NotDone
RecompJob = tuple[bytes, int, int]  # object bytes, size, priority


def _recompress_work(
    jobs: Sequence[RecompJob],
    codecs: Sequence[Codec | None],
    first: int,
    prio_max: int,
    threshold: int,
    class_of: Sequence[int],
    budget_ns: int,
) -> tuple[list[RecompResult], int]:
    """Worker thread: per job ``(object, size, prio)`` try the secondaries.

    Per job: ``(new_prio, new_object)`` on success, None when no algorithm got
    the object into a smaller class (and below ``threshold``), or the
    ZramError of a page that did not decompress.  Stops starting new jobs once
    ``budget_ns`` have passed (after at least one), so the batch's entry locks
    are held about that long whatever the pages cost: the results cover a
    prefix of ``jobs``.  Also returns the slowest page's cost in ns.
    """
    start = time.perf_counter_ns()
    slowest = 0
    out: list[RecompResult] = []
    top = class_of[PAGE_SIZE]
    for obj, size, slot_prio in jobs:
        t0 = time.perf_counter_ns()
        if out and t0 - start >= budget_ns:
            break
        try:
            if size == PAGE_SIZE:
                page = obj
            else:
                dec = codecs[slot_prio]
                if dec is None:
                    raise ZramError(errno.EIO, f"no codec for priority {slot_prio}")
                page = dec.decompress(obj, PAGE_SIZE)
            old_ci = class_of[size]
            res: RecompResult = None
            for p in range(max(first, slot_prio + 1), prio_max):
                comp = codecs[p]
                if comp is None:
                    continue
                new = comp.compress(page)
                n = len(new)
                ci = class_of[n] if n <= PAGE_SIZE else top
                if ci >= old_ci or (threshold and n >= threshold):
                    continue
                res = (p, new)
                break
            out.append(res)
        except ZramError as e:
            out.append(e)
        except Exception as e:  # a codec bug: this page fails with EIO, like a ZramError
            log.error("recompress: codec failed: %r", e)
            out.append(ZramError(errno.EIO, f"recompress: codec failed: {e!r}"))
        slowest = max(slowest, time.perf_counter_ns() - t0)
    return out, slowest


async def _run_recompress_jobs(
    jobs: list[RecompJob],
    codecs: Sequence[Codec | None],
    first: int,
    prio_max: int,
    threshold: int,
    class_of: Sequence[int],
) -> tuple[list[JobResult], int]:
    """One batch on up to `RECOMP_THREADS` threads: results aligned with
    ``jobs`` (`NOT_DONE` for the ones left over), and the slowest page's ns."""
    nthreads = min(RECOMP_THREADS, len(jobs))
    per = -(-len(jobs) // nthreads)
    parts: list[tuple[list[RecompResult], int]] = [([], 0)] * nthreads

    async def run(k: int) -> None:
        parts[k] = await trio.to_thread.run_sync(
            _recompress_work, jobs[k * per : (k + 1) * per], codecs, first, prio_max,
            threshold, class_of, RECOMP_BATCH_TARGET_NS,
        )  # fmt: skip

    if nthreads == 1:
        await run(0)
    else:
        async with trio.open_nursery() as nursery:
            for k in range(nthreads):
                nursery.start_soon(run, k)
    results: list[JobResult] = []
    for k, (part, _) in enumerate(parts):
        results += part
        results += [NOT_DONE] * (len(jobs[k * per : (k + 1) * per]) - len(part))
    return results, max(ns for _, ns in parts)


async def store_recompress(dev: ZramDevice, buf: bytes) -> None:
    """``recompress_store``: parse, check, scan, recompress (see module docstring)."""
    mode = 0
    max_pages = kparse.U64_MAX
    threshold = 0
    algo: bytes | None = None
    prio = ZRAM_SECONDARY_COMP
    prio_max: int | None = None
    for key, val in kparse.next_args(buf):
        if not val:
            raise einval(f"recompress: {key!r} needs a value")
        if key == b"type":
            if val == b"idle":
                mode = RECOMPRESS_IDLE
            if val == b"huge":
                mode = RECOMPRESS_HUGE
            if val == b"huge_idle":
                mode = RECOMPRESS_IDLE | RECOMPRESS_HUGE
        elif key == b"max_pages":
            max_pages = kparse.kstrtoull(val)
        elif key == b"threshold":
            threshold = kparse.kstrtouint(val)
        elif key == b"algo":
            algo = val
        elif key == b"priority":
            prio = kparse.kstrtouint(val)
            if prio == 0:
                prio = ZRAM_SECONDARY_COMP
            prio_max = prio + 1
    if threshold >= dev.huge_class_size:
        raise einval(f"recompress: threshold must be below {dev.huge_class_size}")

    async with dev.dev_lock.read(), dev.pp_lock:
        table, pool = dev._require_init()
        num_active = sum(c is not None for c in dev.comps)
        if prio_max is None:
            prio_max = num_active
        if algo is not None:
            name = algo.decode("utf-8", "surrogateescape")
            while prio < ZRAM_MAX_COMPS and dev.comp_algs[prio] != name:
                prio += 1
            if prio >= ZRAM_MAX_COMPS:
                raise einval(f"recompress: {name!r} is not a configured secondary algorithm")
            prio_max = prio + 1
        prio_max = min(prio_max, num_active)
        if prio >= prio_max:
            raise einval("recompress: no secondary algorithm to use")

        need = (IDLE if mode & RECOMPRESS_IDLE else 0) | (HUGE if mode & RECOMPRESS_HUGE else 0)
        ctl = PPCtl()
        try:
            await scan_slots(
                table, ctl, 0, table.npages, need=need, skip=WB | SAME | INCOMPRESSIBLE,
                prio_max=prio_max,
            )  # fmt: skip
            err = await _recompress_slots(
                dev, table, pool, ctl, max_pages, threshold, prio, prio_max, num_active
            )
        finally:
            ctl.release_all(table.attr)
        if err is not None:
            raise err


async def _recompress_slots(
    dev: ZramDevice,
    table: SlotTable,
    pool: ZsPool,
    ctl: PPCtl,
    max_pages: int,
    threshold: int,
    prio: int,
    prio_max: int,
    num_active: int,
) -> ZramError | None:
    attr = table.attr
    handle = table.handle
    st = dev.stats
    codecs = tuple(dev.comps)
    class_of = class_index_table(pool)
    mark_incompressible = prio_max >= num_active
    remaining = max_pages
    # Batch size from a decaying maximum of the per-page cost, growing at most
    # 2x a batch: a run of cheap pages must not make a batch of slow ones
    # hold its locks for long (the worker's time budget is the backstop).
    cost = 0
    batch = 1
    while remaining:
        picked = _pick(ctl, attr, min(remaining, batch), threshold)
        if not picked:
            return None
        locked: list[int] = []
        requeue: list[int] = []
        try:
            await _lock_ascending(table, picked, locked)
            jobs: list[RecompJob] = []
            slots: list[tuple[int, int]] = []  # index, its IDLE bit
            for idx in picked:
                a = attr[idx]
                size = a & SIZE_MASK
                if not a & PP_SLOT or not size or a & (WB | SAME):
                    continue
                jobs.append((bytes(pool.read(handle[idx], size)), size,
                             (a & PRIO_MASK) >> PRIO_SHIFT))  # fmt: skip
                slots.append((idx, a & IDLE))
                attr[idx] = a & ~IDLE  # touched: no longer idle (kernel)
            if not jobs:
                continue
            remaining -= len(jobs)
            results, slowest = await _run_recompress_jobs(
                jobs, codecs, prio, prio_max, threshold, class_of
            )
            cost = max(slowest, cost - (cost >> 3))
            batch = max(1, min(RECOMP_BATCH_MAX, 2 * batch, RECOMP_BATCH_TARGET_NS // max(cost, 1)))
            for (idx, was_idle), res in zip(slots, results, strict=True):
                a = attr[idx]
                if not a & PP_SLOT:  # cannot happen while locked; be safe
                    continue
                if isinstance(res, _NotDone):  # next batch; not an attempt yet
                    attr[idx] = a | was_idle
                    requeue.append(idx)
                    remaining += 1
                    continue
                if isinstance(res, ZramError):
                    return res
                if res is None:
                    if mark_incompressible:
                        attr[idx] = a | INCOMPRESSIBLE
                    continue
                new_prio, obj = res
                n = len(obj)
                try:
                    h = pool.malloc(n, idx)
                except ZramError as e:
                    return e
                pool.write(h, obj)
                dev._slot_free(table, pool, idx)  # re-reads the (maybe moved) handle
                handle[idx] = h
                attr[idx] |= n | (new_prio << PRIO_SHIFT)
                st.compr_data_size += n
                st.pages_stored += 1
        finally:
            _unlock(table, picked, locked, keep=requeue)
            for idx in reversed(requeue):
                ctl.requeue(idx, attr[idx])
    return None


# ---------------------------------------------------------------------------
# writeback
# ---------------------------------------------------------------------------


def _parse_wb_mode(word: bytes) -> int:
    """``parse_mode``: exact words only, else EINVAL."""
    mode = {
        b"idle": IDLE_WRITEBACK,
        b"huge": HUGE_WRITEBACK,
        b"huge_idle": IDLE_WRITEBACK | HUGE_WRITEBACK,
        b"incompressible": INCOMPRESSIBLE_WRITEBACK,
    }.get(word)
    if mode is None:
        raise einval(f"writeback: unknown mode {word!r}")
    return mode


def _wb_need(mode: int) -> int:
    need = 0
    if mode & IDLE_WRITEBACK:
        need |= IDLE
    if mode & HUGE_WRITEBACK:
        need |= HUGE
    if mode & INCOMPRESSIBLE_WRITEBACK:
        need |= INCOMPRESSIBLE
    return need


def _parse_page_index(val: bytes, nr_pages: int) -> tuple[int, int]:
    lo = kparse.kstrtoul(val)
    if lo >= nr_pages:
        raise ZramError(errno.ERANGE, f"writeback: page_index {lo} out of range")
    return lo, lo + 1


def _parse_page_indexes(val: bytes, nr_pages: int) -> tuple[int, int]:
    dash = val.find(b"-")
    if dash < 0:
        raise einval("writeback: page_indexes needs LO-HI")
    lo = kparse.kstrtoul(val[:dash])
    if lo >= nr_pages:
        raise ZramError(errno.ERANGE, f"writeback: page_indexes {lo} out of range")
    hi = kparse.kstrtoul(val[dash + 1 :])
    if hi >= nr_pages or lo > hi:
        raise ZramError(errno.ERANGE, "writeback: page_indexes out of range")
    return lo, hi + 1


WbJob = tuple[int, bytes, int, int]  # block, object bytes, size, priority


def _writeback_work(
    backing: BackingStore, jobs: Sequence[WbJob], codecs: Sequence[Codec | None], raw: bool
) -> list[int]:
    """Worker thread: write each job's page (or raw object) to its block; errno each.

    The batch is synced before it counts as written (`BackingStore.sync`): a
    write error the page cache would report only later fails every page of
    the batch, which then stays in RAM.  A codec that raises anything at all
    fails its page with EIO (the kernel's answer to a decompression error).
    """
    out: list[int] = []
    for block, obj, size, prio in jobs:
        data = obj
        if not raw and size != PAGE_SIZE:
            comp = codecs[prio]
            try:
                if comp is None:
                    raise ZramError(errno.EIO, f"no codec for priority {prio}")
                data = comp.decompress(obj, PAGE_SIZE)
            except ZramError as e:
                out.append(e.errno or errno.EIO)
                continue
            except Exception as e:  # a codec bug must not leak blocks or budget
                log.error("writeback: decompression failed: %r", e)
                out.append(errno.EIO)
                continue
        out.append(backing.write_block(block, data))
    if any(r == 0 for r in out):
        err = backing.sync()
        if err:
            out = [r or err for r in out]
    return out


async def store_writeback(dev: ZramDevice, buf: bytes) -> None:
    """``writeback_store``: EINVAL uninitialized, ENODEV without backing, then parse."""
    async with dev.dev_lock.read(), dev.pp_lock:
        table, pool = dev._require_init()
        backing = dev.backing
        if backing is None:
            raise ZramError(errno.ENODEV, "writeback: no backing device")
        nr_pages = table.npages
        lo, hi = 0, nr_pages
        mode = 0
        ctl = PPCtl()
        try:
            for key, val in kparse.next_args(buf):
                if not val:  # legacy valueless mode word
                    mode = _parse_wb_mode(key)
                    await scan_slots(table, ctl, lo, hi, need=_wb_need(mode))
                    break
                if key == b"type":
                    mode = _parse_wb_mode(val)
                    await scan_slots(table, ctl, lo, hi, need=_wb_need(mode))
                    break
                if key == b"page_index":
                    lo, hi = _parse_page_index(val, nr_pages)
                    await scan_slots(table, ctl, lo, hi, need=_wb_need(mode))
                    continue
                if key == b"page_indexes":
                    lo, hi = _parse_page_indexes(val, nr_pages)
                    await scan_slots(table, ctl, lo, hi, need=_wb_need(mode))
                    continue
            err = await _writeback_slots(dev, table, pool, backing, ctl)
        finally:
            ctl.release_all(table.attr)
        if err is not None:
            raise err


async def _writeback_slots(
    dev: ZramDevice, table: SlotTable, pool: ZsPool, backing: BackingStore, ctl: PPCtl
) -> ZramError | None:
    attr = table.attr
    handle = table.handle
    st = dev.stats
    codecs = tuple(dev.comps)
    raw = dev.compressed_writeback
    err: ZramError | None = None
    spare: int | None = None  # a reserved block whose candidate went stale
    try:
        while err is None:
            picked = _pick(ctl, attr, max(1, min(dev.wb_batch_size, WB_MAX_INFLIGHT)))
            if not picked:
                break
            locked: list[int] = []
            try:
                await _lock_ascending(table, picked, locked)
                jobs: list[WbJob] = []
                slots: list[int] = []
                for idx in picked:
                    # Kernel order: budget, then a free block, then the slot.
                    if dev.wb_limit_enable and not dev.wb_limit:
                        err = ZramError(errno.EIO, "writeback_limit exhausted")
                        break
                    if spare is None:
                        spare = backing.reserve()
                        if spare is None:
                            err = ZramError(errno.ENOSPC, "backing device full")
                            break
                        st.bd_count += 1
                    a = attr[idx]
                    size = a & SIZE_MASK
                    if not a & PP_SLOT or not size or a & (WB | SAME):
                        continue
                    if dev.wb_limit_enable and dev.wb_limit > 0:
                        dev.wb_limit -= 1
                    jobs.append((spare, bytes(pool.read(handle[idx], size)), size,
                                 (a & PRIO_MASK) >> PRIO_SHIFT))  # fmt: skip
                    slots.append(idx)
                    spare = None
                if not jobs:
                    continue
                try:
                    results = await trio.to_thread.run_sync(
                        _writeback_work, backing, jobs, codecs, raw
                    )
                except BaseException:
                    # Nothing of this batch was committed: give back its
                    # blocks and budget before the error goes up.
                    for job in jobs:
                        backing.release(job[0])
                        st.bd_count -= 1
                        if dev.wb_limit_enable:
                            dev.wb_limit += 1
                    raise
                for idx, job, res in zip(slots, jobs, results, strict=True):
                    block = job[0]
                    a = attr[idx]
                    if res or not a & PP_SLOT:
                        if res:
                            if dev.wb_limit_enable:
                                dev.wb_limit += 1
                            err = ZramError(res, f"writeback of slot {idx}: {os.strerror(res)}")
                        else:
                            st.bd_writes += 1
                        backing.release(block)
                        st.bd_count -= 1
                        continue
                    st.bd_writes += 1
                    keep = a & (SIZE_MASK | PRIO_MASK | HUGE) if raw else 0
                    dev._slot_free(table, pool, idx)
                    handle[idx] = block
                    attr[idx] |= WB | keep
                    st.pages_stored += 1
            finally:
                _unlock(table, picked, locked)
    finally:
        if spare is not None:
            backing.release(spare)
            st.bd_count -= 1
    return err


async def read_backing(dev: ZramDevice, idx: int) -> bytes:
    """A written-back slot's page (caller holds the slot's entry lock).

    ``bd_reads``++; the block comes from the page cache inline when it can
    (``RWF_NOWAIT``), else from a worker thread.  With ``compressed_writeback``
    the block holds the object: decompressed with the slot's own priority.
    """
    table = dev.table
    backing = dev.backing
    if table is None or backing is None:
        raise ZramError(errno.EIO, f"slot {idx}: written back but no backing device")
    block = table.handle[idx]
    dev.stats.bd_reads += 1
    data = backing.try_read_block(block)
    if data is None:
        data = await trio.to_thread.run_sync(backing.read_block, block)
    a = table.attr[idx]
    size = a & SIZE_MASK
    if dev.compressed_writeback and size and size != PAGE_SIZE:
        comp = dev.comps[(a & PRIO_MASK) >> PRIO_SHIFT]
        if comp is None:
            raise ZramError(errno.EIO, f"slot {idx}: no compressor for its priority")
        return comp.decompress(memoryview(data)[:size], PAGE_SIZE)
    return data


def release_backing_block(dev: ZramDevice, block: int) -> None:
    """``zram_release_bdev_block`` (from ``_slot_free``)."""
    if dev.backing is not None:
        dev.backing.release(block)
    dev.stats.bd_count -= 1


def reset_backing(dev: ZramDevice) -> None:
    """``reset_bdev``: close the backing store; ``backing_dev`` shows ``none``."""
    backing, dev.backing = dev.backing, None
    if backing is not None:
        backing.close()


# ---------------------------------------------------------------------------
# backing_dev and the writeback knobs
# ---------------------------------------------------------------------------


async def store_backing_dev(dev: ZramDevice, buf: bytes) -> None:
    """``backing_dev_store``: EBUSY if initialized, then open (see backing.py)."""
    path = kparse.c_string(buf)
    if path.endswith(b"\n"):
        path = path[:-1]
    if dev.initialized:
        raise ZramError(errno.EBUSY, "backing_dev: device is initialized")
    async with dev.dev_lock.write():
        if dev.initialized:
            raise ZramError(errno.EBUSY, "backing_dev: device is initialized")
        # A worker thread: the path may be on this very FUSE mount, whose
        # requests the trio thread must stay free to answer (then refused).
        store = await trio.to_thread.run_sync(BackingStore.open, path)
        old, dev.backing = dev.backing, store
        if old is not None:
            old.close()


def show_backing_dev(dev: ZramDevice) -> bytes:
    b = dev.backing
    return b"none\n" if b is None else b.path + b"\n"


def show_bd_stat(dev: ZramDevice) -> bytes:
    st = dev.stats
    # FOUR_K(): PAGE_SIZE / 4096 == 1 here.
    return b"%8d %8d %8d\n" % (st.bd_count, st.bd_reads, st.bd_writes)


def _u64_or_einval(buf: bytes) -> int:
    try:
        return kparse.kstrtoull(buf)
    except ZramError:
        raise einval("expected an unsigned number") from None


async def store_writeback_limit(dev: ZramDevice, buf: bytes) -> None:
    # rounddown(val, PAGE_SIZE / 4096) is the identity with 4 KiB pages.
    dev.wb_limit = _u64_or_einval(buf)


async def store_writeback_limit_enable(dev: ZramDevice, buf: bytes) -> None:
    dev.wb_limit_enable = _u64_or_einval(buf) != 0


async def store_writeback_batch_size(dev: ZramDevice, buf: bytes) -> None:
    try:
        val = kparse.kstrtouint(buf)
    except ZramError:
        raise einval("writeback_batch_size: expected an unsigned int") from None
    if not val:
        raise einval("writeback_batch_size must be at least 1")
    dev.wb_batch_size = val


async def store_compressed_writeback(dev: ZramDevice, buf: bytes) -> None:
    val = kparse.kstrtobool(buf)
    if dev.initialized:
        raise ZramError(errno.EBUSY, "compressed_writeback: device is initialized")
    async with dev.dev_lock.write():
        if dev.initialized:
            raise ZramError(errno.EBUSY, "compressed_writeback: device is initialized")
        dev.compressed_writeback = val


def show_writeback_limit(dev: ZramDevice) -> bytes:
    return b"%d\n" % dev.wb_limit


def show_writeback_limit_enable(dev: ZramDevice) -> bytes:
    return b"%d\n" % int(dev.wb_limit_enable)


def show_writeback_batch_size(dev: ZramDevice) -> bytes:
    return b"%d\n" % dev.wb_batch_size


def show_compressed_writeback(dev: ZramDevice) -> bytes:
    return b"%d\n" % int(dev.compressed_writeback)


__all__ = [
    "BLOCK_SIZE",
    "PPCtl",
    "class_index_table",
    "read_backing",
    "release_backing_block",
    "reset_backing",
    "scan_slots",
    "show_backing_dev",
    "show_bd_stat",
    "show_compressed_writeback",
    "show_writeback_batch_size",
    "show_writeback_limit",
    "show_writeback_limit_enable",
    "store_backing_dev",
    "store_compressed_writeback",
    "store_recompress",
    "store_writeback",
    "store_writeback_batch_size",
    "store_writeback_limit",
    "store_writeback_limit_enable",
]
