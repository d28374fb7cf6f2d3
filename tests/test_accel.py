"""The lz4 accelerator (`zramfs._zpages`) inside the device: the same results
as compressing page by page, on every data path that uses it.

Two devices take the same operations: one with the accelerated lz4 codec
(batch compress on one or two threads, batch gather-and-decompress, the C
one-page calls), one whose codec has the accelerator switched off and
compresses page by page in Python: lz4 fast mode with `tests.kernel_lz4` (the
kernel's parse, as the accelerator's; a real build without the C module falls
back to python-lz4, whose blocks differ, see zramfs/backends/lz4.py), lz4hc
with python-lz4.  After each step `mm_stat`, the per-slot sizes and flags,
and every byte read back must agree, and agree with a model of the data.
The C module's own contract (blocks, threads, errors) is tests/test_zpages.py.
"""

from __future__ import annotations

import errno
import os
import random
import subprocess
import sys
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import lz4.block
import pytest

from benchmarks.data import realistic_data
from tests import kernel_lz4
from tests.devutil import mm, pool, table
from zramfs.backends import lz4 as lz4_backend
from zramfs.core.device import ZramDevice
from zramfs.core.slots import ACTIME_MASK, ACTIME_SHIFT, SIZE_MASK
from zramfs.errors import ZramError

pytestmark = pytest.mark.skipif(
    not lz4_backend.ACCELERATED, reason="zramfs._zpages not built (or ZRAMFS_NO_ACCEL set)"
)

PAGE = 4096
ROOT = Path(__file__).resolve().parent.parent


def strip_accelerator(dev: ZramDevice) -> None:
    """Turn the primary codec into what runs without the C module."""
    comp = dev.comps[0]
    assert isinstance(comp, lz4_backend.Lz4Codec)
    level = comp.params.level
    assert level is not None  # resolved by the codec
    if comp.name == "lz4hc":
        comp.compress = partial(
            lz4.block.compress, mode="high_compression", compression=level, store_size=False
        )
    else:
        comp.compress = partial(kernel_lz4.compress, acceleration=level)
    comp.batch_compress = comp.batch_parallel = False
    comp.compress_pages_begin = comp.compress_blocks = None
    comp.decompress_page = comp.decompress_slots = None
    pool(dev).batch_ok = False  # stores through store_many, the Python reference
    dev._decompress_page = partial(comp.decompress, dst_len=PAGE)


async def pair(alg: bytes, size: bytes = b"8M") -> tuple[ZramDevice, ZramDevice]:
    devs = []
    for accelerated in (True, False):
        dev = ZramDevice(0, clock=lambda: 1000)
        await dev.store_comp_algorithm(alg)
        await dev.store_disksize(size)
        if not accelerated:
            strip_accelerator(dev)
        devs.append(dev)
    fast, slow = devs
    assert getattr(fast.comps[0], "batch_compress", False)
    assert not getattr(slow.comps[0], "batch_compress", True)
    return fast, slow


def slots(dev: ZramDevice) -> list[tuple[int, int]]:
    """Every slot's (size, flags), ac_time masked."""
    attrs = table(dev).attr.tolist()
    return [(a & SIZE_MASK, a & ~(SIZE_MASK | ACTIME_MASK)) for a in attrs]


def mixed_data(n_pages: int, seed: int) -> bytearray:
    """Realistic pages with same-filled, zero and incompressible ones mixed in."""
    rnd = random.Random(seed)
    base = realistic_data(16 << 20)
    out = bytearray()
    for _ in range(n_pages):
        r = rnd.random()
        if r < 0.08:
            out += rnd.randbytes(8) * (PAGE // 8)  # same-filled
        elif r < 0.12:
            out += bytes(PAGE)  # zero
        elif r < 0.22:
            out += rnd.randbytes(PAGE)  # incompressible: huge
        elif r < 0.25:
            # first and last words equal, the rest not: not same-filled
            w = rnd.randbytes(8)
            out += w + rnd.randbytes(PAGE - 16) + w
        else:
            o = rnd.randrange(0, len(base) // PAGE) * PAGE
            out += base[o : o + PAGE]
    assert len(out) == n_pages * PAGE
    return out


async def same_state(fast: ZramDevice, slow: ZramDevice, model: bytearray) -> None:
    assert mm(fast) == mm(slow)
    assert slots(fast) == slots(slow)
    assert pool(fast).format_classes() == pool(slow).format_classes()
    for dev in (fast, slow):
        # 1 MiB, 512 KiB (the FUSE read size), 4 KiB and unaligned reads.
        for off in range(0, len(model), 1 << 20):
            assert await dev.read(off, 1 << 20) == model[off : off + (1 << 20)]
        for off in (0, 512 << 10, 3 << 20):
            assert await dev.read(off, 512 << 10) == model[off : off + (512 << 10)]
        for off in (5 * PAGE + 100, 77 * PAGE - 3):
            assert await dev.read(off, 3 * PAGE + 7) == model[off : off + 3 * PAGE + 7]
        for k in range(0, len(model) // PAGE, 37):
            assert await dev.read(k * PAGE, PAGE) == model[k * PAGE : (k + 1) * PAGE]


@pytest.mark.parametrize("alg", [b"lz4", b"lz4hc"])
async def test_accelerated_device_matches_pure(alg: bytes) -> None:
    fast, slow = await pair(alg)
    npages = 2048
    model = bytearray(npages * PAGE)
    rnd = random.Random(7)

    async def write(off: int, data: bytes | bytearray) -> None:
        for dev in (fast, slow):
            assert await dev.write(off, bytes(data)) == len(data)
        model[off : off + len(data)] = data

    await same_state(fast, slow, model)  # all empty: the join's zero fill
    # Fresh 1 MiB writes (batch into empty slots), a fresh 64 KiB write.
    data = mixed_data(npages, 1)
    for off in range(0, 6 << 20, 1 << 20):
        await write(off, data[off : off + (1 << 20)])
    await write(7 << 20, data[: 64 << 10])
    await same_state(fast, slow, model)
    # Overwrites: whole MiBs, runs that straddle stored and empty slots,
    # unaligned heads and tails, single pages.
    data2 = mixed_data(npages, 2)
    await write(1 << 20, data2[: 1 << 20])
    await write((6 << 20) - (128 << 10), data2[: 256 << 10])
    await write(3 * PAGE + 5, data2[: 40 * PAGE])
    for _ in range(200):
        k = rnd.randrange(npages)
        await write(k * PAGE, data2[k * PAGE : (k + 1) * PAGE])
    await same_state(fast, slow, model)
    # Discards leave empty slots among stored ones, then read across them.
    for dev in (fast, slow):
        await dev.discard(2 << 20, 64 * PAGE)
        await dev.discard(100 * PAGE, PAGE)
    model[2 << 20 : (2 << 20) + 64 * PAGE] = bytes(64 * PAGE)
    model[100 * PAGE : 101 * PAGE] = bytes(PAGE)
    await same_state(fast, slow, model)


async def test_two_thread_batches_match_one() -> None:
    """Whatever `_split_pays` decides, the stored result is the same: force
    both ways on the same data."""
    fast, slow = await pair(b"lz4")
    comp = fast.comps[0]
    assert comp is not None
    data = mixed_data(256, 3)
    one = comp.compress_pages(data, 0, 256, 1)  # type: ignore[attr-defined]
    two = comp.compress_pages(data, 0, 256, 2)  # type: ignore[attr-defined]
    assert list(map(len, one)) == list(map(len, two))
    kinds = {"same": 0, "raw": 0, "block": 0}
    for k, (f1, f2) in enumerate(zip(one, two, strict=True)):
        page = data[k * PAGE : (k + 1) * PAGE]
        if not len(f1):  # same-filled: the device stores the word, not a block
            assert page == page[:8] * (PAGE // 8)
            kinds["same"] += 1
        elif len(f1) == PAGE:  # stored raw; the view's content is not read
            assert len(kernel_lz4.compress(bytes(page))) >= PAGE
            kinds["raw"] += 1
        else:
            want = kernel_lz4.compress(bytes(page))
            assert bytes(f1) == bytes(f2) == want
            kinds["block"] += 1
    assert all(kinds.values()), kinds


@pytest.mark.parametrize("share", [0, 200, 768])
async def test_fresh_batches_compressed_ahead_match_page_by_page(
    share: int, forced_fresh_way: Callable[[ZramDevice, int], None]
) -> None:
    """`_store_fresh_ahead`, forced through `_par_stats`: the tail of each
    fresh batch compressed on the background helper while the trio thread
    compresses and stores the head, then stores the tail as it comes.  Heads
    of no page, a fifth and three quarters of the batch; same-filled, zero
    and huge pages among them."""
    from zramfs.core import device as dm

    fast, slow = await pair(b"lz4")
    comp = fast.comps[0]
    real = comp.compress_pages_begin  # type: ignore[union-attr]
    begun: list[int] = []

    def spy(data: object, pos: int, count: int) -> object:
        begun.append(count)
        return real(data, pos, count)

    comp.compress_pages_begin = spy  # type: ignore[union-attr]
    model = bytearray(8 << 20)
    data = mixed_data(256 * 4 + 77, 5)
    offsets = [0, 1 << 20, 3 << 20, 5 << 20, 6 << 20]
    sizes = [256, 256, 512, 77, 256]
    k = 0
    for off, n in zip(offsets, sizes, strict=True):
        dm._ahead_stats[("lz4", 1)] = [10_000, share]
        forced_fresh_way(fast, 1)  # (learning moves the figures: again each batch)
        chunk = bytes(data[k * PAGE : (k + n) * PAGE])
        for dev in (fast, slow):
            await dev.write(off, chunk)
        model[off : off + n * PAGE] = chunk
        # The way was taken, with the head the share gives.
        assert begun[-1] == n - (n * share >> 10), (off, n, begun)
        begun.clear()
        k = (k + n) % 1024
    assert dm._par_stats[("wf", "lz4", 1)][3] == 1
    await same_state(fast, slow, model)


def spy_store_batch(dev: ZramDevice) -> list[int]:
    """The page counts of ``dev``'s `ZsPool.store_batch` calls, as they happen."""
    p = pool(dev)
    real = p.store_batch
    stored: list[int] = []

    def spy(*args: Any) -> tuple[int, int, int]:
        stored.append(args[3] - args[2])
        return real(*args)

    p.store_batch = spy  # type: ignore[method-assign,assignment]
    return stored


@pytest.mark.parametrize("alg", [b"lz4", b"lz4hc"])
async def test_fresh_batches_compressed_at_once_match_page_by_page(
    alg: bytes, forced_fresh_way: Callable[[ZramDevice, int], None]
) -> None:
    """`_store_fresh_now` with ``compress_blocks``: each fresh batch
    compressed in one call, then stored by `ZsPool.store_batch` (one C call
    for the pool and the table), against the pure device; batches of 8..512
    pages with same-filled, zero and huge pages, into empty slots between
    stored ones."""
    fast, slow = await pair(alg)
    stored = spy_store_batch(fast)
    model = bytearray(8 << 20)
    data = mixed_data(1024, 6)
    k = 0
    for off, n in [(0, 256), (2 << 20, 512), (1 << 20, 8), (5 << 20, 100), (7 << 20, 256)]:
        forced_fresh_way(fast, 0)
        chunk = bytes(data[k * PAGE : (k + n) * PAGE])
        for dev in (fast, slow):
            await dev.write(off, chunk)
        model[off : off + n * PAGE] = chunk
        assert stored == [n], (off, n)
        stored.clear()
        k = (k + n) % 512
    await same_state(fast, slow, model)


@pytest.mark.parametrize("alg", [b"lz4", b"lz4hc"])
async def test_offloaded_batches_in_block_layout_match_page_by_page(alg: bytes) -> None:
    """`_write_offloaded` with ``compress_blocks``: compressed on worker
    threads in the accelerator's layout, then stored by `ZsPool.store_batch`
    into empty slots (WRITER held) or, over stored pages, page by page from
    its block views; against the pure device."""
    from zramfs.core import device as dm

    fast, slow = await pair(alg)
    comp = fast.comps[0]
    assert comp is not None
    stored = spy_store_batch(fast)
    offloaded = fast._write_offloaded
    ways: list[int] = []

    async def count_way(*args: Any) -> None:
        ways.append(args[-1])
        await offloaded(*args)

    fast._write_offloaded = count_way  # type: ignore[method-assign,assignment]
    saved = dict(dm._offload_stats)
    try:
        model = bytearray(8 << 20)
        data = mixed_data(1024, 8)
        batches = [(0, 256, True), (2 << 20, 512, True), (0, 256, False), (1 << 20, 100, True),
                   ((2 << 20) + 40 * PAGE, 64, False)]  # fmt: skip
        for off, n, fresh in batches:
            dm._offload_stats[(comp.name, comp.params.level)] = [1, 1]  # offloading is cheaper
            fast._comp_cost_ns = 10_000
            chunk = bytes(data[off // PAGE % 512 * PAGE :][: n * PAGE])
            for dev in (fast, slow):
                await dev.write(off, chunk)
            model[off : off + n * PAGE] = chunk
            assert ways == [n], (off, n, ways)  # the offloaded way
            assert stored == ([n] if fresh else []), (off, n)
            stored.clear()
            ways.clear()
        await same_state(fast, slow, model)
    finally:
        dm._offload_stats.clear()
        dm._offload_stats.update(saved)


async def test_corrupt_object_in_a_joined_read_is_eio() -> None:
    fast, _ = await pair(b"lz4", b"1M")
    data = mixed_data(64, 4)
    await fast.write(0, bytes(data))
    t, p = table(fast), pool(fast)
    k = next(i for i in range(64) if 64 < t.size(i) < 1000)
    before = mm(fast)
    p.write(t.handle[k], b"\xff" * t.size(k))
    with pytest.raises(ZramError) as ei:
        await fast.read(0, 64 * PAGE)  # the batch path
    assert ei.value.errno == errno.EIO
    with pytest.raises(ZramError) as ei:
        await fast.read(k * PAGE, PAGE)  # the one-page path
    assert ei.value.errno == errno.EIO
    assert fast.stats.failed_reads == 2
    assert mm(fast) == before  # nothing changed
    # The pages around it still read back.
    assert await fast.read(0, k * PAGE) == data[: k * PAGE]


def test_suite_without_accelerator() -> None:
    """The device and backend tests, again with ``ZRAMFS_NO_ACCEL=1``: the
    pure-Python paths a build without the C module runs."""
    env = dict(os.environ, ZRAMFS_NO_ACCEL="1")
    tests = [
        "tests/test_device.py",
        "tests/test_device_model.py",
        "tests/test_backends.py",
        "tests/test_zsmalloc.py",
    ]
    cmd = [sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", *tests]
    res = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-2000:]
    assert " passed" in res.stdout


def test_no_accel_env_really_switches_it_off() -> None:
    code = (
        "from zramfs.backends import lz4; from zramfs.core import zsmalloc;"
        " print(lz4.ACCELERATED, zsmalloc._zs_fill is not None)"
    )
    for env_value, want in (("1", "False False"), ("", "True True")):
        env = dict(os.environ, ZRAMFS_NO_ACCEL=env_value)
        out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env,
                             capture_output=True, text=True, check=True).stdout  # fmt: skip
        assert out.strip() == want


async def test_joined_read_stamps_what_the_page_path_stamps() -> None:
    """mark_slot_accessed() in a joined read: pages in the pool and
    same-filled pages get the new ac_time and lose IDLE; empty slots keep
    their word — exactly as the page-by-page path leaves them."""
    now = [1000]
    devs = []
    for accelerated in (True, False):
        dev = ZramDevice(0, clock=lambda: now[0])
        await dev.store_disksize(b"1M")
        if not accelerated:
            strip_accelerator(dev)
        data = mixed_data(200, 5)
        await dev.write(0, bytes(data))
        await dev.discard(10 * PAGE, 3 * PAGE)
        await dev.store_idle(b"all")
        devs.append(dev)
    now[0] = 2000
    for dev in devs:
        assert await dev.read(0, 128 * PAGE) == await devs[1].read(0, 128 * PAGE)
    fast, slow = (table(d).attr.tolist()[:256] for d in devs)
    assert fast == slow
    stamped = [a for a in fast[:128] if (a & ACTIME_MASK) >> ACTIME_SHIFT == 2000]
    assert len(stamped) == 125  # 128 read, 3 of them discarded (empty)
