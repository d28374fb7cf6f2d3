"""pyfuse3's synchronous handlers as zramfs implements them (our pyfuse3 patch,
patches/README.md): the C read fast path (`zramfs.core.device.read_fast_path`,
``Operations.read_nowait``) and ``write_nowait`` (one page stored inline),
against the async ``read`` / ``write`` they short-cut.

Twin mounts, in process, go through the same history; then every request is
answered on one twin as pyfuse3 answers it (``read_nowait``, and the async
``read`` when that returns None) and on the other by the async ``read`` alone.
Results, slot words, block statistics, ``mm_stat``/``io_stat`` and the device
lock's grant count must be equal afterwards, and the fast path must have served
exactly the requests it is meant to serve: a fast path that silently gave up
on everything (say, after an attribute was renamed) fails here too.
"""

from __future__ import annotations

import errno
import os
import random
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import pyfuse3
import pytest

from tests.devutil import io, locations, mm, pool, store, table
from zramfs.backends.lz4 import ACCELERATED, _zp
from zramfs.core import device as dm
from zramfs.core.device import JOIN_SPLIT_MIN_PAGES, PARALLEL, ZramDevice, boottime_seconds
from zramfs.core.entrylock import LOCK_MASK, WRITER
from zramfs.core.registry import ZramRegistry
from zramfs.core.slots import ACTIME_SHIFT, PRIO_MASK, SAME, SIZE_MASK, WB
from zramfs.core.zsmalloc import HANDLE_OFF_MASK, HANDLE_SEG_SHIFT
from zramfs.errors import ZramError
from zramfs.fs.ops import ZramOperations

pytestmark = pytest.mark.skipif(not ACCELERATED, reason="the C accelerator is not built")

PAGE = 4096
NPAGES = 256  # a 1 MiB device


Pre = Sequence[tuple[str, bytes]]


@dataclass
class Twin:
    ops: ZramOperations
    dev: ZramDevice
    fh: int
    now: list[int]


async def twin(alg: bytes | None = None, pre: Pre = ()) -> Twin:
    """A mount with one device: ``comp_algorithm`` = ``alg``, the ``pre``
    stores, then ``disksize`` 1 MiB and the image open."""
    reg = ZramRegistry(1)
    ops = ZramOperations(reg)
    dev = reg.devices[0]
    now = [1000]
    dev.clock = lambda: now[0]
    if alg is not None:
        await store(dev, "comp_algorithm", alg)
    for name, value in pre:
        await store(dev, name, value)
    await store(dev, "disksize", b"%d" % (NPAGES * PAGE))
    fi = await ops.open(ops.tree.image_inode(0), os.O_RDWR, None)  # type: ignore[arg-type]
    return Twin(ops, dev, fi.fh, now)


def nowait(ops: ZramOperations) -> Callable[[int, int, int], bytes | None]:
    """The mount's C ``read_nowait`` alone (its Python fallback cut off:
    None where it hands a request on)."""
    fn = ops.read_nowait
    assert _zp is not None
    assert isinstance(fn, partial) and fn.func is _zp.read_nowait, "no C read fast path"
    cfg = fn.args[0]
    return partial(fn.func, (*cfg[:7], None, *cfg[8:]))


def mixed_pages(seed: int) -> bytes:
    """Compressible, huge, same-filled, zero and partly written pages."""
    r = random.Random(seed)
    words = [b"zram", b"slot", b"page", b"lock", b"trio", b"swap", b"\n"]
    out = []
    for i in range(NPAGES):
        kind = i % 5
        if kind == 0:
            out.append(r.randbytes(PAGE))  # huge
        elif kind == 1:
            out.append(bytes([i % 251]) * PAGE)  # same-filled
        elif kind == 2 and i % 3 == 0:
            out.append(bytes(PAGE))  # zero
        else:
            text = b" ".join(r.choice(words) for _ in range(PAGE // 3))
            out.append(text[:PAGE])
    return b"".join(out)


async def fill(t: Twin, seed: int = 1) -> bytes:
    data = mixed_pages(seed)
    # Leave the last 16 pages unwritten (never-allocated slots).
    for off in range(0, (NPAGES - 16) * PAGE, 64 * PAGE):
        n = min(64 * PAGE, (NPAGES - 16) * PAGE - off)
        assert await t.ops.write(t.fh, off, data[off : off + n]) == n
    return data[: (NPAGES - 16) * PAGE] + bytes(16 * PAGE)


def state(t: Twin) -> tuple[object, ...]:
    b = t.dev.bstat
    tb = t.dev.table
    return (
        None if tb is None else tb.attr.tolist(),
        None if tb is None else locations(t.dev),
        (b.read_ios, b.read_sectors, b.in_flight, b.write_ios, b.write_sectors),
        mm(t.dev),
        io(t.dev),
        t.dev.dev_lock.stats.acquired,
        t.dev.dev_lock.words[0],
    )


async def as_pyfuse3(
    t: Twin, off: int, size: int, whole_chain: bool = False
) -> tuple[bytes | str, bool]:
    """What a reader gets, and whether ``read_nowait`` answered: the C alone,
    or with ``whole_chain`` the mount's whole ``read_nowait`` (C, then Python)."""
    try:
        fast = (t.ops.read_nowait if whole_chain else nowait(t.ops))(t.fh, off, size)
    except pyfuse3.FUSEError as e:
        return errno.errorcode[e.errno], True
    if fast is not None:
        return fast, True
    try:
        return await t.ops.read(t.fh, off, size), False
    except pyfuse3.FUSEError as e:
        return errno.errorcode[e.errno], False


async def as_async(t: Twin, off: int, size: int) -> bytes | str:
    try:
        return await t.ops.read(t.fh, off, size)
    except pyfuse3.FUSEError as e:
        return errno.errorcode[e.errno]


Setup = Callable[[Twin], Awaitable[None]]


async def compare(
    setup: Setup,
    requests: list[tuple[int, int]],
    alg: bytes | None = None,
    pre: Pre = (),
    pre_b: Pre | None = None,
) -> list[bool]:
    """Run ``requests`` on twins after ``setup``; which ones the fast path served.
    (``pre_b``: the second twin's ``pre``, when it must differ: a backing file.)"""
    a, b = await twin(alg, pre), await twin(alg, pre if pre_b is None else pre_b)
    for t in (a, b):
        await setup(t)
    assert state(a) == state(b)
    served = []
    for i, (off, size) in enumerate(requests):
        a.now[0] = b.now[0] = 2000 + i  # every read stamps a new ac_time
        got, fast = await as_pyfuse3(a, off, size)
        assert got == await as_async(b, off, size), (off, size)
        assert state(a) == state(b), (off, size)
        served.append(fast)
    return served


def pages(*spans: tuple[int, int]) -> list[tuple[int, int]]:
    return [(first * PAGE, n * PAGE) for first, n in spans]


async def written(t: Twin) -> None:
    await fill(t)


async def test_whole_page_reads_are_served_and_equal() -> None:
    reqs = pages(
        *[(i, 1) for i in range(NPAGES)], (0, 16), (3, 64), (0, JOIN_SPLIT_MIN_PAGES - 1),
        (200, 56), (0, JOIN_SPLIT_MIN_PAGES), (16, 240), (0, NPAGES),
    )  # fmt: skip
    served = await compare(written, reqs)
    assert all(served)


@pytest.mark.skipif(not PARALLEL, reason="one CPU: reads are never split")
@pytest.mark.parametrize("split", [0, 1])
async def test_long_reads_split_as_the_async_read_learns(split: int) -> None:
    """A read long enough for `_load_joined` to split it over two threads
    (loop's 512 KiB reads) takes the way `_split_pays` decides, feeds its time
    back to `_split_learn` (that way's sample count grows) and serves what
    the async read serves."""
    key = ("r", "lz4", 1)
    saved = dm._par_stats.get(key)
    try:
        ns = [10**9, 1] if split else [1, 10**9]  # warmed up, this way far cheaper
        dm._par_stats[key] = [*ns, 1, 0, 100, 100]
        reqs = pages((0, JOIN_SPLIT_MIN_PAGES), (16, 240), (0, NPAGES))
        before = dm._par_stats[key][4 + split]
        other = dm._par_stats[key][5 - split]
        served = await compare(written, reqs)
        assert all(served)
        st = dm._par_stats[key]
        assert st[3] == split
        # The async twin's reads learned too: two samples a request, one way.
        assert st[4 + split] == before + 2 * len(reqs) and st[5 - split] == other
    finally:
        if saved is None:
            dm._par_stats.pop(key, None)
        else:
            dm._par_stats[key] = saved


async def test_data_and_ac_time_are_the_async_reads() -> None:
    t = await twin()
    data = await fill(t)
    t.now[0] = 4242
    for i in range(NPAGES):
        assert nowait(t.ops)(t.fh, i * PAGE, PAGE) == data[i * PAGE : (i + 1) * PAGE]
    attr = table(t.dev).attr
    stamped = [attr[i] >> ACTIME_SHIFT for i in range(NPAGES) if attr[i] & SIZE_MASK]
    assert stamped and set(stamped) == {4242}


async def test_default_clock_is_boottime() -> None:
    reg = ZramRegistry(1)
    ops = ZramOperations(reg)
    dev = reg.devices[0]
    await store(dev, "disksize", b"64K")
    fi = await ops.open(ops.tree.image_inode(0), os.O_RDWR, None)  # type: ignore[arg-type]
    await ops.write(fi.fh, 0, b"x" * 100 + bytes(PAGE - 100))
    before = boottime_seconds()
    assert nowait(ops)(fi.fh, 0, PAGE) == b"x" * 100 + bytes(PAGE - 100)
    assert before <= table(dev).attr[0] >> ACTIME_SHIFT <= boottime_seconds()


async def test_requests_it_leaves_to_read() -> None:
    reqs = [
        (100, PAGE),  # unaligned offset
        (0, 100),  # part of a page
        (PAGE, PAGE + 1),
        (NPAGES * PAGE, PAGE),  # at the end: b""
        ((NPAGES - 1) * PAGE, 2 * PAGE),  # past the end: short
        (0, 0),
    ]
    served = await compare(written, reqs)
    assert not any(served)


async def test_locked_slot_or_device_goes_to_read() -> None:
    # (The async read would wait for these locks: only the fast path is run.)
    t = await twin()
    data = await fill(t)
    fast = nowait(t.ops)
    locks = table(t.dev).locks
    assert locks.try_lock_shared(7)  # a reader mid-await
    before = state(t)
    assert fast(t.fh, 7 * PAGE, PAGE) is None
    assert fast(t.fh, 4 * PAGE, 8 * PAGE) is None
    assert state(t) == before  # nothing stamped, nothing counted
    assert fast(t.fh, 6 * PAGE, PAGE) == data[6 * PAGE : 7 * PAGE]
    locks.unlock_shared(7)

    dl = t.dev.dev_lock
    assert dl._locks.try_lock(0)  # reset / disksize in progress
    before = state(t)
    assert fast(t.fh, PAGE, PAGE) is None
    assert state(t) == before
    dl._locks.unlock(0)

    async def dev_reader(t: Twin) -> None:
        await fill(t)
        assert t.dev.dev_lock.try_read()  # another request in flight: shares

    assert await compare(dev_reader, pages((1, 1))) == [True]


async def test_uninitialized_device_and_other_files_go_to_read() -> None:
    async def reset(t: Twin) -> None:
        await fill(t)
        await t.ops.release(t.fh)
        await store(t.dev, "reset", b"1")
        fi = await t.ops.open(t.ops.tree.image_inode(0), os.O_RDONLY, None)  # type: ignore[arg-type]
        t.fh = fi.fh

    assert await compare(reset, pages((0, 1))) == [False]

    t = await twin()
    await fill(t)
    assert nowait(t.ops)(t.fh + 100, 0, PAGE) is None  # no such handle
    node = t.ops.tree.get(t.ops.tree.image_inode(0))
    assert node is not None
    mm_ino = next(ino for ino, n in t.ops.tree.nodes.items() if n.attr and n.attr.name == "mm_stat")
    fi = await t.ops.open(mm_ino, os.O_RDONLY, None)  # type: ignore[arg-type]
    assert nowait(t.ops)(fi.fh, 0, PAGE) is None  # a control file
    del t.ops._devices[0]  # as if hot-removed under the handle
    assert nowait(t.ops)(t.fh, 0, PAGE) is None


@pytest.mark.parametrize("alg", [b"zstd", b"lz4hc", b"deflate"])
async def test_other_codecs(alg: bytes) -> None:
    served = await compare(written, pages((0, 1), (2, 1), (0, 8)), alg=alg)
    # lz4hc blocks are LZ4 blocks: its codec decodes with the same C call;
    # zstd has its own (the accelerator's zstd_read_slots); deflate none.
    assert served == [alg != b"deflate"] * 3


async def test_recompressed_and_written_back_slots_go_to_read(tmp_path: Path) -> None:
    async def recompressed(t: Twin) -> None:
        await fill(t)
        await store(t.dev, "recompress", b"algo=lz4hc")  # no type: every slot

    # Which slots lz4hc shrank is data-dependent; every one must go to read.
    secondary = [("recomp_algorithm", b"algo=lz4hc priority=1")]
    a = await twin(pre=secondary)
    await recompressed(a)
    attr = table(a.dev).attr
    prio = [i for i in range(NPAGES) if attr[i] & PRIO_MASK]
    plain = [i for i in range(NPAGES) if not attr[i] & PRIO_MASK]
    assert prio and plain
    reqs = pages(*[(i, 1) for i in prio[:20] + plain[:20]])
    served = await compare(recompressed, reqs, pre=secondary)
    assert served == [False] * len(prio[:20]) + [True] * len(plain[:20])

    backing = [tmp_path / "backing-a", tmp_path / "backing-b", tmp_path / "backing-c"]
    for f in backing:
        f.write_bytes(bytes(NPAGES * PAGE))
    backing_dev = [[("backing_dev", os.fsencode(f))] for f in backing]

    async def written_back(t: Twin) -> None:
        await fill(t)
        await store(t.dev, "idle", b"all")
        await store(t.dev, "writeback", b"page_indexes=0-9")

    b = await twin(pre=backing_dev[0])
    await written_back(b)
    wb = [i for i in range(NPAGES) if table(b.dev).attr[i] & WB]
    assert wb
    reqs = pages(*[(i, 1) for i in wb], (20, 1))
    served = await compare(written_back, reqs, pre=backing_dev[1], pre_b=backing_dev[2])
    assert served == [False] * len(wb) + [True]


async def test_corrupt_object_is_the_async_reads_error() -> None:
    async def corrupt_page_2(t: Twin) -> None:
        await fill(t)
        h = table(t.dev).handle[2]
        n = table(t.dev).attr[2] & SIZE_MASK
        assert 0 < n < PAGE
        views = pool(t.dev).segment_views()
        o = (h >> 1) & HANDLE_OFF_MASK
        views[h >> HANDLE_SEG_SHIFT][o : o + n] = b"\xff" * n

    served = await compare(corrupt_page_2, pages((2, 1), (0, 4), (3, 1)))
    assert served == [False, False, True]


# ----------------------------------------------------------------- write_nowait


def page_of(seed: int) -> bytes:
    r = random.Random(seed)
    return b" ".join(r.choice([b"zram", b"page", b"slot"]) for _ in range(PAGE))[:PAGE]


async def test_write_nowait_stores_one_page() -> None:
    t = await twin()
    await fill(t)
    b = t.dev.bstat
    ios, sectors, grants = b.write_ios, b.write_sectors, t.dev.dev_lock.stats.acquired
    stored = mm(t.dev)[0]
    assert t.ops.write_nowait(t.fh, 3 * PAGE, page_of(1)) == PAGE
    assert (b.write_ios, b.write_sectors) == (ios + 1, sectors + 8)
    assert t.dev.dev_lock.stats.acquired == grants + 1
    assert mm(t.dev)[0] == stored  # an overwrite: as many pages stored
    assert await t.ops.read(t.fh, 3 * PAGE, PAGE) == page_of(1)
    assert t.ops.write_nowait(t.fh, (NPAGES - 1) * PAGE, page_of(2)) == PAGE  # a new slot
    assert mm(t.dev)[0] == stored + PAGE


async def test_write_nowait_leaves_everything_else_to_write() -> None:
    t = await twin()
    await fill(t)
    wn = t.ops.write_nowait
    page = page_of(3)
    for off, buf in [
        (100, page),  # unaligned
        (0, page[:100]),  # part of a page
        (0, page + page[:100]),  # more than one, not whole pages
        ((NPAGES - 1) * PAGE, page + page),  # runs past the end: write's short write
        (NPAGES * PAGE, page),  # past the end: write's ENOSPC
        (0, b""),
    ]:
        before = state(t)
        assert wn(t.fh, off, buf) is None
        assert state(t) == before
    locks = table(t.dev).locks
    assert locks.try_lock_shared(5)
    before = state(t)
    assert wn(t.fh, 5 * PAGE, page) is None  # write would queue for the slot
    assert state(t) == before  # not even the device lock's grant counted
    before = state(t)
    assert wn(t.fh, 2 * PAGE, page * 8) is None  # ... also in the middle of a batch
    assert state(t) == before
    locks.unlock_shared(5)
    assert t.dev.dev_lock._locks.try_lock(0)
    before = state(t)
    assert wn(t.fh, 5 * PAGE, page) is None  # ... or for the device
    assert wn(t.fh, 8 * PAGE, page * 8) is None
    assert state(t) == before
    t.dev.dev_lock._locks.unlock(0)
    mm_ino = next(ino for ino, n in t.ops.tree.nodes.items() if n.attr and n.attr.name == "reset")
    fi = await t.ops.open(mm_ino, os.O_WRONLY, None)  # type: ignore[arg-type]
    assert wn(fi.fh, 0, page) is None  # a control file: its store runs in `write`
    assert wn(t.fh + 100, 0, page) is None
    assert t.dev.table is not None


async def test_write_nowait_failure_is_write_failure() -> None:
    t = await twin()
    await fill(t)
    used = mm(t.dev)[2]
    await store(t.dev, "mem_limit", b"%d" % used)
    before = table(t.dev).attr[NPAGES - 1]
    with pytest.raises(pyfuse3.FUSEError) as ei:
        t.ops.write_nowait(t.fh, (NPAGES - 1) * PAGE, random.Random(9).randbytes(PAGE))
    assert ei.value.errno == errno.EIO
    assert io(t.dev)[1] == 1  # failed_writes, once
    assert table(t.dev).attr[NPAGES - 1] == before
    assert t.dev.bstat.in_flight == 0 and not t.dev.dev_lock.words[0]


@pytest.mark.parametrize("alg", [b"lz4", b"zstd", b"deflate"])
@pytest.mark.parametrize("way", ["all-at-once", "ahead", "mem_limit"])
async def test_write_nowait_stores_whole_pages(
    alg: bytes, way: str, forced_fresh_way: Callable[[ZramDevice, int], None]
) -> None:
    """Aligned writes of several whole pages (loop's 512 KiB requests), over
    fresh and stored slots, are stored by ``write_nowait`` as the async
    ``write`` stores them: each fresh batch the same way on both twins
    (the learners' figures pinned before each request: they are shared and
    timed), and with mem_limit failing some part-way, the same result (EIO)
    and the same pages stored before it."""
    a, b = await twin(alg), await twin(alg)
    for t in (a, b):
        await fill(t)
        if way == "mem_limit":
            await store(t.dev, "mem_limit", b"%d" % (mm(t.dev)[2] + 12 * PAGE))
    comp = a.dev.comps[0]
    assert comp is not None

    def pin(t: Twin) -> None:
        forced_fresh_way(t.dev, int(way == "ahead"))
        dm._ahead_stats[(comp.name, comp.params.level)] = [10_000, dm.AHEAD_SHARE]

    r = random.Random(13)
    results: list[int | str | None] = []
    for i in range(60):
        n = r.choice([2, 8, 16, 40, 128, 200])
        first = r.randrange(NPAGES - n + 1)
        buf = b"".join(r.randbytes(PAGE) if k % 4 == 1 else page_of(i + k) for k in range(n))
        a.now[0] = b.now[0] = 5000 + i
        pin(a)
        got: object
        try:
            got = a.ops.write_nowait(a.fh, first * PAGE, buf)
        except pyfuse3.FUSEError as e:
            got = errno.errorcode[e.errno]
        assert got is not None, (i, n, first)  # nobody holds a slot: served
        pin(b)
        assert got == await as_write(b, first * PAGE, buf), (i, n, first)
        assert wstate(a) == wstate(b), (i, n, first)
        results.append(got)
    assert ("EIO" in results) == (way == "mem_limit")
    for idx in range(NPAGES):
        assert await a.ops.read(a.fh, idx * PAGE, PAGE) == await b.ops.read(b.fh, idx * PAGE, PAGE)


async def test_write_nowait_leaves_worker_thread_batches_to_write() -> None:
    """A batch the offload learner sends to worker threads is declined, not
    counted, and counted once by `write`, which takes it."""
    t = await twin()
    await fill(t)
    comp = t.dev.comps[0]
    assert comp is not None
    key = (comp.name, comp.params.level)
    saved = dm._offload_stats.get(key)
    t.dev._comp_cost_ns = dm.OFFLOAD_MIN_NS  # every batch of 2+ pages is long
    dm._offload_stats[key] = [1, 1]  # offloading measured cheaper
    try:
        buf = page_of(1) + page_of(2)
        before = state(t)
        assert t.ops.write_nowait(t.fh, 0, buf) is None
        assert state(t) == before and dm._offload_stats[key][1] == 1
        assert await t.ops.write(t.fh, 0, buf) == 2 * PAGE
        assert dm._offload_stats[key][1] == 2
        dm._offload_stats[key] = [1 << 40, 5]  # inline cheaper: served
        assert t.ops.write_nowait(t.fh, 0, buf) == 2 * PAGE
        assert dm._offload_stats[key][1] == 6
    finally:
        if saved is None:
            dm._offload_stats.pop(key, None)
        else:
            dm._offload_stats[key] = saved
    assert await t.ops.read(t.fh, 0, 2 * PAGE) == page_of(1) + page_of(2)


async def test_write_nowait_then_write_is_write() -> None:
    """pyfuse3's way (write_nowait, else the async write with the same buffer)
    against the async write alone, over random writes of every shape."""
    a, b = await twin(), await twin()
    r = random.Random(5)
    for i in range(300):
        off = r.randrange(NPAGES) * PAGE + (r.choice([0, 0, 0, r.randrange(PAGE)]))
        n = r.choice([PAGE, PAGE, PAGE, 1, r.randrange(1, 3 * PAGE)])
        buf = page_of(i)[: n % PAGE] if n < PAGE else (page_of(i) * 3)[:n]
        a.now[0] = b.now[0] = 3000 + i
        fast = a.ops.write_nowait(a.fh, off, buf)
        got = await as_write(a, off, buf) if fast is None else fast
        assert got == await as_write(b, off, buf), (off, n)
        assert state(a) == state(b)


async def as_write(t: Twin, off: int, buf: bytes) -> int | str:
    try:
        return await t.ops.write(t.fh, off, buf)
    except pyfuse3.FUSEError as e:
        return errno.errorcode[e.errno]


# ------------------------------------------------- write_nowait in C (the common case)


def c_write(t: Twin) -> tuple[Callable[[int, int, bytes], int | None], list[int]]:
    """The mount's C ``write_nowait`` with its Python fallback wrapped: the
    callable, and the offsets it handed to the fallback."""
    fast = t.ops.write_nowait
    assert _zp is not None
    assert isinstance(fast, partial) and fast.func is _zp.write_nowait, "no C write fast path"
    cfg = list(fast.args[0])
    fallback = cfg[2]
    handed: list[int] = []

    def recording(fh: int, off: int, buf: bytes) -> int | None:
        handed.append(off)
        return fallback(fh, off, buf)  # type: ignore[no-any-return]

    cfg[2] = recording
    return partial(fast.func, tuple(cfg)), handed


def wstate(t: Twin) -> tuple[object, ...]:
    p = pool(t.dev)
    return (*state(t), p.class_stats(), p.total_pages(), p.peak_pages, t.dev._actime)


async def test_c_write_is_the_python_write() -> None:
    """Random whole-page writes of every kind (compressible, huge, zero and
    other same-filled pages) over fresh slots and over every kind of stored
    page: the C path (falling back to Python as it does) against the async
    ``write`` alone leaves the same slots, objects, pool and counters, and
    the C served exactly the writes it is meant to: every one but a
    same-filled page or an overwrite of a same-filled slot."""
    a, b = await twin(), await twin()
    for t in (a, b):
        await fill(t)
    wn, handed = c_write(a)
    r = random.Random(11)
    served_by_c = 0
    for i in range(600):
        idx = r.randrange(NPAGES)
        kind = r.randrange(6)
        buf = (
            r.randbytes(PAGE) if kind == 0  # huge
            else bytes([i % 7]) * PAGE if kind == 1  # same-filled (zero too)
            else page_of(i)
        )  # fmt: skip
        a.now[0] = b.now[0] = 4000 + i
        old_same = bool(table(a.dev).attr[idx] & SAME)
        n = len(handed)
        assert wn(a.fh, idx * PAGE, buf) == PAGE
        assert await as_write(b, idx * PAGE, buf) == PAGE
        assert wstate(a) == wstate(b), i
        assert (len(handed) == n) == (kind != 1 and not old_same), (i, kind, old_same)
        served_by_c += len(handed) == n
    assert served_by_c > 300
    for idx in range(NPAGES):
        assert await a.ops.read(a.fh, idx * PAGE, PAGE) == await b.ops.read(b.fh, idx * PAGE, PAGE)


async def test_c_write_under_mem_limit() -> None:
    """With mem_limit set the C stores what the limit allows and hands the
    rest to Python, which fails it with EIO, counted once, as `write` does."""
    a, b = await twin(), await twin()
    for t in (a, b):
        await fill(t)
        await store(t.dev, "mem_limit", b"%d" % (mm(t.dev)[2] + 3 * PAGE))
    wn, handed = c_write(a)
    r = random.Random(12)
    results = []
    for i in range(200):
        off = (NPAGES - 16 + i % 16) * PAGE
        buf = r.randbytes(PAGE) if i % 2 else page_of(i)
        try:
            got: int | str | None = wn(a.fh, off, buf)
        except pyfuse3.FUSEError as e:
            got = errno.errorcode[e.errno]
        assert got == await as_write(b, off, buf)
        assert wstate(a) == wstate(b), i
        results.append(got)
    assert "EIO" in results and PAGE in results
    assert len(handed) < len(results)  # the C served some of them itself


@pytest.mark.parametrize(
    "pre", [[("comp_algorithm", b"zstd")], [("algorithm_params", b"algo=lz4 level=3")]]
)
async def test_c_write_leaves_other_codecs_to_python(pre: Pre) -> None:
    a, b = await twin(pre=pre), await twin(pre=pre)
    wn, handed = c_write(a)
    for i in range(20):
        assert wn(a.fh, i * PAGE, page_of(i)) == PAGE
        assert await as_write(b, i * PAGE, page_of(i)) == PAGE
        assert wstate(a) == wstate(b)
    assert handed == [i * PAGE for i in range(20)]


async def test_c_write_leaves_locks_and_odd_requests_to_python() -> None:
    t = await twin()
    await fill(t)
    wn, handed = c_write(t)
    page = page_of(3)
    odd = [(100, page), (0, page[:100]), (0, page + page[:1]), (NPAGES * PAGE, page)]
    for off, buf in odd:
        before = wstate(t)
        assert wn(t.fh, off, buf) is None
        assert wstate(t) == before and handed[-1] == off
    locks = table(t.dev).locks
    assert locks.try_lock_shared(5)
    before = wstate(t)
    assert wn(t.fh, 5 * PAGE, page) is None and handed[-1] == 5 * PAGE
    assert wstate(t) == before
    locks.unlock_shared(5)
    assert t.dev.dev_lock._locks.try_lock(0)
    before = wstate(t)
    assert wn(t.fh, 7 * PAGE, page) is None and handed[-1] == 7 * PAGE
    assert wstate(t) == before
    t.dev.dev_lock._locks.unlock(0)
    n = len(handed)
    assert wn(t.fh, 7 * PAGE, page) == PAGE and len(handed) == n  # now the C's
    assert wn(t.fh + 100, 0, page) is None and handed[-1] == 0


# ---------------------------------------- read_nowait in Python (the C's fallback)


@pytest.mark.parametrize("alg", [b"zstd", b"deflate", b"lz4"])
async def test_python_read_nowait_is_the_async_read(alg: bytes) -> None:
    """Every codec's one-page reads are answered without a coroutine (the
    C's for lz4 and zstd, the Python fallback's for the others), equal to
    the async read alone in data and every counter; what neither serves
    (same-filled pages, several pages of a codec without a C read, odd
    shapes) goes to `read`."""
    a, b = await twin(alg), await twin(alg)
    data = b""
    for t in (a, b):
        data = await fill(t)
    same = {i for i in range(NPAGES) if table(a.dev).attr[i] & SAME}
    stored = {i for i in range(NPAGES) if table(a.dev).attr[i] & SIZE_MASK}
    reqs = pages(*[(i, 1) for i in range(NPAGES)], (0, 4)) + [(100, PAGE), (0, 100)]
    for k, (off, size) in enumerate(reqs):
        a.now[0] = b.now[0] = 5000 + k
        got, fast = await as_pyfuse3(a, off, size, whole_chain=True)
        assert got == await as_async(b, off, size), (off, size)
        assert got == data[off : off + size]
        assert state(a) == state(b), (off, size)
        single = size == PAGE and not off % PAGE
        expect = (single and off // PAGE in stored and off // PAGE not in same) or (
            alg in (b"lz4", b"zstd") and size % PAGE == 0 and not off % PAGE
        )
        assert fast == expect, (off, size)


@pytest.mark.parametrize("off,size", [(2 * PAGE, PAGE), (0, 8 * PAGE)])
async def test_python_read_nowait_corrupt_object_is_eio(off: int, size: int) -> None:
    """A zstd object that does not decode: EIO, ``failed_reads`` counted
    once, as the async read does it: from ``read_nowait`` for one page (the
    Python fallback), from `read` for eight (the C's zstd_read_slots fails,
    and the C ``read_nowait`` then leaves the read to `read`, as for lz4)."""
    a, b = await twin(b"zstd"), await twin(b"zstd")
    for t in (a, b):
        await fill(t)
        h = table(t.dev).handle[2]
        n = table(t.dev).attr[2] & SIZE_MASK
        assert 0 < n < PAGE
        o = (h >> 1) & HANDLE_OFF_MASK
        pool(t.dev).segment_views()[h >> HANDLE_SEG_SHIFT][o : o + n] = b"\xff" * n
    assert await as_pyfuse3(a, off, size, whole_chain=True) == ("EIO", size == PAGE)
    assert await as_async(b, off, size) == "EIO"
    assert state(a) == state(b) and io(a.dev)[0] == 1


async def test_python_read_nowait_leaves_locks_to_read() -> None:
    t = await twin(b"zstd")
    data = await fill(t)
    locks = table(t.dev).locks
    assert locks.try_lock_shared(7)
    before = state(t)
    assert t.ops.read_nowait(t.fh, 7 * PAGE, PAGE) is None  # a writer may be queued behind
    assert state(t) == before
    locks.unlock_shared(7)
    assert t.dev.dev_lock._locks.try_lock(0)  # reset / disksize in progress
    before = state(t)
    assert t.ops.read_nowait(t.fh, 8 * PAGE, PAGE) is None
    assert state(t) == before
    t.dev.dev_lock._locks.unlock(0)
    assert t.ops.read_nowait(t.fh, 8 * PAGE, PAGE) == data[8 * PAGE : 9 * PAGE]


# ------------------------------------------- deferred writes (pyfuse3's DEFERRED)


class FakeDeferral:
    """`core.device.WriteDeferral` without pyfuse3: ``queued`` says whether
    another request waits; answers are recorded, oldest first."""

    def __init__(self) -> None:
        self.queued = True
        self.replies: list[int | str] = []

    def waiting(self) -> bool:
        return self.queued

    def reply(self, result: int | ZramError) -> None:
        self.replies.append(
            errno.errorcode[result.errno or 0] if isinstance(result, ZramError) else result
        )


def deferring(t: Twin) -> FakeDeferral:
    fake = FakeDeferral()
    t.ops.deferral = fake  # type: ignore[assignment]
    return fake


def mixed(n: int, seed: int) -> bytes:
    r = random.Random(seed)
    return b"".join(r.randbytes(PAGE) if k % 5 == 1 else page_of(seed + k) for k in range(n))


@pytest.mark.skipif(not PARALLEL, reason="one CPU: nothing goes ahead on a helper")
@pytest.mark.parametrize("end", ["next-write", "drain", "overlapping-write"])
async def test_deferred_write_is_stored_then_answered(
    end: str, forced_fresh_way: Callable[[ZramDevice, int], None]
) -> None:
    """A run of fresh pages with another request queued is deferred: its
    tail's slots are held (the C fast paths decline them) and nothing is
    answered; it is finished and answered, before the next write is
    answered, by that write's handler (interleaved, or first if the ranges
    overlap) or by ``write_drain``; then everything equals the async
    writes'."""
    a, b = await twin(), await twin()
    fake = deferring(a)
    forced_fresh_way(a.dev, 1)
    forced_fresh_way(b.dev, 1)
    first = mixed(64, 1)
    assert a.ops.write_nowait(a.fh, 0, first) is pyfuse3.DEFERRED
    assert a.dev._deferred is not None and fake.replies == []
    held = [i for i in range(64) if table(a.dev).attr[i] & WRITER]
    assert held == list(range(64))  # (the head share is 0: all on the helper)
    assert nowait(a.ops)(a.fh, 3 * PAGE, PAGE) is None  # C read: declined
    wn, handed = c_write(a)
    before = wstate(a)
    assert wn(a.fh, 5 * PAGE, page_of(9)) is None and handed == [5 * PAGE]  # C write: too
    assert wstate(a) == before and fake.replies == []
    assert a.dev.bstat.in_flight == 1 and a.dev.dev_lock.words[0]  # still in its request
    fake.queued = False
    second = mixed(64, 2)
    off2 = {"next-write": 128, "drain": 128, "overlapping-write": 32}[end] * PAGE
    if end == "drain":
        a.ops.write_drain()
        assert fake.replies == [64 * PAGE]
        forced_fresh_way(a.dev, 1)
        assert a.ops.write_nowait(a.fh, off2, second) == 64 * PAGE
    else:
        forced_fresh_way(a.dev, 1)
        assert a.ops.write_nowait(a.fh, off2, second) == 64 * PAGE
        assert fake.replies == [64 * PAGE]  # answered inside, before this one returned
    a.ops.write_drain()  # nothing left
    assert fake.replies == [64 * PAGE] and a.dev._deferred is None
    assert await as_write(b, 0, first) == 64 * PAGE
    forced_fresh_way(b.dev, 1)
    assert await as_write(b, off2, second) == 64 * PAGE
    assert wstate(a)[:-1] == wstate(b)[:-1]  # (not _actime: the twins' clocks agree anyway)
    assert a.dev.bstat.in_flight == 0 and not a.dev.dev_lock.words[0]
    assert a.dev.deferred_writes == 1
    for idx in range(NPAGES):
        assert await a.ops.read(a.fh, idx * PAGE, PAGE) == await b.ops.read(b.fh, idx * PAGE, PAGE)


@pytest.mark.skipif(not PARALLEL, reason="one CPU: nothing goes ahead on a helper")
async def test_deferred_write_that_fails_is_answered_with_eio(
    forced_fresh_way: Callable[[ZramDevice, int], None], monkeypatch: pytest.MonkeyPatch
) -> None:
    """ENOMEM while the deferred tail is stored: answered with EIO (counted
    once in failed_writes), its unstored slots released and empty, the
    device lock and block statistics closed; the range can be written
    again."""
    t = await twin()
    fake = deferring(t)
    forced_fresh_way(t.dev, 1)
    assert t.ops.write_nowait(t.fh, 0, mixed(64, 3)) is pyfuse3.DEFERRED
    p = pool(t.dev)

    def failing(c: object, n: int) -> object:
        raise ZramError(errno.ENOMEM, "injected")

    monkeypatch.setattr(p, "_alloc_zspages", failing)
    t.ops.write_drain()
    assert fake.replies == ["EIO"]
    assert io(t.dev)[1] == 1  # failed_writes
    attr = table(t.dev).attr
    assert not any(attr[i] & LOCK_MASK for i in range(NPAGES))
    assert t.dev.bstat.in_flight == 0 and not t.dev.dev_lock.words[0]
    monkeypatch.undo()
    fake.queued = False
    data = mixed(64, 4)
    assert t.ops.write_nowait(t.fh, 0, data) == 64 * PAGE
    assert await t.ops.read(t.fh, 0, 64 * PAGE) == data


@pytest.mark.skipif(not PARALLEL, reason="one CPU: nothing goes ahead on a helper")
async def test_deferred_write_is_answered_before_another_devices_write(
    forced_fresh_way: Callable[[ZramDevice, int], None],
) -> None:
    """One deferred write per mount: a run written to another device's image
    finishes and answers it first, whatever that write then does; a 4 KiB
    write the C serves elsewhere leaves it be (it cannot defer)."""
    reg = ZramRegistry(2)
    ops = ZramOperations(reg)
    fhs = []
    for dev in reg.devices.values():
        await store(dev, "disksize", b"%d" % (NPAGES * PAGE))
        forced_fresh_way(dev, 1)
        fi = await ops.open(ops.tree.image_inode(dev.id), os.O_RDWR, None)  # type: ignore[arg-type]
        fhs.append(fi.fh)
    fake = FakeDeferral()
    ops.deferral = fake  # type: ignore[assignment]
    data = mixed(64, 5)
    assert ops.write_nowait(fhs[0], 0, data) is pyfuse3.DEFERRED
    assert ops.write_nowait(fhs[1], 0, page_of(1)) == PAGE  # the C's: A stays deferred
    assert fake.replies == [] and reg.devices[0]._deferred is not None
    fake.queued = False
    assert ops.write_nowait(fhs[1], 64 * PAGE, mixed(64, 6)) == 64 * PAGE
    assert fake.replies == [64 * PAGE] and reg.devices[0]._deferred is None
    assert await ops.read(fhs[0], 0, 64 * PAGE) == data
    fake.queued = True
    forced_fresh_way(reg.devices[0], 1)  # (the learner's figures moved: pinned again)
    assert ops.write_nowait(fhs[0], 64 * PAGE, data) is pyfuse3.DEFERRED
    assert ops.write_nowait(fhs[1], PAGE, page_of(2)[:100]) is None  # declined: still first
    assert fake.replies == [64 * PAGE] * 2
    assert await ops.read(fhs[0], 64 * PAGE, 64 * PAGE) == data
    assert await ops.read(fhs[1], 0, PAGE) == page_of(1)
