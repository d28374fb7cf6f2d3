"""Device core (no FUSE): every store's errno and check order, exact formats,
exact accounting, discard, idle, entry-lock concurrency and a 100 GiB device.

Each expectation is the kernel's (reference zram-interface.md §1–§13, section
numbers in the comments); where zramfs deviates on purpose (file semantics of
discard edges) the test says so.
"""

from __future__ import annotations

import errno
import gc
import math
import os
import random
import re
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing

from tests.devutil import io, mm, pool, store, table
from zramfs.backends import BACKEND_NAMES, create_codec
from zramfs.backends.base import AlgoParams, PendingPages
from zramfs.core.attrs import ATTRS, BY_NAME, DEBUGFS_ATTRS
from zramfs.core.device import ZramDevice
from zramfs.core.entrylock import LOCK_MASK
from zramfs.core.zsmalloc import (
    ZS_HANDLE_SIZE,
    SizeClass,
    build_size_classes,
    get_size_class_index,
)
from zramfs.errors import ZramError

PAGE = 4096
ALL_ALGS = "lz4 lz4hc zstd deflate brotli"

# A compressible page with a known, stable lz4 size (~630 bytes).
TEXT_PAGE = b"".join(b"line %05d of the zram test corpus\n" % i for i in range(200))[:PAGE]


def rand_page(seed: int) -> bytes:
    """Incompressible: stored HUGE by every algorithm."""
    return random.Random(seed).randbytes(PAGE)


def text(seed: int, n: int) -> bytes:
    r = random.Random(seed)
    words = [b"zram", b"page", b"slot", b"compress", b"memory", b"swap", b"trio", b"lock"]
    out = b" ".join(r.choice(words) for _ in range(n // 3 + 2))
    return out[:n]


# --------------------------------------------------------------------------- helpers


async def new_dev(
    disksize: bytes | None = b"1M",
    *,
    alg: bytes | None = None,
    clock: Callable[[], int] | None = None,
) -> ZramDevice:
    dev = ZramDevice(0) if clock is None else ZramDevice(0, clock=clock)
    if alg is not None:
        await dev.store_comp_algorithm(alg)
    if disksize is not None:
        await dev.store_disksize(disksize)
    return dev


async def raises(err: int, fn: Callable[..., Awaitable[object]], *args: object) -> ZramError:
    with pytest.raises(ZramError) as ei:
        await fn(*args)
    assert ei.value.errno == err, f"expected {errno.errorcode[err]}, got {ei.value!r}"
    return ei.value






def bstat(dev: ZramDevice) -> list[int]:
    return [int(x) for x in dev.show_stat().split()]


BLOCK_STATE_LINE = re.compile(rb"^( {0,11}\d+) ( {0,11}\d+)\.000000 ([s.][w.][h.][i.][r.][n.])\n$")


def block_state(dev: ZramDevice) -> dict[int, tuple[int, str]]:
    """index -> (ac_time, flags), checking every line's exact format."""
    out: dict[int, tuple[int, str]] = {}
    for line in dev.show_block_state().splitlines(keepends=True):
        m = BLOCK_STATE_LINE.match(line)
        assert m, line
        assert len(m.group(1)) >= 12 and len(m.group(2)) >= 12, line
        out[int(m.group(1))] = (int(m.group(2)), m.group(3).decode())
    return out


def size_class(size: int) -> SizeClass:
    """The zsmalloc class a zs_malloc(size) lands in, from the class table alone."""
    classes, class_of_index, _ = build_size_classes(8)
    idx = class_of_index[get_size_class_index(size + ZS_HANDLE_SIZE)]
    return next(c for c in classes if c.index == idx)


def pages_for(size: int, count: int) -> int:
    """Pool pages for ``count`` objects of ``size`` in a fresh pool."""
    c = size_class(size)
    return math.ceil(count / c.objs_per_zspage) * c.pages_per_zspage


def assert_no_locks(dev: ZramDevice) -> None:
    t = table(dev)
    assert t.locks.contended_slots == 0
    assert not any(t.attr[i] & LOCK_MASK for i in range(t.npages))
    assert not dev.dev_lock._locks.attr[0]
    assert dev.bstat.in_flight == 0


# =========================================================================== §2–§4 stores


async def test_disksize_zero_is_einval_before_and_after_init() -> None:
    dev = ZramDevice(0)
    for buf in (b"0", b"0\n", b"", b"abc", b"-5", b" 4096", b"0x", b"K"):
        await raises(errno.EINVAL, dev.store_disksize, buf)
        assert not dev.initialized
    await dev.store_disksize(b"1M")
    # EINVAL (parse) is checked before EBUSY (init_done).
    for buf in (b"0", b"abc", b"0\n"):
        await raises(errno.EINVAL, dev.store_disksize, buf)
    await raises(errno.EBUSY, dev.store_disksize, b"2M")
    await raises(errno.EBUSY, dev.store_disksize, b"1M")
    assert dev.show_disksize() == b"1048576\n"


@pytest.mark.parametrize(
    ("buf", "size"),
    [
        (b"1", PAGE),
        (b"4096", PAGE),
        (b"4097", 2 * PAGE),
        (b"5000\n", 2 * PAGE),
        (b"1k", PAGE),
        (b"1K", PAGE),
        (b"3M", 3 << 20),
        (b"3m\n", 3 << 20),
        (b"1G", 1 << 30),
        (b"1g", 1 << 30),
        (b"0x10000", 65536),
        (b"0X10000", 65536),
        (b"0x10", PAGE),
        (b"010", PAGE),  # octal 8, aligned up
        (b"0100000", 32768),  # octal
        (b"12abc", PAGE),  # trailing garbage ignored
        (b"2Kxyz", 2 * PAGE // 2),  # 2048 -> one page
        (b"0x1e", PAGE),  # hex 30, not an exa suffix
    ],
)
async def test_disksize_memparse_and_page_align(buf: bytes, size: int) -> None:
    dev = ZramDevice(0)
    await dev.store_disksize(buf)
    assert dev.disksize == size
    assert dev.show_disksize() == b"%d\n" % size
    assert dev.show_initstate() == b"1\n"
    assert table(dev).npages == size // PAGE


async def test_disksize_wrapping_to_zero_is_enomem() -> None:
    dev = ZramDevice(0)
    await raises(errno.ENOMEM, dev.store_disksize, b"0xffffffffffffffff")
    assert not dev.initialized and dev.table is None and dev.show_initstate() == b"0\n"
    await dev.store_disksize(b"8K")
    assert dev.disksize == 8192


async def test_disksize_too_large_for_memory_is_enomem() -> None:
    dev = ZramDevice(0)
    await raises(errno.ENOMEM, dev.store_disksize, b"1E")  # 2**48 slots
    assert not dev.initialized and dev.table is None
    await dev.store_disksize(b"64K")
    assert dev.initialized


async def test_disksize_refused_while_image_open() -> None:
    dev = ZramDevice(0)
    dev.openers = 1
    await raises(errno.EBUSY, dev.store_disksize, b"1M")
    await raises(errno.EINVAL, dev.store_disksize, b"0")  # still EINVAL first
    dev.openers = 0
    await dev.store_disksize(b"1M")


async def test_initstate_and_resize_notification() -> None:
    dev = ZramDevice(0)
    seen: list[int] = []
    dev.on_resize.append(lambda d: seen.append(d.disksize))
    assert dev.show_initstate() == b"0\n" and dev.show_disksize() == b"0\n"
    await dev.store_disksize(b"64K")
    await dev.store_reset(b"1")
    assert seen == [65536, 0]


async def test_comp_algorithm_errno_order() -> None:
    dev = ZramDevice(0)
    assert dev.show_comp_algorithm() == b"[lz4] lz4hc zstd deflate brotli \n"
    await raises(errno.E2BIG, dev.store_comp_algorithm, b"x" * 128)
    # 127 bytes + the newline is 128: E2BIG (strlen counts the newline).
    await raises(errno.E2BIG, dev.store_comp_algorithm, b"x" * 127 + b"\n")
    await raises(errno.EINVAL, dev.store_comp_algorithm, b"x" * 127)
    for bad in (b"lzo", b"", b"\n", b"lz4\n\n", b" lz4", b"LZ4", b"lz4 "):
        await raises(errno.EINVAL, dev.store_comp_algorithm, bad)
    assert dev.comp_algs[0] == "lz4"
    await dev.store_comp_algorithm(b"zstd\n")
    assert dev.show_comp_algorithm() == b"lz4 lz4hc [zstd] deflate brotli \n"
    await dev.store_comp_algorithm(b"brotli")
    assert dev.show_comp_algorithm() == b"lz4 lz4hc zstd deflate [brotli] \n"
    await dev.store_disksize(b"64K")
    # After init: E2BIG, then EINVAL (unknown), then EBUSY.
    await raises(errno.E2BIG, dev.store_comp_algorithm, b"y" * 200)
    await raises(errno.EINVAL, dev.store_comp_algorithm, b"nope")
    await raises(errno.EBUSY, dev.store_comp_algorithm, b"lz4")
    await raises(errno.EBUSY, dev.store_comp_algorithm, b"brotli")
    assert dev.comp_algs[0] == "brotli"
    assert dev.comps[0] is not None and dev.comps[0].name == "brotli"


async def test_comp_algorithm_every_listed_algorithm_works() -> None:
    assert " ".join(BACKEND_NAMES) == ALL_ALGS
    for name in BACKEND_NAMES:
        dev = await new_dev(b"64K", alg=name.encode())
        data = text(1, 3 * PAGE) + rand_page(2) + bytes(PAGE)
        await dev.write(0, data)
        assert await dev.read(0, len(data)) == data
        assert mm(dev)[7] == 1  # the random page is huge with every algorithm
        assert mm(dev)[5] == 1


async def test_recomp_algorithm_store_and_show() -> None:
    dev = ZramDevice(0)
    assert dev.show_recomp_algorithm() == b""
    for bad in (
        b"",
        b"\n",
        b"priority=1",  # algo missing
        b"algo=zstd priority=0",
        b"algo=zstd priority=4",
        b"algo=zstd priority=-1",
        b"algo=",  # key= without value
        b"algo",  # key without '='
        b"algo=zstd priority",
        b"algo=zstd priority=",
        b"algo=zstd priority=abc",
        b"algo=nope",
        b"algo=lzo priority=2",
    ):
        await raises(errno.EINVAL, dev.store_recomp_algorithm, bad)
    await raises(errno.ERANGE, dev.store_recomp_algorithm, b"algo=zstd priority=99999999999")
    # The priority range is checked before the name (E2BIG would come later).
    await raises(errno.EINVAL, dev.store_recomp_algorithm, b"algo=" + b"z" * 130 + b" priority=0")
    await raises(errno.E2BIG, dev.store_recomp_algorithm, b"algo=" + b"z" * 130)
    assert dev.show_recomp_algorithm() == b""
    assert dev.comp_algs == ["lz4", None, None, None]

    # Unknown keys are ignored; default priority is 1; quotes are stripped.
    await dev.store_recomp_algorithm(b"foo=bar algo=zstd bar=1\n")
    assert dev.show_recomp_algorithm() == b"#1: lz4 lz4hc [zstd] deflate brotli \n"
    await dev.store_recomp_algorithm(b'priority=3 algo="brotli"')
    assert dev.show_recomp_algorithm() == (
        b"#1: lz4 lz4hc [zstd] deflate brotli \n#3: lz4 lz4hc zstd deflate [brotli] \n"
    )
    await dev.store_recomp_algorithm(b"algo=deflate priority=1")
    assert dev.show_recomp_algorithm().startswith(b"#1: lz4 lz4hc zstd [deflate] brotli \n")
    assert dev.comp_algs == ["lz4", "deflate", None, "brotli"]

    await dev.store_disksize(b"64K")
    assert all(c is not None for i, c in enumerate(dev.comps) if i != 2)
    await raises(errno.EBUSY, dev.store_recomp_algorithm, b"algo=zstd priority=2")
    await raises(errno.EINVAL, dev.store_recomp_algorithm, b"algo=nope priority=2")
    await raises(errno.EINVAL, dev.store_recomp_algorithm, b"algo=zstd priority=0")
    assert dev.comp_algs == ["lz4", "deflate", None, "brotli"]


async def test_algorithm_params_priority_and_algo_lookup() -> None:
    dev = ZramDevice(0)
    for bad in (
        b"priority=4 level=1",
        b"priority=-1 level=1",
        b"algo=zstd level=3",  # zstd is not configured at any priority
        b"algo=nope",
        b"level",  # key without value
        b"level=",
        b"level=abc",
        b"priority=x",
        b"deflate.winbits=",
        b"deflate.winbits=q",
    ):
        await raises(errno.EINVAL, dev.store_algorithm_params, bad)
    assert dev.params == [AlgoParams()] * 4

    await dev.store_algorithm_params(b"level=5 foo=bar")  # unknown key ignored
    assert dev.params[0] == AlgoParams(level=5)
    await dev.store_algorithm_params(b"algo=lz4 level=2")  # primary by name
    assert dev.params[0] == AlgoParams(level=2)
    # A priority without an algorithm may still get params (kernel: no check).
    await dev.store_algorithm_params(b"priority=2 level=7\n")
    assert dev.params[2] == AlgoParams(level=7)
    await dev.store_recomp_algorithm(b"algo=zstd priority=1")
    await dev.store_algorithm_params(b"algo=zstd level=-3")
    assert dev.params[1] == AlgoParams(level=-3)
    await dev.store_algorithm_params(b"priority=3 deflate.winbits=12")
    assert dev.params[3] == AlgoParams(deflate_winbits=12)
    # Each write replaces all params of that priority.
    await dev.store_algorithm_params(b"priority=2")
    assert dev.params[2] == AlgoParams()
    # algo= wins over priority= (lookup after the loop).
    await dev.store_algorithm_params(b"algo=zstd priority=0 level=4")
    assert dev.params[1] == AlgoParams(level=4) and dev.params[0] == AlgoParams(level=2)


async def test_algorithm_params_dict_failures_change_nothing(tmp_path: Path) -> None:
    dev = ZramDevice(0)
    await dev.store_comp_algorithm(b"zstd")
    await dev.store_algorithm_params(b"level=5")
    before = list(dev.params)
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    empty_dir = tmp_path / "d"
    empty_dir.mkdir()
    for path in (tmp_path / "missing", empty_dir, fifo, Path("/dev/null")):
        with trio.fail_after(5):  # a FIFO must not block the store
            await raises(errno.EINVAL, dev.store_algorithm_params, b"level=7 dict=%s" % bytes(path))
        assert dev.params == before
    # A real dictionary works end to end.
    d = tmp_path / "dict"
    d.write_bytes(text(3, 8192))
    await dev.store_algorithm_params(b"algo=zstd dict=" + bytes(d))
    assert dev.params[0].dictionary == d.read_bytes() and dev.params[0].level is None
    await dev.store_disksize(b"64K")
    data = text(4, 2 * PAGE)
    await dev.write(0, data)
    assert await dev.read(0, 2 * PAGE) == data


async def test_algorithm_params_bad_level_fails_at_disksize() -> None:
    dev = ZramDevice(0)
    await dev.store_comp_algorithm(b"zstd")
    await dev.store_algorithm_params(b"level=1000")  # accepted at store time
    await raises(errno.EINVAL, dev.store_disksize, b"1M")
    assert not dev.initialized and dev.table is None and dev.pool is None
    assert dev.show_initstate() == b"0\n" and dev.show_disksize() == b"0\n"
    assert dev.comps == [None] * 4
    # A failing secondary algorithm fails the whole init too.
    await dev.store_algorithm_params(b"level=3")
    await dev.store_recomp_algorithm(b"algo=brotli priority=2")
    await dev.store_algorithm_params(b"priority=2 level=12")
    await raises(errno.EINVAL, dev.store_disksize, b"1M")
    assert not dev.initialized
    await dev.store_algorithm_params(b"priority=2 level=11")
    await dev.store_disksize(b"1M")
    assert dev.initialized and dev.comps[2] is not None and dev.comps[0] is not None


async def test_algorithm_params_any_time() -> None:
    dev = await new_dev(b"64K")
    await raises(errno.ERANGE, dev.store_algorithm_params, b"level=99999999999")
    await dev.store_algorithm_params(b"level=1000")  # no init check, no validation
    assert dev.comps[0] is not None and dev.comps[0].params.level == 1
    await dev.store_reset(b"1")
    assert dev.params == [AlgoParams()] * 4  # reset clears params


async def test_reset_errno() -> None:
    dev = await new_dev(b"64K")
    for bad in (b"0", b"0\n", b"", b"abc", b"-1", b" 1", b"1 ", b"1\n\n", b"0x1"):
        await raises(errno.EINVAL, dev.store_reset, bad)
    await raises(errno.ERANGE, dev.store_reset, b"70000")
    assert dev.initialized
    dev.openers = 2
    await raises(errno.EBUSY, dev.store_reset, b"1")
    await raises(errno.EINVAL, dev.store_reset, b"0")  # parse errors first
    assert dev.initialized
    dev.openers = 0
    await dev.store_reset(b"+1\n")
    assert not dev.initialized
    await dev.store_reset(b"65535")  # resetting an uninitialized device is fine


async def test_reset_forgets_and_keeps_what_the_kernel_does() -> None:
    dev = ZramDevice(0)
    await dev.store_comp_algorithm(b"zstd")
    await dev.store_recomp_algorithm(b"algo=brotli priority=1")
    await dev.store_recomp_algorithm(b"algo=deflate priority=3")
    await dev.store_algorithm_params(b"level=4")
    await dev.store_algorithm_params(b"priority=1 level=6")
    await dev.store_mem_limit(b"8M")
    dev.wb_limit_enable = True
    dev.wb_limit = 1234
    dev.wb_batch_size = 7
    dev.compressed_writeback = True
    await dev.store_disksize(b"1M")
    await dev.write(0, rand_page(1) + TEXT_PAGE + bytes(PAGE) + b"a" * PAGE)
    await dev.discard(4 * PAGE, 4 * PAGE)
    await dev.read(0, 100)
    assert table(dev).locks.try_lock(1)
    assert not dev.slot_free_notify(1)  # miss_free
    table(dev).locks.unlock(1)
    assert mm(dev)[0] and mm(dev)[7] == 1 and io(dev)[3] == 4 and dev.stats.miss_free == 1

    await dev.store_reset(b"1")
    assert dev.show_initstate() == b"0\n" and dev.show_disksize() == b"0\n"
    assert dev.show_comp_algorithm() == b"[lz4] lz4hc zstd deflate brotli \n"
    assert dev.show_recomp_algorithm() == b""
    assert dev.comp_algs == ["lz4", None, None, None]
    assert dev.params == [AlgoParams()] * 4
    assert dev.show_mm_stat() == b" ".join([b"%8d" % 0] * 9) + b"\n"
    assert dev.show_io_stat() == b"       0        0 0        0\n"
    assert dev.show_debug_stat() == b"version: 1\n0        0\n"
    assert bstat(dev) == [0] * 17
    assert dev.limit_pages == 0
    assert dev.table is None and dev.pool is None and dev.comps == [None] * 4
    # Not touched by reset (reference §1).
    assert dev.wb_limit_enable is True and dev.wb_limit == 1234
    assert dev.wb_batch_size == 7 and dev.compressed_writeback is True
    # The device works again, with the default algorithm.
    await dev.store_disksize(b"64K")
    assert dev.comps[0] is not None and dev.comps[0].name == "lz4"
    assert await dev.read(0, PAGE) == bytes(PAGE)


async def test_mem_used_max_store() -> None:
    dev = ZramDevice(0)
    for bad in (b"1", b"abc", b"", b" 0", b"0x0", b"-0", b"00 "):
        await raises(errno.EINVAL, dev.store_mem_used_max, bad)
    await dev.store_mem_used_max(b"0")  # no-op before init
    await dev.store_mem_used_max(b"0\n")
    await dev.store_mem_used_max(b"+0")
    await dev.store_disksize(b"1M")
    await dev.write(0, b"".join(rand_page(i) for i in range(10)))
    assert mm(dev)[4] == mm(dev)[2] == 10 * PAGE
    await dev.discard(0, 6 * PAGE)
    assert mm(dev)[2] == 4 * PAGE and mm(dev)[4] == 10 * PAGE  # high-water stays
    await raises(errno.EINVAL, dev.store_mem_used_max, b"5")
    assert mm(dev)[4] == 10 * PAGE
    await dev.store_mem_used_max(b"0")
    assert mm(dev)[4] == 4 * PAGE  # reset to the current pool size


async def test_mem_limit_store() -> None:
    dev = ZramDevice(0)
    await dev.store_mem_limit(b"1M")  # any time, also before init
    assert dev.limit_pages == 256
    await dev.store_disksize(b"1M")
    for buf, limit in (
        (b"0", 0),
        (b"5000", 8192),  # page aligned up
        (b"1", 4096),
        (b"2m\n", 2 << 20),
        (b"1G", 1 << 30),
        (b"0x2000", 8192),
        (b"12abc", 4096),  # trailing garbage ignored
        (b"K", 0),  # a bare suffix parses (to 0): accepted
        (b"0\n", 0),
    ):
        await dev.store_mem_limit(buf)
        assert mm(dev)[3] == limit, buf
    await dev.store_mem_limit(b"3M")
    for bad in (b"", b"abc", b" 1M", b"-1", b"\n"):
        await raises(errno.EINVAL, dev.store_mem_limit, bad)
    assert mm(dev)[3] == 3 << 20  # unchanged


async def test_idle_store_errno() -> None:
    dev = ZramDevice(0, clock=lambda: 1000)
    for buf in (b"all", b"all\n", b"10", b"0x10"):
        await raises(errno.EINVAL, dev.store_idle, buf)  # uninitialized
    await dev.store_disksize(b"64K")
    for bad in (b"", b"al", b"all ", b"ALL", b"all\n\n", b"-1", b"1.5", b"10s", b" 10", b"x"):
        await raises(errno.EINVAL, dev.store_idle, bad)
    # kstrtouint(buf, 0): > U32_MAX is refused (ERANGE -> the store's EINVAL).
    await raises(errno.EINVAL, dev.store_idle, b"4294967296")
    for ok in (b"all", b"all\n", b"0", b"10\n", b"0x10", b"010", b"4294967295"):
        await dev.store_idle(ok)


async def test_post_init_only_stores_refuse_before_init() -> None:
    dev = ZramDevice(0)
    await raises(errno.EINVAL, dev.store_compact, b"1")
    await raises(errno.EINVAL, dev.store_compact, b"")
    await raises(errno.EINVAL, dev.store_idle, b"all")
    with pytest.raises(ZramError) as ei:
        dev.show_block_state()
    assert ei.value.errno == errno.EINVAL
    # writeback / recompress are post-init only as well (EINVAL before ENODEV).
    await raises(errno.EINVAL, store, dev, "writeback", b"idle")
    await raises(errno.EINVAL, store, dev, "recompress", b"type=idle")
    await dev.store_disksize(b"64K")
    await dev.store_compact(b"anything at all")


# =========================================================================== §6 formats


async def test_stat_file_formats() -> None:
    dev = ZramDevice(0)
    zero9 = b"       0" + b"        0" * 8 + b"\n"
    assert dev.show_mm_stat() == zero9  # uninitialized: all zero
    await dev.store_disksize(b"1M")
    assert dev.show_mm_stat() == zero9
    assert dev.show_io_stat() == b"       0        0 0        0\n"
    assert dev.show_debug_stat() == b"version: 1\n0        0\n"
    assert dev.show_stat() == b"       0" + b"        0" * 16 + b"\n"
    assert dev.show_block_state() == b""

    await dev.write(0, rand_page(1) + b"a" * PAGE)
    await dev.store_mem_limit(b"1G")
    s = dev.show_mm_stat()
    assert s == (
        b"    8192     4096     4096 1073741824     4096        1        0        1        1\n"
    )
    assert len(s.split()) == 9
    await dev.discard(0, 3 * PAGE)
    assert dev.show_io_stat() == b"       0        0 0        3\n"
    assert len(dev.show_io_stat().split()) == 4


async def test_io_stat_counts_failed_reads_and_writes() -> None:
    dev = await new_dev(b"64K")
    await dev.store_mem_limit(b"4K")
    await dev.write(0, rand_page(1))
    await raises(errno.EIO, dev.write, PAGE, rand_page(2))
    await raises(errno.EIO, dev.write, PAGE, rand_page(3))
    assert dev.show_io_stat() == b"       0        2 0        0\n"
    # A corrupt object is a failed read (zram_read_page -> -EIO).
    await dev.store_mem_limit(b"0")
    await dev.write(2 * PAGE, TEXT_PAGE)
    t, p = table(dev), pool(dev)
    size = t.size(2)
    p.write(t.handle[2], b"\xff" * size)
    await raises(errno.EIO, dev.read, 2 * PAGE, 10)
    assert io(dev)[:2] == [1, 2]
    assert_no_locks(dev)


async def test_block_stat_17_fields() -> None:
    dev = await new_dev(b"1M")
    await dev.write(0, b"x" * (3 * PAGE))
    await dev.write(100, b"y")
    await dev.read(0, 2 * PAGE)
    await dev.discard(0, 8 * PAGE)
    dev.flush()
    f = bstat(dev)
    assert len(f) == 17
    assert f[0] == 1 and f[2] == 16  # read I/Os, sectors
    assert f[4] == 2 and f[6] == 24  # write I/Os, sectors (the 1-byte write is < 1 sector)
    assert f[8] == 0  # in flight
    assert f[11] == 1 and f[13] == 64  # discard I/Os, sectors
    assert f[15] == 1  # flush
    line = dev.show_stat()
    assert re.fullmatch(rb"( {0,7}\d+ ){16} {0,7}\d+\n", line)


async def test_block_state_line_format() -> None:
    now = [75]
    dev = await new_dev(b"4M", clock=lambda: now[0])
    await dev.write(300 * PAGE, rand_page(1))
    await dev.write(2 * PAGE, b"\0" * PAGE)
    await dev.write(7 * PAGE, TEXT_PAGE)
    await dev.store_idle(b"all")
    assert dev.show_block_state() == (
        b"           2           75.000000 s.....\n"
        b"           7           75.000000 ...i..\n"
        b"         300           75.000000 ..hi..\n"
    )
    for line in dev.show_block_state().splitlines(keepends=True):
        assert len(line) == 12 + 1 + 12 + 7 + 1 + 6 + 1


# =========================================================================== §9 accounting


@pytest.mark.parametrize("offload", [False, True])
async def test_identical_pages_exact_accounting(offload: bool) -> None:
    dev = await new_dev(b"4M")
    csize = len(create_codec("lz4").compress(TEXT_PAGE))
    spec = size_class(csize)
    assert spec.objs_per_zspage > 1
    n = spec.objs_per_zspage + 1  # one full zspage and one more
    dev._comp_cost_ns = 10**9 if offload else 0
    await dev.write(0, TEXT_PAGE * n)
    s = mm(dev)
    assert s[0] == n * PAGE
    assert s[1] == n * csize
    assert s[2] == pages_for(csize, n) * PAGE == 2 * spec.pages_per_zspage * PAGE
    assert s[4] == s[2]
    assert s[5] == s[6] == s[7] == s[8] == 0
    assert pool(dev).size_class(csize) == spec
    assert await dev.read(0, n * PAGE) == TEXT_PAGE * n
    # One more object fits the partially used zspage: no new pages.
    await dev.write(n * PAGE, TEXT_PAGE)
    assert mm(dev)[2] == pages_for(csize, n + 1) * PAGE
    assert mm(dev)[1] == (n + 1) * csize
    assert_no_locks(dev)


async def test_same_filled_pages_use_no_memory() -> None:
    dev = await new_dev(b"1M")
    pages = [
        bytes(PAGE),
        b"a" * PAGE,
        b"abcdefgh" * 512,  # any repeated 8-byte word
        b"abcd" * 1024,  # a 4-byte pattern is an 8-byte word too
        (0xDEADBEEF_0BADF00D).to_bytes(8, "little") * 512,
    ]
    await dev.write(0, b"".join(pages))
    s = mm(dev)
    assert s[0] == len(pages) * PAGE and s[5] == len(pages)
    assert s[1] == s[2] == s[4] == 0
    assert await dev.read(0, len(pages) * PAGE) == b"".join(pages)
    bs = block_state(dev)
    assert sorted(bs) == list(range(len(pages))) and all(f == "s....." for _, f in bs.values())
    # A 16-byte period is not same-filled: compressed.
    await dev.write(10 * PAGE, b"0123456789abcdef" * 256)
    assert mm(dev)[5] == len(pages) and mm(dev)[1] > 0 and block_state(dev)[10][1] == "......"
    # One differing byte anywhere (first/last word equal) defeats it.
    page = bytearray(b"a" * PAGE)
    page[2000] = 0x62
    await dev.write(11 * PAGE, bytes(page))
    assert block_state(dev)[11][1] == "......"
    # A partial write can make a page same-filled (and unmake it).
    await dev.write(12 * PAGE, b"z" * 100)
    assert block_state(dev)[12][1] == "......"
    await dev.write(12 * PAGE, bytes(100))
    assert block_state(dev)[12][1] == "s....."
    assert mm(dev)[5] == len(pages) + 1


async def test_huge_pages() -> None:
    dev = await new_dev(b"1M")
    await dev.write(0, rand_page(1))
    s = mm(dev)
    assert s[0] == PAGE and s[1] == PAGE and s[2] == PAGE and s[7] == 1 and s[8] == 1
    assert block_state(dev)[0][1] == "..h..."
    assert table(dev).size(0) == PAGE
    await dev.write(PAGE, rand_page(2))
    assert mm(dev)[7] == 2 and mm(dev)[8] == 2
    # Overwrite a huge page with a compressible one: huge_pages down, since stays.
    await dev.write(0, TEXT_PAGE)
    csize = len(create_codec("lz4").compress(TEXT_PAGE))
    s = mm(dev)
    assert s[7] == 1 and s[8] == 2 and s[1] == PAGE + csize
    assert block_state(dev)[0][1] == "......"
    # ... and with a same-filled one.
    await dev.write(PAGE, b"q" * PAGE)
    s = mm(dev)
    assert s[7] == 0 and s[8] == 2 and s[5] == 1 and s[1] == csize
    # A partial write turning a page incompressible makes it huge (RMW).
    await dev.write(2 * PAGE, rand_page(3)[: PAGE - 8])
    assert block_state(dev)[2][1] == "..h..." and mm(dev)[8] == 3
    # Exactly at the threshold: compressed length >= huge_class_size is huge.
    assert dev.huge_class_size == 3625


async def test_huge_threshold_boundary() -> None:
    """A page whose compressed length is exactly huge_class_size is stored raw;
    one byte less is a normal object."""
    dev = await new_dev(b"1M", alg=b"deflate")
    codec = create_codec("deflate")
    found: dict[int, bytes] = {}
    r = random.Random(5)
    base = r.randbytes(PAGE)
    # Mixing random bytes with zeros moves the deflate size smoothly.
    for k in range(2800, 4000, 1):
        page = base[:k] + bytes(PAGE - k)
        n = len(codec.compress(page))
        if n in (3624, 3625) and n not in found:
            found[n] = page
        if len(found) == 2:
            break
    if len(found) < 2:
        pytest.skip("no page with those exact compressed sizes")
    await dev.write(0, found[3624])
    await dev.write(PAGE, found[3625])
    bs = block_state(dev)
    assert bs[0][1] == "......" and table(dev).size(0) == 3624
    assert bs[1][1] == "..h..." and table(dev).size(1) == PAGE


async def test_mem_used_max_high_water() -> None:
    dev = await new_dev(b"1M")
    await dev.write(0, b"".join(rand_page(i) for i in range(5)))
    assert mm(dev)[4] == 5 * PAGE
    await dev.write(0, bytes(5 * PAGE))  # all same now: pool empty
    assert mm(dev)[2] == 0 and mm(dev)[4] == 5 * PAGE
    await dev.store_mem_used_max(b"0")
    assert mm(dev)[4] == 0
    await dev.write(0, rand_page(9))
    assert mm(dev)[4] == PAGE


async def test_mem_limit_refuses_writes_with_eio() -> None:
    now = [10]
    dev = await new_dev(b"1M", clock=lambda: now[0])
    await dev.store_mem_limit(b"8K")  # limit_pages = 2
    p0, p1 = rand_page(10), rand_page(11)
    await dev.write(0, p0 + p1)  # two huge pages: exactly at the limit
    await dev.write(2 * PAGE, b"b" * PAGE)  # same-filled: no memory, never refused
    assert mm(dev)[2] == 2 * PAGE and mm(dev)[5] == 1

    # A third huge page: allocated, over the limit, freed, EIO at the caller.
    now[0] = 20
    await raises(errno.EIO, dev.write, 2 * PAGE, rand_page(12))
    assert block_state(dev)[2] == (10, "s.....")  # not marked accessed either
    assert io(dev)[1] == 1
    assert await dev.read(2 * PAGE, PAGE) == b"b" * PAGE  # the refused page kept its OLD content
    assert mm(dev)[5] == 1 and mm(dev)[2] == 2 * PAGE
    assert mm(dev)[4] == 3 * PAGE  # the attempt raised the high-water mark (kernel order)

    # Overwriting a stored page also needs the new object before the old one goes.
    await raises(errno.EIO, dev.write, 0, rand_page(13))
    assert await dev.read(0, 2 * PAGE) == p0 + p1
    # A partial write (read-modify-write) is refused the same way.
    await raises(errno.EIO, dev.write, 100, b"\x01\x02\x03")
    assert await dev.read(0, PAGE) == p0
    # A multi-page write stores the pages before the refused one.
    await raises(errno.EIO, dev.write, 5 * PAGE, b"c" * PAGE + rand_page(14) + b"d" * PAGE)
    assert await dev.read(5 * PAGE, 3 * PAGE) == b"c" * PAGE + bytes(2 * PAGE)
    assert io(dev)[1] == 4
    # Same-filled writes are never refused.
    await dev.write(9 * PAGE, bytes(PAGE))
    s = mm(dev)
    assert s[0] == 5 * PAGE and s[1] == 2 * PAGE and s[2] == 2 * PAGE and s[7] == 2

    # Raising the limit lets writes through again.
    await dev.store_mem_limit(b"0")
    await dev.write(2 * PAGE, rand_page(12))
    assert await dev.read(2 * PAGE, PAGE) == rand_page(12)
    assert mm(dev)[5] == 2 and mm(dev)[7] == 3 and io(dev)[1] == 4
    assert_no_locks(dev)


async def test_mem_limit_offloaded_batch() -> None:
    """The offloaded path refuses at the same page and unlocks everything."""
    dev = await new_dev(b"1M")
    await dev.store_mem_limit(b"12K")
    dev._comp_cost_ns = 10**9
    pages = [rand_page(i) for i in range(6)]
    await raises(errno.EIO, dev.write, 0, b"".join(pages))
    assert await dev.read(0, 6 * PAGE) == b"".join(pages[:3]) + bytes(3 * PAGE)
    assert mm(dev)[0] == 3 * PAGE and io(dev)[1] == 1
    assert_no_locks(dev)


# =========================================================================== data path


async def test_read_write_bounds() -> None:
    dev = await new_dev(b"10000")  # 3 pages
    assert dev.disksize == 3 * PAGE
    await raises(errno.ENOSPC, dev.write, 3 * PAGE, b"x")
    await raises(errno.ENOSPC, dev.write, 10 * PAGE, b"x")
    assert await dev.write(3 * PAGE, b"") == 0
    assert await dev.write(3 * PAGE - 10, b"y" * 100) == 10  # short at the end
    assert await dev.read(3 * PAGE - 20, 100) == bytes(10) + b"y" * 10
    assert await dev.read(3 * PAGE, 10) == b""
    assert await dev.read(0, 0) == b""
    await raises(errno.EINVAL, dev.read, -1, 10)
    await raises(errno.EINVAL, dev.write, -1, b"x")
    await raises(errno.EINVAL, dev.discard, -1, 10)
    assert await dev.read(0, 10 * PAGE) == bytes(3 * PAGE - 10) + b"y" * 10
    # Uninitialized: reads are empty, writes have no room.
    fresh = ZramDevice(1)
    assert await fresh.read(0, 10) == b""
    await raises(errno.ENOSPC, fresh.write, 0, b"x")
    assert await fresh.discard(0, PAGE) == 0


async def test_unaligned_multi_page_round_trip() -> None:
    dev = await new_dev(b"64K")
    model = bytearray(64 * 1024)
    r = random.Random(1)
    for i in range(60):
        off = r.randrange(0, len(model))
        n = r.randrange(1, 5 * PAGE)
        data = text(i, n) if i % 3 else r.randbytes(n)
        dev._comp_cost_ns = 10**9 if i % 2 else 0
        got = await dev.write(off, data)
        assert got == min(n, len(model) - off)
        model[off : off + got] = data[:got]
        a = r.randrange(0, len(model))
        assert await dev.read(a, 3 * PAGE) == bytes(model[a : a + 3 * PAGE])
    assert await dev.read(0, len(model)) == bytes(model)
    assert_no_locks(dev)


# =========================================================================== discard


async def test_discard_frees_whole_pages_and_zeroes_edges() -> None:
    dev = await new_dev(b"64K")
    data = b"".join(text(i, PAGE) for i in range(8))
    await dev.write(0, data)
    assert mm(dev)[0] == 8 * PAGE
    freed = await dev.discard(PAGE + 100, 5 * PAGE)  # [4196, 24676)
    assert freed == 4  # pages 2..5
    assert io(dev)[3] == 4
    expect = bytearray(data)
    expect[PAGE + 100 : 6 * PAGE + 100] = bytes(5 * PAGE)
    assert await dev.read(0, 8 * PAGE) == bytes(expect)
    assert sorted(block_state(dev)) == [0, 1, 6, 7]
    assert mm(dev)[0] == 4 * PAGE
    # Within one page: nothing freed, the bytes read back as zeros.
    assert await dev.discard(100, 50) == 0
    expect[100:150] = bytes(50)
    assert await dev.read(0, PAGE) == bytes(expect[:PAGE])
    assert io(dev)[3] == 4
    # Ending exactly on a page boundary / starting on one.
    assert await dev.discard(7 * PAGE - 1, PAGE + 1) == 1
    expect[7 * PAGE - 1 :] = bytes(PAGE + 1)
    assert await dev.read(0, 8 * PAGE) == bytes(expect)
    assert_no_locks(dev)


async def test_discard_kernel_mode_leaves_edges() -> None:
    dev = await new_dev(b"64K")
    data = text(7, 4 * PAGE)
    await dev.write(0, data)
    assert await dev.discard(10, 3 * PAGE, zero_edges=False) == 2  # pages 1, 2
    assert await dev.read(0, 4 * PAGE) == data[:PAGE] + bytes(2 * PAGE) + data[3 * PAGE :]


async def test_discard_counts_unallocated_pages() -> None:
    dev = await new_dev(b"64K")
    await dev.write(3 * PAGE, TEXT_PAGE)
    assert await dev.discard(0, 16 * PAGE) == 16
    assert io(dev)[3] == 16  # the kernel counts every whole page, allocated or not
    assert mm(dev)[0] == 0 and mm(dev)[2] == 0
    # Past the end is clipped.
    assert await dev.discard(14 * PAGE, 100 * PAGE) == 2
    assert await dev.discard(16 * PAGE, PAGE) == 0
    assert io(dev)[3] == 18
    assert bstat(dev)[11] == 2 and bstat(dev)[13] == (16 + 2) * 8


async def test_discard_partial_edges_do_not_allocate() -> None:
    """Punching a hole into never-written pages must not store anything: a
    discard never increases orig_data_size."""
    dev = await new_dev(b"64K")
    assert await dev.discard(100, 3 * PAGE) == 2
    assert await dev.discard(5 * PAGE + 1, 10) == 0
    assert mm(dev)[0] == 0 and mm(dev)[5] == 0
    assert dev.show_block_state() == b""
    assert await dev.read(0, 8 * PAGE) == bytes(8 * PAGE)


async def test_discard_at_mem_limit_frees_memory() -> None:
    """fstrim on a full device must give memory back: the whole pages are freed
    before the edges' read-modify-write needs an allocation."""
    dev = await new_dev(b"1M")
    await dev.store_mem_limit(b"40K")
    data = b"".join(rand_page(i) for i in range(10))
    await dev.write(0, data)
    assert mm(dev)[2] == 10 * PAGE  # exactly at the limit
    assert await dev.discard(100, 8 * PAGE) == 7
    assert io(dev)[3] == 7 and io(dev)[1] == 0
    end = 100 + 8 * PAGE
    assert await dev.read(0, 10 * PAGE) == data[:100] + bytes(end - 100) + data[end:]
    assert mm(dev)[2] <= 10 * PAGE
    assert_no_locks(dev)


async def test_slot_free_notify_trylock() -> None:
    dev = await new_dev(b"64K")
    await dev.write(0, TEXT_PAGE * 4)
    locks = table(dev).locks
    held = trio.Event()
    release = trio.Event()

    async def holder() -> None:
        await locks.lock(2)
        held.set()
        await release.wait()
        locks.unlock(2)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(holder)
        await held.wait()
        assert dev.slot_free_notify(2) is False
        assert dev.stats.miss_free == 1 and io(dev)[3] == 0
        assert dev.show_debug_stat() == b"version: 1\n0        1\n"
        assert table(dev).allocated(2)
        assert dev.slot_free_notify(1) is True  # other slots are not affected
        release.set()
    assert dev.slot_free_notify(2) is True
    assert io(dev)[3] == 2 and dev.stats.miss_free == 1
    assert sorted(block_state(dev)) == [0, 3]
    assert await dev.read(PAGE, 2 * PAGE) == bytes(2 * PAGE)
    assert dev.slot_free_notify(5) is True  # unallocated: still a notification
    assert io(dev)[3] == 3
    assert dev.slot_free_notify(16) is False and dev.slot_free_notify(-1) is False
    assert io(dev)[3] == 3 and dev.stats.miss_free == 1
    assert_no_locks(dev)


async def test_slot_free_notify_shared_holder_is_a_miss() -> None:
    dev = await new_dev(b"64K")
    await dev.write(0, TEXT_PAGE)
    locks = table(dev).locks
    await locks.lock_shared(0)
    assert dev.slot_free_notify(0) is False
    locks.unlock_shared(0)
    assert dev.stats.miss_free == 1
    assert dev.slot_free_notify(0) is True


# =========================================================================== §7 idle


async def test_idle_marking_with_fake_clock() -> None:
    now = [100]
    dev = await new_dev(b"64K", clock=lambda: now[0])
    await dev.write(0, TEXT_PAGE)  # 0: compressed
    await dev.write(PAGE, b"s" * PAGE)  # 1: same-filled (never idle)
    await dev.write(2 * PAGE, rand_page(1))  # 2: huge
    await dev.write(3 * PAGE, text(5, PAGE))  # 3: compressed
    bs = block_state(dev)
    assert {i: t for i, (t, _) in bs.items()} == {0: 100, 1: 100, 2: 100, 3: 100}

    now[0] = 200
    assert await dev.read(3 * PAGE, 10) == text(5, 10)
    assert await dev.read(5 * PAGE, 10) == bytes(10)  # unallocated: not listed
    assert block_state(dev)[3][0] == 200 and 5 not in block_state(dev)

    await dev.store_idle(b"50")  # cutoff 150: only pages accessed before it
    bs = block_state(dev)
    assert bs[0][1] == "...i.." and bs[2][1] == "..hi.." and bs[3][1] == "......"
    assert bs[1][1] == "s....."

    await dev.store_idle(b"all")
    bs = block_state(dev)
    assert [bs[i][1] for i in range(4)] == ["...i..", "s.....", "..hi..", "...i.."]

    # idle N also clears IDLE on pages accessed since the cutoff.
    await dev.store_idle(b"0x32")  # 50, base 0
    bs = block_state(dev)
    assert bs[3][1] == "......" and bs[0][1] == "...i.."

    # A read clears IDLE and stamps ac_time; so does a (partial) write.
    now[0] = 300
    await dev.read(0, 1)
    await dev.write(2 * PAGE + 5, b"!")
    bs = block_state(dev)
    assert bs[0] == (300, "......") and bs[2] == (300, "..h...") and bs[3] == (200, "......")

    # An age older than the clock: no page is older, every mark is cleared.
    await dev.store_idle(b"all")
    await dev.store_idle(b"1000")
    assert all("i" not in f for _, f in block_state(dev).values())
    # Age 0: everything accessed before now.
    now[0] = 301
    await dev.store_idle(b"0")
    bs = block_state(dev)
    assert [bs[i][1] for i in (0, 2, 3)] == ["...i..", "..hi..", "...i.."]
    # Freeing a slot forgets its flags and time.
    await dev.discard(0, PAGE)
    await dev.write(0, TEXT_PAGE)
    assert block_state(dev)[0] == (301, "......")
    assert_no_locks(dev)


# =========================================================================== concurrency


async def test_held_slot_blocks_only_its_own_page() -> None:
    """The seed's claim: an entry lock held across an await (slow recompression)
    stalls only that page; everything else proceeds."""
    dev = await new_dev(b"64K")
    pages = [text(i, PAGE) for i in range(6)]
    await dev.write(0, b"".join(pages))
    locks = table(dev).locks
    got: dict[str, bytes] = {}
    holding = trio.Event()
    release = trio.Event()

    async def recompressor() -> None:
        async with locks.exclusive(2):
            holding.set()
            await release.wait()  # "compressing on a worker thread"

    async def read_into(key: str, off: int, n: int) -> None:
        got[key] = await dev.read(off, n)

    async def writer(off: int, data: bytes) -> None:
        await dev.write(off, data)
        got[f"w{off}"] = b"done"

    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(recompressor)
            await holding.wait()
            nursery.start_soon(read_into, "page2", 2 * PAGE, PAGE)
            nursery.start_soon(read_into, "span", PAGE, 3 * PAGE)
            await trio.testing.wait_all_tasks_blocked()
            nursery.start_soon(writer, 2 * PAGE + 10, b"NEW")  # queued behind the readers
            await trio.testing.wait_all_tasks_blocked()
            assert locks.waiting(2) == 3

            # Other pages: reads and writes complete while slot 2 is held,
            # inline and offloaded.
            assert await dev.read(0, 2 * PAGE) == pages[0] + pages[1]
            await dev.write(4 * PAGE, b"x" * PAGE)
            dev._comp_cost_ns = 10**9
            await dev.write(5 * PAGE, text(99, PAGE))
            dev._comp_cost_ns = 0
            assert await dev.read(3 * PAGE, 3 * PAGE) == pages[3] + b"x" * PAGE + text(99, PAGE)
            await dev.write(0, b"y" * 100)
            await dev.discard(PAGE, PAGE)
            assert dev.slot_free_notify(3)
            assert dev.slot_free_notify(2) is False  # held: a miss
            assert "page2" not in got and "span" not in got and "w8202" not in got

            release.set()
    assert got["page2"] == pages[2]  # FIFO: the readers were first
    # page 1 was read before the wait, page 3 after (freed meanwhile).
    assert got["span"] == pages[1] + pages[2] + bytes(PAGE)
    assert got["w8202"] == b"done"
    assert await dev.read(2 * PAGE, 16) == pages[2][:10] + b"NEW" + pages[2][13:16]
    assert_no_locks(dev)


async def test_cancelled_waiting_reader_leaks_nothing() -> None:
    dev = await new_dev(b"64K")
    await dev.write(0, TEXT_PAGE * 3)
    locks = table(dev).locks
    await locks.lock(1)
    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            scope = trio.CancelScope()

            async def reader() -> None:
                with scope:
                    await dev.read(0, 3 * PAGE)
                    raise AssertionError("read completed while the slot was held")

            nursery.start_soon(reader)
            await trio.testing.wait_all_tasks_blocked()
            assert locks.waiting(1) == 1 and dev.bstat.in_flight == 1
            scope.cancel()
    assert locks.waiting(1) == 0 and locks.contended_slots == 0
    assert dev.bstat.in_flight == 0 and dev.stats.failed_reads == 0
    locks.unlock(1)
    assert_no_locks(dev)
    # dev_lock was released too: reset (exclusive) goes through.
    with trio.fail_after(5):
        await dev.store_reset(b"1")


async def test_cancelled_offloaded_writer_unlocks_its_batch() -> None:
    dev = await new_dev(b"64K")
    old = text(1, 10 * PAGE)
    await dev.write(0, old)
    locks = table(dev).locks
    await locks.lock(5)
    dev._comp_cost_ns = 10**9
    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            scope = trio.CancelScope()

            async def writer() -> None:
                with scope:
                    await dev.write(0, b"z" * (10 * PAGE))

            nursery.start_soon(writer)
            await trio.testing.wait_all_tasks_blocked()
            # The batch holds 0..4 in ascending order and waits for 5.
            assert all(locks.holds_writer(i) for i in range(5)) and locks.waiting(5) == 1
            blocked_reader_done = trio.Event()

            async def reader() -> None:
                assert await dev.read(2 * PAGE, PAGE) == old[2 * PAGE : 3 * PAGE]
                blocked_reader_done.set()

            nursery.start_soon(reader)
            await trio.testing.wait_all_tasks_blocked()
            assert not blocked_reader_done.is_set()
            scope.cancel()
    assert blocked_reader_done.is_set()
    locks.unlock(5)
    assert_no_locks(dev)
    assert await dev.read(0, 10 * PAGE) == old
    assert dev.stats.failed_writes == 0


async def test_concurrent_offloaded_writers_and_readers() -> None:
    dev = await new_dev(b"256K")
    dev._comp_cost_ns = 10**9
    n = 64
    old = [text(i, PAGE) for i in range(n)]
    await dev.write(0, b"".join(old))
    new = [text(1000 + i, PAGE) if i % 3 else rand_page(i) for i in range(n)]
    reads: list[tuple[int, bytes]] = []

    async def writer(first: int, count: int) -> None:
        await dev.write(first * PAGE, b"".join(new[first : first + count]))

    async def reader(first: int, count: int) -> None:
        for _ in range(3):
            reads.append((first, await dev.read(first * PAGE, count * PAGE)))
            await trio.sleep(0)

    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            for first in range(0, n, 8):
                nursery.start_soon(writer, first, 8)
            for first in range(0, n - 10, 5):
                nursery.start_soon(reader, first, 10)
    for first, data in reads:
        for k in range(len(data) // PAGE):
            page = data[k * PAGE : (k + 1) * PAGE]
            assert page in (old[first + k], new[first + k])
    assert await dev.read(0, n * PAGE) == b"".join(new)
    assert mm(dev)[0] == n * PAGE
    assert_no_locks(dev)


async def test_config_waits_for_io_dev_lock() -> None:
    """reset (dev_lock exclusive) waits for an I/O that holds dev_lock shared
    across an await, and I/O queued behind reset sees the reset device."""
    dev = await new_dev(b"64K")
    await dev.write(0, TEXT_PAGE)
    locks = table(dev).locks
    await locks.lock(0)
    order: list[str] = []

    async def reader() -> None:
        order.append("read:" + str(len(await dev.read(0, PAGE))))

    async def resetter() -> None:
        await dev.store_reset(b"1")
        order.append("reset")

    async def late_reader() -> None:
        order.append("late:" + str(len(await dev.read(0, PAGE))))

    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(reader)
            await trio.testing.wait_all_tasks_blocked()
            nursery.start_soon(resetter)
            await trio.testing.wait_all_tasks_blocked()
            nursery.start_soon(late_reader)
            await trio.testing.wait_all_tasks_blocked()
            assert order == [] and dev.initialized
            locks.unlock(0)
    assert order == ["read:4096", "reset", "late:0"]


# =========================================================================== compaction


async def test_compact_frees_pages_and_counts_them() -> None:
    dev = await new_dev(b"4M")
    csize = len(create_codec("lz4").compress(TEXT_PAGE))
    spec = size_class(csize)
    n = spec.objs_per_zspage * 4
    await dev.write(0, TEXT_PAGE * n)
    assert mm(dev)[2] == 4 * spec.pages_per_zspage * PAGE
    # Free all but one object of each zspage... the objects are spread over
    # four zspages in write order; freeing 3/4 of the slots leaves four
    # sparsely used zspages that compaction folds into one.
    for i in range(n):
        if i % 4:
            assert dev.slot_free_notify(i)
    before = mm(dev)
    assert before[2] == 4 * spec.pages_per_zspage * PAGE and before[6] == 0
    await dev.store_compact(b"1")
    after = mm(dev)
    assert after[2] == spec.pages_per_zspage * PAGE
    assert after[6] == 3 * spec.pages_per_zspage  # pages, not bytes
    assert after[0] == before[0] and after[1] == before[1]
    for i in range(0, n, 4):
        assert await dev.read(i * PAGE, PAGE) == TEXT_PAGE
    await dev.store_compact(b"1")
    assert mm(dev)[6] == after[6]
    await dev.store_reset(b"1")
    assert mm(dev)[6] == 0


# =========================================================================== big device


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


async def test_100g_device_is_cheap() -> None:
    gc.collect()
    dev = ZramDevice(0)
    rss0 = rss_bytes()
    t0 = time.perf_counter()
    await dev.store_disksize(b"107374182400")
    # Generous: a table that were really allocated (26 M slots) takes minutes
    # to touch; the instant-init figure itself is what RSS below proves.
    assert time.perf_counter() - t0 < 10
    assert dev.show_disksize() == b"107374182400\n"
    end = dev.disksize
    page = text(1, PAGE)
    await dev.write(end - PAGE, page)
    assert await dev.write(end - 10, b"0123456789abcdef") == 10
    await raises(errno.ENOSPC, dev.write, end, b"x")
    assert await dev.read(end - PAGE, 2 * PAGE) == page[:-10] + b"0123456789"
    await dev.write(0, rand_page(1))
    assert mm(dev)[0] == 2 * PAGE
    # Whole-table scans (idle, block_state) skip never-touched parts quickly.
    t0 = time.perf_counter()
    await dev.store_idle(b"all")
    bs = block_state(dev)
    # Generous bound: a slot-by-slot walk of 26 M slots takes minutes.
    assert time.perf_counter() - t0 < 30
    assert sorted(bs) == [0, end // PAGE - 1] and all("i" in f for _, f in bs.values())
    assert rss_bytes() - rss0 < 8 << 20
    await dev.store_reset(b"1")


# =========================================================================== attribute table


def test_attribute_table_names_and_modes() -> None:
    """Reference §4 / SPEC §3: every per-device attribute, with the kernel's mode."""
    expected = {
        "disksize": 0o644, "initstate": 0o444, "reset": 0o200, "compact": 0o200,
        "mem_limit": 0o200, "mem_used_max": 0o200, "idle": 0o200,
        "comp_algorithm": 0o644, "algorithm_params": 0o200, "recomp_algorithm": 0o644,
        "recompress": 0o200, "backing_dev": 0o644, "writeback": 0o200,
        "writeback_limit": 0o644, "writeback_limit_enable": 0o644,
        "writeback_batch_size": 0o644, "compressed_writeback": 0o644,
        "mm_stat": 0o444, "io_stat": 0o444, "bd_stat": 0o444, "debug_stat": 0o444,
        "stat": 0o444,
    }  # fmt: skip
    assert {a.name: a.mode for a in ATTRS} == expected
    assert len(BY_NAME) == len(ATTRS)
    assert [(a.name, a.mode) for a in DEBUGFS_ATTRS] == [
        ("block_state", 0o400),
        ("lock_stat", 0o400),
    ]
    for a in ATTRS:
        assert (a.show is not None) == bool(a.mode & 0o444)
        assert (a.store is not None) == bool(a.mode & 0o200)


async def test_attribute_table_dispatches_to_the_device() -> None:
    dev = ZramDevice(0)
    store = BY_NAME["disksize"].store
    show = BY_NAME["mm_stat"].show
    assert store is not None and show is not None
    await store(dev, b"64K\n")
    assert dev.disksize == 65536 and len(show(dev).split()) == 9


# =========================================================================== batched data path


def _mixed_pages(seed: int, n: int) -> list[bytes]:
    """Text, incompressible (huge), zero and word-filled pages, shuffled."""
    r = random.Random(seed)
    out = []
    for k in range(n):
        kind = r.random()
        if kind < 0.5:
            out.append(text(seed * 1000 + k, PAGE))
        elif kind < 0.7:
            out.append(rand_page(seed * 1000 + k))
        elif kind < 0.85:
            out.append(bytes(PAGE))
        else:
            out.append(r.randbytes(8) * (PAGE // 8))
    return out


def _slot_words(dev: ZramDevice) -> list[tuple[int, int]]:
    """Each slot's size and flags (not the handle: segment numbers may differ)."""
    t = table(dev)
    return [(t.attr[i] & 0xFFFFFFFF, t.handle[i] if t.attr[i] & (1 << 13) else 0)
            for i in range(t.npages)]  # fmt: skip


@pytest.mark.parametrize("seed", range(4))
async def test_batched_and_page_by_page_writes_agree(seed: int) -> None:
    """A request into empty slots is stored at once (compress_run + store_many);
    a mem_limit forces page by page; offloading compresses on worker threads.
    All three leave the same mm_stat, slot words and data."""
    pages = _mixed_pages(seed, 300)
    data = b"".join(pages)
    devs = [await new_dev(b"2M") for _ in range(3)]
    await devs[1].store_mem_limit(b"1G")
    devs[2]._comp_cost_ns = 10**9
    for dev in devs:
        for off in range(0, 2 << 20, 1 << 20):  # two 1 MiB requests, then a tail
            await dev.write(off, data[off : off + (1 << 20)])
        await dev.write(2 << 20, b"")  # (nothing)
    stats = [mm(dev) for dev in devs]
    for s in stats:
        s[3] = 0  # mem_limit
    assert stats[0] == stats[1] == stats[2]
    assert _slot_words(devs[0]) == _slot_words(devs[1]) == _slot_words(devs[2])
    for dev in devs:
        assert await dev.read(0, len(data[: 2 << 20])) == data[: 2 << 20]
        assert_no_locks(dev)


async def test_overwrite_frees_old_objects_in_order() -> None:
    """Page by page over full slots: every kind of old content replaced by
    every kind of new one; the counters follow and memory is given back."""
    dev = await new_dev(b"1M")
    first = _mixed_pages(1, 256)
    second = _mixed_pages(2, 256)
    await dev.write(0, b"".join(first))
    await dev.write(0, b"".join(second))
    assert await dev.read(0, 256 * PAGE) == b"".join(second)
    ref = await new_dev(b"1M")
    await ref.write(0, b"".join(second))
    s, r = mm(dev), mm(ref)
    assert s[0] == r[0] and s[1] == r[1] and s[5] == r[5] and s[7] == r[7]
    assert s[8] == mm(ref)[8] + sum(len(create_codec("lz4").compress(p)) >= dev.huge_class_size
                                    for p in first if p != p[:8] * (PAGE // 8))  # fmt: skip
    await dev.discard(0, 256 * PAGE)
    assert mm(dev)[:3] == [0, 0, 0]
    assert_no_locks(dev)


async def test_offload_decision_is_measured_per_codec() -> None:
    """Long batches take the way measured cheaper; every _EXPLORE-th the other."""
    from zramfs.core import device as device_mod

    saved = dict(device_mod._offload_stats)
    device_mod._offload_stats.clear()
    try:
        dev = await new_dev(b"4M")
        dev._comp_cost_ns = 10**9  # "expensive": the first long batch tries offloading
        await dev.write(0, TEXT_PAGE * 8)
        stats = device_mod._offload_stats[("lz4", 1)]
        assert stats[0] > 0 and stats[1] == 1
        measured = stats[0]
        dev._comp_cost_ns = measured - 1  # inline now looks cheaper
        await dev.write(0, TEXT_PAGE * 8)
        assert stats == [measured, 2]  # went inline: the offloaded figure is untouched
        assert await dev.read(0, 8 * PAGE) == TEXT_PAGE * 8
    finally:
        device_mod._offload_stats.clear()
        device_mod._offload_stats.update(saved)


@pytest.mark.parametrize("split", [0, 1])
async def test_zstd_long_reads_one_or_two_threads_give_the_data(split: int) -> None:
    """A read of >= JOIN_SPLIT_MIN_PAGES stored pages takes zstd's batch
    decompression, on one thread or split with the sidecar (forced both
    ways through `_par_stats`); huge pages among them.  (A same-filled
    page among them sends the request page by page.)"""
    from zramfs.core import device as device_mod

    n = device_mod.JOIN_SPLIT_MIN_PAGES + 37
    pages = [rand_page(k) if k % 10 == 3 else text(k, PAGE) for k in range(n)]
    data = b"".join(pages)
    dev = await new_dev(b"2M", alg=b"zstd")
    await dev.write(0, data)
    key = ("r", "zstd", 3)
    saved = device_mod._par_stats.get(key)
    try:
        # [one-thread ns/page, split ns/page, batches seen, decision, samples
        # of each]: warmed up, the wanted way the cheaper one, away from an
        # exploration batch.
        ns = [1000, 500] if split else [500, 1000]
        device_mod._par_stats[key] = [*ns, 1, 0, 100, 100]
        assert await dev.read(0, len(data)) == data
        assert device_mod._par_stats[key][3] == split
        assert await dev.read(PAGE, len(data) - PAGE) == data[PAGE:]
    finally:
        if saved is None:
            device_mod._par_stats.pop(key, None)
        else:
            device_mod._par_stats[key] = saved
    await dev.reset()


class Wrapped:
    """A `PendingPages` around the real helper's, to inject faults and delays:
    subclasses override `wait` (and may say when the helper "finished")."""

    def __init__(self, inner: PendingPages) -> None:
        self.inner = inner
        self.count = inner.count

    def wait(self, want: int) -> int:
        return self.inner.wait(want)

    @property
    def finished_ns(self) -> int:
        return self.inner.finished_ns

    def blocks(self) -> object:
        return self.inner.blocks()


async def lz4_ahead_dev(wrap: type[Wrapped] | None) -> ZramDevice:
    """A 2 MiB lz4 device whose background compression is wrapped in ``wrap``."""
    dev = await new_dev(b"2M", alg=b"lz4")
    comp = dev.comps[0]
    assert comp is not None
    real = comp.compress_pages_begin  # type: ignore[attr-defined]
    if real is None:
        pytest.skip("lz4 without the accelerator compresses nothing in the background")
    if wrap is not None:
        comp.compress_pages_begin = lambda d, p, n: wrap(real(d, p, n))  # type: ignore[attr-defined]
    return dev


async def test_a_failing_background_compression_goes_on_page_by_page(
    forced_fresh_way: Callable[[ZramDevice, int], None],
) -> None:
    """The background part raising (a codec error) after some pages were
    stored: the batch is finished page by page, nothing lost, and the
    counters are those of a device that stored it at once."""
    calls = []

    class Breaks(Wrapped):
        def wait(self, want: int) -> int:
            calls.append(want)
            if want > 40:
                raise RuntimeError("codec failure")
            return min(self.inner.wait(want), 40)

    data = b"".join(text(k, PAGE) for k in range(256))
    ref = await new_dev(b"2M", alg=b"lz4")
    await ref.write(0, data)
    dev = await lz4_ahead_dev(Breaks)
    forced_fresh_way(dev, 1)
    assert await dev.write(0, data) == len(data)
    assert calls and calls[-1] > 40  # it was used, and it failed
    assert await dev.read(0, len(data)) == data
    assert mm(dev) == mm(ref)
    assert table(dev).attr.tolist() == table(ref).attr.tolist()
    for d in (dev, ref):
        await d.reset()


@pytest.mark.parametrize("helper", ["slow", "idle"])
async def test_the_head_share_moves_toward_the_idle_side(
    helper: str, forced_fresh_way: Callable[[ZramDevice, int], None]
) -> None:
    """`_store_fresh_ahead`'s feedback: when the trio thread waits for the
    helper, the head grows; when the helper sits idle at the end, it
    shrinks.  (Delays injected into the real helper's results or into the
    stores; the data is still right.)"""
    from zramfs.core import device as dm

    class Slow(Wrapped):
        """The helper's pages arrive 2 ms late: it finishes when they do."""

        done_at = 0

        def wait(self, want: int) -> int:
            n = self.inner.wait(self.count)
            time.sleep(0.002)
            self.done_at = time.perf_counter_ns()
            return n

        @property
        def finished_ns(self) -> int:
            return self.done_at

    dev = await lz4_ahead_dev(Slow if helper == "slow" else None)
    if helper == "idle":  # the trio thread's stores are slow: the helper is done long before

        def slow_commit(*args: Any) -> None:
            time.sleep(0.001)
            commit(*args)

        commit = dev._commit_blocks
        dev._commit_blocks = slow_commit  # type: ignore[method-assign,assignment]
    data = b"".join(text(k, PAGE) for k in range(256))
    forced_fresh_way(dev, 1)
    dm._ahead_stats[("lz4", 1)] = figures = [10_000, 400]
    await dev.write(0, data)
    assert await dev.read(0, len(data)) == data
    if helper == "slow":
        assert figures[1] > 400
    else:
        assert figures[1] < 400
    await dev.reset()


def test_split_learning_drops_the_cold_sample_and_warms_up_both_ways() -> None:
    """`_split_pays` / `_split_learn`: the ways take turns until each has
    `_WARMUP` counted samples (a first, cold one dropped), then the cheaper
    way wins, except every `_EXPLORE`-th batch; a cold first split sample of
    10x does not make the faster split look slower."""
    from types import SimpleNamespace

    from zramfs.core import device as dm

    comp = SimpleNamespace(name="test-codec", params=SimpleNamespace(level=None))
    key = ("w", "test-codec", None)
    dm._par_stats.pop(key, None)
    try:
        true_ns = {0: 1000, 1: 600}  # one thread, split (ns per page)
        cold = {0: True, 1: True}
        taken = []
        for _ in range(4 * dm._EXPLORE):
            st = dm._split_pays("w", comp)  # type: ignore[arg-type]
            way = st[3]
            taken.append(way)
            ns = true_ns[way] * (10 if cold[way] else 1)
            cold[way] = False
            dm._split_learn(st, ns * 100, 100)
        warm = 2 * (dm._WARMUP + 1)
        assert taken[:warm] == [1, 0] * (dm._WARMUP + 1)
        st = dm._par_stats[key]
        assert st[0] == 1000 and st[1] == 600  # the cold samples left no trace
        after = taken[warm:]
        explored = [k for k, way in enumerate(after, warm + 1) if way == 0]
        assert explored and all(k % dm._EXPLORE == 0 for k in explored)
    finally:
        dm._par_stats.pop(key, None)
