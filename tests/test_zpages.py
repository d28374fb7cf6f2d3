"""zramfs._zpages, the C page loops: the kernel's LZ4 blocks, threads, errors, buffers.

Fast-mode blocks are checked against `tests.kernel_lz4`, an independent Python
implementation of the kernel's LZ4_compress_fast parse (tests/test_fidelity.py
checks both against /dev/zram0); LZ4HC blocks against python-lz4.
"""

from __future__ import annotations

import functools
import inspect
import os
import random
import shutil
import subprocess
import sysconfig
import threading
import time
from array import array
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import lz4
import lz4.block
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from benchmarks.data import realistic_data, swap_like_data
from tests import kernel_lz4
from tests.forkutil import check_in_child
from zramfs import _zpages as zp

PAGE = 4096
Pages = Callable[[bytes | bytearray | memoryview, int, int, int, int], tuple[bytearray, bytes]]
FAST = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


# ------------------------------------------------------------------ the corpus


def _same_filled(page: bytes) -> bool:
    """The kernel's page_same_filled(), written independently: one distinct 8-byte word."""
    return len(set(memoryview(page).cast("Q"))) == 1


def _word_pages() -> list[bytes]:
    """Same-filled pages, and pages that fool a first/last-word-only check."""
    words = [b"\0" * 8, b"\xff" * 8, b"\x01\x02\x03\x04\x05\x06\x07\x08", b"zramfs!!"]
    pages = [w * (PAGE // 8) for w in words]
    for w in words:
        other = bytes(b ^ 0x5A for b in w)
        for i in (1, 2, 255, 256, PAGE // 8 - 2):  # one word in the middle differs
            p = bytearray(w * (PAGE // 8))
            p[i * 8 : i * 8 + 8] = other
            pages.append(bytes(p))
        p = bytearray(w * (PAGE // 8))  # only the first and last words match
        p[8 : PAGE - 8] = random.Random(7).randbytes(PAGE - 16)
        pages.append(bytes(p))
        p = bytearray(w * (PAGE // 8))  # one byte differs, not word aligned
        p[PAGE // 2 + 3] ^= 1
        pages.append(bytes(p))
    return pages


def _edge_pages(rng: random.Random) -> list[bytes]:
    """Random bytes with a zero tail of 0..160 bytes: blocks of about 3950..4115
    bytes, so the 4095-byte capacity is crossed (store-raw vs. compressed)."""
    return [rng.randbytes(PAGE - m) + bytes(m) for m in range(0, 161)]


def _text_page(rng: random.Random) -> bytes:
    words = ["zram", "page", "swap", "the", "compressed", "block", "of", "memory", "lz4"]
    text = " ".join(rng.choice(words) for _ in range(1200)).encode()
    return text[:PAGE]


@functools.cache
def corpus() -> bytes:
    """A few thousand varied pages, concatenated (page-aligned)."""
    rng = random.Random(2024)
    parts: list[bytes] = [realistic_data(8 << 20), swap_like_data(1 << 20, seed=5)]
    parts += _word_pages()
    parts += [rng.randbytes(PAGE) for _ in range(64)]  # incompressible: store raw
    parts += _edge_pages(rng)
    parts += [_text_page(rng) for _ in range(64)]
    for _ in range(64):  # mixed halves
        a = rng.choice([rng.randbytes(PAGE // 2), bytes(PAGE // 2), _text_page(rng)[: PAGE // 2]])
        b = rng.choice([rng.randbytes(PAGE // 2), b"\xaa" * (PAGE // 2), _text_page(rng)[:2048]])
        parts.append(a + b)
    data = b"".join(parts)
    assert len(data) % PAGE == 0
    return data


def _ref_fast(acceleration: int) -> Callable[[bytes], bytes]:
    """The kernel's fast-mode block (tests/kernel_lz4.py: ~2 ms a page)."""
    return functools.partial(kernel_lz4.compress, acceleration=acceleration)


def _ref_hc(level: int) -> Callable[[bytes], bytes]:
    return functools.partial(
        lz4.block.compress, mode="high_compression", compression=level, store_size=False
    )


def _check_identical(
    src: bytes,
    pos: int,
    count: int,
    out: bytearray,
    sizes: bytes,
    ref: Callable[[bytes], bytes],
    every: Callable[[int], bool] = lambda k: True,
) -> dict[str, int]:
    """Every page's result is what the contract says, compared with ``ref``
    for the pages ``every`` picks (the Python reference of the kernel's LZ4
    is slow); the others must decode back to the page."""
    assert isinstance(out, bytearray) and len(out) == count * PAGE
    assert isinstance(sizes, bytes) and len(sizes) == 2 * count
    sz = memoryview(sizes).cast("H")
    kinds = {"same": 0, "raw": 0, "compressed": 0}
    for k in range(count):
        page = src[pos + k * PAGE : pos + (k + 1) * PAGE]
        size = sz[k]
        assert size == int.from_bytes(sizes[2 * k : 2 * k + 2], "little")
        if _same_filled(page):
            assert size == 0, k
            kinds["same"] += 1
            continue
        if not every(k):
            if size < PAGE:
                block = bytes(out[k * PAGE : k * PAGE + size])
                assert lz4.block.decompress(block, uncompressed_size=PAGE) == page, k
                kinds["compressed"] += 1
            else:
                kinds["raw"] += 1
            continue
        expected = ref(page)
        if len(expected) >= PAGE:
            assert size == PAGE, (k, len(expected))
            kinds["raw"] += 1
        else:
            assert size == len(expected), (k, size, len(expected))
            assert out[k * PAGE : k * PAGE + size] == expected, k
            kinds["compressed"] += 1
    return kinds


def _objects(src: bytes, pos: int, count: int, out: bytearray, sizes: bytes) -> list[bytes]:
    """What a caller stores per page: b"" (same-filled), the raw page, or the block."""
    sz = memoryview(sizes).cast("H")
    objs = []
    for k in range(count):
        s = sz[k]
        if s == 0:
            objs.append(b"")
        elif s == PAGE:
            objs.append(src[pos + k * PAGE : pos + (k + 1) * PAGE])
        else:
            objs.append(bytes(out[k * PAGE : k * PAGE + s]))
    return objs


def _expected_back(src: bytes, pos: int, count: int, sizes: bytes) -> bytes:
    """What decompressing `_objects` gives: the pages, except that a same-filled
    page (stored as b"", its word kept elsewhere by the caller) comes back as zeros."""
    sz = memoryview(sizes).cast("H")
    pages = [src[pos + k * PAGE : pos + (k + 1) * PAGE] for k in range(count)]
    return b"".join(bytes(PAGE) if sz[k] == 0 else p for k, p in enumerate(pages))


# ------------------------------------------------------------- byte identity


def test_linked_lz4_is_python_lz4s_version() -> None:
    assert lz4.library_version_string() == zp.LZ4_VERSION
    assert zp.PAGE_SIZE == PAGE


def _sampled(src: bytes) -> Callable[[int], bool]:
    """Every page of the corpus's hand-made tail, every 16th of its bulk."""
    bulk = ((8 << 20) + (1 << 20)) // PAGE  # realistic_data + swap_like_data
    return lambda k: k >= bulk or k % 16 == 0


@pytest.mark.parametrize("acceleration", [1, 8, 0, -5, 65537, 1 << 20])
def test_fast_identical_to_kernel_parse(acceleration: int) -> None:
    src = corpus()
    count = len(src) // PAGE
    out, sizes = zp.lz4_compress_pages(src, 0, count, acceleration, 2)
    kinds = _check_identical(src, 0, count, out, sizes, _ref_fast(acceleration), _sampled(src))
    # (a huge acceleration skips most matches: most pages then go raw)
    many = 2000 if acceleration <= 8 else 50
    assert kinds["same"] >= 8 and kinds["raw"] >= 64 and kinds["compressed"] >= many, kinds


@pytest.mark.parametrize("level", [4, 9, 12, 0, 1, 3, 10, 13])
def test_hc_identical_to_python_lz4(level: int) -> None:
    src = corpus()
    count = len(src) // PAGE
    out, sizes = zp.lz4hc_compress_pages(src, 0, count, level, 2)
    kinds = _check_identical(src, 0, count, out, sizes, _ref_hc(level))
    assert kinds["same"] >= 8 and kinds["raw"] >= 64 and kinds["compressed"] >= 2000, kinds


def test_the_4095_byte_limit_is_crossed() -> None:
    """The edge pages really give blocks on both sides of 4095/4096 bytes, and a
    block of exactly 4095 bytes is kept while 4096 means store raw."""
    rng = random.Random(11)
    edge = _edge_pages(rng)
    lengths = {len(_ref_fast(1)(p)) for p in edge}
    assert {4094, 4095, 4096, 4097} <= lengths, sorted(lengths)
    src = b"".join(edge)
    out, sizes = zp.lz4_compress_pages(src, 0, len(edge), 1, 1)
    _check_identical(src, 0, len(edge), out, sizes, _ref_fast(1))
    assert 4095 in memoryview(sizes).cast("H")


@pytest.mark.parametrize("pos", [1, 7, 1234, PAGE - 1])
def test_unaligned_pos(pos: int) -> None:
    src = realistic_data(1 << 20) + b"\0" * PAGE
    count = (len(src) - pos) // PAGE
    for fn, ref in ((zp.lz4_compress_pages, _ref_fast(1)), (zp.lz4hc_compress_pages, _ref_hc(9))):
        out, sizes = fn(src, pos, count, 1 if fn is zp.lz4_compress_pages else 9, 2)
        _check_identical(src, pos, count, out, sizes, ref, lambda k: k % 8 == 0)


def test_same_filled_unaligned_and_in_the_middle() -> None:
    """A same-filled page at an odd offset, between other pages, is size 0."""
    rng = random.Random(3)
    src = rng.randbytes(5) + rng.randbytes(PAGE) + b"\x07" * PAGE + rng.randbytes(PAGE)
    out, sizes = zp.lz4_compress_pages(src, 5, 3, 1, 3)
    assert list(memoryview(sizes).cast("H")) == [PAGE, 0, PAGE]


# Inputs made of random runs and repeated short patterns (what LZ4 matches on).
_CHUNKS = st.lists(
    st.one_of(
        st.binary(min_size=1, max_size=600),
        st.tuples(st.binary(min_size=1, max_size=8), st.integers(1, 600)).map(
            lambda t: t[0] * t[1]
        ),
    ),
    min_size=1,
    max_size=40,
)


@given(_CHUNKS)
@FAST
def test_fast_identical_on_generated_pages(chunks: list[bytes]) -> None:
    page = b"".join(chunks)[:PAGE].ljust(PAGE, b"\0")
    src = page * 2 + page[::-1]
    for a in (1, 3):
        out, sizes = zp.lz4_compress_pages(src, 0, 3, a, 2)
        _check_identical(src, 0, 3, out, sizes, _ref_fast(a))
    out, sizes = zp.lz4hc_compress_pages(src, 0, 3, 9, 2)
    _check_identical(src, 0, 3, out, sizes, _ref_hc(9))
    objs = _objects(src, 0, 3, out, sizes)
    assert zp.lz4_decompress_pages(objs, 2) == _expected_back(src, 0, 3, sizes)


# ----------------------------------------------------------------- threads


def _meaningful(out: bytearray, sizes: bytes) -> list[bytes]:
    """The defined part of each out slot (size 0 and 4096 slots are unspecified)."""
    sz = memoryview(sizes).cast("H")
    return [bytes(out[k * PAGE : k * PAGE + s]) if s < PAGE else b"" for k, s in enumerate(sz)]


@pytest.mark.parametrize("fn,param", [(zp.lz4_compress_pages, 1), (zp.lz4hc_compress_pages, 4)])
def test_thread_counts_agree(fn: Pages, param: int) -> None:
    src = corpus()
    count = 1000
    pos = 3 * PAGE + 17
    out1, sizes1 = fn(src, pos, count, param, 1)
    want = _meaningful(out1, sizes1)
    for threads in (2, 3, 8, 100):
        out, sizes = fn(src, pos, count, param, threads)
        assert sizes == sizes1, threads
        assert _meaningful(out, sizes) == want, threads
    for count in (1, 2, 3, 7):  # fewer pages than threads
        o1, s1 = fn(src, pos, count, param, 1)
        o8, s8 = fn(src, pos, count, param, 8)
        assert s1 == s8 and _meaningful(o1, s1) == _meaningful(o8, s8)


def test_concurrent_callers_are_independent() -> None:
    """No shared state: many Python threads at once get what one alone gets."""
    src = corpus()[: 512 * PAGE]
    want = zp.lz4_compress_pages(src, 0, 512, 1, 1)
    want_hc = zp.lz4hc_compress_pages(src, 0, 512, 9, 1)
    objs = _objects(src, 0, 512, *want)
    back = _expected_back(src, 0, 512, want[1])

    def one(i: int) -> None:
        out, sizes = zp.lz4_compress_pages(src, 0, 512, 1, 1 + i % 3)
        assert sizes == want[1] and _meaningful(out, sizes) == _meaningful(*want)
        out, sizes = zp.lz4hc_compress_pages(src, 0, 512, 9, 1 + i % 2)
        assert sizes == want_hc[1] and _meaningful(out, sizes) == _meaningful(*want_hc)
        assert zp.lz4_decompress_pages(objs, 1 + i % 3) == back

    with ThreadPoolExecutor(6) as pool:
        list(pool.map(one, range(12)))


@pytest.mark.parametrize(
    "call",
    [
        lambda src: zp.lz4hc_compress_pages(src, 0, 256, 12, 1),
        lambda src: zp.zstd_compress_pages(src, 0, 128, 19, 1),
    ],
    ids=["lz4hc", "zstd"],
)
def test_batch_call_releases_the_gil(call: Callable[[bytes], object]) -> None:
    """Another Python thread runs while one batch call works (no speed measured:
    a held GIL would let it run not at all during the call)."""
    src = corpus()[: 256 * PAGE]
    in_call = threading.Event()
    stop = threading.Event()
    ticks = [0]

    def spin() -> None:
        while not stop.is_set():
            if in_call.is_set():
                ticks[0] += 1

    t = threading.Thread(target=spin)
    t.start()
    try:
        progressed = False
        for _ in range(5):
            before = ticks[0]
            in_call.set()
            call(src)
            in_call.clear()
            if ticks[0] - before > 100:
                progressed = True
                break
    finally:
        stop.set()
        t.join()
    assert progressed


# ------------------------------------------- compression in the background


def test_background_compression_is_the_batch_calls() -> None:
    """lz4_compress_begin: the same sizes and blocks as lz4_compress_pages,
    at any position and length, the acceleration passed through."""
    src = corpus()
    for pos, count, accel in ((0, 1000, 1), (3 * PAGE + 17, 333, 1), (PAGE, 5, 8), (7, 1, 1)):
        want_out, want_sizes = zp.lz4_compress_pages(src, pos, count, accel, 1)
        p = zp.lz4_compress_begin(src, pos, count, accel)
        assert isinstance(p, zp.Pending) and p.count == count
        assert p.wait(count) == count
        assert bytes(p.sizes) == want_sizes
        assert _meaningful(p.out, bytes(p.sizes)) == _meaningful(want_out, want_sizes)


def test_background_progress_is_in_order_and_final() -> None:
    """wait(want) returns at least min(want, count) pages; what it reported
    done never changes afterwards."""
    src = corpus()
    count = 700
    want_out, want_sizes = zp.lz4_compress_pages(src, 0, count, 1, 1)
    want = _meaningful(want_out, want_sizes)
    t_begin = time.perf_counter_ns()
    p = zp.lz4_compress_begin(src, 0, count, 1)
    assert p.finished_ns == 0 or p.wait(0) == count  # 0 until the last page is done
    seen = [0]
    while seen[-1] < count:
        n = p.wait(seen[-1] + 1)
        assert seen[-1] < n <= count
        k0 = seen[-1]
        got = _meaningful(p.out[k0 * PAGE : n * PAGE], bytes(p.sizes[2 * k0 : 2 * n]))
        assert got == want[k0:n]
        seen.append(n)
    assert p.wait(10**9) == count
    assert p.wait(0) == count and p.wait(-5) == count
    assert bytes(p.sizes) == want_sizes
    # finished_ns: CLOCK_MONOTONIC, as time.perf_counter_ns() reads it on Linux.
    assert t_begin < p.finished_ns <= time.perf_counter_ns()


def test_background_queue_busy_helper_and_dropped_jobs() -> None:
    """The helper queues a second batch and serves both in order; a third
    while two are posted is done before begin returns; a batch dropped
    unwaited is waited for by its deallocation (src stays valid to the end),
    and the helper serves the next one."""
    src = bytearray(corpus()[: 2000 * PAGE])
    want = zp.lz4_compress_pages(src, 0, 2000, 1, 1)
    first = zp.lz4_compress_begin(src, 0, 2000, 1)
    second = zp.lz4_compress_begin(src, PAGE, 10, 1)  # queued behind `first`
    third = zp.lz4_compress_begin(src, 2 * PAGE, 10, 1)
    assert third.wait(0) == 10  # compressed inline: two were posted
    assert second.wait(0) == 0  # (the helper is still on `first`'s 2000 pages)
    assert second.wait(10) == 10 and bytes(second.sizes) == want[1][2:22]
    assert bytes(third.sizes) == want[1][4:24]
    assert first.wait(0) == 2000 and first.finished_ns <= second.finished_ns  # in order
    del first  # (done already)
    fourth = zp.lz4_compress_begin(src, 0, 2000, 1)
    del fourth  # dropped unwaited: its deallocation waits for the helper
    fifth = zp.lz4_compress_begin(src, 0, 2000, 1)
    with pytest.raises(BufferError):
        src.extend(b"x")  # src is held while a job lives
    assert fifth.wait(2000) == 2000 and bytes(fifth.sizes) == want[1]
    with pytest.raises(BufferError):
        src.extend(b"x")  # ...even when it is done, until it is dropped
    del second, third, fifth
    src.extend(b"x")


def test_background_after_fork() -> None:
    """A fork()ed child has no helper thread: it starts its own."""
    src = corpus()[: 300 * PAGE]
    want = zp.lz4_compress_pages(src, 0, 300, 1, 1)[1]
    assert zp.lz4_compress_begin(src, 0, 300, 1).wait(300) == 300  # the helper runs

    inherited = zp.lz4_compress_begin(src, 0, 300, 1)

    def child() -> bool:
        q = zp.lz4_compress_begin(src, 0, 300, 1)
        try:
            inherited.wait(300)  # the parent's batch: no helper here to finish it
            return False
        except RuntimeError:
            pass
        return q.wait(300) == 300 and bytes(q.sizes) == want

    check_in_child(child, "lz4_compress_begin")
    assert inherited.wait(300) == 300


def test_background_bad_arguments() -> None:
    src = bytes(4 * PAGE)
    with pytest.raises(ValueError):
        zp.lz4_compress_begin(src, 0, 5, 1)
    with pytest.raises(ValueError):
        zp.lz4_compress_begin(src, -1, 1, 1)
    with pytest.raises(ValueError):
        zp.lz4_compress_begin(src, 0, -1, 1)
    with pytest.raises(TypeError):
        zp.lz4_compress_begin(src, 0, 1)  # type: ignore[call-arg]
    with pytest.raises(TypeError):
        zp.lz4_compress_begin("text", 0, 1, 1)  # type: ignore[arg-type]
    with pytest.raises(OverflowError):
        zp.lz4_compress_begin(src, 0, 1, 2**40)
    empty = zp.lz4_compress_begin(src, PAGE, 0, 1)
    assert empty.count == 0 and empty.wait(1) == 0 and empty.out == bytearray()


# ------------------------------------------------------------- round trips


@pytest.mark.parametrize("threads", [1, 2, 3])
def test_round_trip(threads: int) -> None:
    src = corpus()
    count = len(src) // PAGE
    out, sizes = zp.lz4_compress_pages(src, 0, count, 1, threads)
    objs = _objects(src, 0, count, out, sizes)
    expect = _expected_back(src, 0, count, sizes)
    assert expect.count(bytes(PAGE)) >= 1  # the zero pages are among them
    back = zp.lz4_decompress_pages(objs, threads)
    assert type(back) is bytes and back == expect
    # the non-zero same-filled pages are the only ones that differ
    pages = [src[k * PAGE : (k + 1) * PAGE] for k in range(count)]
    differ = [k for k in range(count) if back[k * PAGE : (k + 1) * PAGE] != pages[k]]
    assert differ == [k for k, p in enumerate(pages) if _same_filled(p) and p != bytes(PAGE)]
    assert differ  # the corpus has some
    hc_out, hc_sizes = zp.lz4hc_compress_pages(src, 0, count, 9, threads)
    assert zp.lz4_decompress_pages(_objects(src, 0, count, hc_out, hc_sizes), threads) == expect


def test_round_trip_buffer_kinds() -> None:
    """bytes, bytearray and memoryview slices as src and as objs."""
    data = realistic_data(1 << 20)[: 64 * PAGE]
    backing = bytearray(b"?" * 100 + data + b"!" * 100)
    sources: list[bytes | bytearray | memoryview] = [
        data,
        bytearray(data),
        memoryview(backing)[100:-100],
        memoryview(data).toreadonly(),
    ]
    want = zp.lz4_compress_pages(data, 0, 64, 1, 1)
    for src in sources:
        out, sizes = zp.lz4_compress_pages(src, 0, 64, 1, 2)
        assert sizes == want[1] and _meaningful(out, sizes) == _meaningful(*want)
    out, sizes = want
    sz = memoryview(sizes).cast("H")
    mv = memoryview(out)
    objs_mv: list[memoryview] = []
    objs_ba: list[bytearray] = []
    for k in range(64):
        s = sz[k]
        page_view = memoryview(data)[k * PAGE : (k + 1) * PAGE]
        objs_mv.append(page_view if s == PAGE else mv[k * PAGE : k * PAGE + s])
        objs_ba.append(bytearray(objs_mv[-1]))
    assert zp.lz4_decompress_pages(objs_mv, 2) == data
    assert zp.lz4_decompress_pages(tuple(objs_ba), 1) == data
    mixed: list[bytes | bytearray | memoryview] = [
        bytes(o) if k % 3 == 0 else o for k, o in enumerate(objs_mv)
    ]
    assert zp.lz4_decompress_pages(mixed, 3) == data
    del objs_mv, mixed, mv
    out.extend(b"x")  # every export of `out` was released


def test_count_zero() -> None:
    for fn in (zp.lz4_compress_pages, zp.lz4hc_compress_pages):
        assert fn(b"", 0, 0, 1, 1) == (bytearray(), b"")
        assert fn(b"abc", 3, 0, 1, 4) == (bytearray(), b"")
    assert zp.lz4_decompress_pages([], 1) == b""
    assert zp.lz4_decompress_pages((), 8) == b""


def test_empty_and_raw_objects() -> None:
    raw = random.Random(1).randbytes(PAGE)
    assert zp.lz4_decompress_pages([b"", raw, bytearray()], 2) == bytes(PAGE) + raw + bytes(PAGE)


# ------------------------------------------------------------------ errors


@pytest.mark.parametrize("fn", [zp.lz4_compress_pages, zp.lz4hc_compress_pages])
def test_bad_arguments(fn: Pages) -> None:
    src = bytearray(realistic_data(1 << 20)[: 4 * PAGE])
    before = bytes(src)
    bad = [
        (-1, 1, 1),
        (0, -1, 1),
        (1, 4, 1),  # one byte beyond
        (0, 5, 1),
        (4 * PAGE + 1, 0, 1),
        (0, 1 << 60, 1),
        (1 << 70, 1, 1),
        (0, 1, 0),
        (0, 1, -3),
        (0, 0, 0),
    ]
    for pos, count, threads in bad:
        with pytest.raises(ValueError):
            fn(src, pos, count, 1, threads)
    assert src == before
    src.extend(b"x")  # the buffer was released on every error path
    with pytest.raises(OverflowError):
        fn(src, 0, 1, 1 << 31, 1)
    with pytest.raises(OverflowError):
        fn(src, 0, 1, 1, 1 << 40)
    with pytest.raises(TypeError):
        fn(src, 0.0, 1, 1, 1)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        fn(src, 0, 1, 1)  # type: ignore[call-arg]
    with pytest.raises(TypeError):
        fn("text", 0, 0, 1, 1)  # type: ignore[arg-type]
    with pytest.raises(BufferError):
        fn(memoryview(bytes(2 * PAGE))[::2], 0, 1, 1, 1)
    with pytest.raises(TypeError):
        fn(src, pos=0, count=1, acceleration=1, threads=1)  # type: ignore[call-arg]
    # a full page right at the end is fine
    out, sizes = fn(src, 1, 4, 1, 1)
    assert len(out) == 4 * PAGE and len(sizes) == 8


def _blocks() -> tuple[list[bytes], bytes]:
    data = realistic_data(1 << 20)[: 16 * PAGE]
    out, sizes = zp.lz4_compress_pages(data, 0, 16, 1, 1)
    return _objects(data, 0, 16, out, sizes), data


def _python_lz4_page(block: bytes) -> bytes | None:
    """python-lz4's verdict on a block: its 4096 bytes, or None."""
    try:
        out: bytes = lz4.block.decompress(block, uncompressed_size=PAGE)
    except lz4.block.LZ4BlockError:
        return None
    return out if len(out) == PAGE else None


def _corruptions(block: bytes) -> list[bytes]:
    """The block with one byte changed, at positions spread over it."""
    rng = random.Random(len(block))
    out = []
    for i in range(0, len(block), max(1, len(block) // 150)):
        c = bytearray(block)
        c[i] ^= rng.randrange(1, 256)
        out.append(bytes(c))
    return out


def test_corruptions_judged_like_python_lz4() -> None:
    """One changed byte: an error exactly when python-lz4 cannot give 4096 bytes."""
    objs, _ = _blocks()
    errors = 0
    for good in (o for o in objs if 0 < len(o) < PAGE):
        for c in _corruptions(good):
            want = _python_lz4_page(c)
            if want is None:
                errors += 1
                with pytest.raises(ValueError, match=r"^lz4: page 1: corrupt block"):
                    zp.lz4_decompress_pages([b"", c], 2)
                with pytest.raises(ValueError, match=r"corrupt block"):
                    zp.lz4_decompress_page(c)
            else:
                assert zp.lz4_decompress_pages([b"", c], 2) == bytes(PAGE) + want
                assert zp.lz4_decompress_page(c) == want
    assert errors > 100


def _bad_blocks() -> dict[str, bytes]:
    objs, _ = _blocks()
    good = next(o for o in objs if 100 < len(o) < PAGE)
    short = lz4.block.compress(b"zram " * 400, mode="fast", store_size=False)
    corrupted = next(c for c in _corruptions(good) if _python_lz4_page(c) is None)
    return {
        "truncated": good[:-1],
        "short": short,  # a valid block of 2000 bytes, not 4096
        "garbage": b"\xf0" + b"\xff" * 30,
        "corrupted": bytes(corrupted),
        "one byte": b"\x00",
        "long": good + b"\0",
        "4097": random.Random(2).randbytes(PAGE + 1),
    }


@pytest.mark.parametrize("name", sorted(_bad_blocks()))
@pytest.mark.parametrize("threads", [1, 2, 3])
def test_corrupt_block_names_the_page(name: str, threads: int) -> None:
    bad = _bad_blocks()[name]
    objs, _ = _blocks()
    for where in (0, 5, 15):
        batch: list[bytes | bytearray] = list(objs)
        batch[where] = bytearray(bad)
        with pytest.raises(ValueError, match=rf"^lz4: page {where}: corrupt block"):
            zp.lz4_decompress_pages(batch, threads)
        for b in batch:  # every buffer was released: bytearrays can be resized
            if isinstance(b, bytearray):
                b.extend(b"x")
    batch = list(objs)
    batch[12] = bad
    batch[7] = bad
    with pytest.raises(ValueError, match=r"^lz4: page 7: corrupt block"):
        zp.lz4_decompress_pages(batch, threads)
    with pytest.raises(ValueError, match=r"corrupt block"):
        zp.lz4_decompress_page(bad)


def test_decompress_pages_bad_arguments() -> None:
    objs, data = _blocks()
    held = [bytearray(o) for o in objs]
    with pytest.raises(TypeError, match=r"objs\[3\]"):
        zp.lz4_decompress_pages([*held[:3], 42, *held[4:]], 1)  # type: ignore[list-item]
    with pytest.raises(TypeError):
        zp.lz4_decompress_pages([*held[:3], "text"], 2)  # type: ignore[list-item]
    with pytest.raises(TypeError):
        zp.lz4_decompress_pages(5, 1)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        zp.lz4_decompress_pages(held, 0)
    with pytest.raises(OverflowError):
        zp.lz4_decompress_pages(held, 1 << 40)
    with pytest.raises(BufferError):
        zp.lz4_decompress_pages([memoryview(bytes(20))[::2]], 1)
    for b in held:  # released after the TypeError / BufferError paths
        b.extend(b"x")
        del b[-1]
    assert zp.lz4_decompress_pages(held, 2) == data


# ------------------------------------------------------------ single pages


def test_decompress_page() -> None:
    objs, data = _blocks()
    for k, o in enumerate(objs):
        if 0 < len(o) < PAGE:
            page = data[k * PAGE : (k + 1) * PAGE]
            assert zp.lz4_decompress_page(o) == page
            assert zp.lz4_decompress_page(memoryview(bytearray(o))) == page
    with pytest.raises(ValueError, match=r"corrupt block"):
        zp.lz4_decompress_page(b"")
    with pytest.raises(TypeError):
        zp.lz4_decompress_page(3)  # type: ignore[arg-type]


def test_decompress_page_4096_bytes_is_a_block() -> None:
    """A 4096-byte object is a block for lz4_decompress_page, a raw page for
    lz4_decompress_pages: find a page whose block is exactly 4096 bytes long."""
    rng = random.Random(9)
    for m in range(0, 200):
        page = rng.randbytes(PAGE - m) + bytes(m)
        block = _ref_fast(1)(page)
        if len(block) == PAGE:
            break
    else:
        pytest.fail("no page with a 4096-byte block")
    assert zp.lz4_decompress_page(block) == page
    assert zp.lz4_decompress_pages([block], 1) == block
    with pytest.raises(ValueError, match=r"corrupt block"):
        zp.lz4_decompress_page(page[: PAGE - m] + b"\xff" * m)


def test_compress_page_identical_to_kernel_parse() -> None:
    src = corpus()
    rng = random.Random(4)
    picks = rng.sample(range(len(src) // PAGE), 100)
    for a in (1, 8, 0, 65537):
        ref = _ref_fast(a)
        for k in picks:
            page = src[k * PAGE : (k + 1) * PAGE]
            got = zp.lz4_compress_page(page, a)
            assert type(got) is bytes and got == ref(page), (a, k)
    mv = memoryview(src)[17 : 17 + PAGE]
    assert zp.lz4_compress_page(mv, 1) == _ref_fast(1)(bytes(mv))
    assert zp.lz4_compress_page(bytearray(mv), 1) == _ref_fast(1)(bytes(mv))
    for n in (0, 1, 5, 12, 13, 14, 100, 65535):  # any length the 16-bit table covers
        blob = src[:n]
        assert zp.lz4_compress_page(blob, 1) == _ref_fast(1)(blob), n
    python_lz4 = functools.partial(lz4.block.compress, store_size=False)
    for n in (65536, 1 << 20):  # longer: liblz4 on a fresh stream, as python-lz4
        blob = src[:n]
        assert zp.lz4_compress_page(blob, 1) == python_lz4(blob), n
    big = rng.randbytes(1 << 20)  # incompressible: longer than the input
    got = zp.lz4_compress_page(big, 1)
    assert len(got) > len(big) and got == python_lz4(big)
    tiny = rng.randbytes(PAGE)  # incompressible page: the kernel's block is longer
    got = zp.lz4_compress_page(tiny, 1)
    assert len(got) > PAGE and got == _ref_fast(1)(tiny)
    assert lz4.block.decompress(got, uncompressed_size=PAGE) == tiny
    with pytest.raises(OverflowError):
        zp.lz4_compress_page(b"x", 1 << 31)
    # acceleration left out: 1 (the codec binds the function itself).
    page = src[:PAGE]
    assert zp.lz4_compress_page(page) == _ref_fast(1)(page)
    with pytest.raises(TypeError):
        zp.lz4_compress_page()  # type: ignore[call-arg]
    with pytest.raises(TypeError):
        zp.lz4_compress_page(b"x", 1, 2)  # type: ignore[call-arg]


def test_acceleration_wraps_as_in_the_kernel_but_never_corrupts() -> None:
    """The kernel's search counter is ``acceleration << 6`` in 32 bits: 2**26 + 1
    wraps to 64, i.e. parses as acceleration 1 (as the kernel's zram does);
    multiples of 2**26 wrap to 0, where the kernel writes offset-0 matches (its
    zram0 reads such a page back wrong): we compress at 65537 instead."""
    src = realistic_data(1 << 20)
    pages = [src[k * PAGE : (k + 1) * PAGE] for k in range(0, 256, 9)]
    for page in pages:
        assert zp.lz4_compress_page(page, (1 << 26) + 1) == zp.lz4_compress_page(page, 1)
        for a in (1 << 26, 1 << 30, 3 << 26):
            block = zp.lz4_compress_page(page, a)
            assert block == zp.lz4_compress_page(page, 65537) == _ref_fast(a)(page)
            assert lz4.block.decompress(block, uncompressed_size=PAGE) == page
    data = b"".join(pages)
    out, sizes = zp.lz4_compress_pages(data, 0, len(pages), 1 << 26, 2)
    for k, page in enumerate(pages):
        n = memoryview(sizes).cast("H")[k]
        assert (
            n == PAGE
            or lz4.block.decompress(out[k * PAGE : k * PAGE + n], uncompressed_size=PAGE) == page
        )


_ACCELERATIONS = st.sampled_from(
    [1, 1, 2, 7, 0, -3, 65537, 1 << 20, 1 << 26, (1 << 26) + 1, 1 << 30]
)


@given(_CHUNKS, st.integers(0, 6000), _ACCELERATIONS)
@FAST
def test_any_input_matches_the_reference_and_decodes(
    chunks: list[bytes], length: int, acceleration: int
) -> None:
    """Any length up to the 16-bit table's, any acceleration: the reference's
    block, and LZ4 reads it back."""
    data = (b"".join(chunks) * (1 + length // max(1, len(b"".join(chunks)))))[:length]
    block = zp.lz4_compress_page(data, acceleration)
    assert block == _ref_fast(acceleration)(data)
    if data:
        assert lz4.block.decompress(block, uncompressed_size=len(data)) == data


def test_compress_page_decompress_page_round_trip() -> None:
    src = realistic_data(1 << 20)
    for k in range(0, 256, 5):
        page = src[k * PAGE : (k + 1) * PAGE]
        block = zp.lz4_compress_page(page, 1)
        assert zp.lz4_decompress_page(block) == page
        assert lz4.block.decompress(block, uncompressed_size=PAGE) == page


# ------------------------------------------------------------------- build


def test_compiles_without_warnings() -> None:
    """The C source is clean under -Wall -Wextra -Werror (syntax and types only)."""
    cc = shutil.which("gcc") or shutil.which("cc")
    if cc is None:
        pytest.skip("no C compiler")
    source = Path(__file__).resolve().parent.parent / "zramfs" / "_zpages.c"
    res = subprocess.run(
        [cc, "-fsyntax-only", "-std=c11", "-O2", "-pthread", "-Wall", "-Wextra", "-Werror",
         "-I", sysconfig.get_paths()["include"], str(source)],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert res.returncode == 0, res.stderr


def test_module_docstrings() -> None:
    assert zp.__doc__ and "GIL" in zp.__doc__
    for name in (
        "lz4_compress_pages",
        "lz4hc_compress_pages",
        "lz4_decompress_pages",
        "lz4_decompress_page",
        "lz4_compress_page",
        "zstd_compress_pages",
    ):
        fn = getattr(zp, name)
        assert fn.__doc__ and "GIL" in fn.__doc__, name
        params = inspect.signature(fn).parameters.values()
        assert params and all(p.kind is p.POSITIONAL_ONLY for p in params), name


# ------------------------------------------------------------------ gather


def _pool_like(src: bytes, count: int) -> tuple[list[memoryview], list[int], list[int], list[int]]:
    """Compressed pages laid out in two "segments" the way a pool holds them."""
    out, sizes_b = zp.lz4_compress_pages(src, 0, count, 1, 1)
    sizes = list(memoryview(sizes_b).cast("H"))
    segs_b = [bytearray(), bytearray()]
    segs, offs = [], []
    for k, n in enumerate(sizes):
        s = k % 2
        segs.append(s)
        offs.append(len(segs_b[s]) + 3)  # objects not at 0, with gaps
        blob = src[k * PAGE : (k + 1) * PAGE] if n == PAGE else out[k * PAGE : k * PAGE + n]
        segs_b[s] += b"\x5a" * 3 + blob
    return [memoryview(b) for b in segs_b], segs, offs, sizes


@pytest.mark.parametrize("threads", [1, 2, 3])
def test_gather_round_trip_with_fills(threads: int) -> None:
    src = realistic_data(1 << 20)[: 200 * PAGE]
    src = src[:PAGE] + random.Random(3).randbytes(PAGE) + src[2 * PAGE :]  # incompressible
    views, segs, offs, sizes = _pool_like(src, 200)
    assert PAGE in sizes and 0 not in sizes
    # Empty slots (size 0, their place never looked at) and same-filled ones.
    sizes[5] = 0
    segs[5] = offs[5] = 10**9
    sizes[7] = 0
    segs[7] = 0xDEADBEEF  # a same-filled slot's "handle" is its word
    fills = [(7, 0x0102030405060708)]
    got = zp.lz4_decompress_gather(views, segs, offs, sizes, fills, threads)
    want = bytearray(src)
    want[5 * PAGE : 6 * PAGE] = bytes(PAGE)
    want[7 * PAGE : 8 * PAGE] = (0x0102030405060708).to_bytes(8, "little") * (PAGE // 8)
    assert type(got) is bytes and got == want


def test_gather_errors_name_the_place() -> None:
    src = realistic_data(1 << 20)[: 16 * PAGE]
    views, segs, offs, sizes = _pool_like(src, 16)
    ok: tuple[object, ...] = (views, segs, offs, sizes, [], 1)
    assert zp.lz4_decompress_gather(views, segs, offs, sizes, [], 1) == src

    def call(**kw: object) -> bytes:
        args = dict(zip(("views", "segs", "offs", "sizes", "fills", "threads"), ok, strict=True))
        args.update(kw)
        return zp.lz4_decompress_gather(*args.values())  # type: ignore[arg-type]

    with pytest.raises(ValueError, match="one length"):
        call(offs=offs[:-1])
    with pytest.raises(ValueError, match=r"segs\[2\] = 9: no such view"):
        call(segs=segs[:2] + [9] + segs[3:])
    with pytest.raises(ValueError, match="outside view"):
        call(offs=offs[:4] + [len(views[0]) - 1] + offs[5:])
    with pytest.raises(ValueError, match="outside view"):
        call(offs=offs[:4] + [-1] + offs[5:])
    with pytest.raises(ValueError, match=r"sizes\[1\] = 4097"):
        call(sizes=sizes[:1] + [PAGE + 1] + sizes[2:])
    with pytest.raises(ValueError, match="not an empty page"):
        call(fills=[(3, 0)])  # page 3 holds an object
    with pytest.raises(ValueError, match="not an empty page"):
        call(fills=[(16, 0)])
    with pytest.raises(TypeError, match="must be an int"):
        call(sizes=sizes[:1] + ["x"] + sizes[2:])
    with pytest.raises(TypeError, match=r"\(index, word\)"):
        call(sizes=[0] + sizes[1:], fills=[[0, 1]])
    with pytest.raises(TypeError):
        call(views=[views[0], 3])  # a view that is not a buffer, used by page 1
    with pytest.raises(ValueError, match="threads"):
        call(threads=0)
    bad = bytearray(views[0])
    k = next(i for i in range(0, 16, 2) if 0 < sizes[i] < PAGE)
    bad[offs[k] : offs[k] + sizes[k]] = b"\xff" * sizes[k]
    with pytest.raises(ValueError, match=rf"page {k}: corrupt block"):
        call(views=[bad, views[1]])
    # Every view acquired was released, on the error paths too.
    bad += b"x"
    assert zp.lz4_decompress_gather([], [], [], [], [], 1) == b""


# ------------------------------------------------------------------ read_slots

# A layout like the device's: size in bits 0..12, SAME bit 13, slow bits
# 14..15, keep clears the ac_time bits 40..63; handles (seg << 23 | off << 1 | 1).
_SIZE, _SAME, _SLOW = (1 << 13) - 1, 1 << 13, 3 << 14
_KEEP = (1 << 40) - 1
_LAYOUT = (_SLOW, _SIZE, _SAME, _KEEP, 23, (1 << 22) - 1)


def _slot_table(
    views: list[memoryview], segs: list[int], offs: list[int], sizes: list[int]
) -> tuple[array[int], array[int]]:
    attr = array("Q", [n | (7 << 40) | (1 << 20) for n in sizes])  # old ac_time 7, a kept bit
    handle = array("Q", [(s << 23) | (o << 1) | 1 for s, o in zip(segs, offs, strict=True)])
    return attr, handle


@pytest.mark.parametrize("threads", [1, 2, 3])
def test_read_slots_equals_gather_and_stamps_held_slots(threads: int) -> None:
    src = realistic_data(1 << 20)[: 200 * PAGE]
    src = src[:PAGE] + random.Random(3).randbytes(PAGE) + src[2 * PAGE :]
    views, segs, offs, sizes = _pool_like(src, 200)
    attr, handle = _slot_table(views, segs, offs, sizes)
    attr[5] = 0  # an empty slot: zeros, not stamped
    handle[5] = 10**12
    word = 0x0102030405060708
    attr[7], handle[7] = _SAME | (1 << 20), word  # same-filled: its word repeated
    gsizes = [0 if k in (5, 7) else n for k, n in enumerate(sizes)]
    want = zp.lz4_decompress_gather(views, segs, offs, gsizes, [(7, word)], 1)
    before = attr.tolist()
    now = 99 << 40
    got = zp.lz4_read_slots(views, attr, handle, 0, 200, _LAYOUT, now, threads)
    assert type(got) is bytes and got == want
    assert got[7 * PAGE : 8 * PAGE] == word.to_bytes(8, "little") * (PAGE // 8)
    for k, (a, b) in enumerate(zip(before, attr, strict=True)):
        assert b == (a if k == 5 else (a & _KEEP) | now), k
    # A window of the table, offsets inside it.
    part = zp.lz4_read_slots(views, attr, handle, 3, 9, _LAYOUT, now, threads)
    assert part == want[3 * PAGE : 9 * PAGE]
    assert zp.lz4_read_slots(views, attr, handle, 4, 4, _LAYOUT, now, threads) == b""


def test_read_slots_slow_slot_is_none_and_changes_nothing() -> None:
    src = realistic_data(1 << 20)[: 16 * PAGE]
    views, segs, offs, sizes = _pool_like(src, 16)
    attr, handle = _slot_table(views, segs, offs, sizes)
    attr[9] |= 1 << 15
    before = attr.tolist()
    assert zp.lz4_read_slots(views, attr, handle, 0, 16, _LAYOUT, 5 << 40, 1) is None
    assert attr.tolist() == before
    # Outside the slow slot's range it reads.
    assert zp.lz4_read_slots(views, attr, handle, 0, 9, _LAYOUT, 5 << 40, 1) == src[: 9 * PAGE]


def test_read_slots_errors_change_nothing() -> None:
    src = realistic_data(1 << 20)[: 16 * PAGE]
    views, segs, offs, sizes = _pool_like(src, 16)
    attr, handle = _slot_table(views, segs, offs, sizes)
    before = attr.tolist()

    def call(
        attr: object = attr, handle: object = handle, first: int = 0, stop: int = 16, **kw: object
    ) -> bytes | None:
        views_ = kw.get("views", views)
        layout = kw.get("layout", _LAYOUT)
        threads = kw.get("threads", 1)
        return zp.lz4_read_slots(views_, attr, handle, first, stop, layout, 1 << 40, threads)  # type: ignore[arg-type]

    def with_handle(k: int, h: int) -> array[int]:
        hs = array("Q", handle)
        hs[k] = h
        return hs

    def with_attr(k: int, a: int) -> array[int]:
        at = array("Q", attr)
        at[k] = a
        return at

    with pytest.raises(ValueError, match="outside the table"):
        call(stop=17)
    with pytest.raises(ValueError, match="outside the table"):
        call(first=3, stop=2)
    with pytest.raises(ValueError, match="outside the table"):
        call(first=-1)
    with pytest.raises(ValueError, match="outside the table"):
        call(handle=array("Q", handle[:8]))
    with pytest.raises(ValueError, match="whole uint64 words"):
        call(attr=bytearray(attr.tobytes() + b"x"))
    with pytest.raises(BufferError, match="not writable"):
        call(attr=attr.tobytes())
    with pytest.raises(ValueError, match="slot 2: view 9: no such view"):
        call(handle=with_handle(2, (9 << 23) | 1))
    with pytest.raises(ValueError, match="slot 4: .* outside view"):
        call(handle=with_handle(4, (segs[4] << 23) | ((len(views[segs[4]]) - 1) << 1) | 1))
    with pytest.raises(ValueError, match="slot 1: size 4097"):
        call(attr=with_attr(1, PAGE + 1))
    with pytest.raises(TypeError, match="layout"):
        call(layout=_LAYOUT[:5])
    with pytest.raises(ValueError, match="seg_shift"):
        call(layout=(*_LAYOUT[:4], 64, _LAYOUT[5]))
    with pytest.raises(ValueError, match="threads"):
        call(threads=0)
    with pytest.raises(TypeError):
        call(views=[views[0], 3])
    bad = bytearray(views[0])
    k = next(i for i in range(0, 16, 2) if 0 < sizes[i] < PAGE)
    bad[offs[k] : offs[k] + sizes[k]] = b"\xff" * sizes[k]
    with pytest.raises(ValueError, match=rf"page {k}: corrupt block"):
        call(views=[bad, views[1]], threads=2)
    # Nothing stamped by a failed call; every buffer released (resizable again).
    assert attr.tolist() == before
    attr.append(0)
    handle.append(0)
    bad += b"x"


# ------------------------------------------------------------ helper threads


def test_helpers_are_reused_and_survive_fork() -> None:
    """Batch calls hand chunks to parked helper threads: no thread is left
    per call, and a fork()ed child (which has none of them) sets up its own
    and gets the same results."""
    src = realistic_data(1 << 20)[: 64 * PAGE]

    def blocks(threads: int) -> list[bytes]:
        return _meaningful(*zp.lz4_compress_pages(src, 0, 64, 1, threads))

    want = blocks(1)
    assert blocks(4) == want  # helpers started
    before = threading.active_count(), len(os.listdir("/proc/self/task"))
    for _ in range(20):
        assert blocks(4) == want
        assert zp.lz4_decompress_pages([b""] * 8, 4) == bytes(8 * PAGE)
    assert (threading.active_count(), len(os.listdir("/proc/self/task"))) == before
    check_in_child(lambda: all(blocks(4) == want for _ in range(5)), "a batch call")
