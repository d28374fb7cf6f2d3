"""zsmalloc model: class table vs. the kernel, accounting, data, compaction, RSS."""

from __future__ import annotations

import errno
import gc
import math
import random
from array import array
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from zramfs.core import zsmalloc
from zramfs.core.zsmalloc import (
    HANDLE_OFF_MASK,
    HANDLE_SEG_SHIFT,
    PAGE_SIZE,
    ZS_HANDLE_SIZE,
    ZS_SIZE_CLASSES,
    ClassStat,
    ZsPool,
    build_size_classes,
    calculate_zspage_chain_size,
    get_fullness_group,
    get_size_class_index,
    huge_class_size_for,
)
from zramfs.errors import ZramError


@pytest.fixture
def pool() -> Iterator[ZsPool]:
    p = ZsPool()
    yield p
    p.close()


def payload(owner: int, n: int) -> bytes:
    """Deterministic, owner-specific bytes (so a misplaced object shows)."""
    return random.Random(owner * 7919 + n).randbytes(n)


def obj_size(p: ZsPool, class_size: int) -> int:
    """A malloc size that lands exactly in the class of ``class_size``."""
    return class_size - ZS_HANDLE_SIZE


def segment_offset(handle: int) -> int:
    """The object's byte offset in its segment (decoded from the handle layout)."""
    return (handle >> 1) & ((1 << 22) - 1)


# ---------------------------------------------------------------------------
# Class table
# ---------------------------------------------------------------------------


def test_huge_class_size_thresholds() -> None:
    # zram-interface.md §13 / Z1: watermark 3264/3632/3840 minus 7.
    assert huge_class_size_for(4) == 3257
    assert huge_class_size_for(8) == 3625
    assert huge_class_size_for(16) == 3833
    assert huge_class_size_for() == 3625
    assert ZsPool(chain_size=16).huge_class_size == 3833


def test_huge_threshold_is_where_zs_malloc_goes_huge() -> None:
    for chain in (4, 8, 16):
        p = ZsPool(chain)
        t = p.huge_class_size
        assert not p.size_class(t - 1).huge
        assert p.size_class(t).huge
        assert p.size_class(PAGE_SIZE).huge and p.size_class(PAGE_SIZE).size == PAGE_SIZE
        assert all(p.size_class(n).huge for n in range(t, PAGE_SIZE + 1))
        assert not any(p.size_class(n).huge for n in range(1, t))


def _legacy_usedpc_chain_size(class_size: int, chain: int) -> int:
    """The pre-6.3 ``get_pages_per_zspage`` rule (maximise used %), chain-extended."""
    best, best_pc = 1, 0
    for i in range(1, chain + 1):
        z = i * PAGE_SIZE
        pc = (z - z % class_size) * 100 // z
        if pc > best_pc:
            best, best_pc = i, pc
    return best


def _count_classes(chain: int, rule: object) -> tuple[int, int]:
    assert callable(rule)
    n, prev, watermark = 0, (0, 0), 0
    for i in range(ZS_SIZE_CLASSES - 1, -1, -1):
        size = min(32 + 16 * i, PAGE_SIZE)
        ppz = rule(size, chain)
        objs = ppz * PAGE_SIZE // size
        if ppz != 1 and objs != 1 and not watermark:
            watermark = size
        if (ppz, objs) != prev:
            n += 1
            prev = (ppz, objs)
    return n, watermark


# Z1 "Overall the combined zspage chain size effect" table.
Z1_TABLE = {
    4: (69, 3264), 5: (86, 3408), 6: (93, 3504), 7: (112, 3584), 8: (123, 3632),
    9: (140, 3680), 10: (143, 3712), 11: (159, 3744), 12: (164, 3776),
    13: (180, 3792), 14: (183, 3808), 15: (188, 3840), 16: (191, 3840),
}  # fmt: skip


def test_distinct_class_counts() -> None:
    """The kernel's min-waste rule gives 69 / 119 / 192 distinct classes.

    Z1 (Documentation/mm/zsmalloc.rst) says 69 / 123 / 191.  Its whole table
    is reproduced exactly by the *old* used-percentage rule extended to longer
    chains (the doc was written before "zsmalloc: rework zspage chain size
    selection" switched to minimum waste); the watermarks agree either way.
    The model follows the code, so it must give 119 / 192 for chains 8 / 16.
    """
    counts = {c: len(build_size_classes(c)[0]) for c in (4, 8, 16)}
    assert counts == {4: 69, 8: 119, 16: 192}
    for chain, (z1_count, z1_watermark) in Z1_TABLE.items():
        assert _count_classes(chain, _legacy_usedpc_chain_size) == (z1_count, z1_watermark)
        assert build_size_classes(chain)[2] + ZS_HANDLE_SIZE - 1 == z1_watermark
        n, watermark = _count_classes(chain, calculate_zspage_chain_size)
        assert (n, watermark) == (len(build_size_classes(chain)[0]), z1_watermark)
    # Z1's chain-16 listing has "212 3424 ... 16"; the kernel's rule makes it 213 3440
    specs16 = {s.index: s for s in build_size_classes(16)[0]}
    assert 212 not in specs16 and specs16[213].size == 3440
    assert specs16[213].pages_per_zspage == 16
    assert _legacy_usedpc_chain_size(3424, 16) == 16


def test_hand_checked_classes() -> None:
    by_index = {s.index: s for s in build_size_classes(8)[0]}
    # size 32: power of two -> one page, 128 objects
    assert (by_index[0].size, by_index[0].pages_per_zspage, by_index[0].objs_per_zspage) == (
        32,
        1,
        128,
    )
    # 48: 3 pages hold 256 objects with no waste
    assert (by_index[1].pages_per_zspage, by_index[1].objs_per_zspage) == (3, 256)
    # Z1's worked example: 1568 bytes wastes 96 bytes in a chain of 5 -> 13 objects
    assert calculate_zspage_chain_size(1568, 8) == 5
    assert (by_index[96].size, by_index[96].pages_per_zspage, by_index[96].objs_per_zspage) == (
        1568,
        5,
        13,
    )
    # 3632 is the last non-huge class with chain 8: 8 pages, 9 objects, 80 bytes waste
    assert (by_index[225].pages_per_zspage, by_index[225].objs_per_zspage) == (8, 9)
    assert by_index[254].huge and by_index[254].size == 4096
    # Z1 chain-8 tail: 202 3264/4, 211 3408/5, 217 3504/6, 222 3584/7, 225 3632/8, 254 4096/1
    specs8 = build_size_classes(8)[0]
    tail = [(s.index, s.size, s.pages_per_zspage) for s in specs8 if s.index >= 202]
    assert tail == [
        (202, 3264, 4), (211, 3408, 5), (217, 3504, 6), (222, 3584, 7), (225, 3632, 8),
        (254, 4096, 1),
    ]  # fmt: skip


def test_chain4_merging_matches_z1_example() -> None:
    """Z1: with chain 4, classes #95-99 merge into #100 (1632 B, 2 pages, 5 objs)."""
    specs, class_of, _ = build_size_classes(4)
    by_index = {s.index: s for s in specs}
    assert [class_of[i] for i in range(95, 101)] == [100] * 6
    assert (by_index[100].size, by_index[100].pages_per_zspage, by_index[100].objs_per_zspage) == (
        1632,
        2,
        5,
    )
    assert by_index[94].pages_per_zspage == 3
    p = ZsPool(4)
    try:
        # 1568 B objects (Z1: "we end up using size class #100"): 13 of them -> 6 pages
        assert p.size_class(1568 - ZS_HANDLE_SIZE).index == 100
        for i in range(13):
            p.malloc(1568 - ZS_HANDLE_SIZE, i)
        assert p.total_pages() == 6
    finally:
        p.close()


def test_size_class_index() -> None:
    assert get_size_class_index(1 + ZS_HANDLE_SIZE) == 0
    assert get_size_class_index(24 + ZS_HANDLE_SIZE) == 0
    assert get_size_class_index(25 + ZS_HANDLE_SIZE) == 1
    assert get_size_class_index(4096 + ZS_HANDLE_SIZE) == 254  # clamped to the last class
    assert get_size_class_index(4088 + ZS_HANDLE_SIZE) == 254
    assert get_size_class_index(4072 + ZS_HANDLE_SIZE) == 253


def test_fullness_groups() -> None:
    assert get_fullness_group(0, 128) == 0
    assert get_fullness_group(1, 128) == 1  # ratio 0 but not empty -> 10%
    assert get_fullness_group(127, 128) == 10  # 99%
    assert get_fullness_group(128, 128) == 11
    assert [get_fullness_group(n, 8) for n in range(9)] == [0, 2, 3, 4, 6, 7, 8, 9, 11]


# ---------------------------------------------------------------------------
# Accounting and allocation policy
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("size", [1, 20, 100, 700, 1500, 2500, 3000, 3624, 3625, 4096])
def test_pages_after_n_objects(pool: ZsPool, size: int) -> None:
    spec = pool.size_class(size)
    n = 3 * spec.objs_per_zspage + 1
    for i in range(n):
        pool.malloc(size, i)
    expected = math.ceil(n / spec.objs_per_zspage) * spec.pages_per_zspage
    assert pool.total_pages() == expected
    (row,) = [r for r in pool.class_stats() if r.index == spec.index]
    assert row.obj_used == n
    assert row.obj_allocated == 4 * spec.objs_per_zspage
    assert row.pages_used == expected
    # three full zspages and one holding a single object (full too if huge)
    assert row.fullness[-1] == 3 + (spec.objs_per_zspage == 1)
    assert sum(row.fullness) == 4


def test_find_get_zspage_takes_fullest_then_most_recent(pool: ZsPool) -> None:
    size = obj_size(pool, 32)  # 128 objects per 1-page zspage
    hs = [pool.malloc(size, i) for i in range(4 * 128)]
    page = [segment_offset(h) // PAGE_SIZE for h in hs]
    zs = [hs[k * 128 : (k + 1) * 128] for k in range(4)]
    # A: 78 left (60% group), B: 118 (99% group), C: 28 (30%), D: 78 (60%, after A)
    for k, keep in enumerate((78, 118, 28, 78)):
        for h in zs[k][keep:]:
            pool.free(h)
    assert pool.total_pages() == 4
    # the fullest group first: B until full
    for i in range(10):
        h = pool.malloc(size, 1000 + i)
        assert segment_offset(h) // PAGE_SIZE == page[128]
    # then the 60% group: D entered it last, so D is first
    h = pool.malloc(size, 2000)
    assert segment_offset(h) // PAGE_SIZE == page[3 * 128]
    # freed objects are reused LIFO: D's last freed object was its highest index
    assert h == zs[3][-1]


def test_empty_zspage_freed_immediately_and_slots_reused_lowest_first(pool: ZsPool) -> None:
    size = 4096  # huge: one object per one-page zspage
    hs = [pool.malloc(size, i) for i in range(10)]
    assert pool.total_pages() == 10
    pool.free(hs[7])
    pool.free(hs[2])
    pool.free(hs[5])
    assert pool.total_pages() == 7
    again = [pool.malloc(size, 100 + i) for i in range(3)]
    assert [segment_offset(h) for h in again] == sorted(segment_offset(hs[i]) for i in (2, 5, 7))


def test_merged_classes_share_zspages(pool: ZsPool) -> None:
    # With chain 8, 1600 and 1616 (class indexes 98, 99) merge into one class.
    a, b = pool.size_class(1600 - 8), pool.size_class(1616 - 8)
    assert a == b
    pool.malloc(1600 - 8, 1)
    pool.malloc(1616 - 8, 2)
    assert pool.total_pages() == a.pages_per_zspage


def test_data_header_and_owner(pool: ZsPool) -> None:
    items = {}
    for owner, n in enumerate([1, 8, 24, 25, 100, 1500, 3624, 3625, 4000, 4096]):
        data = payload(owner, n)
        h = pool.store(data, owner)
        assert h > 0 and h < 2**63
        items[h] = (owner, data)
    for h, (owner, data) in items.items():
        assert bytes(pool.read(h, len(data))) == data
        assert pool.owner(h) == owner
    # a huge object keeps its owner outside the data
    h = pool.store(b"\xff" * 4096, 2**63 - 1)
    assert pool.owner(h) == 2**63 - 1 and bytes(pool.read(h, 4096)) == b"\xff" * 4096


def test_errors(pool: ZsPool) -> None:
    with pytest.raises(ZramError) as e:
        pool.malloc(0, 1)
    assert e.value.errno == errno.EINVAL
    with pytest.raises(ZramError) as e:
        pool.malloc(4097, 1)
    assert e.value.errno == errno.ENOSPC
    with pytest.raises(ValueError):
        pool.malloc(10, -1)
    with pytest.raises(ValueError):
        pool.malloc(10, 2**63)
    assert pool.total_pages() == 0
    h = pool.malloc(100, 5)
    with pytest.raises(ValueError):
        pool.write(h, b"x" * 200)  # beyond the 112-byte slot
    keep = pool.malloc(100, 6)
    pool.free(h)
    with pytest.raises(ValueError):
        pool.free(h)  # double free: the header's tag bit is clear
    with pytest.raises(ValueError):
        pool.owner(h)
    hh = pool.malloc(4096, 7)
    pool.free(hh)
    with pytest.raises(ValueError):
        pool.free(hh)
    with pytest.raises(ValueError):
        pool.free(1 << 62)
    assert pool.owner(keep) == 6
    assert pool.total_pages() == pool.size_class(100).pages_per_zspage


def test_write_accepts_buffers(pool: ZsPool) -> None:
    h = pool.malloc(64, 1)
    pool.write(h, bytearray(b"a" * 64))
    pool.write(h, memoryview(b"b" * 64))
    pool.write(h, memoryview(array("i", [1] * 16)))  # non-byte format is cast
    assert bytes(pool.read(h, 64)) == array("i", [1] * 16).tobytes()
    h2 = pool.store(memoryview(array("q", [7] * 8)), 2)
    assert bytes(pool.read(h2, 64)) == array("q", [7] * 8).tobytes()


# ---------------------------------------------------------------------------
# Compaction
# ---------------------------------------------------------------------------


def test_compaction_frees_expected_pages() -> None:
    moves: dict[int, int] = {}
    p = ZsPool(on_move=lambda owner, h: moves.__setitem__(owner, h))
    try:
        size = obj_size(p, 32)  # 128 objects per page
        hs = [p.malloc(size, i) for i in range(10 * 128)]
        live = {}
        for i, h in enumerate(hs):
            if i % 128 < 12:
                p.write(h, payload(i, size))
                live[i] = h
            else:
                p.free(h)
        assert p.total_pages() == 10
        row = next(r for r in p.class_stats() if r.index == 0)
        assert row.freeable == 9 and row.fullness[0] == 10  # all in the 10% group
        assert p.compact() == 9
        assert p.pages_compacted == 9 and p.total_pages() == 1
        assert len(moves) == 9 * 12  # nine sources of twelve objects each
        live.update(moves)
        for owner, h in live.items():
            assert p.owner(h) == owner
            assert bytes(p.read(h, size)) == payload(owner, size)
        assert p.compact() == 0 and p.pages_compacted == 9

        # A multi-page class where zs_can_compact stops the loop early:
        # four 8-object zspages (3 pages each) with 5 objects each.
        size2 = obj_size(p, 1536)
        spec = p.size_class(size2)
        assert (spec.pages_per_zspage, spec.objs_per_zspage) == (3, 8)
        hs2 = [p.malloc(size2, 10_000 + i) for i in range(32)]
        for i, h in enumerate(hs2):
            if i % 8 >= 5:
                p.free(h)
            else:
                p.write(h, payload(10_000 + i, size2))
                live[10_000 + i] = h
        assert p.total_pages() == 1 + 12
        moves.clear()
        # Kernel trace: dst = D, src = C: 3 objects fill D; then dst = B, src = C
        # (now sparsest): its 2 objects go to B, C is freed.  (32-20)//8 == 1
        # zspage was promised, so the loop stops with A and B partial.
        assert p.compact() == 3
        assert len(moves) == 5
        assert p.pages_compacted == 12 and p.total_pages() == 1 + 9
        row2 = next(r for r in p.class_stats() if r.index == spec.index)
        assert row2.freeable == 0 and row2.obj_used == 20 and row2.obj_allocated == 24
        live.update(moves)
        for owner, h in live.items():
            assert p.owner(h) == owner
            n = size if owner < 10_000 else size2
            assert bytes(p.read(h, n)) == payload(owner, n)
    finally:
        p.close()


@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(
    chain=st.sampled_from([4, 8, 16]),
    ops=st.lists(
        st.one_of(
            st.tuples(st.just("store"), st.sampled_from([1, 24, 40, 200, 1000, 1500, 3000, 4096])),
            st.tuples(st.just("store_many"), st.sampled_from([40, 200, 1000, 1500, 3000])),
            st.tuples(st.just("free"), st.integers(0, 10**6)),
            st.tuples(st.just("free_many"), st.integers(0, 10**6)),
            st.tuples(st.just("compact"), st.just(0)),
        ),
        max_size=40,
    ),
)
def test_random_interleavings_against_model(chain: int, ops: list[tuple[str, int]]) -> None:
    handles: dict[int, int] = {}  # owner -> handle, kept right by on_move

    def moved(owner: int, new: int) -> None:
        assert owner in handles
        handles[owner] = new

    p = ZsPool(chain, on_move=moved)
    model: dict[int, bytes] = {}
    next_owner = 0
    rnd = random.Random(chain)
    try:
        for op, arg in ops:
            if op in ("store", "store_many"):
                # store_many: 60 objects of nearly one size, so that a class
                # gets several zspages and freeing makes compaction move them
                for _ in range(1 if op == "store" else 60):
                    size = arg if op == "store" else rnd.randint(arg - 8, arg)
                    data = payload(next_owner, size)
                    handles[next_owner] = p.store(data, next_owner)
                    model[next_owner] = data
                    next_owner += 1
            elif op in ("free", "free_many") and model:
                owners = sorted(model)
                victims = [owners[arg % len(owners)]]
                if op == "free_many":
                    victims = owners[arg % 3 :: 2]
                for o in victims:
                    p.free(handles.pop(o))
                    del model[o]
            elif op == "compact":
                before = p.total_pages()
                freed = p.compact()
                assert p.total_pages() == before - freed
                assert all(r.freeable == 0 for r in p.class_stats())
            # invariants after every step
            for o, data in model.items():
                h = handles[o]
                assert p.owner(h) == o
                assert bytes(p.read(h, len(data))) == data
            stats = p.class_stats()
            assert p.total_pages() == sum(r.pages_used for r in stats)
            assert sum(r.obj_used for r in stats) == len(model)
            for r in stats:
                assert r.obj_allocated == sum(r.fullness) * r.objs_per_zspage
                assert r.obj_used <= r.obj_allocated
        for o in list(model):
            p.free(handles.pop(o))
        assert p.total_pages() == 0
    finally:
        p.close()


# ---------------------------------------------------------------------------
# debugfs table
# ---------------------------------------------------------------------------

# Verbatim from Z1's sample (a real kernel's zs_stats_size_show output).
Z1_HEADER = (
    " class  size       10%       20%       30%       40%       50%       60%       70%"
    "       80%       90%       99%      100% obj_allocated   obj_used pages_used"
    " pages_per_zspage freeable"
)
Z1_ROW_512 = (
    "    30   512         0        12         4         1         0         1         0"
    "         0         1         0       414          3464       3346        433"
    "                1       14"
)
Z1_ROW_528 = (
    "    31   528         2         7         2         2         1         0         1"
    "         0         0         2       117          4154       3793        536"
    "                4       44"
)


def _build_zspages(p: ZsPool, class_size: int, inuse: list[int]) -> None:
    """Create one zspage per entry, then free objects down to that inuse count."""
    spec = p.size_class(obj_size(p, class_size))
    objs = spec.objs_per_zspage
    hs = [p.malloc(obj_size(p, class_size), i) for i in range(objs * len(inuse))]
    for z, n in enumerate(inuse):
        for h in hs[z * objs + n : (z + 1) * objs]:
            p.free(h)


def test_format_classes_matches_kernel_output(pool: ZsPool) -> None:
    # class 30 (512 B, 8 objs): 12x1, 4x2, 1x3, 1x4, 1x7 objects and 414 full zspages
    _build_zspages(pool, 512, [8] * 414 + [1] * 12 + [2] * 4 + [3, 4, 7])
    # class 31 (528 B, 4 pages, 31 objs): one inuse choice giving Z1's row
    inuse31 = [1, 3] + [5] * 6 + [4] + [7, 8] + [11, 11] + [13] + [20] + [28, 30] + [31] * 117
    assert sum(inuse31) == 3793
    _build_zspages(pool, 528, inuse31)
    text = pool.format_classes()
    lines = text.split("\n")
    assert lines[0] == Z1_HEADER
    assert Z1_ROW_512 in lines and Z1_ROW_528 in lines
    # one row per distinct class, then a blank line and the Total row
    assert len(lines) == 1 + 119 + 3 and lines[-3] == "" and lines[-1] == ""
    total = lines[-2]
    assert total.startswith(" Total       ")
    fields = total.split()
    assert fields[1:12] == [str(v) for v in (2, 19, 6, 3, 1, 1, 1, 0, 1, 2, 531)]
    assert fields[12:] == ["7618", "7139", "969", "58"]
    row = next(r for r in pool.class_stats() if r.index == 30)
    fullness = (0, 12, 4, 1, 0, 1, 0, 0, 1, 0, 414)
    assert row == ClassStat(30, 512, fullness, 3464, 3346, 433, 1, 8, 14)


# ---------------------------------------------------------------------------
# Real memory: RSS follows total_pages()
# ---------------------------------------------------------------------------


def _anon_rss() -> int:
    """Resident anonymous bytes of this process (page-table walk: exact)."""
    try:
        with open("/proc/self/smaps_rollup") as f:
            for line in f:
                if line.startswith("Anonymous:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * PAGE_SIZE


def test_rss_tracks_total_pages() -> None:
    rnd = random.Random(42)
    source = memoryview(rnd.randbytes(PAGE_SIZE))
    sizes = array("H", [rnd.choice((rnd.randint(100, 3600), 4096)) for _ in range(60_000)])
    handles = array("Q", bytes(8 * len(sizes)))
    target = 64 << 20
    p = ZsPool()
    gc.collect()
    base = _anon_rss()
    n = 0
    while p.total_pages() * PAGE_SIZE < target:
        size = sizes[n]
        handles[n] = p.store(source[:size], n)
        n += 1
    used = p.total_pages() * PAGE_SIZE
    grown = _anon_rss() - base
    print(
        f"\n{n} objects: total_pages*4096 = {used} B, RSS growth {grown} B "
        f"({100 * (grown - used) / used:+.3f} %)"
    )
    assert abs(grown - used) <= 0.03 * used
    # free a scattered half: RSS follows the partially empty zspages' accounting
    for i in range(0, n, 2):
        p.free(handles[i])
    half = p.total_pages() * PAGE_SIZE
    grown_half = _anon_rss() - base
    assert abs(grown_half - half) <= 0.03 * used
    # compaction gives pages back for real

    def moved(owner: int, new_handle: int) -> None:
        handles[owner] = new_handle

    p.on_move = moved
    p.compact()
    compacted = p.total_pages() * PAGE_SIZE
    assert compacted < half
    assert abs((_anon_rss() - base) - compacted) <= 0.03 * used
    # ... and after everything is freed, the memory is gone
    for i in range(1, n, 2):
        p.free(handles[i])
    assert p.total_pages() == 0
    after = _anon_rss() - base
    print(
        f"half freed: {half} B vs RSS {grown_half} B; compacted {p.pages_compacted} pages -> "
        f"{compacted} B; all freed: RSS growth {after} B"
    )
    assert after <= 0.03 * used
    p.close()
    assert p.mapped_bytes() == 0


@pytest.mark.parametrize("populate", [True, False])
def test_barely_used_zspages_are_fully_resident(
    populate: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One object per class still costs whole zspages, in RSS as in mm_stat.

    ``populate=False`` exercises the page-touching fallback used when the
    kernel lacks MADV_POPULATE_WRITE.
    """
    if not populate:
        monkeypatch.setattr(zsmalloc, "_populate_write", False)
    p = ZsPool(16)
    gc.collect()
    base = _anon_rss()
    handles = [p.malloc(spec.size - ZS_HANDLE_SIZE, i) for i, spec in enumerate(p.specs)]
    used = p.total_pages() * PAGE_SIZE
    grown = _anon_rss() - base
    assert used == sum(s.pages_per_zspage for s in p.specs) * PAGE_SIZE  # 1863 pages
    assert abs(grown - used) <= 0.05 * used
    for h in handles:
        p.free(h)
    assert p.total_pages() == 0 and _anon_rss() - base <= 0.05 * used
    p.close()


def test_free_unmaps_empty_segments_and_close_releases() -> None:
    p = ZsPool()
    hs = [p.malloc(4096, i) for i in range(3 * 512)]  # 2 MiB segments of 512 pages
    assert p.total_pages() == 1536 and p.mapped_bytes() == 3 * (2 << 20)
    for h in hs:
        p.free(h)
    assert p.total_pages() == 0
    assert p.mapped_bytes() == 2 << 20  # one empty spare segment for the class
    h = p.store(b"z" * 4096, 1)
    view = p.read(h, 4096)  # a view outliving close() must not make it fail
    p.close()
    assert p.mapped_bytes() == 0 and p.total_pages() == 0
    del view
    # the pool is empty and usable again (a new device after reset)
    h = p.store(b"again", 2)
    assert bytes(p.read(h, 5)) == b"again" and p.total_pages() == 1
    p.close()


# ---------------------------------------------------------------------------
# store_many: a batch leaves exactly the state of one-by-one stores
# ---------------------------------------------------------------------------


def _pool_state(p: ZsPool) -> list[object]:
    """Everything malloc/free/compaction decide, per class, plus the totals."""
    out: list[object] = [p.total_pages(), p.peak_pages]
    for c in p._classes:
        out.append(
            (
                c.index,
                [list(d) for d in c.groups],  # fullness lists, in order
                c.mask,
                {
                    s: (n, c.freeobj[s], c.howner[s] if c.huge else 0)
                    for s, n in enumerate(c.inuse)
                    if n
                },
                (c.used, c.allocated, c.nzspages, c.spare, list(c.seg_live), sorted(c.free_slots)),
            )
        )
    return out


@pytest.mark.parametrize("seed", range(40))
def test_store_many_equals_one_by_one(seed: int) -> None:
    rng = random.Random(seed)
    a = ZsPool(rng.choice([4, 8, 16]))
    b = ZsPool(a.chain_size)
    live: dict[int, tuple[int, int, int]] = {}
    owner = 0
    try:
        for _ in range(rng.randrange(1, 8)):
            n = rng.randrange(1, 300)
            sizes = [
                PAGE_SIZE if r < 0.15 else rng.randrange(1, PAGE_SIZE + 1) if r < 0.3
                else rng.choice([100, 700, 2000, 3000, 3700])
                for r in (rng.random() for _ in range(n))
            ]  # fmt: skip
            blobs: list[bytes | memoryview] = [payload(owner + k, s) for k, s in enumerate(sizes)]
            blobs = [memoryview(x) if rng.random() < 0.3 else x for x in blobs]
            owners = list(range(owner, owner + n))
            owner += n
            ha = [a.store(x, o) for x, o in zip(blobs, owners, strict=True)]
            hb = b.store_many(blobs, sizes, owners)
            for o, h1, h2, x in zip(owners, ha, hb, blobs, strict=True):
                assert bytes(b.read(h2, len(x))) == bytes(x) and b.owner(h2) == o
                live[o] = (h1, h2, len(x))
            assert _pool_state(a) == _pool_state(b)
            for o in rng.sample(sorted(live), k=rng.randrange(0, len(live) // 2 + 1)):
                h1, h2, _ = live.pop(o)
                a.free(h1)
                b.free(h2)
            assert _pool_state(a) == _pool_state(b)
    finally:
        a.close()
        b.close()


def test_store_many_undoes_a_bad_batch(pool: ZsPool) -> None:
    pool.store_many([payload(1, 100)], [100], [1])
    before = (pool.class_stats(), pool.total_pages())
    bad: list[bytes | memoryview] = [
        payload(2, 100),
        payload(3, 63),  # not the 64 bytes its size says
        payload(4, 50),
        b"x" * PAGE_SIZE,
    ]
    with pytest.raises(ValueError):
        pool.store_many(bad, [100, 64, 50, PAGE_SIZE], [2, 3, 4, 5])
    assert (pool.class_stats(), pool.total_pages()) == before
    with pytest.raises(ValueError):
        pool.store_many([b""], [0], [1])
    with pytest.raises(ValueError):
        pool.store_many([b"x"], [1], [-1])
    assert pool.store_many([], [], []) == []


def test_store_many_rss_tracks_total_pages() -> None:
    """Batched stores make new zspages resident in runs: RSS still equals
    total_pages (no page ahead of an allocation), and frees give it back."""
    rng = random.Random(7)
    p = ZsPool()
    gc.collect()
    base = _anon_rss()
    handles: list[int] = []
    for b in range(40):
        sizes = [PAGE_SIZE if rng.random() < 0.2 else rng.randrange(16, 3600) for _ in range(256)]
        handles += p.store_many([bytes(s) for s in sizes], sizes, range(b * 256, b * 256 + 256))
    used = p.total_pages() * PAGE_SIZE
    grown = _anon_rss() - base
    assert abs(grown - used) <= 0.03 * used, (grown, used)
    for h in handles:
        p.free(h)
    assert p.total_pages() == 0 and _anon_rss() - base <= 0.03 * used
    p.close()


# ----------------------------------------------------------- the C fill loop


def _snapshot(value: object) -> object:
    """A class field, copied for comparing: dicts (fullness groups) as lists
    of their keys in order, a segment's mmap as "mapped"."""
    if isinstance(value, dict):
        return list(value)
    if isinstance(value, list):
        return [v if isinstance(v, int) else _snapshot(v) for v in value]
    if value is None or isinstance(value, int):
        return value
    return "mapped"


def _fields(p: ZsPool, names: str) -> list[tuple[object, ...]]:
    """``names`` (space-separated `_Class` fields) of every class, copied."""
    return [tuple(_snapshot(getattr(c, n)) for n in ["index", *names.split()]) for c in p._classes]


def _class_state(p: ZsPool) -> list[tuple[object, ...]]:
    """Everything the fill loop touches, per class (fullness lists in order)."""
    return _fields(p, "inuse freeobj groups mask used allocated nzspages")


@pytest.mark.skipif(zsmalloc._zs_fill is None, reason="zramfs._zpages not built")
@pytest.mark.parametrize("seed", range(6))
def test_c_fill_leaves_what_the_python_fill_leaves(
    seed: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """store_many with `_zs_fill` (C) and without (Python `_fill`) on the same
    interleaving of batches and frees: same handles, same class state (free
    lists, fullness lists in order, counters), same bytes in every object."""
    rng = random.Random(seed)
    ops: list[tuple[list[int], list[int], list[int]]] = []  # (sizes, owners, frees)
    live: list[int] = []  # store-order indices of objects not freed yet
    owner = 0
    for _ in range(40):
        frees: list[int] = []
        if live and rng.random() < 0.4:
            rng.shuffle(live)
            cut = rng.randrange(1, len(live) + 1)
            frees, live = live[:cut], live[cut:]
        n = rng.randrange(1, 300)
        sizes = [rng.choice([rng.randrange(1, 200), rng.randrange(1, PAGE_SIZE + 1)])
                 for _ in range(n)]  # fmt: skip
        owners = list(range(owner, owner + n))
        live += owners  # owners are store-order indices too
        owner += n
        ops.append((sizes, owners, frees))

    def run(fill: object) -> tuple[list[list[int]], list[tuple[object, ...]], list[bytes]]:
        monkeypatch.setattr(zsmalloc, "_zs_fill", fill)
        p = ZsPool()
        try:
            handles: list[int] = []  # by store order
            batches: list[list[int]] = []
            freed: set[int] = set()
            for sizes, owners, frees in ops:
                for j in frees:
                    p.free(handles[j])
                    freed.add(j)
                blobs = [payload(o, n) for o, n in zip(owners, sizes, strict=True)]
                hs = p.store_many(blobs, sizes, range(owners[0], owners[-1] + 1))
                batches.append(hs)
                handles += hs
            sizes_all = [n for sizes, _, _ in ops for n in sizes]
            owners_all = [o for _, owners, _ in ops for o in owners]
            data = [
                bytes(p.read(h, n)) + p.owner(h).to_bytes(8, "little")
                for j, (h, n) in enumerate(zip(handles, sizes_all, strict=True))
                if j not in freed
            ]
            assert all(
                p.owner(h) == o
                for j, (h, o) in enumerate(zip(handles, owners_all, strict=True))
                if j not in freed
            )
            return batches, _class_state(p), data
        finally:
            p.close()

    c_side = run(zsmalloc._zs_fill)
    py_side = run(None)
    assert c_side[1] == py_side[1]
    assert c_side[2] == py_side[2]
    # Handles encode segment numbers, which only the order of segment growth
    # decides: the same operations give the same numbers.
    assert c_side[0] == py_side[0]


@pytest.mark.skipif(zsmalloc._zs_fill is None, reason="zramfs._zpages not built")
def test_c_fill_argument_checks() -> None:
    from zramfs import _zpages as zp

    p = ZsPool()
    try:
        c = p._classes[3]
        with pytest.raises(TypeError, match="must be lists"):
            zp.zs_fill(c, None, [0], 0, (b"x",), [1], [0], [0])  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="outside ks"):
            zp.zs_fill(c, None, [0], 2, [b"x"], [1], [0], [0])
        # No partial zspage yet: nothing stored from the groups.
        assert zp.zs_fill(c, None, [0], 0, [b"x"], [1], [0], [0]) == 0
    finally:
        p.close()


# ------------------------------------------- one object at a time, in C


try:
    from zramfs import _zpages as _zp
except ImportError:  # not built
    _zp = None  # type: ignore[assignment]


@pytest.mark.skipif(_zp is None, reason="zramfs._zpages not built")
@pytest.mark.parametrize("seed", range(12))
def test_c_store_free_leave_what_python_leaves(seed: int) -> None:
    """``_zpages.zs_store`` / ``zs_free`` (the C write path's allocator) and
    ``ZsPool.store`` / ``free`` through one random history of single stores
    and frees, huge objects and emptied zspages included: the same handles,
    the same state of every class (fullness lists in order, free lists,
    counters, arena slots) and the same bytes in every object."""
    assert _zp is not None
    assert (_zp.HANDLE_SEG_SHIFT, _zp.HANDLE_OFF_MASK) == (HANDLE_SEG_SHIFT, HANDLE_OFF_MASK)
    rng = random.Random(seed)
    chain = rng.choice([4, 8, 16])
    py, c = ZsPool(chain), ZsPool(chain)
    live: dict[int, tuple[int, int, int]] = {}  # owner -> (py handle, c handle, size)
    try:
        for owner in range(3000):
            if live and rng.random() < 0.45:
                o = rng.choice(list(live))
                h1, h2, _ = live.pop(o)
                py.free(h1)
                _zp.zs_free(c, h2)
            r = rng.random()
            size = PAGE_SIZE if r < 0.1 else rng.randrange(1, PAGE_SIZE + 1) if r < 0.4 else (
                rng.choice([40, 300, 1500, 2900]))
            blob = payload(owner, size)
            h1 = py.store(blob, owner)
            h2 = _zp.zs_store(c, memoryview(blob) if owner % 3 else blob, owner)
            assert h1 == h2
            live[owner] = (h1, h2, size)
            if owner % 500 == 0:
                assert _pool_state(py) == _pool_state(c)
        assert _pool_state(py) == _pool_state(c)
        for o, (h1, h2, n) in live.items():
            assert bytes(c.read(h2, n)) == bytes(py.read(h1, n)) == payload(o, n)
            assert c.owner(h2) == o
        # Several segments of one class, then all freed: emptied zspages
        # whose segments get unmapped (not just the spare kept).
        for owner in range(3000, 3000 + 2500):
            blob = payload(owner, 2900)
            live[owner] = (py.store(blob, owner), _zp.zs_store(c, blob, owner), 2900)
        assert _pool_state(py) == _pool_state(c)
        for o in rng.sample(list(live), len(live)):
            h1, h2, _ = live.pop(o)
            py.free(h1)
            _zp.zs_free(c, h2)
        assert _pool_state(py) == _pool_state(c) and c.total_pages() == 0
        assert c.mapped_bytes() == py.mapped_bytes()
    finally:
        py.close()
        c.close()


@pytest.mark.skipif(_zp is None, reason="zramfs._zpages not built")
def test_c_free_refuses_bad_handles_and_changes_nothing(pool: ZsPool) -> None:
    assert _zp is not None
    h = _zp.zs_store(pool, payload(1, 100), 1)
    big = _zp.zs_store(pool, payload(2, PAGE_SIZE), 2)
    _zp.zs_free(pool, h)
    before = _pool_state(pool)
    for bad in (h, h + 16, h ^ 2, big + 16, big | 2, 1 << 62, 0, 2**64 - 1):
        with pytest.raises(ValueError):
            _zp.zs_free(pool, bad)
        assert _pool_state(pool) == before
    for bad_size, err in ((b"", errno.EINVAL), (bytes(PAGE_SIZE + 1), errno.ENOSPC)):
        with pytest.raises(ZramError) as ei:  # the pool's own errors (_bad_malloc)
            _zp.zs_store(pool, bad_size, 3)
        assert ei.value.errno == err
    with pytest.raises((ValueError, OverflowError)):
        _zp.zs_store(pool, b"x", -1)
    with pytest.raises(ValueError):
        _zp.zs_store(pool, b"x", 1 << 63)
    assert _pool_state(pool) == before


@pytest.mark.skipif(_zp is None, reason="zramfs._zpages not built")
def test_c_store_failing_zspage_allocation_changes_nothing(
    pool: ZsPool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A store that needs a new zspage raises what `_alloc_zspage` raises
    (ENOMEM from the arena) and leaves the pool as it was."""
    assert _zp is not None
    _zp.zs_store(pool, payload(1, 100), 1)
    before = _pool_state(pool)

    def no_memory(c: object) -> int:
        raise ZramError(errno.ENOMEM, "test")

    monkeypatch.setattr(pool, "_alloc_zspage", no_memory)
    with pytest.raises(ZramError):
        _zp.zs_store(pool, payload(2, 3000), 2)  # another class: no partial zspage
    assert _pool_state(pool) == before


# ------------------------------------- a device batch in one C call


SAME_BIT = 1 << 13
HUGE_BIT = 1 << 16
BITS = 7 << 40  # stands for the device's ac_time bits


def _device_batch(rng: random.Random, n: int, huge: int) -> tuple[bytearray, bytes, bytes]:
    """A `compress_blocks`-shaped batch: ``(out, sizes, data)`` for n pages,
    with same-filled pages (size 0), raw ones (>= huge) and blocks."""
    out = bytearray(n * PAGE_SIZE)
    sizes = array("H")
    data = bytearray(n * PAGE_SIZE)
    for k in range(n):
        r = rng.random()
        if r < 0.1:
            data[k * PAGE_SIZE : (k + 1) * PAGE_SIZE] = rng.randbytes(8) * (PAGE_SIZE // 8)
            sizes.append(0)
            continue
        data[k * PAGE_SIZE : (k + 1) * PAGE_SIZE] = rng.randbytes(PAGE_SIZE)
        size = (
            PAGE_SIZE if r < 0.2 else rng.randrange(huge, PAGE_SIZE + 1) if r < 0.3
            else rng.randrange(1, huge)
        )  # fmt: skip
        sizes.append(size)
        out[k * PAGE_SIZE : k * PAGE_SIZE + size] = rng.randbytes(size)
    return out, sizes.tobytes(), bytes(data)


def _store_batch_by_store_many(
    p: ZsPool, out: bytes | bytearray, sizes: bytes, lo: int, hi: int, data: bytes, pos: int,
    first: int, handle: list[int], attr: list[int],
) -> None:  # fmt: skip
    """What `ZsPool.store_batch` promises, spelled out with `store_many`."""
    sz = array("H", sizes)
    blobs: list[bytes | bytearray] = []
    lens: list[int] = []
    owners: list[int] = []
    for k in range(lo, hi):
        page = data[pos + (k - lo) * PAGE_SIZE : pos + (k - lo + 1) * PAGE_SIZE]
        slot = first + k - lo
        if sz[k] == 0:
            handle[slot] = int.from_bytes(page[:8], "little")
            attr[slot] = SAME_BIT | BITS
            continue
        raw = sz[k] >= p.huge_class_size
        blob = page if raw else out[k * PAGE_SIZE : k * PAGE_SIZE + sz[k]]
        blobs.append(blob)
        lens.append(len(blob))
        owners.append(slot)
        attr[slot] = len(blob) | BITS | (HUGE_BIT if raw else 0)
    for o, h in zip(owners, p.store_many(blobs, lens, owners), strict=True):
        handle[o] = h


def _as_frames(out: bytearray, sizes: bytes, big: int) -> tuple[list[bytes], bytes]:
    """The same batch as any codec's frames (``store_batch``'s list mode):
    page k's frame is its block, or for a raw page a frame of ``big`` bytes
    (a zstd frame of an incompressible page is longer than the page)."""
    sz = array("H", sizes)
    frames = [
        b"" if not n else bytes(out[k * PAGE_SIZE : k * PAGE_SIZE + n]) if n < PAGE_SIZE
        else bytes(big)
        for k, n in enumerate(sz)
    ]  # fmt: skip
    return frames, array("H", map(len, frames)).tobytes()


@pytest.mark.skipif(zsmalloc._zs_store_batch is None, reason="zramfs._zpages not built")
@pytest.mark.parametrize("frames", [False, True])
@pytest.mark.parametrize("seed", range(6))
def test_store_batch_leaves_what_store_many_leaves(seed: int, frames: bool) -> None:
    """`ZsPool.store_batch` (C) against `store_many` of the same objects in
    page order, over batches and frees: same pool state (fullness lists in
    order, free lists, counters), same handles, same table words, same
    bytes; slots outside the batch untouched.  Both layouts: the
    accelerator's blocks, and a list of frames."""
    rng = random.Random(seed)
    a = ZsPool(rng.choice([4, 8, 16]))
    b = ZsPool(a.chain_size)
    slots = 4096
    ha, aa = [0] * slots, [0] * slots
    hb, ab = memoryview(bytearray(8 * slots)).cast("Q"), memoryview(bytearray(8 * slots)).cast("Q")
    try:
        first = 0
        for _ in range(12):
            n = rng.randrange(1, 300)
            out, sizes, data = _device_batch(rng, n, a.huge_class_size)
            lo = rng.randrange(0, n)
            hi = rng.randrange(lo, n + 1)
            pos = rng.randrange(0, 3) * 8
            data = bytes(pos) + data[lo * PAGE_SIZE :]
            _store_batch_by_store_many(a, out, sizes, lo, hi, data, pos, first, ha, aa)
            bits = (BITS, HUGE_BIT, SAME_BIT)
            if frames:
                listed, fsizes = _as_frames(out, sizes, rng.choice([PAGE_SIZE, PAGE_SIZE + 13]))
                got = b.store_batch(listed, fsizes, lo, hi, data, pos, first, hb, ab, *bits)
            else:
                got = b.store_batch(out, sizes, lo, hi, data, pos, first, hb, ab, *bits)
            sz = array("H", sizes)[lo:hi]
            raw = [s for s in sz if s >= a.huge_class_size]
            blocks = sum(s for s in sz if 0 < s < a.huge_class_size)
            assert got == (PAGE_SIZE * len(raw) + blocks, len(raw), sz.count(0))
            assert _pool_state(a) == _pool_state(b)
            assert hb.tolist() == ha and ab.tolist() == aa
            for slot in range(first, first + hi - lo):
                if not aa[slot] & SAME_BIT:
                    n_bytes = aa[slot] & 0xFFFF & ~HUGE_BIT
                    assert bytes(b.read(hb[slot], n_bytes)) == bytes(a.read(ha[slot], n_bytes))
                    assert b.owner(hb[slot]) == slot
            first += hi - lo
            # Free some, so later batches meet partial zspages.
            for slot in rng.sample(range(first), k=first // 3):
                if aa[slot] and not aa[slot] & SAME_BIT:
                    a.free(ha[slot])
                    b.free(hb[slot])
                    ha[slot] = aa[slot] = hb[slot] = ab[slot] = 0
            assert _pool_state(a) == _pool_state(b)
    finally:
        a.close()
        b.close()


@pytest.mark.skipif(zsmalloc._zs_store_batch is None, reason="zramfs._zpages not built")
@pytest.mark.parametrize("fail_at", [1, 3, 6])
def test_store_batch_failing_allocation_undoes_like_store_many(
    fail_at: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """ENOMEM from `_alloc_zspages` part-way (some classes stored already):
    the error comes out, every object the call stored is freed, the table
    is untouched, and the pool is left as `store_many`'s undo leaves it
    (objects and pages as before; emptied segments kept as spares)."""
    rng = random.Random(3)
    out, sizes, data = _device_batch(rng, 200, ZsPool().huge_class_size)
    states = []
    for way in ("store_many", "store_batch"):
        p = ZsPool()
        try:
            handle, attr = _table(200)
            p.store_batch(out, sizes, 0, 100, data, 0, 0, handle, attr, BITS, HUGE_BIT, SAME_BIT)
            pages = p.total_pages()
            calls = 0

            def failing(c: object, n: int, real: Any = p._alloc_zspages) -> object:
                nonlocal calls
                calls += 1
                if calls == fail_at:
                    raise ZramError(errno.ENOMEM, "arena")
                return real(c, n)

            monkeypatch.setattr(p, "_alloc_zspages", failing)
            h2, a2 = _table(200)
            with pytest.raises(ZramError) as ei:
                if way == "store_many":
                    ha, aa = [0] * 200, [0] * 200
                    _store_batch_by_store_many(
                        p, out, sizes, 100, 200, data[100 * PAGE_SIZE :], 0, 100, ha, aa
                    )
                else:
                    p.store_batch(out, sizes, 100, 200, data[100 * PAGE_SIZE :], 0, 100, h2, a2,
                                  BITS, HUGE_BIT, SAME_BIT)  # fmt: skip
            assert ei.value.errno == errno.ENOMEM and calls == fail_at
            assert h2.tolist() == [0] * 200 and a2.tolist() == [0] * 200
            assert p.total_pages() == pages
            monkeypatch.undo()
            states.append(_pool_state(p))
        finally:
            p.close()
    assert states[0] == states[1]


def _table(n: int) -> tuple[memoryview, memoryview]:
    return memoryview(bytearray(8 * n)).cast("Q"), memoryview(bytearray(8 * n)).cast("Q")


@pytest.mark.skipif(zsmalloc._zs_store_batch is None, reason="zramfs._zpages not built")
def test_store_batch_argument_checks() -> None:
    p = ZsPool()
    try:
        out, sizes, data = _device_batch(random.Random(1), 8, p.huge_class_size)
        h, a = _table(8)
        before = _pool_state(p)
        bad_sizes = array("H", sizes)
        bad_sizes[3] = PAGE_SIZE + 1
        for args in [
            (out, sizes, 0, 9, data, 0, 0, h, a),  # past the batch
            (out, sizes, 0, 8, data, 8, 0, h, a),  # past the data
            (out, sizes, 0, 8, data, 0, 1, h, a),  # past the table
            (out, bad_sizes.tobytes(), 0, 8, data, 0, 0, h, a),
            (out, sizes, 5, 4, data, 0, 0, h, a),
        ]:
            with pytest.raises(ValueError):
                p.store_batch(*args, BITS, HUGE_BIT, SAME_BIT)  # type: ignore[arg-type]
            assert _pool_state(p) == before and h.tolist() == [0] * 8
        with pytest.raises(BufferError):  # a read-only table
            p.store_batch(out, sizes, 0, 8, data, 0, 0, bytes(64), a, BITS, HUGE_BIT, SAME_BIT)  # type: ignore[arg-type]
    finally:
        p.close()


# ------------------------------------------------ zspage allocation in C


def _alloc_state(p: ZsPool) -> list[object]:
    """What `_alloc_zspages` / `_free_zspage` touch: per class the heap (as
    laid out), segment liveness and mapping, spare, freeobj and counters."""
    fields = _fields(p, "free_slots seg_live segs spare freeobj nzspages allocated")
    return [p._pages, p.peak_pages, *fields]


@pytest.mark.skipif(zsmalloc._zs_alloc_zspages is None, reason="zramfs._zpages not built")
@pytest.mark.parametrize("seed", range(8))
def test_c_alloc_zspages_leaves_what_python_leaves(
    seed: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Random allocations (across segment ends, growing the slot space,
    mapping segments) and frees (unmapping segments, keeping a spare): the C
    `_alloc_zspages` returns the same runs and leaves the same state as the
    Python steps, and its zspages are resident."""
    rng = random.Random(seed)
    fast, slow = ZsPool(), ZsPool()
    c_alloc = zsmalloc._zs_alloc_zspages
    live: list[tuple[int, int]] = []  # (position in _classes, slot)
    classes = range(len(fast._classes))
    try:
        for _ in range(150):
            if live and rng.random() < 0.4:
                for _ in range(rng.randint(1, 30)):
                    if not live:
                        break
                    ci, s = live.pop(rng.randrange(len(live)))
                    fast._free_zspage(fast._classes[ci], s)
                    slow._free_zspage(slow._classes[ci], s)
            else:
                ci = rng.choice(classes)
                n = rng.choice([1, 2, 3, rng.randint(1, 300)])
                got = fast._alloc_zspages(fast._classes[ci], n)
                monkeypatch.setattr(zsmalloc, "_zs_alloc_zspages", None)
                want = slow._alloc_zspages(slow._classes[ci], n)
                monkeypatch.setattr(zsmalloc, "_zs_alloc_zspages", c_alloc)
                assert got == want
                c = fast._classes[ci]
                for z0, nz in got:
                    live += [(ci, z) for z in range(z0, z0 + nz)]
                    mm = c.segs[z0 >> c.shift]
                    assert mm is not None
                    base = (z0 & c.smask) * c.zbytes
                    assert _resident(mm, base, nz * c.zbytes) == nz * c.ppz
            assert _alloc_state(fast) == _alloc_state(slow)
        assert fast.total_pages() == slow.total_pages() > 0
    finally:
        fast.close()
        slow.close()


def _resident(mm: Any, offset: int, length: int) -> int:
    """Pages of ``mm[offset:offset+length]`` in RAM (``mincore``)."""
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    anchor = ctypes.c_char.from_buffer(mm)
    addr = ctypes.addressof(anchor) + offset
    del anchor
    vec = (ctypes.c_ubyte * (length // PAGE_SIZE))()
    assert libc.mincore(ctypes.c_void_p(addr), ctypes.c_size_t(length), vec) == 0
    return sum(b & 1 for b in vec)


@pytest.mark.parametrize("accel", [True, False])
def test_failing_populate_gives_back_and_changes_nothing(
    accel: bool, monkeypatch: pytest.MonkeyPatch, tmp_path: Any
) -> None:
    """A populate that fails part-way (here EFAULT: the next segment is a
    file mapping past the end of its file) gives back the run it had made
    resident, returns every slot to the heap and raises ENOMEM, in C as in
    Python."""
    import mmap

    if not accel:
        monkeypatch.setattr(zsmalloc, "_zs_alloc_zspages", None)
    elif zsmalloc._zs_alloc_zspages is None:
        pytest.skip("zramfs._zpages not built")
    p = ZsPool()
    c = next(c for c in p._classes if c.ppz == 4 and not c.huge)
    per = 1 << c.shift
    try:
        runs = p._alloc_zspages(c, per - 1)  # segment 0 but its last zspage
        assert runs == [(0, per - 1)]

        def past_eof(c2: Any, si: int) -> mmap.mmap:
            with open(tmp_path / f"seg{si}", "w+b") as f:
                f.truncate(c2.seg_bytes)
                mm = mmap.mmap(f.fileno(), c2.seg_bytes)  # (keeps its own fd)
                f.truncate(0)
            c2.segs[si] = mm
            mv = memoryview(mm)
            p._set_views(c2, si, mv, mv.cast("Q"))
            return mm

        monkeypatch.setattr(p, "_map_segment", past_eof)
        p._grow(c)  # segment 1's slots exist, its mapping does not yet
        before = _alloc_state(p)
        seg0 = c.segs[0]
        assert seg0 is not None
        with pytest.raises(ZramError) as e:
            p._alloc_zspages(c, 3)  # runs (per - 1, 1) in segment 0, (per, 2) in 1
        assert e.value.errno == errno.ENOMEM
        assert zsmalloc._populate_write
        after = _alloc_state(p)
        ci = p._classes.index(c)
        # Segment 1 got mapped (as the Python steps leave it); nothing else moved.
        assert [m is None for m in c.segs] == [False, False]
        assert after[:ci + 2] == before[:ci + 2] and after[ci + 3:] == before[ci + 3:]
        b, a = before[ci + 2], after[ci + 2]
        assert isinstance(a, tuple) and isinstance(b, tuple)
        assert sorted(a[1]) == sorted(b[1]) and a[2:3] == b[2:3] and a[4:] == b[4:]
        assert _resident(seg0, (per - 1) * c.zbytes, c.zbytes) == 0
        assert _resident(seg0, 0, (per - 1) * c.zbytes) == (per - 1) * c.ppz
    finally:
        p.close()
