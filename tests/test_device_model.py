"""Stateful model of one ZramDevice against a bytearray (Hypothesis).

Every rule drives the real device through its public coroutines (one
``trio.run`` per step; no lock survives a step), mirrors the operation on a
plain model, and the invariant then checks the device against the model:

* contents, page by page (read through the slot table so that checking does
  not itself clear IDLE or stamp ac_time);
* which slots are allocated, their block_state flags and ac_time;
* mm_stat: orig = allocated pages, compr = sum of object sizes, mem_used_total
  = the pool's pages and >= what its objects occupy, same_pages, huge_pages,
  huge_pages_since and pages_compacted monotone, mem_used_max >= total;
* the pool's per-class object counts and owners agree with the slots;
* io_stat (notify_free counts every whole page discarded, allocated or not);
* no entry lock, dev_lock or in-flight request left behind.

Compression runs inline or on worker threads depending on the device's cost
estimate; the write rules force either path (``_comp_cost_ns``), and the
concurrent rule runs writers, discards and readers in one nursery.
"""

from __future__ import annotations

import errno
import random
from collections import Counter
from collections.abc import Awaitable, Callable
from functools import partial
from typing import Any

import pytest
import trio
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from zramfs.core.device import ZramDevice
from zramfs.core.entrylock import LOCK_MASK
from zramfs.core.slots import SlotTable
from zramfs.core.zsmalloc import ZsPool
from zramfs.errors import ZramError

PAGE = 4096
ALGS = ("lz4", "lz4hc", "zstd", "deflate", "brotli")
KINDS = ("zero", "word", "random", "text")
MAX_PAGES = 20
FORCE_OFFLOAD = 10**9  # any batch is "expensive": compress on worker threads
FORCE_INLINE = 0

_WORDS = (
    b"the", b"zram", b"device", b"stores", b"pages", b"in", b"compressed", b"form",
    b"memory", b"swap", b"kernel", b"slot", b"lock", b"trio", b"task", b"of", b"and",
    b"a", b"to", b"is", b"with", b"for", b"block", b"data", b"write", b"read",
)  # fmt: skip


def make_data(kind: str, seed: int, n: int) -> bytes:
    """``n`` bytes: zeros, a repeated 8-byte word, incompressible, or text."""
    r = random.Random(seed)
    if kind == "zero":
        return bytes(n)
    if kind == "word":
        word = r.randbytes(8)
        return (word * (n // 8 + 1))[:n]
    if kind == "random":
        return r.randbytes(n)
    out = bytearray()
    while len(out) < n:
        out += r.choice(_WORDS)
        out += b"\n" if r.random() < 0.1 else b" "
    return bytes(out[:n])


def run(fn: Callable[..., Awaitable[Any]], *args: Any) -> Any:
    async def main() -> Any:
        with trio.fail_after(30):
            return await fn(*args)

    return trio.run(main)


offsets = st.one_of(
    st.integers(0, MAX_PAGES + 2).map(lambda p: p * PAGE),
    st.integers(0, (MAX_PAGES + 2) * PAGE),
)
lengths = st.one_of(
    st.integers(1, PAGE),
    st.integers(1, 6).map(lambda p: p * PAGE),
    st.integers(1, 8 * PAGE),
)
kinds = st.sampled_from(KINDS)
seeds = st.integers(0, 2**32 - 1)


class DeviceModel(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.now = 1000
        self.dev = ZramDevice(0, clock=lambda: self.now)
        self.size = 0
        self.content = bytearray()
        self.alloc: set[int] = set()
        self.idle: set[int] = set()
        self.ac: dict[int, int] = {}
        self.huge_expect: dict[int, bool] = {}
        self.notify_free = 0
        self.seen_since = 0
        self.seen_compacted = 0

    # ----------------------------------------------------------- model helpers

    def _init(self, alg: str, level: int | None, pages: int, extra: int) -> None:
        dev = self.dev
        run(dev.store_comp_algorithm, alg.encode())
        if level is not None:
            run(dev.store_algorithm_params, b"algo=%s level=%d" % (alg.encode(), level))
        # Any size in the last page rounds up to ``pages`` pages.
        disksize = (pages - 1) * PAGE + extra + 1
        run(dev.store_disksize, b"%d\n" % disksize if extra % 2 else b"%#x" % disksize)
        assert dev.show_comp_algorithm().count(b"[%s]" % alg.encode()) == 1
        self.size = pages * PAGE
        self.content = bytearray(self.size)
        self.alloc.clear()
        self.idle.clear()
        self.ac.clear()
        self.huge_expect.clear()
        self.notify_free = 0
        self.seen_since = 0
        self.seen_compacted = 0

    def _page(self, p: int) -> bytes:
        return bytes(self.content[p * PAGE : (p + 1) * PAGE])

    def _same(self, p: int) -> bool:
        page = self._page(p)
        return page[:8] * (PAGE // 8) == page

    def _touch_write(self, p: int) -> None:
        self.alloc.add(p)
        self.idle.discard(p)
        self.ac[p] = self.now
        self.huge_expect.pop(p, None)

    def _touch_read(self, p: int) -> None:
        if p in self.alloc:
            self.idle.discard(p)
            self.ac[p] = self.now

    def _free(self, p: int) -> None:
        self.content[p * PAGE : (p + 1) * PAGE] = bytes(PAGE)
        self.alloc.discard(p)
        self.idle.discard(p)
        self.ac.pop(p, None)
        self.huge_expect.pop(p, None)

    def _apply_write(self, off: int, data: bytes, kind: str) -> None:
        self.content[off : off + len(data)] = data
        end = off + len(data)
        for p in range(off // PAGE, (end - 1) // PAGE + 1):
            self._touch_write(p)
            if off <= p * PAGE and (p + 1) * PAGE <= end:
                # A whole page of one kind: random is always stored raw.
                self.huge_expect[p] = kind == "random"

    def _apply_discard(self, off: int, n: int, zero_edges: bool) -> int:
        end = min(off + n, self.size)
        if off >= end:
            return 0
        first = -(-off // PAGE)
        last = end // PAGE
        for p in range(first, last):
            self._free(p)
        if zero_edges:
            if off % PAGE:
                hp = off // PAGE
                stop = min(end, (hp + 1) * PAGE)
                if hp in self.alloc:
                    self.content[off:stop] = bytes(stop - off)
                    self._touch_write(hp)
            if end % PAGE and end // PAGE >= first:
                tp = end // PAGE
                if tp in self.alloc:
                    self.content[tp * PAGE : end] = bytes(end - tp * PAGE)
                    self._touch_write(tp)
        freed = max(0, last - first)
        self.notify_free += freed
        return freed

    @property
    def table(self) -> SlotTable:
        assert self.dev.table is not None
        return self.dev.table

    @property
    def pool(self) -> ZsPool:
        assert self.dev.pool is not None
        return self.dev.pool

    def mm(self) -> list[int]:
        return [int(x) for x in self.dev.show_mm_stat().split()]

    # ------------------------------------------------------------------ rules

    @initialize(
        alg=st.sampled_from(ALGS),
        level=st.sampled_from([None, 1, 3]),
        pages=st.integers(1, MAX_PAGES),
        extra=st.integers(0, PAGE - 1),
    )
    def init(self, alg: str, level: int | None, pages: int, extra: int) -> None:
        self._init(alg, level, pages, extra)

    @rule(off=offsets, n=lengths, kind=kinds, seed=seeds, offload=st.booleans())
    def write(self, off: int, n: int, kind: str, seed: int, offload: bool) -> None:
        data = make_data(kind, seed, n)
        self.dev._comp_cost_ns = FORCE_OFFLOAD if offload else FORCE_INLINE
        if off >= self.size:
            with pytest.raises(ZramError) as ei:
                run(self.dev.write, off, data)
            assert ei.value.errno == errno.ENOSPC
            return
        got = run(self.dev.write, off, data)
        assert got == min(n, self.size - off)
        self._apply_write(off, data[:got], kind)

    @rule(
        first=st.integers(0, MAX_PAGES), count=st.integers(1, 8), kind=kinds, seed=seeds,
        offload=st.booleans(),
    )  # fmt: skip
    def write_pages(self, first: int, count: int, kind: str, seed: int, offload: bool) -> None:
        """Page-aligned multi-page writes: the batch (offload) path proper."""
        self.write(first * PAGE, count * PAGE, kind, seed, offload)

    @rule(off=offsets, n=st.integers(0, 6 * PAGE))
    def read(self, off: int, n: int) -> None:
        got = run(self.dev.read, off, n)
        assert got == bytes(self.content[off : off + n])
        if got:
            for p in range(off // PAGE, (off + len(got) - 1) // PAGE + 1):
                self._touch_read(p)

    @rule(off=offsets, n=lengths, zero_edges=st.booleans())
    def discard(self, off: int, n: int, zero_edges: bool) -> None:
        freed = run(partial(self.dev.discard, off, n, zero_edges=zero_edges))
        assert freed == self._apply_discard(off, n, zero_edges)

    @rule(p=st.integers(0, MAX_PAGES + 2))
    def slot_free_notify(self, p: int) -> None:
        ok = self.dev.slot_free_notify(p)
        assert ok == (p < self.size // PAGE)
        if ok:
            self.notify_free += 1
            self._free(p)

    @rule(dt=st.integers(1, 120))
    def tick(self, dt: int) -> None:
        self.now += dt

    @rule()
    def idle_all(self) -> None:
        run(self.dev.store_idle, b"all\n")
        self.idle = {p for p in self.alloc if not self._same(p)}

    @rule(age=st.integers(0, 300))
    def idle_age(self, age: int) -> None:
        run(self.dev.store_idle, b"%d" % age)
        cutoff = self.now - age
        assert cutoff > 0  # cutoff 0 would mean "all"
        for p in self.alloc:
            if self._same(p):
                continue
            if self.ac[p] < cutoff:
                self.idle.add(p)
            else:
                self.idle.discard(p)

    @rule()
    def compact(self) -> None:
        before = self.pool.total_pages()
        compacted = self.pool.pages_compacted
        run(self.dev.store_compact, b"1")
        after = self.pool.total_pages()
        assert self.pool.pages_compacted - compacted == before - after
        assert all(r.freeable == 0 for r in self.pool.class_stats())

    @rule()
    def reset_mem_used_max(self) -> None:
        run(self.dev.store_mem_used_max, b"0")
        s = self.mm()
        assert s[4] == s[2]

    @rule(
        alg=st.sampled_from(ALGS),
        level=st.sampled_from([None, 1, 3]),
        pages=st.integers(1, MAX_PAGES),
        extra=st.integers(0, PAGE - 1),
    )
    def reset_and_reinit(self, alg: str, level: int | None, pages: int, extra: int) -> None:
        run(self.dev.store_reset, b"1")
        dev = self.dev
        assert dev.show_initstate() == b"0\n" and dev.show_disksize() == b"0\n"
        assert dev.show_mm_stat().split() == [b"0"] * 9
        assert dev.show_io_stat() == b"       0        0 0        0\n"
        assert dev.show_comp_algorithm().startswith(b"[lz4] ")
        self._init(alg, level, pages, extra)

    @rule(data=st.data())
    def concurrent(self, data: st.DataObject) -> None:
        self._concurrent(data, data.draw(st.booleans()))

    @rule(data=st.data())
    def concurrent_offloaded(self, data: st.DataObject) -> None:
        self._concurrent(data, True)

    def _concurrent(self, data: st.DataObject, offload: bool) -> None:
        """Writers, discards and overlapping full-page writers on disjoint page
        ranges, plus readers anywhere, all in one nursery.  Offloaded writes
        hold their slots across the worker-thread await, so readers queue."""
        npages = self.size // PAGE
        draw = data.draw
        self.dev._comp_cost_ns = FORCE_OFFLOAD if offload else FORCE_INLINE
        nseg = draw(st.integers(1, min(4, npages)))
        cuts = sorted(draw(st.sets(st.integers(1, max(1, npages - 1)), max_size=nseg - 1)))
        bounds = sorted({0, *[c for c in cuts if 0 < c < npages], npages})
        old = bytes(self.content)
        ops: list[tuple[str, int, int, Any]] = []
        for a, b in zip(bounds, bounds[1:], strict=False):
            op = draw(st.sampled_from(["write", "discard", "overlap", "none"]))
            lo = draw(st.integers(a * PAGE, b * PAGE - 1))
            hi = draw(st.integers(lo + 1, b * PAGE))
            if op == "write":
                kind = draw(kinds)
                ops.append(("write", lo, hi, (kind, make_data(kind, draw(seeds), hi - lo))))
            elif op == "discard":
                ops.append(("discard", lo, hi, draw(st.booleans())))
            elif op == "overlap":
                pa = make_data(draw(kinds), draw(seeds), (b - a) * PAGE)
                pb = make_data(draw(kinds), draw(seeds), (b - a) * PAGE)
                ops.append(("overlap", a * PAGE, b * PAGE, (pa, pb)))
        readers = draw(
            st.lists(st.tuples(st.integers(0, self.size - 1), st.integers(1, 4 * PAGE)), max_size=4)
        )
        delays = draw(st.lists(st.integers(0, 3), min_size=len(ops) * 2 + len(readers)))
        results: list[tuple[int, int, bytes]] = []
        dev = self.dev

        async def later(k: int, fn: Callable[..., Awaitable[Any]], *args: Any) -> None:
            for _ in range(delays[k]):
                await trio.sleep(0)
            await fn(*args)

        async def reader(off: int, n: int) -> None:
            results.append((off, n, await dev.read(off, n)))

        async def main() -> None:
            k = 0
            async with trio.open_nursery() as nursery:
                for kind, lo, hi, arg in ops:
                    if kind == "write":
                        nursery.start_soon(later, k, dev.write, lo, arg[1])
                    elif kind == "discard":
                        nursery.start_soon(
                            later, k, partial(dev.discard, zero_edges=arg), lo, hi - lo
                        )
                    else:
                        nursery.start_soon(later, k, dev.write, lo, arg[0])
                        k += 1
                        nursery.start_soon(later, k, dev.write, lo, arg[1])
                    k += 1
                for off, n in readers:
                    nursery.start_soon(later, k, reader, off, n)
                    k += 1

        run(main)

        # The model after the fact (the ranges are disjoint, so order does not matter).
        choices: dict[int, tuple[bytes, ...]] = {}  # page -> allowed versions
        for kind, lo, hi, arg in ops:
            if kind == "write":
                self._apply_write(lo, arg[1], arg[0])
            elif kind == "discard":
                self._apply_discard(lo, hi - lo, arg)
            else:
                for p in range(lo // PAGE, hi // PAGE):
                    rel = p * PAGE - lo
                    va, vb = arg[0][rel : rel + PAGE], arg[1][rel : rel + PAGE]
                    actual = run(dev.read, p * PAGE, PAGE)
                    assert actual in (va, vb), f"page {p}: neither writer's version"
                    choices[p] = (va, vb)
                    self.content[p * PAGE : (p + 1) * PAGE] = actual
                    self._touch_write(p)
        new = bytes(self.content)
        # Each page a reader saw is the page before or after (entry locks make
        # every page store atomic), or either overlapping writer's version.
        for off, n, got in results:
            assert len(got) == min(n, self.size - off)
            end = off + len(got)
            for p in range(off // PAGE, (end - 1) // PAGE + 1):
                lo, hi = max(off, p * PAGE), min(end, (p + 1) * PAGE)
                seen = got[lo - off : hi - off]
                allowed = {old[lo:hi], new[lo:hi]}
                allowed.update(v[lo - p * PAGE : hi - p * PAGE] for v in choices.get(p, ()))
                assert seen in allowed, f"reader at {off}: page {p} torn"
            for p in range(off // PAGE, (end - 1) // PAGE + 1):
                self._touch_read(p)

    # -------------------------------------------------------------- invariant

    @invariant()
    def device_matches_model(self) -> None:
        dev, t, pool = self.dev, self.table, self.pool
        npages = self.size // PAGE
        assert dev.disksize == self.size and t.npages == npages
        attr = t.attr

        # Locks: nothing held or queued between steps.
        assert t.locks.contended_slots == 0
        assert not dev.dev_lock._locks.attr[0]
        assert dev.bstat.in_flight == 0
        for i in range(npages):
            assert not attr[i] & LOCK_MASK, f"slot {i} still locked"

        # Contents, without touching the slots.
        for p in range(npages):
            assert dev._load_ram(t, pool, p, attr[p]) == self._page(p), f"page {p}"
            if p not in self.alloc:
                assert attr[p] == 0 and t.handle[p] == 0 and not any(self._page(p))

        # block_state: allocated slots, flags, ac_time.
        listed: dict[int, tuple[int, str]] = {}
        for line in dev.show_block_state().decode().splitlines():
            idx, ts, flags = line.split()
            assert len(line) == 39 and ts.endswith(".000000")
            listed[int(idx)] = (int(ts[:-7]), flags)
        assert set(listed) == self.alloc
        same = {p for p in self.alloc if self._same(p)}
        huge = set()
        for p, (ac, flags) in listed.items():
            assert ac == self.ac[p], f"slot {p} ac_time"
            assert flags[0] == ("s" if p in same else ".")
            assert flags[3] == ("i" if p in self.idle else "."), f"slot {p} idle"
            assert flags[1] == flags[4] == flags[5] == "."
            if p in same:
                assert flags[2] == "." and t.size(p) == 0
                assert t.handle[p].to_bytes(8, "little") == self._page(p)[:8]
                continue
            size = t.size(p)
            assert 0 < size <= PAGE
            assert (flags[2] == "h") == (size == PAGE)
            assert size == PAGE or size < dev.huge_class_size
            if flags[2] == "h":
                huge.add(p)
            expect = self.huge_expect.get(p)
            if expect is not None:
                assert (p in huge) == expect, f"slot {p} huge"

        # mm_stat against the slots.
        stored = sorted(self.alloc - same)
        s = self.mm()
        assert len(s) == 9
        assert s[0] == len(self.alloc) * PAGE == dev.stats.pages_stored * PAGE
        assert s[1] == sum(t.size(p) for p in stored)
        assert s[2] == pool.total_pages() * PAGE
        assert s[2] >= sum(pool.size_class(t.size(p)).size for p in stored) >= s[1]
        assert s[3] == 0
        assert s[4] >= s[2]
        assert s[5] == len(same)
        assert s[6] == pool.pages_compacted >= self.seen_compacted
        assert s[7] == len(huge)
        assert s[8] >= s[7] and s[8] >= self.seen_since
        self.seen_since, self.seen_compacted = s[8], s[6]

        # The pool holds exactly the slots' objects, owned by their slots.
        used = Counter(pool.size_class(t.size(p)).index for p in stored)
        rows = pool.class_stats()
        assert {r.index: r.obj_used for r in rows if r.obj_used} == dict(used)
        assert sum(r.pages_used for r in rows) == pool.total_pages()
        for p in stored:
            assert pool.owner(t.handle[p]) == p

        assert dev.show_io_stat() == b"%8d %8d 0 %8d\n" % (0, 0, self.notify_free)

    def teardown(self) -> None:
        if self.dev.initialized:
            run(self.dev.store_reset, b"1")


DeviceModel.TestCase.settings = settings(
    max_examples=50,
    stateful_step_count=40,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
TestDeviceModel = DeviceModel.TestCase
