"""zsmalloc in userspace: the kernel's size-class allocator, holding real bytes.

This is the memory allocator behind the userspace zram device.  Its
`ZsPool.total_pages` is what mm_stat reports as ``mem_used_total``, and the
product promise is that the daemon's resident memory really is that number.
So the model is not a counter simulation: every object lives in anonymous
memory that the pool maps, faults in and gives back exactly when the kernel's
zsmalloc would allocate or free the corresponding pages.

What is mirrored from ``mm/zsmalloc.c`` (6.3+, CONFIG_ZSMALLOC_CHAIN_SIZE):

* Size classes.  255 classes of ``32 + 16*i`` bytes (``ZS_MIN_ALLOC_SIZE``,
  ``ZS_SIZE_CLASS_DELTA = PAGE_SIZE >> CLASS_BITS``).  Each class gets the
  zspage chain length that wastes the fewest tail bytes
  (`calculate_zspage_chain_size`), and, walking from the largest class down,
  a class whose ``(pages_per_zspage, objs_per_zspage)`` equals the previously
  created one is merged into it: the objects then use the larger slot, but
  pages are shared.  Classes with one object in one page are "huge"
  (incompressible pages live there) and have no room for a header.
* ``zs_malloc``: the caller's size plus ``ZS_HANDLE_SIZE`` picks the class;
  the zspage is the most recently inserted one of the fullest non-full
  fullness group (``find_get_zspage``), else a new zspage.  Zspages move
  between the twelve fullness groups (0%, 10%...90%, 99%, 100%) exactly when
  ``get_fullness_group`` changes, and an empty zspage is freed at once.
* Objects: the first 8 bytes of a non-huge object are its header.  The kernel
  stores the handle there with ``OBJ_ALLOCATED_TAG``; we store the caller's
  *owner* (the zram slot index) as ``owner << 1 | 1``.  A free object's
  header is the ``link_free`` of the per-zspage LIFO free list with the tag
  bit clear.  Huge objects keep the owner in per-zspage metadata, as the
  kernel keeps the handle in ``page->index``.
* ``zs_compact`` / ``__zs_compact``: classes from largest to smallest, the
  sparsest zspage migrates into the fullest ones until ``zs_can_compact``
  says no whole zspage can be gained; freed pages add to ``pages_compacted``.
* The debugfs ``classes`` table (`ZsPool.format_classes`).

Where the bytes live: per class, an arena of anonymous private ``mmap``
segments of 2-4 MiB, each a power-of-two number of zspages (so zspages never
straddle segments and slot -> segment is a shift).  A zspage is
``pages_per_zspage`` contiguous pages of a segment, so objects may straddle
page boundaries freely (the kernel needs ``__zs_map_object``'s bounce buffer
for that; a contiguous mapping does not).  Allocating a zspage makes all of
its pages resident at once (``MADV_POPULATE_WRITE``, or one write per page on
kernels before 5.14), as the kernel's ``alloc_page()`` calls do; freeing it
``madvise(MADV_DONTNEED)``s its range, so the pages go back to the system and
come back zero-filled.  Free zspage slots are reused lowest-first (a heap),
keeping the arena dense; a segment that becomes completely empty is unmapped,
except that one empty segment per class is kept mapped (it holds no resident
pages) so a class oscillating around a segment boundary does not pay an
mmap/munmap pair per zspage.

Per-object state is only the object's own bytes.  Per-zspage state is a few
list slots (inuse count, free-list head, huge owner) and a dict entry in its
fullness group while partially used: ~50 bytes per zspage of >= 4 KiB, about
1 % (the kernel's ``struct zspage`` is likewise outside ``pages_allocated``).

Handles are opaque nonzero ints < 2**63 that encode the location, so decoding
is O(1) arithmetic::

    bit  0       tag (always 1, like OBJ_ALLOCATED_TAG)
    bits 1..22   byte offset of the object's *data* within its segment
    bits 23..62  pool-wide segment number

A read is then one shift, one mask and one slice; the class, zspage slot and
object index that malloc/free need follow from the segment's table entry and
one division (``offset // zspage_bytes``).  The kernel's handle encodes
``<PFN, obj_idx>`` for the same reason: no lookup structure per object.

Because compaction moves objects, the pool calls ``on_move(owner, new_handle)``
for every moved object (the kernel instead rewrites the handle's indirection
word; our handles *are* the location, so the owner must be told).

The pool is single-threaded (trio runs the device core on one thread); it
takes no locks.  Views returned by `ZsPool.read` point into the arena and are
valid only until the next malloc/free/compact/close.
"""

from __future__ import annotations

import errno
import heapq
import itertools
import mmap
import operator
import os
from array import array as _array
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from zramfs.errors import ZramError

__all__ = [
    "PAGE_SIZE",
    "PAGE_SHIFT",
    "ZS_HANDLE_SIZE",
    "ZS_MIN_ALLOC_SIZE",
    "ZS_MAX_ALLOC_SIZE",
    "ZS_SIZE_CLASS_DELTA",
    "ZS_SIZE_CLASSES",
    "DEFAULT_CHAIN_SIZE",
    "MIN_CHAIN_SIZE",
    "MAX_CHAIN_SIZE",
    "OWNER_MAX",
    "HANDLE_SEG_SHIFT",
    "HANDLE_OFF_MASK",
    "SizeClass",
    "ClassStat",
    "ZsPool",
    "calculate_zspage_chain_size",
    "get_size_class_index",
    "get_fullness_group",
    "build_size_classes",
    "huge_class_size_for",
]

PAGE_SHIFT = 12
PAGE_SIZE = 1 << PAGE_SHIFT

#: ``sizeof(unsigned long)``: zs_malloc() adds it to every request before the
#: class lookup, because the object header keeps the handle (here: the owner).
ZS_HANDLE_SIZE = 8
#: ``MAX(32, ZS_MAX_PAGES_PER_ZSPAGE << PAGE_SHIFT >> OBJ_INDEX_BITS)`` is 32
#: on every 64-bit configuration.
ZS_MIN_ALLOC_SIZE = 32
ZS_MAX_ALLOC_SIZE = PAGE_SIZE
CLASS_BITS = 8
ZS_SIZE_CLASS_DELTA = PAGE_SIZE >> CLASS_BITS  # 16
ZS_SIZE_CLASSES = -(-(ZS_MAX_ALLOC_SIZE - ZS_MIN_ALLOC_SIZE) // ZS_SIZE_CLASS_DELTA) + 1  # 255

#: CONFIG_ZSMALLOC_CHAIN_SIZE: default 8, Kconfig range 4..16.
DEFAULT_CHAIN_SIZE = 8
MIN_CHAIN_SIZE = 4
MAX_CHAIN_SIZE = 16

# enum fullness_group
ZS_INUSE_RATIO_0 = 0
ZS_INUSE_RATIO_10 = 1
ZS_INUSE_RATIO_99 = 10
ZS_INUSE_RATIO_100 = 11
NR_FULLNESS_GROUPS = 12

#: Owners are stored as ``owner << 1 | 1`` in a u64 header.
OWNER_MAX = (1 << 63) - 1

# Handle layout (see module docstring).
_H_OFF_BITS = 22
_H_OFF_MASK = (1 << _H_OFF_BITS) - 1
_H_SEG_SHIFT = 1 + _H_OFF_BITS
_H_SEG_LIMIT = 1 << (63 - _H_SEG_SHIFT)
# Offsets are multiples of 8 (class sizes of 16, header of 8), so
# ``handle >> 4`` is the data's u64-word offset.
_H_WORD_MASK = _H_OFF_MASK >> 3
#: Public names of the handle layout, for `ZsPool.segment_views` users.
HANDLE_SEG_SHIFT = _H_SEG_SHIFT
HANDLE_OFF_MASK = _H_OFF_MASK

# Arena segments: 2 MiB <= segment < 4 MiB, a power-of-two number of zspages
# (so offsets fit the handle's 22 bits).
_SEGMENT_MIN_BYTES = 2 << 20

_groupby = itertools.groupby
_repeat = itertools.repeat
_eq = operator.eq
_add = operator.add
_or = operator.or_
_lshift = operator.lshift
_Buf = bytes | bytearray | memoryview
# store_many: runs of at least this many consecutive new objects in one
# zspage are written with whole-run maps (measured break-even: ~16).
_VECTOR_MIN = 24
_heappush = heapq.heappush
_heappop = heapq.heappop
_MADV_DONTNEED = mmap.MADV_DONTNEED
_MADV_NOHUGEPAGE: int | None = getattr(mmap, "MADV_NOHUGEPAGE", None)
# MADV_POPULATE_WRITE (Linux 5.14; the mmap module has no constant for it yet).
_MADV_POPULATE_WRITE: int = getattr(mmap, "MADV_POPULATE_WRITE", 23)
_populate_write = True  # cleared on the first EINVAL (older kernel)


def _load_fill() -> Callable[..., int] | None:
    """The C version of `ZsPool._fill`'s loop (``zramfs._zpages.zs_fill``),
    unless it is not built or ``ZRAMFS_NO_ACCEL`` is set."""
    if os.environ.get("ZRAMFS_NO_ACCEL"):
        return None
    try:
        from zramfs._zpages import zs_fill
    except ImportError:
        return None
    return zs_fill


_zs_fill = _load_fill()


def _load_store_batch() -> Callable[..., tuple[int, int, int]] | None:
    """``zramfs._zpages.zs_store_batch`` (`ZsPool.store_batch`), when `_zs_fill` is there."""
    if _zs_fill is None:
        return None
    from zramfs._zpages import zs_store_batch

    return zs_store_batch


_zs_store_batch = _load_store_batch()


def _load_alloc_zspages() -> Callable[..., list[tuple[int, int]] | int] | None:
    """``zramfs._zpages.zs_alloc_zspages`` (`ZsPool._alloc_zspages`), when `_zs_fill` is there."""
    if _zs_fill is None:
        return None
    from zramfs._zpages import zs_alloc_zspages

    return zs_alloc_zspages


_zs_alloc_zspages = _load_alloc_zspages()


def _dontneed(mm: mmap.mmap, offset: int, length: int) -> None:
    """``madvise(MADV_DONTNEED)``, also when the daemon runs under ``mlockall``.

    ``zramfs mount --mlock`` locks all memory (``MCL_FUTURE|MCL_ONFAULT``) so
    the daemon can never be swapped out through itself; the kernel refuses
    DONTNEED on such ``VM_LOCKED`` ranges with EINVAL.  There the range is
    unlocked, dropped and locked again *on fault* (``mlock2(MLOCK_ONFAULT)``):
    the pages still go back to the system, and the next ones are locked too.
    """
    try:
        mm.madvise(_MADV_DONTNEED, offset, length)
    except OSError as e:
        if e.errno != errno.EINVAL:
            raise
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        anchor = ctypes.c_char.from_buffer(mm)
        addr = ctypes.c_void_p(ctypes.addressof(anchor) + offset)
        del anchor
        size = ctypes.c_size_t(length)
        if libc.munlock(addr, size) != 0:
            raise OSError(ctypes.get_errno(), "munlock") from e
        mm.madvise(_MADV_DONTNEED, offset, length)
        libc.mlock2(addr, size, 1)  # MLOCK_ONFAULT; best effort (kernel >= 4.4)


# A stand-in for an unmapped segment: any access through a stale handle fails
# (writes: read-only; header probes: IndexError) instead of touching memory.
_NO_SEGMENT = memoryview(b"")
_NO_WORDS = _NO_SEGMENT.cast("Q")

# ---------------------------------------------------------------------------
# The class table (zs_create_pool)
# ---------------------------------------------------------------------------


def calculate_zspage_chain_size(class_size: int, chain_size: int = DEFAULT_CHAIN_SIZE) -> int:
    """Pages per zspage for ``class_size``: the chain length wasting least.

    Mirrors the kernel: a power-of-two size tiles a page exactly, so one page;
    otherwise the ``i`` in ``1..chain_size`` minimising the tail waste
    ``(i * PAGE_SIZE) % class_size``, the first (shortest) minimum winning
    because the kernel compares with a strict ``<``.  (Before 6.3 the kernel
    maximised the *used percentage* instead; for chain 4 both agree.)
    """
    if class_size & (class_size - 1) == 0:
        return 1
    best = 1
    min_waste = 1 << 62
    for i in range(1, chain_size + 1):
        waste = (i * PAGE_SIZE) % class_size
        if waste < min_waste:
            min_waste = waste
            best = i
    return best


def get_size_class_index(size: int) -> int:
    """The kernel's ``get_size_class_index`` (``size`` includes the handle)."""
    idx = 0
    if size > ZS_MIN_ALLOC_SIZE:
        idx = -(-(size - ZS_MIN_ALLOC_SIZE) // ZS_SIZE_CLASS_DELTA)
    return min(ZS_SIZE_CLASSES - 1, idx)


def get_fullness_group(inuse: int, objs_per_zspage: int) -> int:
    """``get_fullness_group``: 0 empty, 11 full, else ``100*inuse//objs//10 + 1``.

    The ``+ 1`` is the kernel's fix for integer division: one object out of
    127 is a ratio of 0 but belongs in the 10% group, not the empty one.
    """
    if inuse == 0:
        return ZS_INUSE_RATIO_0
    if inuse == objs_per_zspage:
        return ZS_INUSE_RATIO_100
    return (100 * inuse // objs_per_zspage) // 10 + 1


@dataclass(frozen=True, slots=True)
class SizeClass:
    """One *distinct* size class (``struct size_class``) after merging.

    ``index`` is the kernel's ``class->index``: the largest class index that
    maps here, because merged classes point at the previously created,
    larger one.  ``size`` is that class's slot size.
    """

    index: int
    size: int
    pages_per_zspage: int
    objs_per_zspage: int

    @property
    def huge(self) -> bool:
        """One object per one-page zspage: no room for a header."""
        return self.pages_per_zspage == 1 and self.objs_per_zspage == 1


def build_size_classes(
    chain_size: int = DEFAULT_CHAIN_SIZE,
) -> tuple[tuple[SizeClass, ...], tuple[int, ...], int]:
    """Port of ``zs_create_pool``'s class loop.

    Returns ``(classes, class_of_index, huge_class_size)``: the distinct classes
    in ascending index order, for each of the 255 class indexes the index of the
    distinct class it was merged into, and ``zs_huge_class_size()``.

    The walk goes from the largest class down so that a merged class always
    points to a *larger* slot (objects must fit).  ``huge_class_size`` is taken
    from the first class met that has both more than one page and more than one
    object per zspage (the kernel's condition is ``&&``, as here), minus
    ``ZS_HANDLE_SIZE - 1``: zs_malloc() adds the handle size before the class
    lookup, so a request that small may still land in a huge class, and zram
    compares its compressed length against this threshold.
    """
    if not MIN_CHAIN_SIZE <= chain_size <= MAX_CHAIN_SIZE:
        raise ValueError(f"chain_size must be {MIN_CHAIN_SIZE}..{MAX_CHAIN_SIZE}")
    classes: list[SizeClass] = []
    class_of_index = [0] * ZS_SIZE_CLASSES
    huge_class_size = 0
    prev: SizeClass | None = None
    for i in range(ZS_SIZE_CLASSES - 1, -1, -1):
        size = min(ZS_MIN_ALLOC_SIZE + i * ZS_SIZE_CLASS_DELTA, ZS_MAX_ALLOC_SIZE)
        ppz = calculate_zspage_chain_size(size, chain_size)
        objs = ppz * PAGE_SIZE // size
        if ppz != 1 and objs != 1 and not huge_class_size:
            huge_class_size = size - (ZS_HANDLE_SIZE - 1)
        if prev is not None and prev.pages_per_zspage == ppz and prev.objs_per_zspage == objs:
            class_of_index[i] = prev.index
            continue
        prev = SizeClass(i, size, ppz, objs)
        classes.append(prev)
        class_of_index[i] = i
    classes.reverse()
    return tuple(classes), tuple(class_of_index), huge_class_size


def huge_class_size_for(chain_size: int = DEFAULT_CHAIN_SIZE) -> int:
    """``zs_huge_class_size()``: 3257 / 3625 / 3833 for chain 4 / 8 / 16.

    zram stores a page whose compressed length is ``>=`` this raw (huge).
    """
    return build_size_classes(chain_size)[2]


# ---------------------------------------------------------------------------
# Statistics rows (debugfs zsmalloc/<pool>/classes)
# ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ClassStat:
    """One row of ``/sys/kernel/debug/zsmalloc/<pool>/classes``.

    ``fullness`` holds the zspage counts of the groups 10%, 20%, ... 90%, 99%,
    100% (eleven columns, ``ZS_INUSE_RATIO_10..ZS_INUSE_RATIO_100``).
    ``pages_used`` is computed as the kernel does,
    ``obj_allocated / objs_per_zspage * pages_per_zspage``; ``freeable`` is
    ``zs_can_compact()``.
    """

    index: int
    size: int
    fullness: tuple[int, ...]
    obj_allocated: int
    obj_used: int
    pages_used: int
    pages_per_zspage: int
    objs_per_zspage: int
    freeable: int


# seq_printf(" %5s %5s %9s x11 %13s %10s %10s %16s %8s\n", ...) of the header.
_CLASSES_HEADER = (
    f" {'class':>5} {'size':>5} "
    + "".join(f"{h:>9} " for h in ("10%", "20%", "30%", "40%", "50%", "60%", "70%", "80%",
                                   "90%", "99%", "100%"))
    + f"{'obj_allocated':>13} {'obj_used':>10} {'pages_used':>10} "
    + f"{'pages_per_zspage':>16} {'freeable':>8}\n"
)  # fmt: skip


# ---------------------------------------------------------------------------
# The pool
# ---------------------------------------------------------------------------


class _Class:
    """Runtime state of one distinct size class: its arena and zspage lists.

    Zspages are identified by their *slot* in the class's arena: slot ``s``
    is zspage ``s & smask`` of the class's segment ``s >> shift``.  Per-slot
    lists:

    ``inuse``    objects allocated in the zspage (0 = slot not in use)
    ``freeobj``  head of the zspage's free-object list (``zspage->freeobj``),
                 as the object's u64-word offset in its segment rather than
                 an index, so no multiplication is needed to reach it
    ``howner``   owner of the single object of a huge zspage (``page->index``)

    ``groups[g]`` is fullness group ``g`` as an insertion-ordered dict of slots
    (the kernel's ``fullness_list[g]``; ``list_add`` puts new zspages first, so
    the *last* dict entry is the kernel's ``list_first_entry``, and
    ``popitem()`` takes it in O(1)).  Groups 0% and 100% are never stored:
    empty zspages are freed at once and full ones are never looked up, so
    their count is derived.  Bit ``g`` of ``mask`` says whether ``groups[g]``
    is non-empty, making "fullest non-full group" a ``bit_length()``.
    """

    __slots__ = (
        "spec", "index", "size", "ppz", "objs", "huge", "cap", "hdr", "wsize",
        "whdr", "zbytes", "zwords",
        "shift", "smask", "seg_bytes", "fg", "groups", "mask", "inuse",
        "freeobj", "howner", "segs", "qvs", "bvs", "gseg", "hbase", "seg_live",
        "free_slots", "spare", "nzspages", "allocated", "used",
    )  # fmt: skip

    def __init__(self, spec: SizeClass) -> None:
        self.spec = spec
        self.index = spec.index
        self.size = spec.size
        self.ppz = spec.pages_per_zspage
        self.objs = spec.objs_per_zspage
        self.huge = spec.huge
        # Huge objects have no header, so the whole slot is data.
        self.hdr = 0 if self.huge else ZS_HANDLE_SIZE
        self.cap = self.size - self.hdr
        self.wsize = self.size >> 3  # class sizes are multiples of 16
        self.whdr = self.hdr >> 3
        self.zbytes = self.ppz * PAGE_SIZE
        self.zwords = self.zbytes >> 3
        shift = 0
        while (self.zbytes << shift) < _SEGMENT_MIN_BYTES:
            shift += 1
        self.shift = shift
        self.smask = (1 << shift) - 1
        self.seg_bytes = self.zbytes << shift
        assert self.seg_bytes <= _H_OFF_MASK + 1
        self.fg = [get_fullness_group(n, self.objs) for n in range(self.objs + 1)]
        self.reset()

    def reset(self) -> None:
        self.groups: list[dict[int, None]] = [{} for _ in range(NR_FULLNESS_GROUPS)]
        self.mask = 0
        self.inuse: list[int] = []
        self.freeobj: list[int] = []
        self.howner: list[int] = []
        self.segs: list[mmap.mmap | None] = []
        self.qvs: list[memoryview] = []  # segments as u64 words (headers)
        self.bvs: list[memoryview] = []  # segments as bytes (object data)
        self.gseg: list[int] = []  # class segment -> pool-wide segment number
        # class segment -> handle of offset 0 (segment number, header, tag);
        # a handle is hbase[si] + 2 * object_offset.
        self.hbase: list[int] = []
        self.seg_live: list[int] = []
        self.free_slots: list[int] = []
        self.spare = -1
        self.nzspages = 0
        self.allocated = 0  # ZS_OBJS_ALLOCATED
        self.used = 0  # ZS_OBJS_INUSE


class ZsPool:
    """A zsmalloc pool whose objects live in real, accounted memory.

    ``chain_size`` is CONFIG_ZSMALLOC_CHAIN_SIZE (4..16).  ``on_move(owner,
    new_handle)`` is called for every object `compact` relocates, after the
    object is readable at ``new_handle``; it must not malloc/free/compact.

    Handles must come from this pool: ``free`` and ``owner`` detect stale and
    double-freed handles (the header's tag bit), ``read``/``write`` trust them.
    """

    def __init__(
        self,
        chain_size: int = DEFAULT_CHAIN_SIZE,
        on_move: Callable[[int, int], None] | None = None,
    ) -> None:
        specs, class_of_index, huge = build_size_classes(chain_size)
        self.chain_size = chain_size
        self.on_move = on_move
        #: zs_huge_class_size(): zram stores compressed lengths >= this raw.
        self.huge_class_size: int = huge
        #: Cumulative pages freed by compaction (mm_stat column 7).
        self.pages_compacted: int = 0
        #: The distinct classes, ascending.
        self.specs: tuple[SizeClass, ...] = specs
        self._classes = [_Class(s) for s in specs]
        by_index = {c.index: c for c in self._classes}
        # request size (1..4096, without the handle) -> distinct class
        self._by_size = [
            by_index[class_of_index[get_size_class_index(max(n, 1) + ZS_HANDLE_SIZE)]]
            for n in range(ZS_MAX_ALLOC_SIZE + 1)
        ]
        # request size -> position of its class in _classes (store_many's sort key)
        ordinal = {id(c): i for i, c in enumerate(self._classes)}
        self._ord_by_size = [ordinal[id(c)] for c in self._by_size]
        # The same as uint16s, for the C store_batch.
        self._ord_table = _array("H", self._ord_by_size).tobytes()
        #: `store_batch` is there (the C accelerator is built and enabled).
        self.batch_ok = _zs_store_batch is not None
        self._reset_state()

    def _reset_state(self) -> None:
        self._pages = 0
        #: High-water mark of `total_pages` since the owner last set it (the
        #: device sets it to the current total before a run of stores and
        #: reads it afterwards: pages only grow in malloc, so that is the
        #: maximum over every store attempt of the run, without a
        #: `total_pages` call per page).
        self.peak_pages = 0
        # Pool-wide segment table, indexed by the handle's segment number:
        # the byte view (read/write), (class, first slot, u64-word view) for
        # free/owner, and the data capacity of the class's objects (write's
        # bound check).
        self._mvs: list[memoryview] = []
        self._seg_info: list[tuple[_Class, int, memoryview]] = []
        self._seg_cap: list[int] = []

    # -- lookups -----------------------------------------------------------

    def size_class(self, size: int) -> SizeClass:
        """The distinct class a ``malloc(size)`` lands in."""
        if not 0 < size <= ZS_MAX_ALLOC_SIZE:
            raise ValueError(f"size {size} out of 1..{ZS_MAX_ALLOC_SIZE}")
        return self._by_size[size].spec

    # -- hot path ------------------------------------------------------------

    def malloc(self, size: int, owner: int) -> int:
        """``zs_malloc(size)`` for the object of ``owner``; returns its handle.

        Raises `ZramError` EINVAL for size 0 and ENOSPC above PAGE_SIZE (the
        kernel's ERR_PTRs), ENOMEM if the arena cannot grow; ValueError for an
        owner outside ``0..OWNER_MAX``.
        """
        # One test for 1 <= size <= 4096 and 0 <= owner < 2**63.
        if (size - 1) >> PAGE_SHIFT or owner >> 63:
            self._bad_malloc(size, owner)
        c = self._by_size[size]
        m = c.mask
        if m:
            # find_get_zspage(): first entry of the fullest non-full group.
            g = m.bit_length() - 1
            d = c.groups[g]
            s, _ = d.popitem()
        else:
            s = self._alloc_zspage(c)
            g = 0
            d = c.groups[0]
        inuse = c.inuse
        n = inuse[s] + 1
        inuse[s] = n
        fo = c.freeobj
        w = fo[s]
        si = s >> c.shift
        if c.huge:
            c.howner[s] = owner
        else:
            # obj_malloc(): pop the zspage's free list, stamp the header.
            q = c.qvs[si]
            link = q[w]
            # A zero header is the untouched tail of init_zspage()'s chain.
            fo[s] = (link >> 1) - 1 if link else w + c.wsize
            q[w] = (owner << 1) | 1
        c.used += 1
        # fix_fullness_group()
        ng = c.fg[n]
        if ng == g:
            d[s] = None  # popped from the tail, back to the tail: same position
        else:
            if g and not d:
                m ^= 1 << g
            if ng != ZS_INUSE_RATIO_100:
                c.groups[ng][s] = None
                m |= 1 << ng
            c.mask = m
        return c.hbase[si] + (w << 4)

    @staticmethod
    def _bad_malloc(size: int, owner: int) -> None:
        if size <= 0:
            raise ZramError(errno.EINVAL, f"zs_malloc({size})")
        if size > ZS_MAX_ALLOC_SIZE:
            raise ZramError(errno.ENOSPC, f"zs_malloc({size})")
        raise ValueError(f"owner {owner} out of 0..{OWNER_MAX}")

    def write(self, handle: int, data: bytes | bytearray | memoryview) -> None:
        """Copy ``data`` into the object (after its header)."""
        seg = handle >> _H_SEG_SHIFT
        n = len(data)
        if n > self._seg_cap[seg]:
            raise ValueError(f"{n} bytes do not fit the object's size class")
        off = (handle >> 1) & _H_OFF_MASK
        try:
            self._mvs[seg][off : off + n] = data
        except (ValueError, TypeError):
            # A memoryview of another format: len() counted items, not bytes.
            if not isinstance(data, memoryview) or data.format == "B":
                raise
            self.write(handle, data.cast("B"))

    def store(self, data: bytes | bytearray | memoryview, owner: int) -> int:
        """``malloc(len(data), owner)`` + ``write``; returns the handle.

        The device's per-page store: `malloc`'s code inlined (one Python frame
        instead of two, the copy addressed from the slot just taken instead of
        decoding the handle again).  Keep the two in step.
        """
        size = len(data)
        if (size - 1) >> PAGE_SHIFT or owner >> 63:
            self._bad_malloc(size, owner)
        c = self._by_size[size]
        m = c.mask
        if m:
            g = m.bit_length() - 1
            d = c.groups[g]
            s, _ = d.popitem()
        else:
            s = self._alloc_zspage(c)
            g = 0
            d = c.groups[0]
        inuse = c.inuse
        n = inuse[s] + 1
        inuse[s] = n
        fo = c.freeobj
        w = fo[s]
        si = s >> c.shift
        if c.huge:
            c.howner[s] = owner
        else:
            q = c.qvs[si]
            link = q[w]
            fo[s] = (link >> 1) - 1 if link else w + c.wsize
            q[w] = (owner << 1) | 1
        c.used += 1
        ng = c.fg[n]
        if ng == g:
            d[s] = None
        else:
            if g and not d:
                m ^= 1 << g
            if ng != ZS_INUSE_RATIO_100:
                c.groups[ng][s] = None
                m |= 1 << ng
            c.mask = m
        handle: int = c.hbase[si] + (w << 4)
        off = (w << 3) + c.hdr
        try:
            c.bvs[si][off : off + size] = data
        except (ValueError, TypeError):
            # A memoryview of another format: len() counted items, not bytes.
            self.free(handle)
            if not isinstance(data, memoryview) or data.format == "B":
                raise
            return self.store(data.cast("B"), owner)
        return handle

    def store_many(
        self,
        blobs: Sequence[_Buf],
        sizes: Sequence[int],
        owners: Sequence[int],
    ) -> list[int]:
        """`store` of every ``blobs[k]`` (``sizes[k]`` bytes) for ``owners[k]``, at once.

        Exactly the pool state that storing them one by one, in order, leaves
        behind (same zspages, same objects, same fullness lists and order),
        because classes are independent and, with nothing freed in between,
        the zspage a class's next object goes to is the one its previous object
        went to until that one is full.  So the objects are grouped by class
        (stable, so in order within a class) and each zspage is taken off its
        fullness list once, filled, and put back once, instead of once per
        object.  Only the segment each class's new zspages land in may differ
        in number from the one-by-one order (handles are opaque).

        Trusted batch API for the device: every blob is bytes-like with
        ``sizes[k] == len(blob)`` bytes.  Returns the handles, in input order.
        """
        count = len(sizes)
        if not count:
            return []
        if min(sizes) < 1 or max(sizes) > ZS_MAX_ALLOC_SIZE:
            raise ValueError("store_many: sizes must be 1..PAGE_SIZE")
        if min(owners) < 0 or max(owners) > OWNER_MAX:
            raise ValueError(f"store_many: owners must be 0..{OWNER_MAX}")
        handles = [0] * count
        keys = list(map(self._ord_by_size.__getitem__, sizes))
        order = sorted(range(count), key=keys.__getitem__)
        classes = self._classes
        fill = _zs_fill
        if fill is not None:
            # The C loop takes lists only.
            blobs = blobs if type(blobs) is list else list(blobs)
            sizes = sizes if type(sizes) is list else list(sizes)
            owners = owners if type(owners) is list else list(owners)
        try:
            for ci, group in _groupby(order, keys.__getitem__):
                c = classes[ci]
                ks = list(group)
                if c.huge:
                    self._store_huge(c, ks, blobs, sizes, owners, handles)
                    continue
                m = len(ks)
                # find_get_zspage(): the fullest partial zspages first ...
                if fill is not None:
                    i = fill(c, None, ks, 0, blobs, sizes, owners, handles)
                else:
                    i = 0
                    while i < m and c.mask:
                        z = self._isolate(c, sparsest=False)
                        i = self._fill(c, z, ks, i, blobs, sizes, owners, handles)
                # ... then new ones, allocated together (one heap walk, one
                # populate per run of neighbouring slots).
                if i < m:
                    runs = self._alloc_zspages(c, -(-(m - i) // c.objs))
                    fresh = [z for z0, nz in runs for z in range(z0, z0 + nz)]
                    if fill is not None:
                        try:
                            i = fill(c, fresh, ks, i, blobs, sizes, owners, handles)
                        except BaseException:
                            # Fresh zspages left empty (a failed first copy,
                            # or never reached) go back; the rest hold objects
                            # the handles below free.
                            for z in fresh:
                                if not c.inuse[z]:
                                    self._free_zspage(c, z)
                            raise
                        continue
                    for j, z in enumerate(fresh):
                        try:
                            i = self._fill(c, z, ks, i, blobs, sizes, owners, handles)
                        except BaseException:
                            for unused in fresh[j + 1 :]:
                                self._free_zspage(c, unused)
                            raise
        except BaseException:
            # Only a blob that is not what the caller promised, or ENOMEM
            # from the arena, gets here: undo.
            for h in handles:
                if h:
                    self.free(h)
            raise
        return handles

    def store_batch(
        self,
        out: _Buf | Sequence[_Buf],
        sizes: _Buf,
        lo: int,
        hi: int,
        data: _Buf,
        pos: int,
        first: int,
        handle: memoryview,
        attr: memoryview,
        bits: int,
        huge_bit: int,
        same_bit: int,
    ) -> tuple[int, int, int]:
        """The device's fresh batch, from the accelerator's block layout to a
        slot table, in one C call (``zramfs._zpages.zs_store_batch``; only
        when `batch_ok`).

        Pages ``lo..hi-1`` of ``(out, sizes)`` (a ``compress_blocks`` result:
        size 0 marks a same-filled page, sizes from `huge_class_size` up are
        stored raw from ``data``, page ``lo`` at ``pos``; or ``out`` a list of
        any codec's frames, ``sizes[k]`` bytes each) go into the empty
        slots ``first..``: the pool ends exactly as `store_many` of the same
        objects in page order leaves it, and each slot gets its handle and
        ``size | bits`` (``| huge_bit`` for a raw page), or a same-filled
        page's fill word and ``same_bit | bits``.  On failure (ENOMEM) nothing
        stays stored and the table is untouched.  Returns ``(compressed
        bytes, huge pages, same-filled pages)``.
        """
        assert _zs_store_batch is not None
        return _zs_store_batch(
            self, out, sizes, lo, hi, data, pos, first, handle, attr, bits, huge_bit, same_bit
        )

    def _fill(
        self,
        c: _Class,
        z: int,
        ks: list[int],
        i: int,
        blobs: Sequence[_Buf],
        sizes: Sequence[int],
        owners: Sequence[int],
        handles: list[int],
    ) -> int:
        """`store_many`: objects ``ks[i:]`` into zspage ``z`` (taken off its
        fullness list, or new) until it is full; returns the next ``i``.

        ``z`` then goes back at the tail of the list its new fullness says,
        where ``fix_fullness_group`` after each one-by-one malloc would have
        left it.
        """
        n = c.inuse[z]
        w = c.freeobj[z]
        si = z >> c.shift
        q = c.qvs[si]
        bv = c.bvs[si]
        hb = c.hbase[si]
        hdr = c.hdr
        wsize = c.wsize
        run = ks[i : i + c.objs - n]
        done = 0
        try:
            # obj_malloc() for each: copy (first: it may fail), pop the free
            # list, stamp the header.
            if q[w]:
                # Freed objects on the list: follow the links.
                for k in run:
                    o = (w << 3) + hdr
                    bv[o : o + sizes[k]] = blobs[k]
                    link = q[w]
                    q[w] = (owners[k] << 1) | 1
                    handles[k] = hb + (w << 4)
                    w = (link >> 1) - 1 if link else w + wsize
                    done += 1
            elif len(run) < _VECTOR_MIN:
                # The head is untouched, so the whole list is the untouched
                # tail of init_zspage()'s chain: consecutive objects.
                for k in run:
                    o = (w << 3) + hdr
                    bv[o : o + sizes[k]] = blobs[k]
                    q[w] = (owners[k] << 1) | 1
                    handles[k] = hb + (w << 4)
                    w += wsize
                    done += 1
            else:
                # The same for a long run, every step a map of C functions
                # (no Python per object; the maps' setup costs more than a
                # short run's loop).  Data first: a failing copy claims
                # nothing (the headers stay zero).
                n_run = len(run)
                w_end = w + n_run * wsize
                starts = range((w << 3) + hdr, (w_end << 3) + hdr, wsize << 3)
                ends = map(_add, starts, map(sizes.__getitem__, run))
                any(map(bv.__setitem__, map(slice, starts, ends), map(blobs.__getitem__, run)))
                tags = map(_or, map(_lshift, map(owners.__getitem__, run), _repeat(1)), _repeat(1))
                q[w:w_end:wsize] = _array("Q", tags)
                hs = range(hb + (w << 4), hb + (w_end << 4), wsize << 4)
                any(map(handles.__setitem__, run, hs))
                w = w_end
                done = n_run
        finally:
            n += done
            c.used += done
            c.inuse[z] = n
            c.freeobj[z] = w
            g = c.fg[n]
            if not n:  # a new zspage whose first copy failed: give it back
                self._free_zspage(c, z)
            elif g != ZS_INUSE_RATIO_100:
                c.groups[g][z] = None
                c.mask |= 1 << g
        return i + done

    def _store_huge(
        self,
        c: _Class,
        ks: list[int],
        blobs: Sequence[_Buf],
        sizes: Sequence[int],
        owners: Sequence[int],
        handles: list[int],
    ) -> None:
        """`store_many` for a huge class: one object per zspage, so one new
        zspage each, and a run of neighbouring ones is written with one copy
        when the objects fill their slots (raw pages)."""
        i = 0
        shift = c.shift
        smask = c.smask
        zbytes = c.zbytes
        zwords = c.zwords
        full = all(map(_eq, map(sizes.__getitem__, ks), _repeat(c.cap)))
        runs = self._alloc_zspages(c, len(ks))
        try:
            for z0, nz in runs:
                si = z0 >> shift
                bv = c.bvs[si]
                w0 = (z0 & smask) * zwords
                run = ks[i : i + nz]
                if full:
                    o = w0 << 3
                    bv[o : o + nz * zbytes] = b"".join(map(blobs.__getitem__, run))
                else:
                    o = w0 << 3
                    for k in run:
                        bv[o : o + sizes[k]] = blobs[k]
                        o += zbytes
                c.howner[z0 : z0 + nz] = map(owners.__getitem__, run)
                c.inuse[z0 : z0 + nz] = _repeat(1, nz)
                c.used += nz
                h = c.hbase[si] + (w0 << 4)
                step = zwords << 4
                for k in run:
                    handles[k] = h
                    h += step
                i += nz
        except BaseException:
            # Give back the zspages not handed out yet (the caller frees the rest).
            j = 0
            for z0, nz in runs:
                for z in range(z0, z0 + nz):
                    if j >= i:
                        self._free_zspage(c, z)
                    j += 1
            raise

    def segment_views(self) -> list[memoryview]:
        """The byte view of every segment, indexed by ``handle >> HANDLE_SEG_SHIFT``.

        For a caller's own read loop (the device's): the object of ``handle``
        starts at ``(handle >> 1) & HANDLE_OFF_MASK`` of its segment's view,
        which is exactly what `read` slices.  The list is the pool's own and
        is updated in place; the views in it follow `read`'s rule: valid
        until the next malloc/free/compact/close, never across an ``await``.
        """
        return self._mvs

    def read(self, handle: int, size: int) -> memoryview:
        """Zero-copy view of the object's first ``size`` data bytes.

        ``size`` must not exceed the size given to malloc (it is not checked:
        this is the per-page read path).  The view is valid only until the
        next malloc/free/compact/close (compaction moves objects, close unmaps
        them): copy it before any ``await``.
        """
        off = (handle >> 1) & _H_OFF_MASK
        return self._mvs[handle >> _H_SEG_SHIFT][off : off + size]

    def free(self, handle: int) -> None:
        """``zs_free``: release the object; an emptied zspage is freed at once."""
        try:
            c, slot0, q = self._seg_info[handle >> _H_SEG_SHIFT]
        except IndexError:
            raise ValueError(f"invalid handle {handle:#x}") from None
        w = ((handle >> 4) & _H_WORD_MASK) - c.whdr
        s = slot0 + w // c.zwords
        inuse = c.inuse
        n = inuse[s]
        if c.huge:
            if not n or handle & 15 != 1 or w % c.zwords:
                raise ValueError(f"invalid or stale handle {handle:#x}")
        else:
            try:
                tag = q[w] & 1
            except IndexError:
                tag = 0
            if not tag or handle & 15 != 1:
                raise ValueError(f"invalid or stale handle {handle:#x}")
        c.used -= 1
        g = c.fg[n]
        n -= 1
        if not n:
            # fix_fullness_group() -> ZS_INUSE_RATIO_0 -> free_zspage()
            if g != ZS_INUSE_RATIO_100:
                d = c.groups[g]
                del d[s]
                if not d:
                    c.mask ^= 1 << g
            inuse[s] = 0
            self._free_zspage(c, s)
            return
        inuse[s] = n
        # obj_free(): push onto the zspage's free list (tag bit clear).
        fo = c.freeobj
        q[w] = (fo[s] + 1) << 1
        fo[s] = w
        ng = c.fg[n]
        if ng != g:
            groups = c.groups
            m = c.mask
            if g != ZS_INUSE_RATIO_100:
                d = groups[g]
                del d[s]
                if not d:
                    m ^= 1 << g
            groups[ng][s] = None
            c.mask = m | (1 << ng)

    def owner(self, handle: int) -> int:
        """The owner recorded with the object (header, or zspage for huge)."""
        try:
            c, slot0, q = self._seg_info[handle >> _H_SEG_SHIFT]
        except IndexError:
            raise ValueError(f"invalid handle {handle:#x}") from None
        w = ((handle >> 4) & _H_WORD_MASK) - c.whdr
        if c.huge:
            s = slot0 + w // c.zwords
            if not c.inuse[s]:
                raise ValueError(f"invalid or stale handle {handle:#x}")
            return c.howner[s]
        try:
            hdr: int = q[w]
        except IndexError:
            hdr = 0
        if not hdr & 1:
            raise ValueError(f"invalid or stale handle {handle:#x}")
        return hdr >> 1

    # -- zspages and segments ------------------------------------------------

    def _alloc_zspage(self, c: _Class) -> int:
        """``alloc_zspage``: the lowest free slot of the arena, pages faulted in.

        The kernel allocates ``pages_per_zspage`` pages here; we make them all
        resident now, so RSS tracks pages_allocated even for a barely used
        zspage (a header write would only fault in the first page).
        """
        global _populate_write
        heap = c.free_slots
        if not heap:
            self._grow(c)
        s = _heappop(heap)
        si = s >> c.shift
        mm = c.segs[si]
        base = (s & c.smask) * c.zbytes
        try:
            if mm is None:
                mm = self._map_segment(c, si)
            if c.ppz > 1 and _populate_write:
                # One syscall instead of one fault per page (Linux 5.14+).
                try:
                    mm.madvise(_MADV_POPULATE_WRITE, base, c.zbytes)
                except OSError as e:
                    if e.errno != errno.EINVAL:
                        _dontneed(mm, base, c.zbytes)
                        raise ZramError(errno.ENOMEM, f"zspage allocation: {e}") from e
                    _populate_write = False
            if c.ppz == 1 or not _populate_write:
                for p in range(base, base + c.zbytes, PAGE_SIZE):
                    mm[p] = 0
        except BaseException:
            _heappush(heap, s)
            raise
        c.seg_live[si] += 1
        if c.spare == si:
            c.spare = -1
        c.freeobj[s] = base >> 3  # init_zspage(): freeobj = object 0, chain 0 -> 1 -> 2 ...
        c.nzspages += 1
        c.allocated += c.objs
        pages = self._pages + c.ppz
        self._pages = pages
        if pages > self.peak_pages:
            self.peak_pages = pages
        return s

    def _alloc_zspages(self, c: _Class, n: int) -> list[tuple[int, int]]:
        """``n`` times `_alloc_zspage` at once (`store_many`).

        The same slots, taken from the heap in the same order; returned as
        runs ``(first slot, count)`` of neighbouring slots in one segment,
        each made resident with one ``MADV_POPULATE_WRITE`` call (faulting a
        run page by page, or one call per zspage, costs more).  On failure
        nothing is allocated.

        ``zramfs._zpages.zs_alloc_zspages`` does the same steps in C while
        MADV_POPULATE_WRITE works (these Python steps cost ~6 us a call, and a
        MiB written makes ~30 calls); the body below is the reference, and
        what runs without the C module or on kernels before 5.14.
        """
        global _populate_write
        if _zs_alloc_zspages is not None and _populate_write:
            got = _zs_alloc_zspages(self, c, n, _dontneed)
            if type(got) is list:
                return got
            assert isinstance(got, int)
            if got != errno.EINVAL:
                raise ZramError(errno.ENOMEM, f"zspage allocation: {os.strerror(got)}")
            # EINVAL: no MADV_POPULATE_WRITE here; the steps below learn that.
        if n == 1:
            return [(self._alloc_zspage(c), 1)]
        heap = c.free_slots
        slots: list[int] = []
        while len(slots) < n:
            if not heap:
                self._grow(c)
            slots += [_heappop(heap) for _ in range(min(n - len(slots), len(heap)))]
        shift = c.shift
        runs: list[tuple[int, int]] = []
        start = prev = slots[0]
        for z in slots[1:]:
            if z != prev + 1 or z >> shift != start >> shift:
                runs.append((start, prev - start + 1))
                start = z
            prev = z
        runs.append((start, prev - start + 1))
        zbytes = c.zbytes
        done = 0
        try:
            for z0, nz in runs:
                si = z0 >> shift
                mm = c.segs[si]
                if mm is None:
                    mm = self._map_segment(c, si)
                base = (z0 & c.smask) * zbytes
                length = nz * zbytes
                if _populate_write:
                    try:
                        mm.madvise(_MADV_POPULATE_WRITE, base, length)
                    except OSError as e:
                        if e.errno != errno.EINVAL:
                            _dontneed(mm, base, length)
                            raise ZramError(errno.ENOMEM, f"zspage allocation: {e}") from e
                        _populate_write = False
                if not _populate_write:
                    for p in range(base, base + length, PAGE_SIZE):
                        mm[p] = 0
                done += 1
        except BaseException:
            for z0, nz in runs[:done]:
                mm = c.segs[z0 >> shift]
                assert mm is not None
                _dontneed(mm, (z0 & c.smask) * zbytes, nz * zbytes)
            for z in slots:
                _heappush(heap, z)
            raise
        zwords = c.zwords
        for z0, nz in runs:
            si = z0 >> shift
            c.seg_live[si] += nz
            if c.spare == si:
                c.spare = -1
            w0 = (z0 & c.smask) * zwords
            # init_zspage(): freeobj = object 0, chain 0 -> 1 -> 2 ...
            c.freeobj[z0 : z0 + nz] = range(w0, w0 + nz * zwords, zwords)
        c.nzspages += n
        c.allocated += n * c.objs
        pages = self._pages + n * c.ppz
        self._pages = pages
        if pages > self.peak_pages:
            self.peak_pages = pages
        return runs

    def _free_zspage(self, c: _Class, s: int) -> None:
        """``__free_zspage``: return the pages to the system (they read as zeros)."""
        si = s >> c.shift
        mm = c.segs[si]
        assert mm is not None
        _dontneed(mm, (s & c.smask) * c.zbytes, c.zbytes)
        _heappush(c.free_slots, s)
        c.nzspages -= 1
        c.allocated -= c.objs
        self._pages -= c.ppz
        live = c.seg_live[si] - 1
        c.seg_live[si] = live
        if not live:
            # Keep the lowest empty segment as the spare (lowest slots are
            # reused first), unmap any other.
            spare = c.spare
            if spare < 0:
                c.spare = si
            else:
                c.spare = min(spare, si)
                self._unmap_segment(c, max(spare, si))

    def _grow(self, c: _Class) -> None:
        """Extend the class's slot space by one (not yet mapped) segment."""
        gs = len(self._mvs)
        if gs >= _H_SEG_LIMIT:
            raise ZramError(errno.ENOMEM, "zsmalloc segment numbers exhausted")
        si = len(c.segs)
        per = 1 << c.shift
        first = si << c.shift
        c.segs.append(None)
        c.qvs.append(_NO_WORDS)
        c.bvs.append(_NO_SEGMENT)
        c.gseg.append(gs)
        c.hbase.append((gs << _H_SEG_SHIFT) + (c.hdr << 1) + 1)
        c.seg_live.append(0)
        self._mvs.append(_NO_SEGMENT)
        self._seg_info.append((c, first, _NO_WORDS))
        self._seg_cap.append(c.cap)
        zeros = [0] * per
        c.inuse.extend(zeros)
        c.freeobj.extend(zeros)
        if c.huge:
            c.howner.extend(zeros)
        # The heap is empty when we grow, and a sorted list is a valid heap.
        c.free_slots.extend(range(first, first + per))

    def _map_segment(self, c: _Class, si: int) -> mmap.mmap:
        # MAP_PRIVATE matters: a shared anonymous mapping is shmem, and
        # MADV_DONTNEED would not give its pages back.
        try:
            mm = mmap.mmap(
                -1,
                c.seg_bytes,
                flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS,
                prot=mmap.PROT_READ | mmap.PROT_WRITE,
            )
        except OSError as e:
            raise ZramError(errno.ENOMEM, f"zsmalloc arena mmap failed: {e}") from e
        if _MADV_NOHUGEPAGE is not None:
            # With THP "always", one touched byte would make 2 MiB resident
            # and DONTNEED of a 4 KiB range would only split the huge page.
            try:
                mm.madvise(_MADV_NOHUGEPAGE)
            except OSError:
                pass
        c.segs[si] = mm
        mv = memoryview(mm)
        self._set_views(c, si, mv, mv.cast("Q"))
        return mm

    def _set_views(self, c: _Class, si: int, mv: memoryview, q: memoryview) -> None:
        c.qvs[si] = q
        c.bvs[si] = mv
        gs = c.gseg[si]
        self._mvs[gs] = mv
        self._seg_info[gs] = (c, si << c.shift, q)

    def _unmap_segment(self, c: _Class, si: int) -> None:
        mm = c.segs[si]
        mv = self._mvs[c.gseg[si]]
        q = c.qvs[si]
        c.segs[si] = None
        self._set_views(c, si, _NO_SEGMENT, _NO_WORDS)
        if q is not _NO_WORDS:
            q.release()
        if mv is not _NO_SEGMENT:
            mv.release()
        if mm is not None:
            try:
                mm.close()
            except BufferError:
                # A read() view is still alive somewhere; the mapping goes away
                # when it is dropped.  Its pages were already DONTNEED'd.
                pass

    def mapped_bytes(self) -> int:
        """Virtual size of all mapped arena segments (resident or not)."""
        return sum(c.seg_bytes for c in self._classes for mm in c.segs if mm is not None)

    # -- compaction ----------------------------------------------------------

    def compact(self) -> int:
        """``zs_compact``: compact every class, largest first; pages freed now.

        Merged classes are one `_Class` object, so each is visited once, as
        the kernel's ``class->index != i`` skip does.
        """
        freed = 0
        for c in reversed(self._classes):
            freed += self._compact_class(c)
        self.pages_compacted += freed
        return freed

    @staticmethod
    def _can_compact(c: _Class) -> int:
        """``zs_can_compact``: whole zspages' worth of free objects, in pages."""
        if c.allocated <= c.used:
            return 0
        return (c.allocated - c.used) // c.objs * c.ppz

    @staticmethod
    def _isolate(c: _Class, sparsest: bool) -> int:
        """``isolate_src_zspage`` (sparsest) / ``isolate_dst_zspage`` (fullest).

        Takes the group's first entry (our last) off its list; -1 if none.
        """
        m = c.mask
        if not m:
            return -1
        g = (m & -m).bit_length() - 1 if sparsest else m.bit_length() - 1
        d = c.groups[g]
        s, _ = d.popitem()
        if not d:
            c.mask = m ^ (1 << g)
        return s

    @staticmethod
    def _putback(c: _Class, s: int) -> int:
        """``putback_zspage``: insert into the group its inuse now says."""
        g = c.fg[c.inuse[s]]
        if ZS_INUSE_RATIO_0 < g < ZS_INUSE_RATIO_100:
            c.groups[g][s] = None
            c.mask |= 1 << g
        return g

    def _compact_class(self, c: _Class) -> int:
        """``__zs_compact`` for one class.

        dst is isolated from the fullest groups and kept until it is full;
        each round isolates the sparsest zspage as src and migrates it.  The
        loop runs only while ``zs_can_compact`` promises a whole zspage.
        """
        freed = 0
        dst = -1
        while self._can_compact(c):
            if dst < 0:
                dst = self._isolate(c, sparsest=False)
                if dst < 0:
                    break
            src = self._isolate(c, sparsest=True)
            if src < 0:
                break
            self._migrate(c, src, dst)
            if self._putback(c, src) == ZS_INUSE_RATIO_0:
                self._free_zspage(c, src)
                freed += c.ppz
            if c.inuse[dst] == c.objs:
                self._putback(c, dst)
                dst = -1
        if dst >= 0:
            self._putback(c, dst)
        return freed

    def _migrate(self, c: _Class, src: int, dst: int) -> None:
        """``migrate_zspage``: move src's objects, lowest index first, into dst.

        Stops when dst is full or src is empty.  Each move is obj_malloc() on
        dst, a copy of the whole slot (header included), obj_free() on src,
        then ``on_move`` so the owner learns the new handle.  Never called for
        huge classes: all their zspages are full, so zs_can_compact() is 0.
        """
        wsize = c.wsize
        objs = c.objs
        inuse = c.inuse
        fo = c.freeobj
        sq = c.qvs[src >> c.shift]
        dq = c.qvs[dst >> c.shift]
        sbase = (src & c.smask) * c.zwords
        dhbase = c.hbase[dst >> c.shift]
        on_move = self.on_move
        for sw in range(sbase, sbase + objs * wsize, wsize):
            hdr = sq[sw]
            if not hdr & 1:
                continue
            dw = fo[dst]
            link = dq[dw]
            fo[dst] = (link >> 1) - 1 if link else dw + wsize
            dq[dw : dw + wsize] = sq[sw : sw + wsize]
            inuse[dst] += 1
            sq[sw] = (fo[src] + 1) << 1
            fo[src] = sw
            inuse[src] -= 1
            if on_move is not None:
                on_move(hdr >> 1, dhbase + (dw << 4))
            if inuse[dst] == objs or not inuse[src]:
                break

    # -- accounting ------------------------------------------------------------

    def total_pages(self) -> int:
        """``zs_get_total_pages``: pages of all live zspages (mem_used_total)."""
        return self._pages

    def class_stats(self) -> list[ClassStat]:
        """Rows of the debugfs ``classes`` table, distinct classes only."""
        rows = []
        for c in self._classes:
            partial = tuple(len(c.groups[g]) for g in range(ZS_INUSE_RATIO_10, ZS_INUSE_RATIO_100))
            full = c.nzspages - sum(partial)
            rows.append(
                ClassStat(
                    index=c.index,
                    size=c.size,
                    fullness=(*partial, full),
                    obj_allocated=c.allocated,
                    obj_used=c.used,
                    pages_used=c.allocated // c.objs * c.ppz,
                    pages_per_zspage=c.ppz,
                    objs_per_zspage=c.objs,
                    freeable=self._can_compact(c),
                )
            )
        return rows

    def format_classes(self) -> str:
        """The text of ``zs_stats_size_show`` (6.3+ fullness-ratio layout).

        Per class: ``" %5u %5u "``, eleven ``"%9lu "`` group counts, then
        ``"%13lu %10lu %10lu %16d %8lu\\n"``; a blank line; and the Total row
        (``" %5s %5s "`` with "Total" and "", the summed columns, and an empty
        ``%16s`` in place of pages_per_zspage).
        """
        out = [_CLASSES_HEADER]
        totals = [0] * (NR_FULLNESS_GROUPS - 1)
        t_objs = t_used = t_pages = t_freeable = 0
        for r in self.class_stats():
            for k, v in enumerate(r.fullness):
                totals[k] += v
            out.append(
                f" {r.index:5d} {r.size:5d} "
                + "".join(f"{v:9d} " for v in r.fullness)
                + f"{r.obj_allocated:13d} {r.obj_used:10d} {r.pages_used:10d} "
                + f"{r.pages_per_zspage:16d} {r.freeable:8d}\n"
            )
            t_objs += r.obj_allocated
            t_used += r.obj_used
            t_pages += r.pages_used
            t_freeable += r.freeable
        out.append("\n")
        out.append(
            f" {'Total':>5} {'':>5} "
            + "".join(f"{v:9d} " for v in totals)
            + f"{t_objs:13d} {t_used:10d} {t_pages:10d} {'':>16} {t_freeable:8d}\n"
        )
        return "".join(out)

    # -- lifetime --------------------------------------------------------------

    def close(self) -> None:
        """Release every arena (device reset).  The pool is empty and reusable
        afterwards; all previous handles are invalid."""
        for c in self._classes:
            for si in range(len(c.segs)):
                self._unmap_segment(c, si)
            c.reset()
        self._reset_state()

    def __enter__(self) -> ZsPool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
