"""zramfs._zpages's zstd calls against python-zstandard, and the zstd codec's
use of them (`ZstdCodec.compress_blocks` / `compress_pages_begin`).

The C calls compress with the zstd that python-zstandard bundles (setup.py
compiles it in from that release's sdist, scripts/setup.sh fetches it), so
every frame must be the byte sequence `ZstdCodec.compress` makes: the same
`compr_data_size`, `mem_used_total` and stored bytes whichever path a page
takes.  These run without FUSE: the calls and the core device.
"""

from __future__ import annotations

import random
import shutil
import subprocess
import sysconfig
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import trio
import zstandard

from benchmarks.data import realistic_data
from tests.forkutil import check_in_child
from tests.test_zpages import _edge_pages, _meaningful, _word_pages, corpus
from zramfs import _zpages as zp
from zramfs.backends import zstd as zb
from zramfs.backends.base import AlgoParams
from zramfs.core import device as dm
from zramfs.core.device import ZramDevice

PAGE = 4096
ROOT = Path(__file__).resolve().parent.parent


def _reference(level: int) -> zstandard.ZstdCompressor:
    """python-zstandard's compressor as `ZstdCodec` makes its frames (the kernel's framing)."""
    return zstandard.ZstdCompressor(
        level=level, write_checksum=False, write_content_size=True, write_dict_id=True
    )


def _check_frames(
    src: bytes, pos: int, count: int, level: int, out: bytearray, sizes: bytes
) -> None:
    """Every page's size and frame as the layout promises: 0 for same-filled,
    4096 when python-zstandard's frame is not shorter than a page, else its frame."""
    ref = _reference(level)
    sz = memoryview(sizes).cast("H")
    assert len(sz) == count
    for k in range(count):
        page = src[pos + k * PAGE : pos + (k + 1) * PAGE]
        if len(set(memoryview(page).cast("Q"))) == 1:
            assert sz[k] == 0, k
            continue
        want = ref.compress(page)
        if len(want) >= PAGE:
            assert sz[k] == PAGE, k
        else:
            assert bytes(out[k * PAGE : k * PAGE + sz[k]]) == want, (k, sz[k], len(want))


def test_built_with_python_zstandards_zstd() -> None:
    """The project's setup compiles zstd in, the release python-zstandard
    bundles, and the codec uses it (a module without it, or with another
    release, would leave zstd on the slower Python path)."""
    bundled = ".".join(map(str, zstandard.ZSTD_VERSION))
    assert bundled == zp.ZSTD_VERSION
    assert (ROOT / "build" / "zstd" / "VERSION").read_text().strip() == zstandard.__version__
    assert zb.ACCELERATED
    codec = zb.ZstdCodec()
    assert codec.compress_blocks is not None and codec.compress_pages_begin is not None


@pytest.mark.parametrize("level", [3, 0, 1, 4, -5, 9])
def test_frames_are_python_zstandards(level: int) -> None:
    """Realistic pages, same-filled pages and pages around the 4095-byte
    room, at an unaligned position: the frames python-zstandard makes at that
    level (0: the default, 3)."""
    rng = random.Random(level)
    pages = _word_pages() + _edge_pages(rng)[::8]
    src = b"\x77" * 5 + corpus()[: 600 * PAGE] + b"".join(pages)
    count = (len(src) - 5) // PAGE
    out, sizes = zp.zstd_compress_pages(src, 5, count, level, 1)
    _check_frames(src, 5, count, level or zb.DEFAULT_LEVEL, out, sizes)
    sz = memoryview(sizes).cast("H")
    assert 0 in sz and PAGE in sz and any(3000 < s < PAGE for s in sz)  # all three kinds met


def test_thread_counts_and_threads_agree() -> None:
    """The split over threads, and many Python threads at once at different
    levels (each OS thread keeps one context, set up for the level it last
    used), give what one thread alone gives."""
    src = corpus()[: 400 * PAGE]
    want = {lv: zp.zstd_compress_pages(src, 0, 400, lv, 1) for lv in (1, 3, 5)}
    for threads in (2, 3, 8):
        out, sizes = zp.zstd_compress_pages(src, 0, 400, 3, threads)
        assert sizes == want[3][1] and _meaningful(out, sizes) == _meaningful(*want[3])

    def one(i: int) -> None:
        lv = (1, 3, 5)[i % 3]
        out, sizes = zp.zstd_compress_pages(src, 0, 400, lv, 1 + i % 2)
        assert sizes == want[lv][1] and _meaningful(out, sizes) == _meaningful(*want[lv])

    with ThreadPoolExecutor(4) as pool:
        list(pool.map(one, range(12)))


def test_background_is_the_batch_call_and_shares_the_helper_with_lz4() -> None:
    """zstd_compress_begin: zstd_compress_pages's frames, in order, on the
    same helper and queue as lz4's batches (a third batch while two are
    posted is compressed before begin returns)."""
    src = corpus()[: 900 * PAGE]
    want = zp.zstd_compress_pages(src, 0, 900, 3, 1)
    want_lz4 = zp.lz4_compress_pages(src, 0, 100, 1, 1)
    first = zp.zstd_compress_begin(src, 0, 900, 3)
    second = zp.lz4_compress_begin(src, 0, 100, 1)  # queued behind `first`
    third = zp.zstd_compress_begin(src, PAGE, 10, 3)
    assert isinstance(first, zp.Pending) and third.wait(0) == 10  # inline: two posted
    seen = 0
    while seen < 900:
        n = first.wait(seen + 1)
        assert seen < n <= 900
        got = _meaningful(first.out[seen * PAGE : n * PAGE], bytes(first.sizes[2 * seen : 2 * n]))
        assert got == _meaningful(*want)[seen:n]
        seen = n
    assert bytes(first.sizes) == want[1]
    assert second.wait(100) == 100 and bytes(second.sizes) == want_lz4[1]
    assert first.finished_ns <= second.finished_ns
    assert bytes(third.sizes) == want[1][2:22]


def test_background_after_fork() -> None:
    """A fork()ed child's zstd batches get a helper (and contexts) of its own."""
    src = corpus()[: 200 * PAGE]
    want = zp.zstd_compress_pages(src, 0, 200, 3, 1)[1]
    assert zp.zstd_compress_begin(src, 0, 200, 3).wait(200) == 200

    def child() -> bool:
        q = zp.zstd_compress_begin(src, 0, 200, 3)
        split = zp.zstd_compress_pages(src, 0, 200, 3, 2)[1]
        return q.wait(200) == 200 and bytes(q.sizes) == want == split

    check_in_child(child, "zstd_compress_begin")


def test_bad_arguments() -> None:
    """As lz4's: raised before any work."""
    src = bytes(4 * PAGE)
    def pages(src: object, pos: int, count: int, level: int) -> object:
        return zp.zstd_compress_pages(src, pos, count, level, 1)  # type: ignore[arg-type]

    for fn in (pages, zp.zstd_compress_begin):
        with pytest.raises(ValueError):
            fn(src, 0, 5, 3)
        with pytest.raises(ValueError):
            fn(src, -1, 1, 3)
        with pytest.raises(ValueError):
            fn(src, 0, -1, 3)
        with pytest.raises(TypeError):
            fn("text", 0, 1, 3)  # type: ignore[arg-type]
        with pytest.raises(OverflowError):
            fn(src, 0, 1, 2**40)
    with pytest.raises(ValueError):
        zp.zstd_compress_pages(src, 0, 1, 3, 0)  # threads
    assert zp.zstd_compress_pages(src, PAGE, 0, 3, 2) == (bytearray(), b"")
    empty = zp.zstd_compress_begin(src, PAGE, 0, 3)
    assert empty.count == 0 and empty.wait(1) == 0


@pytest.mark.parametrize("threads", [1, 2, 3])
def test_decompress_pages_round_trip_and_bad_frames(threads: int) -> None:
    """zstd_decompress_pages: every page back (0-byte objects as zeros,
    4096-byte ones raw); a bad object, whatever the thread count, is a
    ValueError naming the lowest bad page: a truncated frame, a frame with
    bytes or a skippable frame after it, two frames making 4096 bytes
    together, a frame of another content size, and garbage."""
    src = bytes(PAGE) + corpus()[: 299 * PAGE]
    out, sizes = zp.zstd_compress_pages(src, 0, 300, 3, 1)
    sz = memoryview(sizes).cast("H")
    objs = [b"" if s == 0 else src[k * PAGE : (k + 1) * PAGE] if s == PAGE
            else bytes(out[k * PAGE : k * PAGE + s]) for k, s in enumerate(sz)]  # fmt: skip
    assert 0 in sz and PAGE in sz
    want = b"".join(bytes(PAGE) if s == 0 else src[k * PAGE : (k + 1) * PAGE]
                    for k, s in enumerate(sz))  # fmt: skip
    # (same-filled pages come back as zeros here: the device fills those itself)
    assert zp.zstd_decompress_pages(objs, threads) == want
    k = next(i for i, s in enumerate(sz) if 100 < s < PAGE and i > 200)
    ref = _reference(3)
    half = ref.compress(src[k * PAGE : k * PAGE + PAGE // 2])
    skippable = (0x184D2A50).to_bytes(4, "little") + (4).to_bytes(4, "little") + b"zram"
    bad_objs = [
        objs[k][:-1],
        objs[k] + b"\0",
        objs[k] + skippable,  # (zstd itself would skip it: one frame means one)
        half + half,
        ref.compress(src[k * PAGE : (k + 1) * PAGE - 1]),
        b"\xff" * 100,
    ]
    for bad in bad_objs:
        for j in (k, 250):
            trial = list(objs)
            trial[j] = bad
            trial[299] = b"\xfe" * 50  # a later bad one is not the one named
            with pytest.raises(ValueError, match=f"zstd: page {j}: corrupt frame"):
                zp.zstd_decompress_pages(trial, threads)


def test_codec_attributes() -> None:
    """`compress_blocks` / `compress_pages_begin` at the codec's level; none
    with a dictionary (the C calls have no dictionary)."""
    src = corpus()[: 64 * PAGE]
    codec = zb.ZstdCodec(AlgoParams(level=7))
    assert codec.compress_blocks is not None and codec.compress_pages_begin is not None
    out, sizes = codec.compress_blocks(src, 0, 64, 2)
    _check_frames(src, 0, 64, 7, out, sizes)
    p = codec.compress_pages_begin(src, 0, 64)
    assert p.wait(64) == 64 and bytes(p.blocks()[1]) == sizes
    d = zb.ZstdCodec(AlgoParams(dictionary=b"zram dictionary " * 64))
    assert d.compress_blocks is None and d.compress_pages_begin is None
    assert codec.decompress_slots is zp.zstd_read_slots and d.decompress_slots is None


@pytest.mark.parametrize("way", [0, 1])
def test_device_stores_what_the_python_path_stores(
    way: int, forced_fresh_way: Callable[[ZramDevice, int], None]
) -> None:
    """Writing realistic data in 1 MiB and 512 KiB requests through the C
    calls (all at once: way 0; ahead on the helper: way 1) leaves the same
    mm_stat, the same compressed objects and the same data as the Python
    path (the codec without the C calls)."""
    data = realistic_data(24 << 20)
    force = forced_fresh_way

    async def run(accel: bool) -> tuple[bytes, list[bytes], bytes]:
        dev = ZramDevice(0)
        await dev.store_comp_algorithm(b"zstd")
        await dev.init_device(len(data))
        comp = dev.comps[0]
        assert comp is not None
        if not accel:
            comp.compress_blocks = comp.compress_pages_begin = None  # type: ignore[attr-defined]
        off = 0
        for n in [1 << 20, 512 << 10] * 16:
            if off + n > len(data):
                break
            force(dev, way)
            await dev.write(off, memoryview(data)[off : off + n])
            off += n
        assert off > len(data) // 2
        pool, table = dev.pool, dev.table
        assert pool is not None and table is not None
        objs = [
            bytes(pool.read(table.handle[i], table.size(i))) if table.size(i) else b""
            for i in range(off // PAGE)
        ]
        back = await dev.read(0, off)
        assert back == data[:off]
        return dev.show_mm_stat(), objs, back

    a = trio.run(run, True)
    b = trio.run(run, False)
    assert a[0] == b[0]
    assert a[1] == b[1]
    assert dm._ahead_stats or not way  # the ahead way ran


def test_compiles_without_warnings_with_zstd() -> None:
    """The C source's zstd part is clean under -Wall -Wextra -Werror too."""
    cc = shutil.which("gcc") or shutil.which("cc")
    if cc is None:
        pytest.skip("no C compiler")
    res = subprocess.run(
        [cc, "-fsyntax-only", "-std=c11", "-O2", "-pthread", "-Wall", "-Wextra", "-Werror",
         "-DZRAMFS_ZSTD=1", "-I", str(ROOT / "build" / "zstd"),
         "-I", sysconfig.get_paths()["include"], str(ROOT / "zramfs" / "_zpages.c")],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert res.returncode == 0, res.stderr
