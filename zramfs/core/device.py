"""One zram device: lifecycle, the data path and the control-file stores.

This is ``drivers/block/zram/zram_drv.c`` for a trio program.  The layers:

* `slots.SlotTable` — 16 bytes a page, entry locks in the same words;
* `zsmalloc.ZsPool` — where compressed objects really live;
* ``backends`` — one `Codec` per configured priority (``zcomp``);
* this module — what zram_drv.c does with them, plus every ``*_show`` /
  ``*_store``, which `attrs.ATTRS` declares once each.

Concurrency (details and invariants in docs/design.md):

* All state changes happen on the trio thread.  Worker threads only run codec
  calls on bytes they were handed; they never see the table or the pool.
* ``dev_lock`` (`entrylock.DevLock`): I/O, stats and idle/compact take it
  shared; disksize and reset take it exclusively.  recompress and writeback
  take it shared plus ``pp_lock`` (serializing them), so the device keeps
  serving I/O while they run (postprocess.py explains why).
* A slot's entry lock is held exclusively while its content changes, and may
  be held across an ``await`` (offloaded compression, backing-store I/O).
  Several slots are always locked in ascending index order.
* Pool memory views never survive an ``await``: compaction may move an object
  (the pool's ``on_move`` updates the slot's handle), so a handle is re-read
  from the table after every await.
"""

from __future__ import annotations

import errno
import itertools
import logging
import operator
import os
import stat as stat_mod
import time
from array import array as _array
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from typing import NoReturn, Protocol, TypeVar

import trio

from ..backends import BACKEND_NAMES, DEFAULT_ALGORITHM, create_codec
from ..backends.base import AlgoParams, Buffer, Codec, PendingPages, block_views
from ..backends.lz4 import _zp
from ..errors import ZramError, einval
from . import kparse, postprocess
from .backing import BackingStore, _on_zramfs
from .entrylock import LOCK_MASK, READER_MASK, WAITERS, WRITER, DevLock, LockStats
from .slots import (
    ACTIME_MASK,
    ACTIME_SHIFT,
    HUGE,
    IDLE,
    INCOMPRESSIBLE,
    PAGE_SHIFT,
    PAGE_SIZE,
    PP_SLOT,
    PRIO_MASK,
    PRIO_SHIFT,
    SAME,
    SIZE_MASK,
    WB,
    SlotTable,
)
from .stats import BlockStat, ZramStats
from .zsmalloc import HANDLE_OFF_MASK, HANDLE_SEG_SHIFT, ZsPool, huge_class_size_for

#: A write's data: ``bytes``, or pyfuse3's read-only view of the request
#: (``Operations.write_views``), valid only during the write call.  The
#: device keeps neither past the call: what it stores it copies.
WriteData = bytes | memoryview

ZRAM_MAX_COMPS = 4
ZRAM_PRIMARY_COMP = 0
ZRAM_SECONDARY_COMP = 1
CHAIN_SIZE = 8
SECTOR_SHIFT = 9
PAGE_WORDS = PAGE_SIZE // 8
MAX_DICT_SIZE = 16 << 20  # dictionaries larger than this are refused (EINVAL)
ZERO_PAGE = bytes(PAGE_SIZE)

log = logging.getLogger(__name__)
_perf_ns = time.perf_counter_ns
_T = TypeVar("_T")
_PAGE_MASK = PAGE_SIZE - 1


def io_error(exc: Exception, what: str) -> ZramError:
    """The `ZramError` a failed page I/O surfaces as.

    A `ZramError` keeps its errno, also when it arrives wrapped in the
    ExceptionGroup of an offloading nursery.  Anything else is a codec or
    backing-store bug: it becomes EIO with one log line (no traceback, so a
    codec failing on every page cannot flood the log), and the caller counts
    it in failed_reads/failed_writes like the kernel counts any failed bio.
    """
    while isinstance(exc, ExceptionGroup) and len(exc.exceptions) == 1:
        exc = exc.exceptions[0]
    if isinstance(exc, ZramError):
        return exc
    log.error("%s failed: %s: %s", what, type(exc).__name__, exc)
    return ZramError(errno.EIO, f"{what} failed: {type(exc).__name__}")


# Whole-batch steps are ``map``s of C functions over repeat()ed constants:
# operator's functions take the fast call path, where an int's bound
# ``__or__`` & co. (slot wrappers) would build an argument tuple per item.
_select = itertools.compress
_repeat = itertools.repeat
_eq = operator.eq
_ne = operator.ne
_or = operator.or_
_and = operator.and_
_add = operator.add
_rshift = operator.rshift
_getitem = operator.getitem
_le = operator.le
# A read takes the general path for these slots: locked, written back,
# same-filled, or compressed by a secondary algorithm.
_READ_SLOW = LOCK_MASK | WB | SAME | PRIO_MASK
# ... and the ones `_load_joined` leaves to it (same-filled pages it fills).
_JOIN_SLOW = LOCK_MASK | WB | PRIO_MASK
# mark_slot_accessed() keeps everything but IDLE, PP_SLOT and the old ac_time.
_KEEP = ~(IDLE | PP_SLOT | ACTIME_MASK) & ((1 << 64) - 1)
# A codec's ``decompress_slots`` reads the slot words itself: their layout.
_LAYOUT = (_JOIN_SLOW, SIZE_MASK, SAME, _KEEP, HANDLE_SEG_SHIFT, HANDLE_OFF_MASK)

# Compression is moved to worker threads when a batch is expected to take at
# least this long inline: below it the thread hop (60–150 µs measured here)
# costs more than it saves.
OFFLOAD_MIN_NS = 400_000
# A batch codec (zstd) compresses or decompresses a request's pages in one
# GIL-free call; from this many pages on (below, the per-page calls are as
# cheap) ...
BATCH_MIN_PAGES = 8
# ... and on two threads (the calling one and a helper the codec keeps: both
# CPUs on one request, the trio thread blocked meanwhile) when the batch is
# expected to take at least this long: below it the hand-off costs more than
# it saves.  Splitting a batch
# between the trio thread and a worker thread for codecs without a batch call
# (lz4: a GIL hand-off per page) was measured here and not kept: +1.5-2 ms
# CPU per MiB and no faster on this shared 2-CPU machine.
PARALLEL_MIN_NS = 250_000
_CPUS = os.cpu_count() or 1
# A joined read (`_load_joined`) may split its decompression over two
# threads from this many pages on (measured: 128 pages 245 -> 187 µs, 64
# pages 110 -> 120 µs: below, starting the thread costs more than it saves).
JOIN_SPLIT_MIN_PAGES = 128
PARALLEL = _CPUS > 1
# A fresh batch from this many pages on may be stored while its tail is
# compressed in the background (`ZramDevice._store_fresh_ahead`): below it
# the helper's hand-off (~20 us) is a large part of the work.
AHEAD_MIN_PAGES = 32
# The head's starting share of such a batch (of 1024) and its ceiling.
AHEAD_SHARE = 200
AHEAD_SHARE_MAX = 960
# Whether splitting pays depends on the machine's load (a busy second CPU
# makes it slower than one thread), so both ways are timed, per direction and
# codec: (kind "w"/"r", codec name, level) -> [one-thread ns per page, split
# ns per page (-1: not measured yet), eligible batches seen, decision (1:
# split), one-thread samples, split samples].  Each way's first sample is
# dropped (segments mapped, a thread started, caches cold: up to 3x slow) and
# its figure is the mean of the next `_EWMA_N`, then an EWMA: an EWMA started
# from a cold sample took ~10 explorations (320 batches, 160 MiB) to let go of
# it, all the while taking the slower way.  The ways alternate until each has
# `_WARMUP` samples counted; then the cheaper is taken, and every
# `_EXPLORE`-th batch the other, to keep its figure current.
_par_stats: dict[tuple[str, str, int | None], list[int]] = {}
# `ZramDevice._store_fresh_ahead`'s figures per (codec name, level): the
# trio thread's ns to compress a page (EWMA) and the head's share of a batch
# (of 1024, balanced by feedback).
_ahead_stats: dict[tuple[str, int | None], list[int]] = {}


def _offload_next(stats: list[int], inline_ns: int) -> bool:
    """Whether the next long batch goes to worker threads (`_offload_stats`'
    ``stats``; ``inline_ns`` the inline way's ns per page): the cheaper way,
    and every `_EXPLORE`-th batch the other.  Unmeasured (< 0) counts as
    cheaper: the first long batch tries it.  The caller counts the batch."""
    offload = stats[0] < inline_ns
    return offload if (stats[1] + 1) % _EXPLORE else not offload


def _split_pays(kind: str, comp: Codec) -> list[int]:
    """The `_par_stats` entry of ``kind`` and ``comp`` with this batch's
    decision in item 3 (1: split, 0: one thread)."""
    key = (kind, comp.name, comp.params.level)
    st = _par_stats.get(key)
    if st is None:
        st = _par_stats[key] = [-1, -1, 0, 0, 0, 0]
    st[2] += 1
    n1 = st[4]
    n2 = st[5]
    if n1 <= _WARMUP or n2 <= _WARMUP:
        split = n2 <= n1  # warming up: take turns, split first
    else:
        split = st[1] < st[0]
        if not st[2] % _EXPLORE:
            split = not split
    st[3] = int(split)
    return st


def _split_learn(st: list[int], elapsed_ns: int, pages: int) -> None:
    """Add one sample (``elapsed_ns`` for ``pages``) to the way `_split_pays` chose."""
    per = elapsed_ns // pages
    i = st[3]
    n = st[4 + i]  # samples so far, the dropped first one included
    st[4 + i] = n + 1
    if not n:
        return
    old = st[i]
    if n == 1:
        st[i] = per
    elif n <= _EWMA_N:
        st[i] = (old * (n - 1) + per) // n
    else:
        st[i] = old + ((per - old) >> _EWMA_SHIFT)


def _split_call(kind: str, comp: Codec, pages: int, call: Callable[[int], _T]) -> _T:
    """``call(threads)`` with the thread count `_split_pays` decides for
    ``kind`` and ``comp``, timed into its figures (unless it returned None:
    nothing was done)."""
    st = _split_pays(kind, comp)
    t0 = _perf_ns()
    out = call(1 + st[3])
    if out is not None:
        _split_learn(st, _perf_ns() - t0, pages)
    return out


def _block_frames(
    out: Buffer, sizes: Buffer, lo: int, hi: int
) -> tuple[list[int], Sequence[Buffer]]:
    """Pages ``lo..hi-1`` of a ``compress_blocks`` result as `compress_run`
    gives them: the same-filled pages' indexes (size 0) and the others' views."""
    sz = memoryview(sizes).cast("H")[lo:hi]
    same = [k for k in range(hi - lo) if not sz[k]]
    return same, _without(block_views(out, sizes, lo, hi), same)


def _without(frames: Sequence[Buffer], same: list[int]) -> Sequence[Buffer]:
    """``frames`` less those of the same-filled pages ``same`` (never stored)."""
    if not same:
        return frames
    skip = set(same)
    return [f for k, f in enumerate(frames) if k not in skip]


_EWMA_SHIFT = 3
_EWMA_N = 1 << _EWMA_SHIFT  # samples averaged before the EWMA takes over
_WARMUP = 4  # counted samples of each way before the cheaper one is preferred
_EXPLORE = 32  # every 32nd long batch tries the way currently judged slower
# (codec name, level) -> [offloaded wall ns per page (EWMA; -1: not measured
# yet), long batches seen]: whether worker threads pay is a property of the
# machine and the codec, so devices share it.
_offload_stats: dict[tuple[str, int | None], list[int]] = {}

# `ZramDevice.write_nowait`'s answer for a write it has started and will
# answer later (`WriteDeferral.reply`).
WRITE_DEFERRED = -1


class WriteDeferral(Protocol):
    """What lets `ZramDevice.write_nowait` defer the end of a write (the FUSE
    layer's side of pyfuse3's ``DEFERRED``)."""

    def waiting(self) -> bool:
        """True if another request is queued: deferring the end of this
        write lets it be read meanwhile."""
        ...

    def reply(self, result: int | ZramError) -> None:
        """Answer the oldest deferred write: bytes written, or its error."""
        ...


@dataclass(slots=True)
class _Deferred:
    """A write `ZramDevice.write_nowait` returned `WRITE_DEFERRED` for.

    Pages ``[0, head)`` are stored; ``pending`` compresses ``[head, count)``
    on the codec's helper.  Until `ZramDevice.finish_deferred`, those slots
    carry WRITER (only synchronous handlers can look before then, and they
    decline a held slot) and the request keeps its read grant of the device
    lock and its place in the block statistics.
    """

    table: SlotTable
    pool: ZsPool
    first: int
    count: int
    data: WriteData  # held past the handler (pyfuse3 hands its buffer over)
    head: int
    pending: PendingPages
    t0: int
    actime: int
    reply: Callable[[int | ZramError], None]


def _py_boottime_seconds() -> int:
    """``(u32)ktime_get_boottime_seconds()``: what slots record as ac_time."""
    return int(time.clock_gettime(time.CLOCK_BOOTTIME)) & 0xFFFFFFFF


# The same in C when the accelerator is built: the 4 KiB read path calls it
# per request, and the C read fast path calls it without a Python frame.
boottime_seconds: Callable[[], int] = (
    _zp.boottime_seconds if _zp is not None else _py_boottime_seconds
)


def read_fast_path(
    handles: Mapping[int, object],
    devices: Mapping[int, ZramDevice],
    fallback: Callable[[int, int, int], bytes | None],
) -> Callable[[int, int, int], bytes | None]:
    """pyfuse3's ``Operations.read_nowait`` for a mount (``fallback`` without the accelerator).

    ``zramfs._zpages.read_nowait``, bound to the mount's handle table and
    device registry (both dicts changed in place, never replaced) and to this
    module's slot-word layout: a read of whole pages of an image file whose
    slots all hold pages in RAM, on a live initialized device with the
    accelerated lz4 and no writer at its device lock, is served in pyfuse3's
    request handler with no coroutine and no Python frame, with the effects
    `read` would have (ac_time, block statistics, the device lock's grant
    count).  A read long enough for `_load_joined` to split over two threads
    (`JOIN_SPLIT_MIN_PAGES`, loop's 512 KiB reads) is split the same way:
    the C asks `_split_pays` and feeds the time back to `_split_learn`, the
    only Python it calls.  Every
    other request goes, with nothing done, to ``fallback`` (the mount's
    Python ``read_nowait``: one page, any codec), and what that passes on
    takes `ZramDevice.read`
    (tests/test_nowait.py runs all of them on the same states).  The C
    reads these attributes of the handle (``image``), the
    device (``id``, ``dev_lock.words``/``.stats``, ``disksize``, ``table``,
    ``pool``, ``comps[0].decompress_slots``, ``clock``, ``_views``,
    ``bstat``) and the table (``attr``, ``handle``): renaming one of them
    turns the fast path off (it answers None), which those tests catch.
    """
    if _zp is None:
        return fallback
    split_min = JOIN_SPLIT_MIN_PAGES if PARALLEL else 0  # (0: never split)
    cfg = (
        handles, devices, _LAYOUT, split_min, WRITER | WAITERS, READER_MASK, ACTIME_SHIFT,
        fallback, partial(_split_pays, "r"), _split_learn,
    )  # fmt: skip
    return partial(_zp.read_nowait, cfg)


def write_fast_path(
    handles: Mapping[int, object],
    devices: Mapping[int, ZramDevice],
    fallback: Callable[[int, int, WriteData], object],
) -> Callable[[int, int, WriteData], object]:
    """pyfuse3's ``Operations.write_nowait`` for a mount: ``fallback`` without the accelerator.

    ``zramfs._zpages.write_nowait``, bound like `read_fast_path`: one whole
    page of an image file, written as `ZramDevice.write_nowait` writes it
    (compressed, stored by the C twin of ``ZsPool.store``, the old object
    freed by that of ``ZsPool.free``, the same counters), when its slot is
    unlocked and holds nothing or a page in RAM, the page is not
    same-filled, the codec is the accelerated lz4 at its default
    acceleration, no writer is at the device lock and mem_limit allows the
    store.  Every other request goes to ``fallback`` (the mount's Python
    ``write_nowait``) before anything is changed, so the C handles the
    common case and Python the rest, with no coroutine for either.
    tests/test_nowait.py runs it against the async ``write``; the C reads the
    attributes `read_fast_path` lists plus ``limit_pages``,
    ``huge_class_size``, ``_actime``, ``stats``, ``comps[0].compress`` and
    the pool's class state (tests/test_zsmalloc.py).
    """
    if _zp is None:
        return fallback
    cfg = (
        handles, devices, fallback, WRITER | WAITERS, READER_MASK, ACTIME_SHIFT,
        LOCK_MASK, SAME | WB, SIZE_MASK, HUGE,
    )  # fmt: skip
    return partial(_zp.write_nowait, cfg)


def _no_codec(src: Buffer) -> bytes:
    raise ZramError(errno.EIO, "no compressor")


def page_decompressor(comp: Codec | None) -> Callable[[Buffer], bytes]:
    """``comp``'s one-page decompress as one callable: its ``decompress_page``
    (a C function, for lz4 with the accelerator) or ``decompress`` with the
    page size bound."""
    if comp is None:
        return _no_codec
    fast: Callable[[Buffer], bytes] | None = getattr(comp, "decompress_page", None)
    return fast if fast is not None else partial(comp.decompress, dst_len=PAGE_SIZE)


def _words_same(page: WriteData) -> int | None:
    """``page_same_filled()``: the repeated 8-byte word, or None.

    Checks first against last word before the full compare, as the kernel does,
    so ordinary data is rejected in a fraction of a microsecond.
    """
    w = page[:8]
    if w != page[-8:] or bytes(w) * PAGE_WORDS != page:
        return None
    return int.from_bytes(w, "little")


def _same_pages(data: Buffer, pos: int, count: int) -> list[int]:
    """Indexes of the same-filled pages among ``count`` pages of ``data`` from
    ``pos`` (``page_same_filled()``): first against last word of every page
    in C, the rare match compared in full."""
    q = memoryview(data)[pos : pos + (count << PAGE_SHIFT)].cast("Q")
    firsts = q[::PAGE_WORDS].tolist()
    lasts = q[PAGE_WORDS - 1 :: PAGE_WORDS].tolist()
    return [
        k
        for k in _select(range(count), map(_eq, firsts, lasts))
        if q[k * PAGE_WORDS : (k + 1) * PAGE_WORDS].tobytes()
        == q[k * PAGE_WORDS : k * PAGE_WORDS + 1].tobytes() * PAGE_WORDS
    ]


def compress_run(
    compress: Callable[[Buffer], bytes], data: WriteData, pos: int, count: int
) -> tuple[list[int], list[bytes]]:
    """Same-fill check and compression of ``count`` pages of ``data`` from ``pos``.

    Returns the indexes of the same-filled pages (``page_same_filled()``,
    checked before compressing, as the kernel does) and the compressed form
    of every other page, in order.  The pages are compressed in place
    (memoryviews of ``data``, no copy) by ``map`` loops that run in C; the
    same-fill check compares every page's first and last words in C too,
    and only the rare page where they match is compared in full.  Pure: runs
    on the trio thread or on a worker thread alike.
    """
    stop = pos + (count << PAGE_SHIFT)
    mv = memoryview(data)
    same = _same_pages(data, pos, count)
    starts: Sequence[int] = range(pos, stop, PAGE_SIZE)
    if same:
        skip = {pos + (k << PAGE_SHIFT) for k in same}
        starts = [p for p in starts if p not in skip]
    views = [mv[p : p + PAGE_SIZE] for p in starts]
    return same, list(map(compress, views))


class ZramDevice:
    """A zram device: uninitialized until ``disksize`` is written."""

    def __init__(self, dev_id: int, *, clock: Callable[[], int] = boottime_seconds) -> None:
        self.id = dev_id
        self.clock = clock
        self.dev_lock = DevLock()
        self.stats = ZramStats()
        self.bstat = BlockStat()
        # Configuration that survives until reset.
        self.comp_algs: list[str | None] = [DEFAULT_ALGORITHM, None, None, None]
        self.params: list[AlgoParams] = [AlgoParams()] * ZRAM_MAX_COMPS
        self.limit_pages = 0
        # Configuration that reset does not touch (reference §1).
        self.wb_limit_enable = False
        self.wb_limit = 0
        self.wb_batch_size = 32
        self.compressed_writeback = False
        # Writeback store (backing_dev) and the post-processing lock that
        # serializes writeback/recompress (see postprocess.py).
        self.backing: BackingStore | None = None
        self.pp_lock = trio.Lock()
        # Image opens (loop device attached, or any open of the image file):
        # reset / hot_remove / disksize refuse with EBUSY while non-zero.
        self.openers = 0
        # Initialized state.
        self.disksize = 0
        self.table: SlotTable | None = None
        self.pool: ZsPool | None = None
        self.comps: list[Codec | None] = [None] * ZRAM_MAX_COMPS
        self.huge_class_size = huge_class_size_for(CHAIN_SIZE)
        # Wall ns per page of an inline write batch (EWMA); the offloaded
        # figure is per codec, in _offload_stats (see _write_full).
        self._comp_cost_ns = 10_000
        # ac_time stamped by stores, read from the clock once per request
        # (a clock call per page costs ~0.5 µs, 5% of an lz4 page).
        self._actime = 0
        # The write `write_nowait` deferred, if any (at most one per device;
        # the FUSE layer keeps at most one in all).
        self._deferred: _Deferred | None = None
        # Writes deferred so far (tests and benchmarks look).
        self.deferred_writes = 0
        # The 4 KiB read path's bindings (set with the pool and the codecs):
        # the pool's segment views (its own list, updated in place) and the
        # primary codec's one-page decompress.
        self._views: list[memoryview] = []
        self._decompress_page: Callable[[Buffer], bytes] = _no_codec
        # Observers (the FUSE layer invalidates the image inode on size change).
        self.on_resize: list[Callable[[ZramDevice], None]] = []

    # ------------------------------------------------------------------ state

    @property
    def initialized(self) -> bool:
        return self.disksize != 0

    @property
    def name(self) -> str:
        return f"zram{self.id}"

    @property
    def npages(self) -> int:
        return self.disksize >> PAGE_SHIFT

    def _require_init(self) -> tuple[SlotTable, ZsPool]:
        if self.table is None or self.pool is None:
            raise einval("device not initialized")
        return self.table, self.pool

    def total_pages(self) -> int:
        return self.pool.total_pages() if self.pool is not None else 0

    def _on_move(self, owner: int, new_handle: int) -> None:
        assert self.table is not None
        self.table.handle[owner] = new_handle

    # ------------------------------------------------------------- lifecycle

    async def init_device(self, disksize: int) -> None:
        """``disksize_store`` after parsing: allocate table, pool, compressors."""
        # Refuse an initialized device before queueing for the exclusive lock:
        # while a recompress holds dev_lock shared, a queued writer would stall
        # every I/O behind a store that is going to fail anyway.  Checked again
        # under the lock (``initialized`` only changes under it).
        if self.initialized:
            raise ZramError(errno.EBUSY, "cannot change disksize of an initialized device")
        async with self.dev_lock.write():
            if self.initialized:
                raise ZramError(errno.EBUSY, "cannot change disksize of an initialized device")
            if self.openers:
                raise ZramError(errno.EBUSY, f"{self.name} image is open")
            if disksize == 0:  # PAGE_ALIGN wrapped a value near 2**64
                raise ZramError(errno.ENOMEM, "disksize too large")
            comps: list[Codec | None] = [None] * ZRAM_MAX_COMPS
            for prio, alg in enumerate(self.comp_algs):
                if alg is not None:
                    comps[prio] = create_codec(alg, self.params[prio])
            npages = disksize >> PAGE_SHIFT
            try:
                table = SlotTable(npages)
            except (OSError, OverflowError, ValueError) as e:
                raise ZramError(errno.ENOMEM, f"slot table for {npages} pages: {e}") from e
            self.table = table
            self.pool = ZsPool(CHAIN_SIZE, on_move=self._on_move)
            self.huge_class_size = self.pool.huge_class_size
            self.comps = comps
            self._views = self.pool.segment_views()
            self._decompress_page = page_decompressor(comps[ZRAM_PRIMARY_COMP])
            self.disksize = disksize
        self._notify_resize()

    async def reset(self) -> None:
        """``zram_reset_device``: free everything, forget secondary algorithms."""
        if self.openers:
            raise ZramError(errno.EBUSY, f"{self.name} image is open")
        async with self.dev_lock.write():
            if self.openers:
                raise ZramError(errno.EBUSY, f"{self.name} image is open")
            self._reset_locked()
        self._notify_resize()

    def _reset_locked(self) -> None:
        self.limit_pages = 0
        self.bstat.clear()
        if self.table is not None:
            self.table.close()
        if self.pool is not None:
            self.pool.close()
        self.table = None
        self.pool = None
        self.disksize = 0
        self.comps = [None] * ZRAM_MAX_COMPS
        self._views = []
        self._decompress_page = _no_codec
        self.comp_algs = [DEFAULT_ALGORITHM, None, None, None]
        self.params = [AlgoParams()] * ZRAM_MAX_COMPS
        self.stats.clear()
        self.reset_backing()

    def reset_backing(self) -> None:
        """Close the backing device: ``backing_dev`` shows ``none`` again."""
        postprocess.reset_backing(self)

    def _notify_resize(self) -> None:
        for cb in self.on_resize:
            cb(self)

    # -------------------------------------------------------------- data path

    def read_nowait(self, offset: int, size: int) -> bytes | None:
        """`read` of one whole page held in RAM, when that needs no ``await``.

        Returns the page, counted as `read` counts it (ac_time, block
        statistics, the device lock's grant), or None having changed nothing,
        for the caller to await `read`: another size or alignment, past the
        end, an uninitialized device, the device lock held or awaited by a
        writer, or a slot that is locked, same-filled, written back or
        recompressed.  Any codec (the C ``read_nowait`` serves lz4 itself and
        hands everything else here).  Raises what `read` raises for an
        object that does not decode.  `read` starts here.

        Written out in one frame (`BlockStat.start` / `done` inline): every
        Python frame on this path costs ~1 µs cold (docs/profile.md, "4 KiB
        requests").
        """
        if size != PAGE_SIZE or offset & _PAGE_MASK or not 0 <= offset < self.disksize:
            return None
        table = self.table
        if table is None or self.pool is None:
            return None
        idx = offset >> PAGE_SHIFT
        a = table.attr[idx]
        n = a & SIZE_MASK
        if not n or a & _READ_SLOW:
            return None
        dl = self.dev_lock
        if not dl.try_read():
            return None
        try:
            t0 = _perf_ns()
            b = self.bstat
            if not b.in_flight:  # BlockStat.start / read_done, inlined (the 4 KiB path)
                b._busy_since_ns = t0
            b.in_flight += 1
            try:
                h = table.handle[idx]
                o = (h >> 1) & HANDLE_OFF_MASK
                obj = self._views[h >> HANDLE_SEG_SHIFT][o : o + n]
                out = bytes(obj) if n == PAGE_SIZE else self._decompress_page(obj)
                now = self.clock() << ACTIME_SHIFT
                c = (a & _KEEP) | now  # mark_slot_accessed()
                if c != a:
                    table.attr[idx] = c
                return out
            except Exception as exc:
                self._read_failed(exc)
            finally:
                b.read_ticks += b.done(_perf_ns(), t0)
                b.read_ios += 1
                b.read_sectors += PAGE_SIZE >> SECTOR_SHIFT
        finally:
            dl.release_read()

    async def read(self, offset: int, size: int) -> bytes:
        """Read ``size`` bytes at ``offset``: short at the end of the device.

        One whole page whose slot holds a page in RAM is `read_nowait`'s;
        everything else (and that page, when a writer holds or awaits the
        device lock) goes through `_read_range`.
        """
        out = self.read_nowait(offset, size)
        if out is not None:
            return out
        if offset < 0 or size < 0:
            raise einval("negative offset or size")
        dl = self.dev_lock  # `async with dl.read()`, without the guard's frames
        if not dl.try_read():
            await dl.wait_read()
        try:
            end = min(offset + size, self.disksize)
            if offset >= end:
                return b""
            table = self.table
            pool = self.pool
            if table is None or pool is None:
                raise einval("device not initialized")
            t0 = _perf_ns()
            self.bstat.start(t0)
            try:
                return await self._read_range(table, pool, offset, end)
            except Exception as exc:
                self._read_failed(exc)
            finally:
                self.bstat.read_done(_perf_ns(), t0, end - offset)
        finally:
            dl.release_read()

    def _read_failed(self, exc: Exception) -> NoReturn:
        """Raise what a failed read raises (``failed_reads`` counted): its `io_error`."""
        self.stats.failed_reads += 1
        err = io_error(exc, "read")
        if err is exc:
            raise exc
        raise err from None

    async def _read_range(self, table: SlotTable, pool: ZsPool, offset: int, end: int) -> bytes:
        """Assemble the pages of ``[offset, end)``; one join, no scratch buffer.

        (A 1 MiB bytearray plus its ``bytes`` copy per request cost ~45% of
        read time: glibc returns such blocks to the kernel and faults them in
        again every time.)
        """
        first = offset >> PAGE_SHIFT
        last = (end - 1) >> PAGE_SHIFT
        now = self.clock() << ACTIME_SHIFT
        comp = self.comps[ZRAM_PRIMARY_COMP]
        assert comp is not None
        slots = getattr(comp, "decompress_slots", None)
        if slots is not None and last > first:
            whole = self._load_joined(table, comp, slots, first, last + 1, now)
            if whole is not None:
                lo = offset & _PAGE_MASK
                n = end - offset
                return whole if n == len(whole) else whole[lo : lo + n]
        parts = await self._load_pages(table, pool, comp, first, last + 1, now)
        lo = offset & (PAGE_SIZE - 1)
        if lo:
            parts[0] = memoryview(parts[0])[lo:]
        tail = end & (PAGE_SIZE - 1)
        if tail:
            parts[-1] = memoryview(parts[-1])[: tail - (lo if first == last else 0)]
        if len(parts) == 1:
            one = parts[0]
            return one if type(one) is bytes else bytes(one)
        return b"".join(parts)

    def _load_joined(
        self,
        table: SlotTable,
        comp: Codec,
        slots: Callable[..., bytes | None],
        first: int,
        stop: int,
        now: int,
    ) -> bytes | None:
        """The pages of ``[first, stop)`` as one bytes object, from a codec's
        ``decompress_slots`` (lz4 with the accelerator: one GIL-free C call
        that reads the slot words, finds every object in the pool's views,
        decompresses it, copies huge ones, zero-fills empty slots, fills
        same-filled ones straight into the result and stamps ac_time), or
        None, having done nothing, when a slot needs the general path
        (locked, written back, recompressed).  No ``await``: the pool views
        cannot change under it.
        """
        views = self._views
        attr = table.attr
        handle = table.handle
        if not PARALLEL or stop - first < JOIN_SPLIT_MIN_PAGES:
            return slots(views, attr, handle, first, stop, _LAYOUT, now, 1)
        return _split_call(
            "r",
            comp,
            stop - first,
            lambda threads: slots(views, attr, handle, first, stop, _LAYOUT, now, threads),
        )

    async def _load_pages(
        self, table: SlotTable, pool: ZsPool, comp: Codec, first: int, stop: int, now: int
    ) -> list[Buffer]:
        """The pages of ``[first, stop)``, whatever their slots hold."""
        # A batch-decompressing codec (zstd) takes whole-batch steps when
        # every slot holds a page in RAM; for short requests, and for lz4
        # (measured: no gain), the page-by-page loop.
        if stop - first < BATCH_MIN_PAGES or not getattr(comp, "batch_decompress", False):
            return await self._load_each(table, pool, comp, first, stop, now)
        attrs = table.attr[first:stop].tolist()
        if not any(map(_and, attrs, _repeat(_READ_SLOW))):
            sizes = list(map(_and, attrs, _repeat(SIZE_MASK)))
            if 0 not in sizes:
                return self._load_stored(table, pool, comp, first, stop, attrs, sizes, now)
            if not any(sizes):
                return [ZERO_PAGE] * (stop - first)  # nothing stored, nothing to stamp
        return await self._load_each(table, pool, comp, first, stop, now)

    def _load_stored(
        self,
        table: SlotTable,
        pool: ZsPool,
        comp: Codec,
        first: int,
        stop: int,
        attrs: list[int],
        sizes: list[int],
        now: int,
    ) -> list[Buffer]:
        """`_load_pages` when every slot holds a page in RAM, compressed by
        the primary codec or huge, and nobody holds it: whole-batch steps
        (maps of C functions), then one `_decompress_all`; no ``await``."""
        n = stop - first
        hs = table.handle[first:stop].tolist()
        views = pool.segment_views()
        offs = list(map(_and, map(_rshift, hs, _repeat(1)), _repeat(HANDLE_OFF_MASK)))
        segs = map(views.__getitem__, map(_rshift, hs, _repeat(HANDLE_SEG_SHIFT)))
        slices = map(slice, offs, map(_add, offs, sizes))
        objs: list[Buffer] = list(map(_getitem, segs, slices))  # type: ignore[arg-type]
        if PAGE_SIZE in sizes:
            small = list(_select(range(n), map(_ne, sizes, _repeat(PAGE_SIZE))))
            out = self._decompress_all(comp, [objs[i] for i in small]) if small else []
            for i in _select(range(n), map(_eq, sizes, _repeat(PAGE_SIZE))):
                objs[i] = bytes(objs[i])  # huge: stored raw
            any(map(objs.__setitem__, small, out))
            parts = objs
        else:
            parts = self._decompress_all(comp, objs)
        # mark_slot_accessed() of every slot (all hold something).
        stamped = list(map(_or, map(_and, attrs, _repeat(_KEEP)), _repeat(now)))
        if stamped != attrs:
            table.attr[first:stop] = _array("Q", stamped)
        return parts

    @staticmethod
    def _decompress_all(comp: Codec, objs: list[Buffer]) -> list[Buffer]:
        """A batch codec's ``decompress_pages`` of every object, in GIL-free
        calls on the trio thread, which blocks until all are done (never
        yields), so the pool views they read cannot change.  A long batch
        goes to two threads when that measures faster (`_split_pays`, as for
        writes)."""
        pages = comp.decompress_pages  # type: ignore[attr-defined]
        n = len(objs)
        if not PARALLEL or n < JOIN_SPLIT_MIN_PAGES or not getattr(comp, "batch_parallel", False):
            return list(pages(objs, 1))
        return list(_split_call("r", comp, n, lambda threads: pages(objs, threads)))

    async def _load_each(
        self, table: SlotTable, pool: ZsPool, comp: Codec, first: int, stop: int, now: int
    ) -> list[Buffer]:
        """`_load_pages` one page at a time (locked, written-back, same-filled
        or recompressed slots, unallocated ones among stored ones)."""
        attr = table.attr
        handle = table.handle
        locks = table.locks
        keep = _KEEP
        # The common page inline: compressed by the primary codec, or huge.
        # Locked, written-back, same-filled and recompressed slots take the
        # general path.
        slow = _READ_SLOW
        size_mask = SIZE_MASK
        page_size = PAGE_SIZE
        off_mask = HANDLE_OFF_MASK
        seg_shift = HANDLE_SEG_SHIFT
        decompress = comp.decompress
        views = pool.segment_views()
        parts: list[Buffer] = []
        append = parts.append
        for idx in range(first, stop):
            a = attr[idx]
            if not a & slow:
                size = a & size_mask
                if not size:
                    append(ZERO_PAGE)
                    continue
                h = handle[idx]
                o = (h >> 1) & off_mask
                if size == page_size:
                    append(bytes(views[h >> seg_shift][o : o + page_size]))
                else:
                    append(decompress(views[h >> seg_shift][o : o + size], page_size))
                # mark_slot_accessed(); the word is often unchanged (a page
                # read in the second it was written or last read).
                b = (a & keep) | now
                if b != a:
                    attr[idx] = b
            elif a & LOCK_MASK or a & WB:
                await locks.lock_shared(idx)
                try:
                    append(await self._load_page(table, pool, idx))
                    self._touch(attr, idx, now)
                finally:
                    locks.unlock_shared(idx)
            else:
                append(self._load_ram(table, pool, idx, a))
                if a & (SIZE_MASK | SAME):
                    attr[idx] = (a & keep) | now
        return parts

    @staticmethod
    def _touch(attr: memoryview, idx: int, now: int) -> None:
        """``mark_slot_accessed``: clear IDLE/PP_SLOT, stamp ac_time (allocated only)."""
        a = attr[idx]
        if a & (SIZE_MASK | SAME | WB):
            attr[idx] = (a & ~(IDLE | PP_SLOT | ACTIME_MASK)) | now

    def _load_ram(self, table: SlotTable, pool: ZsPool, idx: int, a: int) -> bytes:
        """A slot's page from RAM (caller holds the slot or knows it unlocked)."""
        if a & SAME:
            return table.handle[idx].to_bytes(8, "little") * PAGE_WORDS
        size = a & SIZE_MASK
        if not size:
            return ZERO_PAGE
        h = table.handle[idx]
        if size == PAGE_SIZE:
            return bytes(pool.read(h, PAGE_SIZE))
        comp = self.comps[(a & PRIO_MASK) >> PRIO_SHIFT]
        if comp is None:
            raise ZramError(errno.EIO, f"slot {idx}: no compressor for its priority")
        return comp.decompress(pool.read(h, size), PAGE_SIZE)

    async def _load_page(self, table: SlotTable, pool: ZsPool, idx: int) -> bytes:
        """A slot's page wherever it is; the caller holds the slot's lock."""
        a = table.attr[idx]
        if a & WB:
            return await self._read_backing(idx)
        return self._load_ram(table, pool, idx, a)

    async def _read_backing(self, idx: int) -> bytes:
        return await postprocess.read_backing(self, idx)

    async def write(self, offset: int, data: WriteData) -> int:
        """Write ``data`` at ``offset``; returns bytes written (short at the end).

        Raises ENOSPC at or past the end, EIO when a page cannot be stored
        (``mem_limit`` reached, codec failure): pages before it are stored.
        """
        n = len(data)
        if offset < 0:
            raise einval("negative offset")
        if n == 0:
            return 0
        done = self.write_nowait(offset, data)  # one page (4 KiB random I/O)
        if done is not None:
            return done
        dl = self.dev_lock  # `async with dl.read()`, without the guard's frames
        if not dl.try_read():
            await dl.wait_read()
        try:
            if offset >= self.disksize:
                raise ZramError(errno.ENOSPC, "write past the end of the device")
            table = self.table
            pool = self.pool
            if table is None or pool is None:
                raise einval("device not initialized")
            end = min(offset + n, self.disksize)
            self._actime = self.clock() << ACTIME_SHIFT
            t0 = _perf_ns()
            self.bstat.start(t0)
            try:
                await self._write_range(table, pool, offset, data[: end - offset])
            except Exception as exc:
                self._write_failed(exc)
            finally:
                self.bstat.write_done(_perf_ns(), t0, end - offset)
            return end - offset
        finally:
            dl.release_read()

    def write_nowait(
        self, offset: int, data: WriteData, defer: WriteDeferral | None = None
    ) -> int | None:
        """`write` of one aligned whole page when that needs no ``await``.

        Returns ``len(data)`` with the page stored (`_store_run`, inline
        compression) and counted as `write` counts it, or None having
        changed nothing, for the caller to await `write`: another size or
        alignment, past the end, an uninitialized device, or the slot or the
        device lock held or awaited.  Raises what `write` raises when the
        store fails (EIO at mem_limit, a codec failure).  `write` starts
        here; pyfuse3 calls it directly through ``ZramOperations.write_nowait``
        (no coroutine per 4 KiB write).  With ``defer``, a run of whole pages
        may return `WRITE_DEFERRED` instead (`_write_pages_nowait`).
        """
        if len(data) != PAGE_SIZE or offset & _PAGE_MASK or not 0 <= offset < self.disksize:
            if len(data) > PAGE_SIZE:
                return self._write_pages_nowait(offset, data, defer)
            return None
        table = self.table
        pool = self.pool
        if table is None or pool is None:
            return None
        idx = offset >> PAGE_SHIFT
        if table.attr[idx] & LOCK_MASK:  # held or awaited: `write` queues for it
            return None
        dl = self.dev_lock
        if not dl.try_read():
            return None
        try:
            self._actime = self.clock() << ACTIME_SHIFT
            t0 = _perf_ns()
            b = self.bstat  # BlockStat.start / write_done, inlined (the 4 KiB path)
            if not b.in_flight:
                b._busy_since_ns = t0
            b.in_flight += 1
            try:
                self._store_run(table, pool, idx, data, 0, 0, 1)  # the slot is free: stores
            except Exception as exc:
                self._write_failed(exc)
            finally:
                b.write_ticks += b.done(_perf_ns(), t0)
                b.write_ios += 1
                b.write_sectors += PAGE_SIZE >> SECTOR_SHIFT
            return PAGE_SIZE
        finally:
            dl.release_read()

    def _write_pages_nowait(
        self, offset: int, data: WriteData, defer: WriteDeferral | None = None
    ) -> int | None:
        """`write_nowait` of several whole pages (loop's 512 KiB requests,
        dd's 1 MiB ones), when `write` would store them without an ``await``.

        That is `_write_full`'s inline way (not worker threads: the learner's
        next pick is asked first without counting the batch, so a declined
        batch is counted once, where `write` takes it), for an aligned range
        inside the device none of whose slots is held or awaited, with the
        device lock free of writers.  Served, the request costs no coroutine
        chain, and pyfuse3's burst reads the next one at once.  Returns None
        having changed nothing otherwise.

        **Deferral** (``defer`` given: pyfuse3 can answer later).  Through
        loop every MiB is two 512 KiB requests in flight together, and the
        codec's helper sat idle while the trio thread finished one, answered
        it and read the other.  So when the batch goes ahead on the helper
        (`_store_fresh_ahead`) and another request is already queued, the
        trio thread stores the head, leaves the tail to the helper and
        returns `WRITE_DEFERRED`: pyfuse3 reads the next request while the
        helper compresses.  The next run of pages on this device queues its
        own tail behind and compresses its head, then `finish_deferred`
        stores the deferred tail and answers it, then it goes on.  Anything
        else finishes the deferred write first (pyfuse3's ``write_drain``
        when the burst ends, or before any coroutine runs).  The answer is
        sent only when every page is stored: never before, as write-behind
        would.
        """
        n = len(data)
        table = self.table
        pool = self.pool
        if n & _PAGE_MASK or offset & _PAGE_MASK or offset < 0 or offset + n > self.disksize:
            return None
        if table is None or pool is None:
            return None
        comp = self.comps[ZRAM_PRIMARY_COMP]
        assert comp is not None
        count = n >> PAGE_SHIFT
        first = offset >> PAGE_SHIFT
        figures = self._offload_figures(comp, count)
        if figures is not None and _offload_next(figures, self._comp_cost_ns):
            return None
        fresh = not self.limit_pages
        ahead = fresh and self._ahead_ok(comp, count)
        d = self._deferred
        apart = d is not None and (d.first >= first + count or first >= d.first + d.count)
        if d is not None and not (ahead and apart):
            self.finish_deferred()  # overlapping, or not the interleaved way
            d = None
        fresh = fresh and table.clear(first, first + count)
        if not fresh and not table.unlocked(first, first + count):
            return None
        dl = self.dev_lock
        if not dl.try_read():
            return None
        deferred = False
        try:
            if figures is not None:
                figures[1] += 1
            self._actime = self.clock() << ACTIME_SHIFT
            t0 = _perf_ns()
            self.bstat.start(t0)
            try:
                if fresh and ahead and (d is not None or defer is not None):
                    k = self._store_ahead_nowait(table, pool, comp, first, data, count, defer, t0)
                    deferred = k == WRITE_DEFERRED
                    if deferred:
                        return WRITE_DEFERRED
                else:
                    k = self._store_fresh(table, pool, comp, first, data, 0, count) if fresh else 0
                if k < count:
                    # No slot is held and nothing else has run: `_store_run`
                    # stores every page or raises at the one that fails.
                    frames = self._overwrite_frames(comp, data, 0, count)
                    k = self._store_run(table, pool, first, data, 0, k, count, frames)
                    assert k == count
                self._learn_cost(_perf_ns() - t0, count)
            except Exception as exc:
                self._write_failed(exc)
            finally:
                if not deferred:
                    self.bstat.write_done(_perf_ns(), t0, n)
            return n
        finally:
            if not deferred:
                dl.release_read()

    def _ahead_ok(self, comp: Codec, count: int) -> bool:
        """Whether `_store_fresh` may store a fresh batch of ``count`` pages
        with its tail compressed ahead (`_store_fresh_ahead`)."""
        return (
            PARALLEL
            and count >= AHEAD_MIN_PAGES
            and getattr(comp, "compress_pages_begin", None) is not None
            and count * self._comp_cost_ns >= PARALLEL_MIN_NS
        )

    def _store_ahead_nowait(
        self,
        table: SlotTable,
        pool: ZsPool,
        comp: Codec,
        first: int,
        data: WriteData,
        count: int,
        defer: WriteDeferral | None,
        t0: int,
    ) -> int:
        """`_store_fresh` of a fresh batch for `_write_pages_nowait` when a
        write is deferred or may be: the split learner's pick (counted); the
        ahead way with ``defer``, timed into the learner only when no
        deferred write was finished or left in it."""
        if self._deferred is None:
            st = _split_pays("wf", comp)
            if not st[3]:
                t1 = _perf_ns()
                k = self._store_fresh_now(table, pool, comp, first, data, 0, count)
                _split_learn(st, _perf_ns() - t1, count)
                return k
        else:
            st = None
        begin = comp.compress_pages_begin  # type: ignore[attr-defined]
        t1 = _perf_ns()
        k = self._store_fresh_ahead(table, pool, comp, begin, first, data, 0, count, defer, t0)
        if st is not None and k != WRITE_DEFERRED:
            _split_learn(st, _perf_ns() - t1, count)
        return k

    def finish_deferred(self) -> None:
        """Store the rest of the deferred write, if any, and answer it.

        Its tail's pages are stored as the helper finishes them; a codec
        failure goes on page by page (the pages before the failing one
        stored, as `write` would); any failure is answered with `write`'s
        error (counted in ``failed_writes``).  Then the held slots and the
        device lock's grant are released and the block statistics closed.
        Never raises but for what ``reply`` raises.
        """
        d = self._deferred
        if d is None:
            return
        self._deferred = None
        nbytes = d.count << PAGE_SHIFT
        result: int | ZramError = nbytes
        now = self._actime  # (the request being served, if any: its own)
        self._actime = d.actime
        try:
            self._store_deferred(d)
        except Exception as exc:
            try:
                self._write_failed(exc)
            except ZramError as err:
                result = err
            attr = d.table.attr
            for idx in range(d.first + d.head, d.first + d.count):
                if attr[idx] == WRITER:  # held for the tail, not stored
                    attr[idx] = 0
        finally:
            self._actime = now
            self.bstat.write_done(_perf_ns(), d.t0, nbytes)
            self.dev_lock.release_read()
        d.reply(result)

    def _store_deferred(self, d: _Deferred) -> None:
        """The deferred tail's pages, stored as they come (their slots'
        WRITER dropped as each is written); from a page that failed to
        compress on, page by page."""
        first = d.first + d.head
        tail = d.count - d.head
        k = self._store_pieces(d.table, d.pool, first, d.data, d.head << PAGE_SHIFT, d.pending)[0]
        if k < tail:
            d.table.attr[first + k : first + tail] = _array("Q", bytes(8 * (tail - k)))
            got = self._store_run(d.table, d.pool, d.first, d.data, 0, d.head + k, d.count)
            assert got == d.count

    def _store_pieces(
        self, table: SlotTable, pool: ZsPool, first: int, data: WriteData, pos: int,
        pending: PendingPages,
    ) -> tuple[int, int, int]:  # fmt: skip
        """Store ``pending``'s pages into the empty slots from ``first``
        (their raw pages in ``data`` from ``pos``) as the helper finishes
        them.  Returns the pages stored (fewer than ``pending.count`` if one
        failed to compress), the ns spent waiting for the helper and the ns
        the last piece's store took (the head share's feedback)."""
        k = waited = last = 0
        while k < pending.count:
            t0 = _perf_ns()
            try:
                done = pending.wait(k + 1)
            except Exception:
                break
            t1 = _perf_ns()
            waited += t1 - t0
            out, sizes = pending.blocks()
            p = pos + (k << PAGE_SHIFT)
            self._commit_blocks(table, pool, first + k, data, p, out, sizes, k, done)
            last = _perf_ns() - t1
            k = done
        return k, waited, last

    def _write_failed(self, exc: Exception) -> NoReturn:
        """Raise what a failed write raises (``failed_writes`` counted): its
        `io_error`, with mem_limit's ENOMEM as EIO, as zram_write_page."""
        self.stats.failed_writes += 1
        err = io_error(exc, "write")
        if err.errno == errno.ENOMEM:
            raise ZramError(errno.EIO, "mem_limit reached") from None
        if err is exc:
            raise exc
        raise err from None

    async def _write_range(
        self, table: SlotTable, pool: ZsPool, offset: int, data: WriteData
    ) -> None:
        n = len(data)
        pos = 0
        head = offset & (PAGE_SIZE - 1)
        if head:
            take = min(PAGE_SIZE - head, n)
            await self._write_partial(table, pool, offset >> PAGE_SHIFT, head, data[:take])
            pos = take
        full = (n - pos) >> PAGE_SHIFT
        if full:
            first = (offset + pos) >> PAGE_SHIFT
            await self._write_full(table, pool, first, data, pos, full)
            pos += full << PAGE_SHIFT
        if pos < n:
            await self._write_partial(table, pool, (offset + pos) >> PAGE_SHIFT, 0, data[pos:])

    async def _write_partial(
        self, table: SlotTable, pool: ZsPool, idx: int, off: int, piece: WriteData
    ) -> None:
        """Read-modify-write of part of one page, under the slot's write lock."""
        locks = table.locks
        await locks.lock(idx)
        try:
            page = bytearray(await self._load_page(table, pool, idx))
            page[off : off + len(piece)] = piece
            self._store(table, pool, idx, bytes(page), None)
        finally:
            locks.unlock(idx)

    async def _write_full(
        self, table: SlotTable, pool: ZsPool, first: int, data: WriteData, pos: int, count: int
    ) -> None:
        """Store ``count`` whole pages; compression inline or on worker threads.

        Offloading pays only when worker threads really run beside the trio
        thread (a free CPU, a codec that drops the GIL) and the batch is long
        enough to amortize the thread hops.  So both ways are timed (wall ns
        per page, EWMA: inline per device in ``_comp_cost_ns``, offloaded per
        codec and level in `_offload_stats`, shared by devices) and a batch
        of at least `OFFLOAD_MIN_NS` of estimated work takes the cheaper way;
        every `_EXPLORE`-th such batch takes the other one, to keep its
        figure current (load changes, and so does the codec's cost).
        """
        comp = self.comps[ZRAM_PRIMARY_COMP]
        assert comp is not None
        stats = self._offload_figures(comp, count)
        if stats is not None:
            offload = _offload_next(stats, self._comp_cost_ns)
            stats[1] += 1
            if offload:
                t0 = time.perf_counter_ns()
                await self._write_offloaded(table, pool, comp, first, data, pos, count)
                per = (time.perf_counter_ns() - t0) // count
                stats[0] = per if stats[0] < 0 else stats[0] + ((per - stats[0]) >> _EWMA_SHIFT)
                return
        # Inline: synchronous runs of stores; an await only for a slot held by
        # a task that is awaiting (recompress, writeback, a reader of a
        # written-back page).
        t0 = time.perf_counter_ns()
        k = 0
        if not self.limit_pages and table.clear(first, first + count):
            k = self._store_fresh(table, pool, comp, first, data, pos, count)
            if k == count:
                self._learn_cost(time.perf_counter_ns() - t0, count)
                return
        locks = table.locks
        frames = self._overwrite_frames(comp, data, pos, count)
        while True:
            k = self._store_run(table, pool, first, data, pos, k, count, frames)
            if k >= count:
                break
            idx = first + k
            await locks.lock(idx)
            try:
                p = pos + (k << PAGE_SHIFT)
                self._store(table, pool, idx, data[p : p + PAGE_SIZE], None)
            finally:
                locks.unlock(idx)
            k += 1
        self._learn_cost(time.perf_counter_ns() - t0, count)

    def _offload_figures(self, comp: Codec, count: int) -> list[int] | None:
        """The offload learner's figures (`_offload_stats`) for a batch of
        ``count`` pages long enough to consider worker threads, else None."""
        if count * self._comp_cost_ns < OFFLOAD_MIN_NS:
            return None
        key = (comp.name, comp.params.level)
        stats = _offload_stats.get(key)
        if stats is None:
            stats = _offload_stats[key] = [-1, 0]
        return stats

    def _overwrite_frames(
        self, comp: Codec, data: WriteData, pos: int, count: int
    ) -> Sequence[Buffer] | None:
        """Slots that hold data (overwrites): a batch codec still compresses
        the whole batch in one call; `_store_run` then stores page by page
        (new object, then the old one freed, as the kernel orders it)."""
        if count >= BATCH_MIN_PAGES and getattr(comp, "batch_compress", False):
            try:
                return self._batch_frames(comp, data, pos, count)
            except Exception:
                return None  # page by page: the failing page fails alone
        return None

    async def _write_offloaded(
        self,
        table: SlotTable,
        pool: ZsPool,
        comp: Codec,
        first: int,
        data: WriteData,
        pos: int,
        count: int,
    ) -> None:
        """Hold every slot of the batch (ascending order) across the await, so
        nobody sees or changes them half-way; compress on up to two worker
        threads; store on the trio thread (at once if the slots are still
        empty and nobody queued for them)."""
        locks = table.locks
        locked = 0
        try:
            for k in range(count):
                await locks.lock(first + k)
                locked += 1
            blocks = getattr(comp, "compress_blocks", None)
            if blocks is not None:
                # The accelerator's layout: stored at once if the slots are
                # still empty, else its views page by page as below.
                out, sizes = await trio.to_thread.run_sync(blocks, data, pos, count, max(_CPUS, 2))
                if not self.limit_pages and table.only_bits(first, first + count, WRITER):
                    self._commit_blocks(table, pool, first, data, pos, out, sizes, 0, count, WRITER)
                    return
                same, blobs = _block_frames(out, sizes, 0, count)
            else:
                same, blobs = await self._compress_offloaded(comp, data, pos, count)
                if not self.limit_pages and table.only_bits(first, first + count, WRITER):
                    self._commit_fresh(table, pool, first, data, pos, count, same, blobs, WRITER)
                    return
            # Somebody queued for a slot, or one holds content: page by page.
            skip = set(same)
            it = iter(blobs)
            for k in range(count):
                p = pos + (k << PAGE_SHIFT)
                page = data[p : p + PAGE_SIZE]
                if k in skip:
                    self._store(table, pool, first + k, page, None)
                else:
                    self._store(table, pool, first + k, page, next(it))
        finally:
            for k in range(locked):
                locks.unlock(first + k)

    def _store_fresh(
        self,
        table: SlotTable,
        pool: ZsPool,
        comp: Codec,
        first: int,
        data: WriteData,
        pos: int,
        count: int,
    ) -> int:
        """Store a batch into slots that hold nothing and nobody holds, at once.

        `_write_full`'s inline fast path when no ``mem_limit`` is set:
        `compress_run`, then `_commit_fresh`, or, for a codec that compresses
        in the background, `_store_fresh_ahead` when that measures faster
        (`_split_pays`, kind "wf": compression and stores timed together).
        No ``await``: nobody can see the slots in between (as in
        `_store_run`).  Returns how many leading pages it stored: fewer than
        ``count`` if a page failed to compress (the caller then goes on page
        by page, storing the pages before the failing one and failing at it).
        """
        if self._ahead_ok(comp, count):
            begin = comp.compress_pages_begin  # type: ignore[attr-defined]
            return _split_call(
                "wf",
                comp,
                count,
                lambda threads: (
                    self._store_fresh_ahead(table, pool, comp, begin, first, data, pos, count)
                    if threads > 1
                    else self._store_fresh_now(table, pool, comp, first, data, pos, count)
                ),
            )
        return self._store_fresh_now(table, pool, comp, first, data, pos, count)

    def _store_fresh_now(
        self,
        table: SlotTable,
        pool: ZsPool,
        comp: Codec,
        first: int,
        data: WriteData,
        pos: int,
        count: int,
    ) -> int:
        """`_store_fresh`: every page compressed (`_compress_batch`), then
        stored; 0 pages if one fails to compress.  A codec with
        ``compress_blocks`` takes `_commit_blocks`."""
        blocks = getattr(comp, "compress_blocks", None)
        if blocks is not None and count >= BATCH_MIN_PAGES:
            try:
                out, sizes = self._batch_call(comp, blocks, data, pos, count)
            except Exception:
                return 0
            self._commit_blocks(table, pool, first, data, pos, out, sizes, 0, count)
            return count
        try:
            same, blobs = self._compress_batch(comp, data, pos, count)
        except Exception:
            return 0
        self._commit_fresh(table, pool, first, data, pos, count, same, blobs, 0)
        return count

    def _store_fresh_ahead(
        self,
        table: SlotTable,
        pool: ZsPool,
        comp: Codec,
        begin: Callable[[Buffer, int, int], PendingPages],
        first: int,
        data: WriteData,
        pos: int,
        count: int,
        defer: WriteDeferral | None = None,
        t0_request: int = 0,
    ) -> int:
        """`_store_fresh` with the compression of the batch's tail running on
        the codec's background thread while this one compresses the head,
        stores it, then stores the tail's pages as they come.

        With a deferred write on the device, its tail is ahead of this one's
        on the helper: it is finished (and answered) between this batch's
        head compression and the head's store.  With ``defer`` (`_write_pages_nowait`:
        ``pos`` 0, the request started at ``t0_request``) and another request
        queued, the tail is left to the helper and `WRITE_DEFERRED` returned.

        The head's share is balanced by feedback (`_ahead_stats`, per codec):
        after each batch, the time this thread waited for the helper and the
        time the helper sat idle at the end (beyond the last piece's store,
        which nothing can overlap) say which side had too much, and the share
        moves by half the difference, in pages of the measured compression
        cost.  (The costs alone, a head of ``count * (c - s) / 2c`` for
        compress cost ``c`` and store cost ``s``, left this thread waiting a
        fifth of the time in process: the helper's pages cost more than the
        trio thread's.)  If the background part fails (a codec error), the
        pages stored so far are returned and the caller goes on page by page;
        a store that fails (ENOMEM) raises with the pages before it stored,
        as page by page would.
        """
        blocks = comp.compress_blocks  # type: ignore[attr-defined]
        key = (comp.name, comp.params.level)
        figures = _ahead_stats.get(key)
        if figures is None:
            figures = _ahead_stats[key] = [10_000, AHEAD_SHARE]
        c_ns, share = figures
        # A batch that will be deferred leaves all its pages to the helper:
        # the trio thread's next work is reading the queued request.
        lead = defer is not None and self._deferred is None and defer.waiting()
        head = 0 if lead else count * share >> 10
        t_begin = _perf_ns()
        pending = begin(data, pos + (head << PAGE_SHIFT), count - head)
        if head:
            t0 = _perf_ns()
            try:
                out, sizes = blocks(data, pos, head, 1)
            except Exception:
                self.finish_deferred()
                return 0
            c_ns += ((_perf_ns() - t0) // head - c_ns) >> _EWMA_SHIFT
            self.finish_deferred()
            self._commit_blocks(table, pool, first, data, pos, out, sizes, 0, head)
        else:
            self.finish_deferred()
        tail = count - head
        if defer is not None and tail and (lead or defer.waiting()):
            # Hold the tail's slots (they are fresh: nothing to keep) and go.
            table.attr[first + head : first + count] = _array("Q", [WRITER]) * tail
            self._deferred = _Deferred(
                table, pool, first, count, data, head, pending,
                t0_request, self._actime, defer.reply,
            )  # fmt: skip
            self.deferred_writes += 1
            figures[0] = max(1, c_ns)
            return WRITE_DEFERRED
        k, waited, last = self._store_pieces(
            table, pool, first + head, data, pos + (head << PAGE_SHIFT), pending
        )
        if k < tail:
            return head + k
        done_ns = pending.finished_ns
        if tail and done_ns > t_begin:  # (not compressed inline: the helper was busy)
            idle = _perf_ns() - done_ns - last
            # Pages whose move would even out waiting and idling, halved.
            move = (idle - waited) // (4 * c_ns) if idle > 0 else -waited // (4 * c_ns)
            share = max(0, min(AHEAD_SHARE_MAX, share - (move << 10) // count))
        figures[0] = max(1, c_ns)
        figures[1] = share
        return count

    def _commit_fresh(
        self,
        table: SlotTable,
        pool: ZsPool,
        first: int,
        data: WriteData,
        pos: int,
        count: int,
        same: list[int],
        blobs: Sequence[Buffer],
        lockbits: int,
    ) -> None:
        """Store `compress_run`'s results for slots that hold nothing.

        The objects go to the pool with `ZsPool.store_many` and the table is
        written with two slice assignments.  The result is what storing page
        by page gives: nothing is freed (the slots are empty), so the pool
        ends in the same state and mem_used_max's high-water mark is its size
        afterwards.  ``lockbits`` are the slots' lock bits to keep (WRITER
        when the caller holds them all).  With `ZsPool.store_batch` (the C
        accelerator), that one call does the pool and the table.
        """
        if pool.batch_ok:
            frames: list[Buffer] = list(blobs)
            for k in same:  # (ascending) the places of the same-filled pages
                frames.insert(k, b"")
            pool.peak_pages = pool.total_pages()
            compr, huge_n, same_n = pool.store_batch(
                frames, _array("H", map(len, frames)).tobytes(), 0, count, data, pos, first,
                table.handle, table.attr, self._actime | lockbits, HUGE, SAME,
            )  # fmt: skip
            self._count_fresh(pool, count, compr, huge_n, same_n)
            return
        mv = memoryview(data)
        stored: list[Buffer] = list(blobs)
        sizes = list(map(len, stored))
        ks: Sequence[int] = range(count)
        if same:
            skip = set(same)
            ks = [k for k in ks if k not in skip]
        # zram_write_page(): a page compressing to huge_class_size or more is
        # stored as it is.
        huge = list(_select(range(len(sizes)), map(_le, _repeat(self.huge_class_size), sizes)))
        for j in huge:
            p = pos + (ks[j] << PAGE_SHIFT)
            stored[j] = mv[p : p + PAGE_SIZE]
            sizes[j] = PAGE_SIZE
        owners = range(first, first + count) if not same else [first + k for k in ks]
        pool.peak_pages = pool.total_pages()
        handles = pool.store_many(stored, sizes, owners)
        bits = self._actime | lockbits
        attrs = list(map(_or, sizes, _repeat(bits)))
        for j in huge:
            attrs[j] |= HUGE
        if same:
            ht = table.handle
            at = table.attr
            for h, a, idx in zip(handles, attrs, owners, strict=True):
                ht[idx] = h
                at[idx] = a
            for k in same:
                p = pos + (k << PAGE_SHIFT)
                ht[first + k] = int.from_bytes(data[p : p + 8], "little")
                at[first + k] = SAME | bits
        else:
            table.handle[first : first + count] = _array("Q", handles)
            table.attr[first : first + count] = _array("Q", attrs)
        self._count_fresh(pool, count, sum(sizes), len(huge), len(same))

    def _count_fresh(self, pool: ZsPool, pages: int, compr: int, huge: int, same: int) -> None:
        """The statistics of ``pages`` pages stored into empty slots (``compr``
        bytes of objects, ``huge`` of them raw, ``same`` same-filled), the
        pool's high-water mark since the caller set ``peak_pages``."""
        st = self.stats
        st.pages_stored += pages
        st.compr_data_size += compr
        st.same_pages += same
        if huge:
            st.huge_pages += huge
            st.huge_pages_since += huge
        if pool.peak_pages > st.max_used_pages:
            st.max_used_pages = pool.peak_pages

    def _commit_blocks(
        self,
        table: SlotTable,
        pool: ZsPool,
        first: int,
        data: WriteData,
        pos: int,
        out: Buffer,
        sizes: Buffer,
        lo: int,
        hi: int,
        lockbits: int = 0,
    ) -> None:
        """`_commit_fresh` of pages ``lo..hi-1`` of a ``compress_blocks``
        result (their raw pages in ``data`` from ``pos``) into the empty
        slots from ``first``: one `ZsPool.store_batch` call stores the
        objects and writes the table, leaving pool, table and statistics
        exactly as `_commit_fresh` does (``lockbits`` as there); a pool
        without it gets the layout's views through `_commit_fresh`."""
        if not pool.batch_ok:
            same_at, blobs = _block_frames(out, sizes, lo, hi)
            self._commit_fresh(table, pool, first, data, pos, hi - lo, same_at, blobs, lockbits)
            return
        pool.peak_pages = pool.total_pages()
        bits = self._actime | lockbits
        compr, huge, same = pool.store_batch(
            out, sizes, lo, hi, data, pos, first, table.handle, table.attr, bits, HUGE, SAME
        )
        self._count_fresh(pool, hi - lo, compr, huge, same)

    def _store_run(
        self,
        table: SlotTable,
        pool: ZsPool,
        first: int,
        data: WriteData,
        pos: int,
        k: int,
        count: int,
        frames: Sequence[Buffer] | None = None,
    ) -> int:
        """Store pages ``k..count-1`` of a batch for as long as their slots are free.

        `_write_full`'s inline fast path: `_store` unrolled into one loop with
        everything bound locally and the counters summed once per run.  Page
        by page it does what `_store` does, in the same order (new object,
        mem_used_max, mem_limit, then the old content freed), so a refused
        page leaves its slot and every later one as they were.

        No ``await`` separates looking at a slot from storing into it, and
        nothing else runs on the trio thread meanwhile, so taking and
        dropping an uncontended entry lock around each page could not be
        observed by anyone: it is skipped (docs/design.md, entry lock rule 2).
        Returns the index of the first page whose slot somebody holds (the
        caller waits for it), or ``count``.  ``frames``: every page's
        compressed form (a batch codec's ``compress_pages``), instead of
        compressing here.
        """
        comp = self.comps[ZRAM_PRIMARY_COMP]
        assert comp is not None
        compress = comp.compress
        attr = table.attr
        handle = table.handle
        store = pool.store
        free = pool.free
        huge_size = self.huge_class_size
        actime = self._actime
        limit = self.limit_pages
        allocated = SIZE_MASK | SAME | WB
        special = SAME | WB  # old content that _slot_free must release
        mv = memoryview(data)
        idx = first + k
        stop = first + count
        p = pos + (k << PAGE_SHIFT)
        stored = compr = huge = unhuge = 0
        # Pages only grow in malloc, so the high-water mark over this run is
        # mem_used_max's update at every store attempt (kernel: after zs_malloc).
        pool.peak_pages = pool.total_pages()
        try:
            while idx < stop:
                a = attr[idx]
                if a & LOCK_MASK:
                    break
                q = p + PAGE_SIZE
                # page_same_filled(): first word against last, then in full.
                w = data[p : p + 8]
                if w == data[q - 8 : q] and bytes(w) * PAGE_WORDS == data[p:q]:
                    self._store(table, pool, idx, data[p:q], None)  # same-filled: rare
                    idx += 1
                    p = q
                    continue
                page = mv[p:q]  # compressed in place, no copy
                p = q
                c = compress(page) if frames is None else frames[idx - first]
                n = len(c)
                if n < huge_size:
                    h = store(c, idx)
                else:
                    h = store(page, idx)
                    n = PAGE_SIZE
                if limit and pool.total_pages() > limit:
                    free(h)
                    raise ZramError(errno.ENOMEM, "mem_limit reached")
                if a & allocated:
                    # slot_free() of the old content, inline for an object in RAM.
                    if a & special:
                        self._slot_free(table, pool, idx)
                    else:
                        free(handle[idx])
                        compr -= a & SIZE_MASK
                        stored -= 1
                        if a & HUGE:
                            unhuge += 1
                handle[idx] = h
                if n == PAGE_SIZE:
                    attr[idx] = PAGE_SIZE | HUGE | actime
                    huge += 1
                else:
                    attr[idx] = n | actime
                compr += n
                stored += 1
                idx += 1
        finally:
            st = self.stats
            st.pages_stored += stored
            st.compr_data_size += compr
            if huge or unhuge:
                st.huge_pages += huge - unhuge
                st.huge_pages_since += huge
            if pool.peak_pages > st.max_used_pages:
                st.max_used_pages = pool.peak_pages
        return idx - first

    def _learn_cost(self, elapsed_ns: int, pages: int) -> None:
        per = elapsed_ns // pages
        self._comp_cost_ns += (per - self._comp_cost_ns) >> _EWMA_SHIFT

    def _compress_batch(
        self, comp: Codec, data: WriteData, pos: int, count: int
    ) -> tuple[list[int], Sequence[Buffer]]:
        """`compress_run` of a batch on the trio thread: a batch codec through
        `_batch_frames`, any other codec page by page."""
        if not getattr(comp, "batch_compress", False) or count < BATCH_MIN_PAGES:
            return compress_run(comp.compress, data, pos, count)
        same = _same_pages(data, pos, count)
        return same, _without(self._batch_frames(comp, data, pos, count), same)

    def _batch_frames(self, comp: Codec, data: WriteData, pos: int, count: int) -> Sequence[Buffer]:
        """A batch codec's ``compress_pages`` of every page of a batch (`_batch_call`)."""
        return self._batch_call(comp, comp.compress_pages, data, pos, count)  # type: ignore[attr-defined]

    def _batch_call(
        self,
        comp: Codec,
        pages: Callable[[Buffer, int, int, int], _T],
        data: WriteData,
        pos: int,
        count: int,
    ) -> _T:
        """``pages(data, pos, count, threads)``, a batch codec's
        ``compress_pages`` or ``compress_blocks`` of every page of a batch, in
        one GIL-free call on the trio thread (which blocks meanwhile): on two
        threads (it and a helper the codec keeps) when the batch is long
        enough (`PARALLEL_MIN_NS`) and that has measured faster
        (`_split_pays`), else on one."""
        if (
            not PARALLEL
            or not getattr(comp, "batch_parallel", False)
            or count * self._comp_cost_ns < PARALLEL_MIN_NS
        ):
            return pages(data, pos, count, 1)  # type: ignore[no-any-return]
        return _split_call("w", comp, count, lambda threads: pages(data, pos, count, threads))

    @staticmethod
    def _compress_pages(
        comp: Codec, data: WriteData, pos: int, count: int, threads: int
    ) -> tuple[list[int], Sequence[Buffer]]:
        """`compress_run` through a batch codec's ``compress_pages``."""
        same = _same_pages(data, pos, count)
        return same, _without(comp.compress_pages(data, pos, count, threads), same)  # type: ignore[attr-defined]

    async def _compress_offloaded(
        self, comp: Codec, data: WriteData, pos: int, count: int
    ) -> tuple[list[int], Sequence[Buffer]]:
        """`compress_run` of the batch, in two halves on worker threads (a
        batch codec: one worker thread, the codec's two threads under it)."""
        if getattr(comp, "batch_compress", False):
            return await trio.to_thread.run_sync(
                self._compress_pages, comp, data, pos, count, max(_CPUS, 2)
            )
        half = (count + 1) // 2
        compress = comp.compress
        parts: list[tuple[list[int], list[bytes]]] = [([], []), ([], [])]

        async def run(slot: int, start: int, n: int) -> None:
            parts[slot] = await trio.to_thread.run_sync(
                compress_run, compress, data, pos + (start << PAGE_SHIFT), n
            )

        async with trio.open_nursery() as nursery:
            nursery.start_soon(run, 0, 0, half)
            if half < count:
                nursery.start_soon(run, 1, half, count - half)
        return parts[0][0] + [half + k for k in parts[1][0]], parts[0][1] + parts[1][1]

    def _store(
        self, table: SlotTable, pool: ZsPool, idx: int, page: WriteData, compressed: Buffer | None
    ) -> None:
        """``zram_write_page`` for a slot the caller holds exclusively.

        ``compressed`` is the primary codec's output when the caller already
        compressed the page (offloaded path); None means "work it out here".
        The old content is freed only once the new one is safely allocated,
        so a refused store (ENOMEM) leaves the slot as it was.
        """
        st = self.stats
        if compressed is None:
            word = _words_same(page)
            if word is not None:
                self._slot_free(table, pool, idx)
                table.handle[idx] = word
                # mark_slot_accessed() after a successful write: stamp ac_time.
                table.attr[idx] |= SAME | self._actime
                st.same_pages += 1
                st.pages_stored += 1
                return
            comp = self.comps[ZRAM_PRIMARY_COMP]
            assert comp is not None
            compressed = comp.compress(page)
        comp_len = len(compressed)
        huge = comp_len >= self.huge_class_size
        if huge:
            comp_len = PAGE_SIZE
            compressed = page
        handle = pool.malloc(comp_len, idx)
        total = pool.total_pages()
        if total > st.max_used_pages:
            st.max_used_pages = total
        if self.limit_pages and total > self.limit_pages:
            pool.free(handle)
            raise ZramError(errno.ENOMEM, "mem_limit reached")
        pool.write(handle, compressed)
        self._slot_free(table, pool, idx)
        table.handle[idx] = handle
        a = table.attr[idx] | comp_len | self._actime
        if huge:
            a |= HUGE
            st.huge_pages += 1
            st.huge_pages_since += 1
        table.attr[idx] = a
        st.compr_data_size += comp_len
        st.pages_stored += 1

    def _slot_free(self, table: SlotTable, pool: ZsPool, idx: int) -> None:
        """``slot_free``: release whatever the slot holds; caller holds its lock."""
        a = table.attr[idx]
        keep = a & LOCK_MASK
        if not a & (SIZE_MASK | SAME | WB):
            table.attr[idx] = keep
            return
        st = self.stats
        if a & HUGE and not a & WB:  # a compressed-writeback slot keeps HUGE, not the count
            st.huge_pages -= 1
        if a & WB:
            self._release_backing_block(table.handle[idx])
        elif a & SAME:
            st.same_pages -= 1
        else:
            pool.free(table.handle[idx])
            st.compr_data_size -= a & SIZE_MASK
        st.pages_stored -= 1
        table.handle[idx] = 0
        table.attr[idx] = keep

    def _release_backing_block(self, block: int) -> None:
        postprocess.release_backing_block(self, block)

    async def discard(self, offset: int, length: int, *, zero_edges: bool = True) -> int:
        """``zram_bio_discard`` (loop's PUNCH_HOLE and ZERO_RANGE).

        Frees every whole page in the range, counting each in ``notify_free``.
        The kernel leaves partial pages at the edges alone (block discard makes
        no promise about them); a *file* that has a hole punched must read
        zeros there, so with ``zero_edges`` the partial edges are zero-filled by
        read-modify-write.  Returns the number of whole pages freed.
        """
        if offset < 0 or length < 0:
            raise einval("negative offset or length")
        async with self.dev_lock.read():
            end = min(offset + length, self.disksize)
            if offset >= end:
                return 0
            table, pool = self._require_init()
            self._actime = self.clock() << ACTIME_SHIFT
            t0 = time.perf_counter_ns()
            self.bstat.start(t0)
            try:
                first = (offset + PAGE_SIZE - 1) >> PAGE_SHIFT
                last = end >> PAGE_SHIFT  # exclusive
                # Whole pages first: at mem_limit the edges' read-modify-write
                # may need memory that only these frees give back.
                # notify_free counts every whole page in range, as the kernel's
                # does; slots with nothing stored and no lock holder are skipped
                # without touching (or faulting in) their table words.
                freed = max(last - first, 0)
                self.stats.notify_free += freed
                locks = table.locks
                attr = table.attr
                busy = SIZE_MASK | SAME | WB | LOCK_MASK
                for lo, hi in table.touched(first, last):
                    for idx in range(lo, hi):
                        if not attr[idx] & busy:
                            continue
                        await locks.lock(idx)
                        try:
                            self._slot_free(table, pool, idx)
                        finally:
                            locks.unlock(idx)
                    await trio.lowlevel.checkpoint()
                # An unallocated edge already reads as zeros: storing a zero
                # page there would make a discard grow orig_data_size.
                if zero_edges:
                    if offset & (PAGE_SIZE - 1) and table.allocated(offset >> PAGE_SHIFT):
                        stop = min(end, (offset | (PAGE_SIZE - 1)) + 1)
                        await self._write_partial(
                            table, pool, offset >> PAGE_SHIFT, offset & (PAGE_SIZE - 1),
                            bytes(stop - offset),
                        )  # fmt: skip
                    if (
                        end & (PAGE_SIZE - 1)
                        and (end >> PAGE_SHIFT) >= first
                        and table.allocated(end >> PAGE_SHIFT)
                    ):
                        await self._write_partial(
                            table, pool, end >> PAGE_SHIFT, 0, bytes(end & (PAGE_SIZE - 1))
                        )
                return freed
            finally:
                t1 = time.perf_counter_ns()
                b = self.bstat
                b.discard_ticks += b.done(t1, t0)
                b.discard_ios += 1
                b.discard_sectors += (end - offset) >> SECTOR_SHIFT

    def slot_free_notify(self, idx: int) -> bool:
        """``zram_slot_free_notify`` (swap's hook): try-lock, else count a miss."""
        table = self.table
        if table is None or self.pool is None or not 0 <= idx < table.npages:
            return False
        if not table.locks.try_lock(idx):
            self.stats.miss_free += 1
            return False
        try:
            self._slot_free(table, self.pool, idx)
        finally:
            table.locks.unlock(idx)
        self.stats.notify_free += 1
        return True

    def flush(self) -> None:
        """fsync on the image: nothing is volatile; counted like a flush bio."""
        self.bstat.flush_ios += 1

    # ------------------------------------------------------- background work

    async def mark_idle(self, cutoff: int) -> None:
        """``mark_idle``: set IDLE on slots not accessed since ``cutoff`` (0 = all)."""
        table, _ = self._require_init()
        attr = table.attr
        locks = table.locks
        for base, stop in table.touched(0, table.npages):
            for idx in range(base, stop):
                a = attr[idx]
                if not a & (SIZE_MASK | SAME | WB) or a & (WB | SAME):
                    continue
                await locks.lock(idx)
                try:
                    a = attr[idx]
                    if not cutoff or (a >> ACTIME_SHIFT) < cutoff:
                        attr[idx] = a | IDLE
                    else:
                        attr[idx] = a & ~IDLE
                finally:
                    locks.unlock(idx)
            await trio.lowlevel.checkpoint()

    # ----------------------------------------------------- attribute: show

    def show_disksize(self) -> bytes:
        return b"%d\n" % self.disksize

    def show_initstate(self) -> bytes:
        return b"%d\n" % int(self.initialized)

    def show_comp_algorithm(self) -> bytes:
        return self._available(self.comp_algs[ZRAM_PRIMARY_COMP])

    def show_recomp_algorithm(self) -> bytes:
        out = b""
        for prio in range(ZRAM_SECONDARY_COMP, ZRAM_MAX_COMPS):
            alg = self.comp_algs[prio]
            if alg is not None:
                out += b"#%d: " % prio + self._available(alg)
        return out

    @staticmethod
    def _available(selected: str | None) -> bytes:
        """``zcomp_available_show``: ``lz4 [zstd] ...`` with the trailing space."""
        parts = [f"[{n}] " if n == selected else f"{n} " for n in BACKEND_NAMES]
        return ("".join(parts) + "\n").encode()

    def show_mm_stat(self) -> bytes:
        st = self.stats
        pool_pages = self.total_pages()
        fields = (
            st.pages_stored << PAGE_SHIFT,
            st.compr_data_size,
            pool_pages << PAGE_SHIFT,
            self.limit_pages << PAGE_SHIFT,
            st.max_used_pages << PAGE_SHIFT,
            st.same_pages,
            self.pool.pages_compacted if self.pool is not None else 0,
            st.huge_pages,
            st.huge_pages_since,
        )
        return (" ".join(f"{v:8d}" for v in fields) + "\n").encode()

    def show_io_stat(self) -> bytes:
        st = self.stats
        # "%8llu %8llu 0 %8llu\n": invalid_io is a literal 0 since the 2023 rework.
        return b"%8d %8d 0 %8d\n" % (st.failed_reads, st.failed_writes, st.notify_free)

    def show_debug_stat(self) -> bytes:
        return b"version: %d\n%d %8d\n" % (1, 0, self.stats.miss_free)

    def show_stat(self) -> bytes:
        return self.bstat.format()

    def show_block_state(self) -> bytes:
        """debugfs ``block_state``: one line per allocated slot."""
        table, _ = self._require_init()
        attr = table.attr
        lines: list[str] = []
        for base, stop in table.touched(0, table.npages):
            for idx in range(base, stop):
                a = attr[idx]
                if not a & (SIZE_MASK | SAME | WB):
                    continue
                flags = "".join(
                    c if a & bit else "."
                    for c, bit in (("s", SAME), ("w", WB), ("h", HUGE), ("i", IDLE),
                                   ("r", PRIO_MASK), ("n", INCOMPRESSIBLE))
                )  # fmt: skip
                lines.append(f"{idx:12d} {a >> ACTIME_SHIFT:12d}.{0:06d} {flags}\n")
        return "".join(lines).encode()

    def show_lock_stat(self) -> bytes:
        """debugfs ``lock_stat`` (a zramfs extension; the kernel has no such file).

        A header line, then one row per lock: ``entry`` (all slot entry locks
        of the current table: zeros before ``disksize``, restarted at each
        init) and ``dev_lock`` (for the device's lifetime).  Columns are the
        `entrylock.LockStats` fields, then ``queued``: tasks waiting right now.
        """
        dev_locks = self.dev_lock
        rows: list[tuple[str, dict[str, int], int]] = []
        if self.table is not None:
            locks = self.table.locks
            rows.append(("entry", locks.stats.as_dict(), locks.queued_tasks))
        else:
            rows.append(("entry", LockStats().as_dict(), 0))
        rows.append(("dev_lock", dev_locks.stats.as_dict(), dev_locks.queued_tasks))
        names = [*rows[0][1], "queued"]
        out = [f"{'lock':<8s}" + "".join(f" {n:>15s}" for n in names) + "\n"]
        for name, counters, queued in rows:
            values = [*counters.values(), queued]
            out.append(f"{name:<8s}" + "".join(f" {v:15d}" for v in values) + "\n")
        return "".join(out).encode()

    def show_classes(self) -> bytes:
        """debugfs ``zsmalloc/<pool>/classes``."""
        _, pool = self._require_init()
        return pool.format_classes().encode()

    # ----------------------------------------------------- attribute: store

    async def store_disksize(self, buf: bytes) -> None:
        size = kparse.parse_disksize(buf)  # EINVAL for 0 comes before EBUSY
        await self.init_device(size)

    async def store_reset(self, buf: bytes) -> None:
        if not kparse.kstrtou16(buf):
            raise einval("reset takes a non-zero number")
        await self.reset()

    async def store_compact(self, buf: bytes) -> None:
        async with self.dev_lock.read():
            _, pool = self._require_init()
            pool.compact()

    async def store_mem_limit(self, buf: bytes) -> None:
        limit = kparse.parse_mem_limit(buf)
        # The kernel takes dev_lock for write here; our I/O holds it shared,
        # so that would stall every request behind a running recompress.  One
        # word written on the trio thread is atomic for every reader anyway.
        self.limit_pages = kparse.page_align(limit) >> PAGE_SHIFT

    async def store_mem_used_max(self, buf: bytes) -> None:
        try:
            val = kparse.kstrtoul(buf)
        except ZramError:
            val = -1
        if val != 0:
            raise einval("mem_used_max only accepts 0")
        async with self.dev_lock.read():
            if self.initialized:
                self.stats.max_used_pages = self.total_pages()

    async def store_idle(self, buf: bytes) -> None:
        # cutoff 0 means "all"; otherwise now - age, which may be <= 0 for an
        # age older than boot: then no slot is older and every mark is cleared
        # (ktime_sub is signed in the kernel too).
        cutoff = 0
        if not kparse.sysfs_streq(buf, b"all"):
            try:
                age = kparse.kstrtouint(buf, 0)  # u32 age_sec: ERANGE -> EINVAL
            except ZramError:
                raise einval("idle takes 'all' or an age in seconds") from None
            cutoff = self.clock() - age
        async with self.dev_lock.read():
            self._require_init()
            await self.mark_idle(cutoff)

    async def store_comp_algorithm(self, buf: bytes) -> None:
        await self._set_algorithm(ZRAM_PRIMARY_COMP, buf)

    async def _set_algorithm(self, prio: int, buf: bytes) -> None:
        """``__comp_algorithm_store``: E2BIG, then EINVAL (unknown), then EBUSY."""
        name = kparse.parse_algo_name(buf)
        if name not in BACKEND_NAMES:
            raise einval(f"unknown compression algorithm {name!r}")
        if self.initialized:  # before queueing for the lock: see init_device
            raise ZramError(errno.EBUSY, "cannot change algorithm of an initialized device")
        async with self.dev_lock.write():
            if self.initialized:
                raise ZramError(errno.EBUSY, "cannot change algorithm of an initialized device")
            self.comp_algs[prio] = name

    async def store_recomp_algorithm(self, buf: bytes) -> None:
        alg: bytes | None = None
        prio = ZRAM_SECONDARY_COMP
        for key, val in kparse.next_args(buf):
            if not val:
                raise einval(f"{key!r} needs a value")
            if key == b"algo":
                alg = val
            elif key == b"priority":
                prio = kparse.kstrtoint(val)
        if alg is None:
            raise einval("algo= is required")
        if not ZRAM_SECONDARY_COMP <= prio < ZRAM_MAX_COMPS:
            raise einval("priority must be 1..3")
        await self._set_algorithm(prio, alg)

    async def store_algorithm_params(self, buf: bytes) -> None:
        prio = ZRAM_PRIMARY_COMP
        level: int | None = None
        winbits: int | None = None
        algo: bytes | None = None
        dict_path: bytes | None = None
        for key, val in kparse.next_args(buf):
            if not val:
                raise einval(f"{key!r} needs a value")
            if key == b"priority":
                prio = kparse.kstrtoint(val)
            elif key == b"level":
                level = kparse.kstrtoint(val)
            elif key == b"algo":
                algo = val
            elif key == b"dict":
                dict_path = val
            elif key == b"deflate.winbits":
                winbits = kparse.kstrtoint(val)
        if algo is not None:
            name = algo.decode("utf-8", "surrogateescape")
            prio = next((p for p, a in enumerate(self.comp_algs) if a == name), -1)
        if not ZRAM_PRIMARY_COMP <= prio < ZRAM_MAX_COMPS:
            raise einval("no such priority / algorithm")
        # Read on a worker thread: a path inside this very mount is served by
        # the trio thread, which must not be blocked waiting for itself.
        dictionary = None
        if dict_path is not None:
            dictionary = await trio.to_thread.run_sync(read_dictionary, dict_path)
        # Validated when the compressor is created (next disksize write), as
        # the kernel does; the store itself replaces this priority's params.
        self.params[prio] = AlgoParams(level=level, dictionary=dictionary, deflate_winbits=winbits)

    # recompress, writeback, backing_dev, bd_stat and the writeback knobs are
    # ``show_*`` / ``store_*`` functions of postprocess.py taking the device;
    # `attrs.ATTRS` declares them directly.


def read_dictionary(path: bytes) -> bytes:
    """Read a ``dict=`` file now: a regular file, at most `MAX_DICT_SIZE` bytes.

    Opened non-blocking and checked to be a regular file before reading, so a
    FIFO, a device or a directory cannot hang or flood the daemon: EINVAL, as
    the kernel answers any ``kernel_read_file_from_path`` failure.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOCTTY)
    except (OSError, ValueError) as e:
        raise einval(f"dict: {e}") from None
    try:
        st = os.fstat(fd)
        if not stat_mod.S_ISREG(st.st_mode):
            raise einval("dict: not a regular file")
        if _on_zramfs(st.st_dev):  # the image or an attribute of a zramfs mount
            raise einval("dict: a file inside a zramfs mount")
        if st.st_size > MAX_DICT_SIZE:
            raise einval(f"dict: larger than {MAX_DICT_SIZE} bytes")
        chunks = []
        total = 0
        while True:
            chunk = os.read(fd, 1 << 20)
            if not chunk:
                break
            total += len(chunk)
            if total > MAX_DICT_SIZE:
                raise einval(f"dict: larger than {MAX_DICT_SIZE} bytes")
            chunks.append(chunk)
        return b"".join(chunks)
    except OSError as e:
        raise einval(f"dict: {e}") from None
    finally:
        os.close(fd)
