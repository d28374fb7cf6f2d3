"""Post-processing at the device core (no FUSE): recompress, writeback, backing_dev,
the writeback knobs, algorithm_params validation, idle and compact.

Every expectation is the kernel's (reference zram-interface.md §1, §2, §4, §5,
§7, §8, §12; zram_drv.c ``recompress_store`` / ``writeback_store``); where
zramfs deviates on purpose (postprocess.py's docstring) the test says so.
"""

from __future__ import annotations

import errno
import os
import random
import re
import stat
import threading
import time
from collections.abc import Awaitable, Callable
from functools import partial
from pathlib import Path

import pytest
import trio
import zstandard

from tests.devutil import mm, pool, show, store, table
from zramfs.backends.base import AlgoParams, Buffer, Codec
from zramfs.core import postprocess
from zramfs.core.device import ZramDevice
from zramfs.core.entrylock import LOCK_MASK
from zramfs.core.slots import HUGE, PP_SLOT, PRIO_MASK, PRIO_SHIFT, SIZE_MASK, WB
from zramfs.errors import ZramError

PAGE = 4096
HUGE_CLASS_SIZE = 3625  # chain size 8 (reference §13)


# --------------------------------------------------------------------------- data


def _words(r: random.Random, vocab: int) -> list[bytes]:
    return [
        bytes(r.choice(b"abcdefghijklmnopqrstuvwxyz") for _ in range(r.randint(3, 9)))
        for _ in range(vocab)
    ]


def text_page(seed: int, vocab: int = 100) -> bytes:
    """Text: lz4 ~1.5-3 KiB depending on ``vocab``; every secondary does better.

    vocab 20 -> lz4 ~1570, 100 -> ~2130, 400 -> ~2970, 2000 -> ~3850 (HUGE
    with lz4, ~2300 with zstd/brotli/deflate).
    """
    r = random.Random(seed * 7919 + vocab)
    words = _words(r, vocab)
    return b" ".join(r.choice(words) for _ in range(1400))[:PAGE]


_SHARED_WORDS = _words(random.Random(4242), 600)


def corpus_page(seed: int) -> bytes:
    """Text over one shared vocabulary, like pages of one real corpus: what a
    dictionary trained on other pages of it can help with."""
    r = random.Random(seed)
    return b" ".join(r.choice(_SHARED_WORDS) for _ in range(1000))[:PAGE]


def rand_page(seed: int) -> bytes:
    """Incompressible by every algorithm: HUGE, and recompression cannot help."""
    return random.Random(seed).randbytes(PAGE)


# --------------------------------------------------------------------------- helpers


async def raises(err: int, fn: Callable[..., Awaitable[object]], *args: object) -> ZramError:
    with pytest.raises(ZramError) as ei:
        await fn(*args)
    assert ei.value.errno == err, f"expected {errno.errorcode[err]}, got {ei.value!r}"
    return ei.value


async def new_dev(
    disksize: bytes | None = b"2M",
    *,
    secondaries: tuple[str, ...] = (),
    params: dict[int, bytes] | None = None,
    backing: Path | None = None,
    compressed: bool = False,
    dev_id: int = 0,
) -> ZramDevice:
    dev = ZramDevice(dev_id)
    for prio, alg in enumerate(secondaries, start=1):
        await dev.store_recomp_algorithm(b"algo=%s priority=%d" % (alg.encode(), prio))
    for prio, p in (params or {}).items():
        await dev.store_algorithm_params(b"priority=%d " % prio + p)
    if backing is not None:
        await store(dev, "backing_dev", os.fsencode(backing))
    if compressed:
        await store(dev, "compressed_writeback", b"1")
    if disksize is not None:
        await dev.store_disksize(disksize)
    return dev


def backing_file(tmp_path: Path, blocks: int, name: str = "backing") -> Path:
    p = tmp_path / name
    with open(p, "wb") as f:
        f.truncate(blocks * PAGE)
    return p





def bd(dev: ZramDevice) -> list[int]:
    out = show(dev, "bd_stat")
    assert re.fullmatch(rb" *\d{1,} +\d+ +\d+\n", out), out
    return [int(x) for x in out.split()]


def flags(dev: ZramDevice) -> dict[int, str]:
    """block_state: index -> the six flag characters."""
    out: dict[int, str] = {}
    for line in dev.show_block_state().decode().splitlines():
        idx, _, fl = line.split()
        out[int(idx)] = fl
    return out


def size_of(dev: ZramDevice, idx: int) -> int:
    return table(dev).attr[idx] & SIZE_MASK


def prio_of(dev: ZramDevice, idx: int) -> int:
    return (table(dev).attr[idx] & PRIO_MASK) >> PRIO_SHIFT


def check_accounting(dev: ZramDevice) -> None:
    """mm_stat/bd_stat agree with the slot table, and nothing is left locked."""
    t = table(dev)
    stored = compr = huge = wb = 0
    for i in range(t.npages):
        a = t.attr[i]
        assert not a & (LOCK_MASK | PP_SLOT), (i, hex(a))
        if not t.allocated(i):
            continue
        stored += 1
        if a & WB:
            wb += 1
            continue
        compr += a & SIZE_MASK
        huge += bool(a & HUGE)
    m = mm(dev)
    assert m[0] == stored * PAGE
    assert m[1] == compr
    assert m[7] == huge
    assert bd(dev)[0] == wb
    if dev.backing is not None:
        assert dev.backing.used == wb


async def write_pages(dev: ZramDevice, pages: list[bytes], first: int = 0) -> None:
    for k, p in enumerate(pages):
        await dev.write((first + k) * PAGE, p)


async def read_pages(dev: ZramDevice, n: int, first: int = 0) -> list[bytes]:
    data = await dev.read(first * PAGE, n * PAGE)
    return [data[k * PAGE : (k + 1) * PAGE] for k in range(n)]


class SlowCodec:
    """Wraps a codec; compress() sleeps first (in the worker thread)."""

    def __init__(self, inner: Codec, delay: float) -> None:
        self.inner = inner
        self.name = inner.name
        self.params = inner.params
        self.delay = delay
        self.calls = 0
        self.busy = threading.Event()

    def compress(self, src: Buffer) -> bytes:
        self.calls += 1
        self.busy.set()
        time.sleep(self.delay)
        return self.inner.compress(src)

    def decompress(self, src: Buffer, dst_len: int = PAGE) -> bytes:
        return self.inner.decompress(src, dst_len)


def slow_secondary(dev: ZramDevice, prio: int, delay: float) -> SlowCodec:
    inner = dev.comps[prio]
    assert inner is not None
    slow = SlowCodec(inner, delay)
    dev.comps[prio] = slow
    return slow


# ================================================================== recompress: syntax


async def test_recompress_errno_and_check_order() -> None:
    dev = ZramDevice(0)
    # Parsing comes first, then the threshold check, then init.
    await raises(errno.EINVAL, store, dev, "recompress", b"type")
    await raises(errno.EINVAL, store, dev, "recompress", b"type=")
    await raises(errno.EINVAL, store, dev, "recompress", b"max_pages=x")
    await raises(errno.ERANGE, store, dev, "recompress", b"max_pages=18446744073709551616")
    await raises(errno.ERANGE, store, dev, "recompress", b"threshold=4294967296")
    await raises(errno.EINVAL, store, dev, "recompress", b"priority=-1")
    await raises(errno.EINVAL, store, dev, "recompress", b"threshold=%d" % HUGE_CLASS_SIZE)
    await raises(errno.EINVAL, store, dev, "recompress", b"")  # uninitialized
    await dev.store_disksize(b"1M")
    await raises(errno.EINVAL, store, dev, "recompress", b"")  # no secondary algorithm
    await raises(errno.EINVAL, store, dev, "recompress", b"type=huge")

    dev = await new_dev(secondaries=("zstd",))
    await store(dev, "recompress", b"")
    await store(dev, "recompress", b"type=idle\n")
    await store(dev, "recompress", b"threshold=%d" % (HUGE_CLASS_SIZE - 1))
    await store(dev, "recompress", b"priority=0")  # 0 means 1
    await store(dev, "recompress", b"priority=1 algo=zstd")
    await store(dev, "recompress", b"unknown=key type=whatever")  # ignored / no filter
    await raises(errno.EINVAL, store, dev, "recompress", b"priority=2")
    await raises(errno.EINVAL, store, dev, "recompress", b"algo=brotli")
    await raises(errno.EINVAL, store, dev, "recompress", b"algo=lz4")  # the primary is not searched
    await raises(errno.EINVAL, store, dev, "recompress", b"algo")


async def test_recompress_algo_search_starts_at_priority() -> None:
    dev = await new_dev(secondaries=("zstd", "brotli"))
    await write_pages(dev, [text_page(i) for i in range(4)])
    await store(dev, "recompress", b"algo=brotli")
    assert {prio_of(dev, i) for i in range(4)} == {2}
    # algo= looks from `priority` upward: zstd sits at 1, below 2.
    await raises(errno.EINVAL, store, dev, "recompress", b"priority=2 algo=zstd")
    await raises(errno.EINVAL, store, dev, "recompress", b"priority=4")


async def test_recompress_priority_gap_is_the_kernels() -> None:
    """num_active_comps counts algorithms, so a gap hides the later ones (C1)."""
    dev = ZramDevice(0)
    await dev.store_recomp_algorithm(b"algo=zstd priority=2")
    await dev.store_disksize(b"1M")
    await write_pages(dev, [text_page(1)])
    await raises(errno.EINVAL, store, dev, "recompress", b"priority=2")
    await raises(errno.EINVAL, store, dev, "recompress", b"algo=zstd")  # prio_max 3 -> min 2
    # The default range is prio 1..1, which has no compressor: nothing can
    # succeed and the last active priority was "tried", so INCOMPRESSIBLE.
    await store(dev, "recompress", b"")
    assert flags(dev)[0] == ".....n"
    check_accounting(dev)


# ================================================================== recompress: effects


@pytest.mark.parametrize("alg", ["zstd", "brotli", "deflate", "lz4hc"])
async def test_recompress_shrinks_and_reads_back(alg: str) -> None:
    dev = await new_dev(secondaries=(alg,))
    pages = [text_page(i, vocab=(20, 100, 400)[i % 3]) for i in range(30)]
    pages += [rand_page(100), b"\x00" * PAGE, b"ab" * (PAGE // 2)]
    await write_pages(dev, pages)
    before = mm(dev)
    sizes = [size_of(dev, i) for i in range(len(pages))]
    await store(dev, "recompress", b"")
    after = mm(dev)
    assert await read_pages(dev, len(pages)) == pages
    fl = flags(dev)
    recompressed = [i for i in range(30) if fl[i][4] == "r"]
    # lz4hc parses like lz4, only harder: it gains a size class on fewer pages.
    assert len(recompressed) >= (15 if alg == "lz4hc" else 20), (alg, fl)
    for i in recompressed:
        assert prio_of(dev, i) == 1
        old_ci = pool(dev).size_class(max(sizes[i] - 8, 1)).index
        new_ci = pool(dev).size_class(max(size_of(dev, i) - 8, 1)).index
        assert new_ci < old_ci
    # Attempted but not improved: the last active algorithm was tried.
    for i in range(30):
        assert fl[i][4] == "r" or fl[i][5] == "n"
    assert fl[30] == "..h..n"  # random page: stays HUGE, INCOMPRESSIBLE
    assert fl[31][0] == "s" and fl[32][0] == "s"  # same-filled pages are never candidates
    assert after[0] == before[0]
    assert after[1] < before[1]
    # mem_used_total may even grow until a compaction: old zspages are left sparse.
    assert after[5] == before[5] == 2
    check_accounting(dev)
    # A second run finds no candidates (all at max priority or INCOMPRESSIBLE).
    await store(dev, "recompress", b"")
    assert mm(dev) == after


async def test_recompress_huge_pages() -> None:
    dev = await new_dev(secondaries=("zstd",))
    pages = [text_page(i, vocab=2000) for i in range(6)] + [text_page(9, vocab=20)]
    await write_pages(dev, pages)
    assert mm(dev)[7] == 6 and mm(dev)[8] == 6
    assert all(flags(dev)[i] == "..h..." for i in range(6))
    await store(dev, "recompress", b"type=huge")
    fl = flags(dev)
    assert all(fl[i] == "....r." for i in range(6)), fl
    assert fl[6] == "......"  # not huge: not a candidate
    m = mm(dev)
    assert m[7] == 0 and m[8] == 6  # huge_pages drops, huge_pages_since does not
    assert await read_pages(dev, 7) == pages
    check_accounting(dev)


async def test_recompress_type_idle_and_huge_idle(clock_dev: ZramDevice) -> None:
    dev = clock_dev
    pages = [text_page(i) for i in range(4)] + [text_page(i, vocab=2000) for i in range(4)]
    await write_pages(dev, pages)
    await dev.store_idle(b"all")
    # Touch pages 0 and 4: no longer idle.
    await dev.read(0, 1)
    await dev.read(4 * PAGE, 1)
    await store(dev, "recompress", b"type=huge_idle")
    fl = flags(dev)
    assert [fl[i][4] for i in range(8)] == [".", ".", ".", ".", ".", "r", "r", "r"]
    await store(dev, "recompress", b"type=idle")
    fl = flags(dev)
    assert [fl[i][4] for i in range(8)] == [".", "r", "r", "r", ".", "r", "r", "r"]
    # Recompression "touches" the slot: IDLE is gone from every attempted one.
    assert all(fl[i][3] == "." for i in range(8))
    await store(dev, "recompress", b"type=huge")  # page 4: huge, not idle
    assert flags(dev)[4] == "....r."
    assert await read_pages(dev, 8) == pages
    check_accounting(dev)


@pytest.fixture
async def clock_dev() -> ZramDevice:
    dev = ZramDevice(0, clock=lambda: 1000)
    await dev.store_recomp_algorithm(b"algo=zstd")
    await dev.store_disksize(b"1M")
    return dev


async def test_recompress_largest_first_and_max_pages() -> None:
    dev = await new_dev(secondaries=("zstd",))
    vocab = [20, 2000, 100, 400, 2000, 20, 400, 100, 2000, 20]
    pages = [text_page(i, vocab=v) for i, v in enumerate(vocab)]
    await write_pages(dev, pages)
    sizes = {i: size_of(dev, i) for i in range(len(pages))}
    await store(dev, "recompress", b"max_pages=0")
    assert all(prio_of(dev, i) == 0 for i in sizes)
    await store(dev, "recompress", b"max_pages=4")
    done = {i for i in sizes if prio_of(dev, i) == 1}
    assert len(done) == 4
    # The four largest objects by 64-byte bucket went first.
    bucket = {i: s // 64 for i, s in sizes.items()}
    assert min(bucket[i] for i in done) >= max(bucket[i] for i in sizes if i not in done)
    await store(dev, "recompress", b"max_pages=3")
    assert sum(prio_of(dev, i) == 1 for i in sizes) == 7
    assert await read_pages(dev, len(pages)) == pages
    check_accounting(dev)


async def test_recompress_max_pages_counts_failed_attempts() -> None:
    dev = await new_dev(secondaries=("zstd",))
    pages = [rand_page(i) for i in range(3)] + [text_page(i) for i in range(3)]
    await write_pages(dev, pages)
    await store(dev, "recompress", b"max_pages=3")  # the three HUGE random pages go first
    fl = flags(dev)
    assert [fl[i] for i in range(6)] == ["..h..n"] * 3 + ["......"] * 3


async def test_recompress_threshold() -> None:
    dev = await new_dev(secondaries=("zstd",))
    vocab = [20, 100, 400, 2000] * 3
    pages = [text_page(i, vocab=v) for i, v in enumerate(vocab)]
    await write_pages(dev, pages)
    sizes = [size_of(dev, i) for i in range(len(pages))]
    threshold = 2500
    await store(dev, "recompress", b"threshold=%d" % threshold)
    fl = flags(dev)
    for i, old in enumerate(sizes):
        if old < threshold:
            assert fl[i] == "......", (i, old)  # below threshold: not even attempted
        elif prio_of(dev, i):
            assert size_of(dev, i) < threshold
    assert any(prio_of(dev, i) for i in range(len(pages)))
    # threshold also demands the new size be below it: 700 is out of reach
    # (zstd makes ~850 of the densest page), so every attempt fails.
    dev2 = await new_dev(secondaries=("zstd",), dev_id=1)
    await write_pages(dev2, pages)
    await store(dev2, "recompress", b"threshold=700")
    assert not any(prio_of(dev2, i) for i in range(len(pages)))
    assert all(f[5] == "n" for f in flags(dev2).values())
    assert await read_pages(dev, len(pages)) == pages
    check_accounting(dev)


async def test_recompress_two_secondaries_and_reads_use_slot_priority() -> None:
    dev = await new_dev(secondaries=("lz4hc", "brotli"))
    pages = [text_page(i, vocab=(100, 400, 2000)[i % 3]) for i in range(12)]
    await write_pages(dev, pages)
    await store(dev, "recompress", b"priority=1")  # lz4hc only
    p1 = {i for i in range(12) if prio_of(dev, i) == 1}
    assert p1 and all(prio_of(dev, i) in (0, 1) for i in range(12))
    # priority=1 is not the last active algorithm: failures are not marked.
    assert all(flags(dev)[i][5] == "." for i in range(12))
    assert await read_pages(dev, 12) == pages
    await store(dev, "recompress", b"")  # prio+1..max: lz4hc'd slots try brotli only
    assert all(prio_of(dev, i) == 2 for i in range(12))
    assert await read_pages(dev, 12) == pages
    check_accounting(dev)


async def test_recompress_with_zstd_dictionary_improves_ratio(tmp_path: Path) -> None:
    samples: list[Buffer] = [corpus_page(1000 + i) for i in range(200)]
    zdict = zstandard.train_dictionary(16384, samples)
    path = tmp_path / "dict"
    path.write_bytes(zdict.as_bytes())
    pages = [corpus_page(i) for i in range(40)]
    results = {}
    for with_dict in (False, True):
        params = {1: b"dict=" + os.fsencode(path)} if with_dict else None
        dev = await new_dev(secondaries=("zstd",), params=params)
        await write_pages(dev, pages)
        lz4 = mm(dev)[1]
        await store(dev, "recompress", b"")
        results[with_dict] = (lz4, mm(dev)[1])
        assert await read_pages(dev, len(pages)) == pages
        check_accounting(dev)
        await dev.store_reset(b"1")
    lz4_size, plain = results[False]
    _, dictd = results[True]
    print(
        f"\n40 text pages: lz4 {lz4_size} B, zstd {plain} B ({40 * PAGE / plain:.2f}x), "
        f"zstd+dict {dictd} B ({40 * PAGE / dictd:.2f}x)"
    )
    assert dictd < plain * 0.9


async def test_recompress_skips_written_back_and_same(tmp_path: Path) -> None:
    dev = await new_dev(secondaries=("zstd",), backing=backing_file(tmp_path, 16))
    pages = [text_page(i) for i in range(4)]
    await write_pages(dev, pages)
    await store(dev, "writeback", b"page_indexes=0-1")
    await store(dev, "recompress", b"")
    fl = flags(dev)
    assert fl[0] == fl[1] == ".w...."
    assert fl[2] == fl[3] == "....r."
    assert await read_pages(dev, 4) == pages
    check_accounting(dev)


# ================================================================== recompress: concurrency


async def test_recompress_does_not_block_other_slots() -> None:
    """The seed's claim at the core: slow secondary compression runs in a worker
    thread with only its batch's entry locks held; other pages read and write."""
    dev = await new_dev(b"4M", secondaries=("zstd",))
    pages = [text_page(i) for i in range(64)]
    await write_pages(dev, pages)
    slow = slow_secondary(dev, 1, 0.03)
    done = trio.Event()
    latencies: list[float] = []

    async def recompress() -> None:
        await store(dev, "recompress", b"max_pages=24")
        done.set()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(recompress)
        await trio.to_thread.run_sync(slow.busy.wait)
        n = 0
        while not done.is_set():
            idx = 32 + n % 32  # pages the 24 largest-first candidates may not include
            t0 = time.perf_counter()
            assert await dev.read(idx * PAGE, PAGE) == pages[idx]
            await dev.write((100 + n % 50) * PAGE, text_page(500 + n))
            latencies.append(time.perf_counter() - t0)
            n += 1
            await trio.sleep(0.001)
    assert slow.calls == 24
    # ~0.7 s of slow recompression: I/O to other pages kept completing while it
    # ran (were it blocked, n would be 0 or 1).  Structural, not timed: speed
    # figures live in benchmarks/recompress_latency.py.
    assert n >= 10, (n, latencies)
    assert await read_pages(dev, 64) == pages
    check_accounting(dev)


async def test_reader_of_a_locked_slot_waits_and_gets_the_right_data() -> None:
    dev = await new_dev(secondaries=("zstd",))
    pages = [text_page(i, vocab=2000) for i in range(2)]
    await write_pages(dev, pages)
    slow = slow_secondary(dev, 1, 0.2)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(store, dev, "recompress", b"max_pages=1")
        await trio.to_thread.run_sync(slow.busy.wait)
        t0 = time.perf_counter()
        got = await dev.read(0, 2 * PAGE)  # one of the two is being recompressed
        waited = time.perf_counter() - t0
    assert got == b"".join(pages)
    assert waited > 0.05
    check_accounting(dev)


async def test_write_during_recompress_wins() -> None:
    dev = await new_dev(secondaries=("zstd",))
    await write_pages(dev, [text_page(1, vocab=2000)])
    slow = slow_secondary(dev, 1, 0.1)
    new = text_page(2)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(store, dev, "recompress", b"")
        await trio.to_thread.run_sync(slow.busy.wait)
        await dev.write(0, new)  # waits for the slot, then replaces the result
    assert await dev.read(0, PAGE) == new
    assert flags(dev)[0] == "......"
    check_accounting(dev)


async def test_compaction_during_recompress_moves_locked_objects() -> None:
    """Handles are re-read after the await: compaction may move a batch's objects."""
    dev = await new_dev(b"4M", secondaries=("zstd",))
    pages = [text_page(i, vocab=400) for i in range(300)]
    await write_pages(dev, pages)
    # Fragment every class so that compaction has something to move.
    for i in range(0, 300, 3):
        await dev.discard(i * PAGE, PAGE)
    slow = slow_secondary(dev, 1, 0.01)
    t = table(dev)
    moved = 0

    async def compactor() -> None:
        nonlocal moved
        while True:
            while not slow.busy.is_set():
                await trio.sleep(0.001)
            slow.busy.clear()
            locked = [i for i in range(300) if t.attr[i] & LOCK_MASK]
            before = {i: t.handle[i] for i in locked}
            await dev.store_compact(b"1")
            moved += sum(t.handle[i] != h for i, h in before.items())
            await trio.sleep(0)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(compactor)
        await store(dev, "recompress", b"")
        nursery.cancel_scope.cancel()
    got = await read_pages(dev, 300)
    for i in range(300):
        assert got[i] == (bytes(PAGE) if i % 3 == 0 else pages[i]), i
    check_accounting(dev)
    print(f"\nobjects moved by compaction while their slot was being recompressed: {moved}")
    assert moved >= 1


async def test_writeback_and_recompress_serialize_and_reset_waits(tmp_path: Path) -> None:
    dev = await new_dev(secondaries=("zstd",), backing=backing_file(tmp_path, 64))
    await write_pages(dev, [text_page(i) for i in range(8)])
    slow = slow_secondary(dev, 1, 0.05)
    order: list[str] = []

    async def run(name: str, fn: Callable[[bytes], Awaitable[None]], arg: bytes) -> None:
        await fn(arg)
        order.append(name)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(run, "recompress", partial(store, dev, "recompress"), b"")
        await trio.to_thread.run_sync(slow.busy.wait)
        nursery.start_soon(run, "writeback", partial(store, dev, "writeback"), b"page_indexes=0-7")
        await trio.sleep(0.05)
        nursery.start_soon(run, "reset", dev.store_reset, b"1")
        await trio.sleep(0.05)
        assert order == []  # both wait for the running recompression
        assert dev.initialized
    assert order == ["recompress", "writeback", "reset"]
    assert show(dev, "backing_dev") == b"none\n"
    assert show(dev, "bd_stat") == b"       0        0        0\n"


# ================================================================== writeback: syntax


async def test_writeback_errno(tmp_path: Path) -> None:
    dev = ZramDevice(0)
    await raises(errno.EINVAL, store, dev, "writeback", b"idle")  # uninitialized
    await dev.store_disksize(b"1M")  # 256 pages
    await raises(errno.ENODEV, store, dev, "writeback", b"idle")
    await raises(errno.ENODEV, store, dev, "writeback", b"nonsense")  # ENODEV before parsing
    dev = await new_dev(b"1M", backing=backing_file(tmp_path, 16), dev_id=1)
    for buf, err in [
        (b"foo", errno.EINVAL),
        (b"idle_huge", errno.EINVAL),
        (b"type=foo", errno.EINVAL),
        (b"type=", errno.EINVAL),  # valueless: parse_mode("type")
        (b"page_index=", errno.EINVAL),
        (b"page_index=x", errno.EINVAL),
        (b"page_index=-1", errno.EINVAL),
        (b"page_index=256", errno.ERANGE),
        (b"page_index=18446744073709551616", errno.ERANGE),
        (b"page_indexes=5", errno.EINVAL),
        (b"page_indexes=5-", errno.EINVAL),
        (b"page_indexes=-5", errno.EINVAL),
        (b"page_indexes=1-2-3", errno.EINVAL),
        (b"page_indexes=5-3", errno.ERANGE),
        (b"page_indexes=256-300", errno.ERANGE),
        (b"page_indexes=0-256", errno.ERANGE),
    ]:
        await raises(err, store, dev, "writeback", buf)
    # Accepted, nothing to do.
    accepted = [b"", b"\n", b"idle", b"huge", b"huge_idle", b"incompressible", b"type=idle"]
    accepted += [b"type=huge_idle\n", b"page_index=255", b"page_indexes=0-255", b"foo=bar"]
    for buf in accepted:
        await store(dev, "writeback", buf)
    assert show(dev, "bd_stat") == b"       0        0        0\n"


async def test_writeback_error_after_a_valid_range_writes_nothing(tmp_path: Path) -> None:
    dev = await new_dev(b"1M", backing=backing_file(tmp_path, 16))
    await write_pages(dev, [text_page(i) for i in range(4)])
    await raises(errno.ERANGE, store, dev, "writeback", b"page_index=1 page_index=999")
    await raises(errno.EINVAL, store, dev, "writeback", b"page_indexes=0-3 type=bogus")
    assert bd(dev) == [0, 0, 0]
    check_accounting(dev)


async def test_writeback_modes_and_page_indexes(tmp_path: Path) -> None:
    dev = await new_dev(b"1M", secondaries=("zstd",), backing=backing_file(tmp_path, 64))
    # 0-3 text, 4-5 huge text, 6-7 random (huge), 8 same-filled
    pages = [text_page(i) for i in range(4)] + [text_page(i, vocab=2000) for i in range(2)]
    pages += [rand_page(i) for i in range(2)] + [b"\x01" * PAGE]
    await write_pages(dev, pages)
    await dev.store_idle(b"all")
    await dev.read(0, 1)  # page 0 not idle
    await dev.read(4 * PAGE, 1)  # page 4 not idle
    await store(dev, "writeback", b"huge_idle")
    assert {i for i, f in flags(dev).items() if f[1] == "w"} == {5, 6, 7}
    await store(dev, "writeback", b"type=idle")
    assert {i for i, f in flags(dev).items() if f[1] == "w"} == {1, 2, 3, 5, 6, 7}
    assert flags(dev)[8] == "s....."  # same-filled: never written back
    # A mode ends parsing; page_index before it narrows the mode's scan (C1).
    await store(dev, "writeback", b"page_index=8 huge page_index=0")
    assert flags(dev)[0] == "......" and flags(dev)[4] == "..h..."
    await store(dev, "writeback", b"page_index=4 page_index=0 page_index=0")
    assert {i for i, f in flags(dev).items() if f[1] == "w"} == set(range(8))
    assert bd(dev) == [8, 0, 8]
    assert await read_pages(dev, 9) == pages
    assert bd(dev) == [8, 8, 8]
    check_accounting(dev)


async def test_writeback_incompressible(tmp_path: Path) -> None:
    dev = await new_dev(b"1M", secondaries=("zstd",), backing=backing_file(tmp_path, 64))
    pages = [rand_page(1), text_page(2, vocab=2000), text_page(3)]
    await write_pages(dev, pages)
    await store(dev, "writeback", b"incompressible")
    assert bd(dev) == [0, 0, 0]
    await store(dev, "recompress", b"")
    assert flags(dev)[0] == "..h..n"
    await store(dev, "writeback", b"type=incompressible")
    assert flags(dev) == {0: ".w....", 1: "....r.", 2: "....r."}
    assert await read_pages(dev, 3) == pages
    check_accounting(dev)


# ================================================================== writeback: effects


@pytest.mark.parametrize("compressed", [False, True])
async def test_writeback_effects_and_read_back(tmp_path: Path, compressed: bool) -> None:
    path = backing_file(tmp_path, 64)
    dev = await new_dev(b"1M", secondaries=("brotli",), backing=path, compressed=compressed)
    pages = [text_page(i, vocab=(20, 100, 400)[i % 3]) for i in range(9)]
    pages += [text_page(50, vocab=2000), rand_page(51)]
    await write_pages(dev, pages)
    await store(dev, "recompress", b"max_pages=4")  # a few slots at priority 1 (brotli)
    recomp = {i for i in range(len(pages)) if prio_of(dev, i)}
    assert len(recomp) >= 2
    sizes = {i: size_of(dev, i) for i in range(len(pages))}
    before = mm(dev)
    await dev.store_idle(b"all")
    await store(dev, "writeback", b"idle")
    m = mm(dev)
    n = len(pages)
    assert bd(dev) == [n, 0, n]
    assert m[0] == before[0]  # orig_data_size unchanged
    assert m[1] == 0  # compr_data_size: nothing left in RAM
    assert m[2] < before[2]
    assert m[7] == 0 and m[8] == before[8]  # huge_pages (in RAM) 0; "since" unchanged
    fl = flags(dev)
    for i in range(n):
        if compressed:
            # size, priority and HUGE are kept for read-time decompression
            h = "h" if sizes[i] == PAGE else "."
            r = "r" if i in recomp else "."
            assert fl[i] == f".w{h}.{r}.", (i, fl[i])
            assert size_of(dev, i) == sizes[i]
        else:
            assert fl[i] == ".w....", (i, fl[i])
    # Blocks are handed out lowest-first; the raw ones hold exactly the page.
    raw = path.read_bytes()
    handles = sorted(table(dev).handle[i] for i in range(n))
    assert handles == list(range(n))
    for i in range(n):
        blk = raw[table(dev).handle[i] * PAGE :][:PAGE]
        if not compressed or sizes[i] == PAGE:
            assert blk == pages[i]
        else:
            assert blk != pages[i] and blk[sizes[i] :] == bytes(PAGE - sizes[i])
    assert await read_pages(dev, n) == pages
    assert bd(dev) == [n, n, n]
    assert mm(dev)[1] == 0  # reading does not bring pages back into RAM
    check_accounting(dev)
    # Overwrite, partial write, discard: each frees its block.
    freed = {table(dev).handle[i] for i in range(3)}
    await dev.write(0, pages[5])
    await dev.write(PAGE + 100, b"xyz")
    await dev.discard(2 * PAGE, PAGE)
    expect = pages[5], pages[1][:100] + b"xyz" + pages[1][103:], bytes(PAGE)
    assert tuple(await read_pages(dev, 3)) == expect
    assert bd(dev)[0] == n - 3
    assert dev.backing is not None
    assert not any(dev.backing.in_use(b) for b in freed)
    check_accounting(dev)
    # The lowest free block is reused first.
    await store(dev, "writeback", b"page_index=0")
    assert table(dev).handle[0] == min(freed)
    assert await dev.read(0, PAGE) == pages[5]
    check_accounting(dev)


async def test_writeback_limit_budget_is_exact(tmp_path: Path) -> None:
    dev = await new_dev(b"1M", backing=backing_file(tmp_path, 64))
    await write_pages(dev, [text_page(i) for i in range(10)])
    await store(dev, "writeback_limit", b"3")
    await store(dev, "writeback", b"page_indexes=0-1")  # limit not enabled: not consumed
    assert show(dev, "writeback_limit") == b"3\n" and bd(dev)[2] == 2
    await store(dev, "writeback_limit_enable", b"1")
    await raises(errno.EIO, store, dev, "writeback", b"page_indexes=0-9")
    assert bd(dev) == [5, 0, 5]
    assert show(dev, "writeback_limit") == b"0\n"
    await raises(errno.EIO, store, dev, "writeback", b"page_index=9")  # spent
    await store(dev, "writeback", b"page_index=0")  # already WB: no candidate, no EIO
    await store(dev, "writeback_limit", b"2")
    left = [i for i, f in flags(dev).items() if f[1] == "."]
    assert len(left) == 5
    await store(dev, "writeback", b"page_index=%d page_index=%d" % (left[0], left[3]))
    assert bd(dev) == [7, 0, 7] and show(dev, "writeback_limit") == b"0\n"  # exact: no EIO
    await store(dev, "writeback_limit_enable", b"0")
    await store(dev, "writeback", b"page_indexes=0-9")
    assert bd(dev) == [10, 0, 10] and show(dev, "writeback_limit") == b"0\n"
    check_accounting(dev)


async def test_writeback_enospc_when_backing_is_full(tmp_path: Path) -> None:
    dev = await new_dev(b"1M", backing=backing_file(tmp_path, 4))
    pages = [text_page(i) for i in range(8)]
    await write_pages(dev, pages)
    await raises(errno.ENOSPC, store, dev, "writeback", b"page_indexes=0-7")
    assert bd(dev) == [4, 0, 4]
    await raises(errno.ENOSPC, store, dev, "writeback", b"page_indexes=0-7")
    wb = [i for i, f in flags(dev).items() if f[1] == "w"]
    assert len(wb) == 4
    for i in wb[:2]:  # free two written-back pages: two blocks back
        await dev.discard(i * PAGE, PAGE)
    assert bd(dev)[0] == 2
    await raises(errno.ENOSPC, store, dev, "writeback", b"page_indexes=0-7")
    assert bd(dev)[0] == 4
    assert sum(f[1] == "w" for f in flags(dev).values()) == 4
    got = await read_pages(dev, 8)
    assert all(got[i] == (bytes(PAGE) if i in wb[:2] else pages[i]) for i in range(8))
    check_accounting(dev)


async def test_writeback_batch_size_one_and_large(tmp_path: Path) -> None:
    for batch in (b"1", b"100000"):
        dev = await new_dev(b"1M", backing=backing_file(tmp_path, 64, name=batch.decode()))
        await store(dev, "writeback_batch_size", batch)
        pages = [text_page(i) for i in range(40)]
        await write_pages(dev, pages)
        await store(dev, "writeback", b"page_indexes=0-39")
        assert bd(dev) == [40, 0, 40]
        assert await read_pages(dev, 40) == pages
        check_accounting(dev)
        await dev.store_reset(b"1")


async def test_writeback_io_error_rolls_back(tmp_path: Path) -> None:
    dev = await new_dev(b"1M", backing=backing_file(tmp_path, 16))
    pages = [text_page(i) for i in range(4)]
    await write_pages(dev, pages)
    await store(dev, "writeback_limit", b"10")
    await store(dev, "writeback_limit_enable", b"1")
    assert dev.backing is not None
    os.close(dev.backing.fd)
    dev.backing.fd = os.open(tmp_path / "backing", os.O_RDONLY)  # writes now fail EBADF
    await raises(errno.EBADF, store, dev, "writeback", b"page_indexes=0-3")
    assert bd(dev) == [0, 0, 0]
    assert show(dev, "writeback_limit") == b"10\n"
    assert await read_pages(dev, 4) == pages
    check_accounting(dev)


# ================================================================== backing_dev


async def test_backing_dev_store_and_errno(tmp_path: Path) -> None:
    dev = ZramDevice(0)
    assert show(dev, "backing_dev") == b"none\n"
    good = backing_file(tmp_path, 8)
    await raises(errno.ENOENT, store, dev, "backing_dev", os.fsencode(tmp_path / "missing"))
    await raises(errno.ENOENT, store, dev, "backing_dev", b"")
    await raises(errno.EISDIR, store, dev, "backing_dev", os.fsencode(tmp_path))
    await raises(errno.ENOTBLK, store, dev, "backing_dev", b"/dev/null")
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    await raises(errno.ENOTBLK, store, dev, "backing_dev", os.fsencode(fifo))  # and no hang
    empty = tmp_path / "empty"
    empty.write_bytes(b"")
    await raises(errno.EINVAL, store, dev, "backing_dev", os.fsencode(empty))
    small = tmp_path / "small"
    small.write_bytes(b"x" * 4095)
    await raises(errno.EINVAL, store, dev, "backing_dev", os.fsencode(small))
    ro = tmp_path / "ro"
    ro.write_bytes(bytes(PAGE))
    ro.chmod(0o444)
    if os.geteuid() != 0:
        await raises(errno.EACCES, store, dev, "backing_dev", os.fsencode(ro))
    await raises(errno.ENOENT, store, dev, "backing_dev", os.fsencode(good) + b"\n\n")
    assert show(dev, "backing_dev") == b"none\n"  # failures change nothing

    await store(dev, "backing_dev", os.fsencode(good) + b"\n")  # one newline stripped
    assert show(dev, "backing_dev") == os.fsencode(good) + b"\n"
    assert dev.backing is not None and dev.backing.nr_blocks == 8
    await raises(errno.ENOENT, store, dev, "backing_dev", b"/nonexistent")
    assert show(dev, "backing_dev") == os.fsencode(good) + b"\n"  # kept
    # A second device cannot share the file (flock, the O_EXCL of files).
    other = ZramDevice(1)
    await raises(errno.EBUSY, store, other, "backing_dev", os.fsencode(good))
    # Replacing closes the old one.
    second = backing_file(tmp_path, 3, name="second")
    await store(dev, "backing_dev", os.fsencode(second))
    assert show(dev, "backing_dev") == os.fsencode(second) + b"\n"
    await store(other, "backing_dev", os.fsencode(good))
    # Symlinks show the opened file's path, like file_path().
    link = tmp_path / "link"
    link.symlink_to(second)
    await dev.store_disksize(b"1M")
    await raises(errno.EBUSY, store, dev, "backing_dev", os.fsencode(good))  # EBUSY first
    await raises(errno.EBUSY, store, dev, "backing_dev", b"/nonexistent")
    await dev.store_reset(b"1")
    assert show(dev, "backing_dev") == b"none\n"
    await store(dev, "backing_dev", os.fsencode(link))
    assert show(dev, "backing_dev") == os.fsencode(second) + b"\n"


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root for a loop device")
async def test_backing_dev_block_device(tmp_path: Path) -> None:
    import subprocess

    img = backing_file(tmp_path, 256, name="img")
    loop = subprocess.run(
        ["losetup", "-f", "--show", str(img)], capture_output=True, text=True, check=False
    )
    if loop.returncode:
        pytest.skip(f"losetup failed: {loop.stderr}")
    dev_path = loop.stdout.strip()
    try:
        assert stat.S_ISBLK(os.stat(dev_path).st_mode)
        dev = await new_dev(b"1M", backing=Path(dev_path), compressed=True)
        assert dev.backing is not None and dev.backing.is_blockdev
        assert dev.backing.nr_blocks == 256
        assert show(dev, "backing_dev") == dev_path.encode() + b"\n"
        # O_EXCL: a second opener of the block device gets EBUSY.
        await raises(errno.EBUSY, store, ZramDevice(1), "backing_dev", dev_path.encode())
        pages = [text_page(i) for i in range(16)]
        await write_pages(dev, pages)
        await store(dev, "writeback", b"page_indexes=0-15")
        assert await read_pages(dev, 16) == pages
        assert bd(dev) == [16, 16, 16]
        await dev.store_reset(b"1")
    finally:
        subprocess.run(["losetup", "-d", dev_path], check=False)


# ================================================================== the knobs


async def test_writeback_knobs_syntax() -> None:
    dev = ZramDevice(0)
    assert show(dev, "writeback_limit") == b"0\n"
    assert show(dev, "writeback_limit_enable") == b"0\n"
    assert show(dev, "writeback_batch_size") == b"32\n"
    assert show(dev, "compressed_writeback") == b"0\n"
    assert show(dev, "bd_stat") == b"       0        0        0\n"

    await store(dev, "writeback_limit", b"1234\n")
    assert show(dev, "writeback_limit") == b"1234\n"
    await store(dev, "writeback_limit", b"18446744073709551615")
    assert show(dev, "writeback_limit") == b"18446744073709551615\n"
    for bad in (b"", b"x", b"-1", b"1 2", b"0x10", b"18446744073709551616"):
        await raises(errno.EINVAL, store, dev, "writeback_limit", bad)  # every error is EINVAL
    await store(dev, "writeback_limit_enable", b"7")
    assert show(dev, "writeback_limit_enable") == b"1\n"
    await store(dev, "writeback_limit_enable", b"0")
    assert show(dev, "writeback_limit_enable") == b"0\n"
    for bad in (b"", b"yes", b"-1", b"18446744073709551616"):
        await raises(errno.EINVAL, store, dev, "writeback_limit_enable", bad)
    await store(dev, "writeback_batch_size", b"1")
    assert show(dev, "writeback_batch_size") == b"1\n"
    await store(dev, "writeback_batch_size", b"4294967295")
    for bad in (b"0", b"", b"x", b"-1", b"4294967296"):
        await raises(errno.EINVAL, store, dev, "writeback_batch_size", bad)
    assert show(dev, "writeback_batch_size") == b"4294967295\n"
    for val, want in ((b"yes", b"1\n"), (b"off", b"0\n"), (b"T", b"1\n"), (b"0\n", b"0\n")):
        await store(dev, "compressed_writeback", val)
        assert show(dev, "compressed_writeback") == want
    for bad in (b"", b"x", b"o", b"2"):
        await raises(errno.EINVAL, store, dev, "compressed_writeback", bad)
    await dev.store_disksize(b"1M")
    await raises(errno.EBUSY, store, dev, "compressed_writeback", b"1")
    await raises(errno.EINVAL, store, dev, "compressed_writeback", b"x")  # parsed first
    # The runtime knobs stay writable after init.
    await store(dev, "writeback_limit", b"5")
    await store(dev, "writeback_limit_enable", b"1")
    await store(dev, "writeback_batch_size", b"8")


async def test_reset_clears_and_keeps(tmp_path: Path) -> None:
    dev = await new_dev(
        b"1M", secondaries=("zstd", "brotli"), backing=backing_file(tmp_path, 16),
        compressed=True,
    )  # fmt: skip
    await store(dev, "writeback_limit", b"100")
    await store(dev, "writeback_limit_enable", b"1")
    await store(dev, "writeback_batch_size", b"3")
    await write_pages(dev, [text_page(i) for i in range(4)])
    await store(dev, "writeback", b"page_indexes=0-1")
    await dev.read(0, PAGE)
    assert bd(dev) == [2, 1, 2]
    await dev.store_reset(b"1")
    # Cleared: backing device, secondary algorithms, statistics.
    assert show(dev, "backing_dev") == b"none\n"
    assert dev.show_recomp_algorithm() == b""
    assert show(dev, "bd_stat") == b"       0        0        0\n"
    # Kept (C1/C2): the writeback knobs, budget included.
    assert show(dev, "writeback_limit") == b"98\n"
    assert show(dev, "writeback_limit_enable") == b"1\n"
    assert show(dev, "writeback_batch_size") == b"3\n"
    assert show(dev, "compressed_writeback") == b"1\n"
    # The backing file was closed: another device may take it.
    await store(ZramDevice(1), "backing_dev", os.fsencode(tmp_path / "backing"))


# ================================================================== algorithm_params


@pytest.mark.parametrize(
    ("alg", "params", "ok"),
    [
        ("brotli", b"level=11", True),
        ("brotli", b"level=0", True),
        ("brotli", b"level=12", False),
        ("brotli", b"level=-1", False),
        ("deflate", b"level=9", True),
        ("deflate", b"level=10", False),
        ("deflate", b"deflate.winbits=15", True),
        ("deflate", b"deflate.winbits=9", True),
        ("deflate", b"deflate.winbits=8", False),
        ("deflate", b"deflate.winbits=16", False),
        ("zstd", b"level=22", True),
        ("zstd", b"level=23", False),
        ("lz4hc", b"level=12", True),
    ],
)
async def test_algorithm_params_validated_at_disksize_for_each_priority(
    alg: str, params: bytes, ok: bool
) -> None:
    for prio in (1, 3):
        dev = ZramDevice(0)
        await dev.store_recomp_algorithm(b"algo=%s priority=%d" % (alg.encode(), prio))
        await dev.store_algorithm_params(b"priority=%d %s" % (prio, params))  # never fails here
        if ok:
            await dev.store_disksize(b"1M")
            codec = dev.comps[prio]
            assert codec is not None and codec.name == alg
        else:
            await raises(errno.EINVAL, dev.store_disksize, b"1M")
            assert dev.show_initstate() == b"0\n" and dev.table is None


async def test_algorithm_params_dictionary_per_algorithm(tmp_path: Path) -> None:
    samples: list[Buffer] = [text_page(i, vocab=400) for i in range(100)]
    path = tmp_path / "dict"
    path.write_bytes(zstandard.train_dictionary(8192, samples).as_bytes())
    for alg, ok in (("zstd", True), ("lz4", True), ("lz4hc", True), ("brotli", False),
                    ("deflate", False)):  # fmt: skip
        dev = ZramDevice(0)
        await dev.store_recomp_algorithm(b"algo=" + alg.encode())
        await dev.store_algorithm_params(b"priority=1 dict=" + os.fsencode(path))
        assert dev.params[1] == AlgoParams(dictionary=path.read_bytes())
        if ok:
            await dev.store_disksize(b"1M")
            pages = [text_page(i) for i in range(4)]
            await write_pages(dev, pages)
            await store(dev, "recompress", b"")
            assert await read_pages(dev, 4) == pages
        else:
            await raises(errno.EINVAL, dev.store_disksize, b"1M")


async def test_brotli_level_11_recompression() -> None:
    dev = await new_dev(secondaries=("brotli",), params={1: b"level=11"})
    codec = dev.comps[1]
    assert codec is not None and codec.params.level == 11
    pages = [text_page(i, vocab=400) for i in range(6)]
    await write_pages(dev, pages)
    before = mm(dev)[1]
    await store(dev, "recompress", b"")
    assert mm(dev)[1] < before * 0.75
    assert await read_pages(dev, 6) == pages


# ================================================================== idle, compact, block_state


async def test_idle_with_age_and_block_state_flags(tmp_path: Path) -> None:
    now = [5000]
    dev = ZramDevice(0, clock=lambda: now[0])
    await dev.store_recomp_algorithm(b"algo=zstd")
    await store(dev, "backing_dev", os.fsencode(backing_file(tmp_path, 16)))
    await dev.store_disksize(b"1M")
    await write_pages(dev, [text_page(0), text_page(1), b"\x07" * PAGE, rand_page(3)])
    now[0] = 5100
    await dev.write(PAGE, text_page(1))  # page 1 rewritten at t=5100
    await dev.store_idle(b"60")  # idle: not accessed since t=5040
    assert flags(dev) == {0: "...i..", 1: "......", 2: "s.....", 3: "..hi.."}
    await dev.store_idle(b"all")
    assert flags(dev) == {0: "...i..", 1: "...i..", 2: "s.....", 3: "..hi.."}
    await store(dev, "recompress", b"type=huge")
    assert flags(dev)[3] == "..h..n"  # attempted: IDLE cleared, INCOMPRESSIBLE set
    await store(dev, "writeback", b"idle")
    assert flags(dev) == {0: ".w....", 1: ".w....", 2: "s.....", 3: "..h..n"}
    await dev.store_idle(b"all")  # WB and SAME slots are never marked
    assert flags(dev) == {0: ".w....", 1: ".w....", 2: "s.....", 3: "..hi.n"}
    await dev.read(3 * PAGE, 10)  # INCOMPRESSIBLE survives an access, IDLE does not
    assert flags(dev)[3] == "..h..n"
    lines = dev.show_block_state().decode().splitlines()
    assert lines[0] == f"{0:12d} {0:12d}.000000 .w...."  # slot_free zeroed ac_time
    assert lines[3] == f"{3:12d} {5100:12d}.000000 ..h..n"


async def test_compact_after_recompress_returns_pages() -> None:
    dev = await new_dev(b"4M", secondaries=("zstd",))
    pages = [text_page(i, vocab=(100, 400)[i % 2]) for i in range(400)]
    await write_pages(dev, pages)
    for i in range(0, 400, 2):
        await dev.discard(i * PAGE, PAGE)
    # Recompressing part of the pages leaves their old classes sparse.
    await store(dev, "recompress", b"max_pages=120")
    before = mm(dev)
    await dev.store_compact(b"1")
    after = mm(dev)
    assert after[6] > before[6]  # pages_compacted
    assert after[2] < before[2]  # mem_used_total
    assert before[2] - after[2] == (after[6] - before[6]) * PAGE
    assert after[:2] == before[:2]
    got = await read_pages(dev, 400)
    assert all(got[i] == (bytes(PAGE) if i % 2 == 0 else pages[i]) for i in range(400))
    check_accounting(dev)
    # mem_used_max: the high-water mark, reset to the current use by "0".
    assert after[4] >= before[2]
    await dev.store_mem_used_max(b"0")
    assert mm(dev)[4] == mm(dev)[2]


# ================================================================== building blocks


def test_pp_ctl_selects_largest_bucket_lifo() -> None:
    attr = memoryview(bytearray(8 * 8)).cast("Q")
    sizes = [100, 4096, 130, 64, 127, 4000, 0, 3000]
    ctl = postprocess.PPCtl()
    for i, s in enumerate(sizes):
        if s:
            attr[i] = s
            ctl.place(attr, i, attr[i])
    assert all(attr[i] & PP_SLOT for i, s in enumerate(sizes) if s)
    order: list[int] = []
    while (sel := ctl.select()) is not None:
        order.append(sel)
    # buckets (size // 64): 4096 -> 64, 4000 -> 62, 3000 -> 46, 130 -> 2, then
    # 100/64/127 all in bucket 1 (LIFO: 4, 3, 0)
    assert order == [1, 5, 7, 2, 4, 3, 0]


def test_backing_store_bitmap(tmp_path: Path) -> None:
    from zramfs.core.backing import BackingStore

    p = backing_file(tmp_path, 13)
    st = BackingStore.open(os.fsencode(p))
    try:
        got = [st.reserve() for _ in range(14)]
        assert got == list(range(13)) + [None]
        st.release(5)
        st.release(1)
        st.release(12)
        assert [st.reserve() for _ in range(4)] == [1, 5, 12, None]
        st.release(1)
        with pytest.raises(RuntimeError):
            st.release(1)
        assert st.used == 12
        assert st.write_block(3, b"abc") == 0
        assert st.read_block(3) == b"abc" + bytes(PAGE - 3)
        assert st.try_read_block(3) in (None, b"abc" + bytes(PAGE - 3))
    finally:
        st.close()
