"""Compression backends: round trips, params vs. the kernel, dictionaries, threads, corruption."""

from __future__ import annotations

import errno
import functools
import os
import random
import struct
import sys
import sysconfig
import threading
import zlib
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import brotli
import lz4.block
import pytest
import zstandard
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests import kernel_lz4
from tests.forkutil import check_in_child
from zramfs.backends import (
    BACKEND_NAMES,
    DEFAULT_ALGORITHM,
    PAGE_SIZE,
    AlgoParams,
    Codec,
    create_codec,
    get_backend,
)
from zramfs.backends import lz4 as lz4_backend
from zramfs.errors import ZramError

DICT_BACKENDS = ("lz4", "lz4hc", "zstd")
NO_DICT_BACKENDS = ("deflate", "brotli")
FAST = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])


# --------------------------------------------------------------------------- page corpora


def _split(buf: bytes, n: int) -> list[bytes]:
    """The first `n` whole pages of `buf`."""
    return [buf[i : i + PAGE_SIZE] for i in range(0, len(buf) - PAGE_SIZE + 1, PAGE_SIZE)][:n]


@functools.cache
def _stdlib_sources() -> tuple[Path, ...]:
    """The interpreter's own .py files: realistic text present wherever tests run."""
    return tuple(sorted(Path(sysconfig.get_paths()["stdlib"]).glob("*.py")))


@functools.cache
def text_pages(part: int = 0, n: int = 48) -> tuple[bytes, ...]:
    """`n` pages of Python source from every other stdlib file (`part` 0 or 1: disjoint sets)."""
    files = _stdlib_sources()[part::2]
    buf = b"".join(f.read_bytes() for f in files[:200])
    if len(buf) < n * PAGE_SIZE:  # no sources installed: synthesize code-like text
        rnd = random.Random(part)
        words = [b"def", b"return", b"self", b"import", b"class", b"None", b"if", b"for"]
        buf = b" ".join(rnd.choice(words) + b"_%d" % rnd.randrange(50) for _ in range(n * 900))
    return tuple(_split(buf, n))


@functools.cache
def binary_pages(n: int = 24) -> tuple[bytes, ...]:
    """`n` pages spread over a large ELF file (libpython, else a C extension)."""
    libdir, lib = sysconfig.get_config_var("LIBDIR"), sysconfig.get_config_var("LDLIBRARY")
    dynload = Path(sysconfig.get_paths()["platstdlib"], "lib-dynload")
    candidates = [Path(libdir or "/nonexistent", lib or "x")]
    candidates += sorted(dynload.glob("*.so"), key=lambda p: -p.stat().st_size)[:1]
    candidates += [Path(os.path.realpath(sys.executable))]
    big = [p for p in candidates if p.is_file() and p.stat().st_size > 16 * PAGE_SIZE]
    data = big[0].read_bytes()
    stride = max(1, (len(data) // PAGE_SIZE) // n) * PAGE_SIZE
    return tuple(data[i : i + PAGE_SIZE] for i in range(0, len(data) - PAGE_SIZE + 1, stride))[:n]


def special_pages() -> list[bytes]:
    rnd = random.Random(42)
    return [
        bytes(PAGE_SIZE),  # all zero (zram's same-filled path normally skips it; codecs must cope)
        b"\xff" * PAGE_SIZE,
        rnd.randbytes(PAGE_SIZE),  # incompressible: output is larger than the page
        (b"\x01\x02\x03\x04" * 1024),
        rnd.randbytes(PAGE_SIZE // 2) * 2,  # one long-distance match
    ]


def all_pages() -> list[bytes]:
    return list(text_pages()[:16]) + list(binary_pages()[:12]) + special_pages()


@functools.cache
def _default_codec(name: str) -> Codec:
    """One shared default codec per backend (hypothesis tests call this per example)."""
    return create_codec(name)


def expect_errno(err: int, fn: Callable[..., object], *args: object) -> ZramError:
    """Call fn(*args) and require a ZramError carrying exactly `err`."""
    with pytest.raises(ZramError) as info:
        fn(*args)
    assert info.value.errno == err, info.value
    return info.value


def test_corpora_are_what_the_tests_assume() -> None:
    assert len(text_pages(0)) >= 40 and len(text_pages(1)) >= 40
    assert set(text_pages(0)).isdisjoint(text_pages(1))
    assert len(binary_pages()) >= 12
    assert all(len(p) == PAGE_SIZE for p in all_pages())


# --------------------------------------------------------------------------- registry


def test_backend_names_order_and_default() -> None:
    assert BACKEND_NAMES == ("lz4", "lz4hc", "zstd", "deflate", "brotli")
    assert DEFAULT_ALGORITHM == "lz4" and DEFAULT_ALGORITHM in BACKEND_NAMES


@pytest.mark.parametrize("name", BACKEND_NAMES)
def test_create_codec_gives_a_codec_of_that_name(name: str) -> None:
    codec = create_codec(name)
    assert isinstance(codec, Codec)
    assert codec.name == name
    assert get_backend(name).name == name


@pytest.mark.parametrize("name", ["lzo", "lzo-rle", "842", "", "LZ4", "lz4 ", "zstd\n"])
def test_unknown_algorithm_is_einval(name: str) -> None:
    expect_errno(errno.EINVAL, create_codec, name)
    expect_errno(errno.EINVAL, get_backend, name)


# --------------------------------------------------------------------------- round trips


@pytest.mark.parametrize("name", BACKEND_NAMES)
def test_round_trip_realistic_zero_and_incompressible_pages(name: str) -> None:
    codec = create_codec(name)
    for page in all_pages():
        blob = codec.compress(page)
        assert type(blob) is bytes
        out = codec.decompress(blob)
        assert type(out) is bytes and out == page
        assert codec.decompress(blob, PAGE_SIZE) == page


@pytest.mark.parametrize("name", BACKEND_NAMES)
def test_realistic_pages_actually_compress(name: str) -> None:
    codec = create_codec(name)
    pages = text_pages()[:16]
    assert sum(len(codec.compress(p)) for p in pages) < 0.6 * len(pages) * PAGE_SIZE
    assert len(codec.compress(bytes(PAGE_SIZE))) < 64


@pytest.mark.parametrize("name", BACKEND_NAMES)
def test_decompress_insists_on_exact_dst_len(name: str) -> None:
    codec = create_codec(name)
    for page in (text_pages()[3], binary_pages()[3], bytes(PAGE_SIZE)):
        blob = codec.compress(page)
        for wrong in (PAGE_SIZE - 1, PAGE_SIZE + 1, PAGE_SIZE // 2, 2 * PAGE_SIZE):
            expect_errno(errno.EIO, codec.decompress, blob, wrong)
        assert codec.decompress(blob, PAGE_SIZE) == page


@pytest.mark.parametrize("name", BACKEND_NAMES)
def test_memoryview_slices_and_bytearrays_are_accepted(name: str) -> None:
    codec = create_codec(name)
    pages = list(text_pages()[:3])
    big = bytearray(b"".join(pages))
    view = memoryview(big)
    for i, page in enumerate(pages):
        part = view[i * PAGE_SIZE : (i + 1) * PAGE_SIZE]
        blob = codec.compress(part)
        assert blob == codec.compress(page)  # same bytes as from an independent copy
        stored = bytearray(b"xx" + blob + b"yy")
        assert codec.decompress(memoryview(stored)[2:-2]) == page
        assert codec.decompress(bytearray(blob)) == page


@pytest.mark.parametrize("name", BACKEND_NAMES)
@FAST
@given(data=st.binary(min_size=1, max_size=2 * PAGE_SIZE))
def test_round_trip_any_length(name: str, data: bytes) -> None:
    codec = _default_codec(name)
    assert codec.decompress(codec.compress(data), len(data)) == data


# --------------------------------------------------------------------------- levels and defaults

# (backend, level, accepted?) — bounds are the library's (and the kernel's) own.
LEVEL_TABLE = [
    # lz4: level is acceleration, any C int (LZ4 maps < 1 to 1 and clamps at 65537)
    ("lz4", 1, True), ("lz4", 0, True), ("lz4", -7, True), ("lz4", 65537, True),
    ("lz4", 2**31 - 1, True), ("lz4", -(2**31), True),
    ("lz4", 2**31, False), ("lz4", -(2**31) - 1, False),
    # lz4hc: any C int; LZ4 maps < 1 to 9 and clamps at 12
    ("lz4hc", 1, True), ("lz4hc", 12, True), ("lz4hc", 0, True), ("lz4hc", 13, True),
    ("lz4hc", 2**31, False),
    # zstd: ZSTD_minCLevel() .. ZSTD_maxCLevel()
    ("zstd", -131072, True), ("zstd", -1, True), ("zstd", 0, True), ("zstd", 1, True),
    ("zstd", 22, True), ("zstd", 23, False), ("zstd", -131073, False), ("zstd", 2**40, False),
    # deflate: zlib levels
    ("deflate", -1, True), ("deflate", 0, True), ("deflate", 9, True),
    ("deflate", -2, False), ("deflate", 10, False),
    # brotli: quality
    ("brotli", 0, True), ("brotli", 11, True), ("brotli", -1, False), ("brotli", 12, False),
]


@pytest.mark.parametrize(("name", "level", "ok"), LEVEL_TABLE)
def test_level_validation(name: str, level: int, ok: bool) -> None:
    params = AlgoParams(level=level)
    if not ok:
        expect_errno(errno.EINVAL, create_codec, name, params)
        return
    codec = create_codec(name, params)
    assert codec.params.level == level
    page = text_pages()[7]
    assert codec.decompress(codec.compress(page)) == page


@pytest.mark.parametrize("name", BACKEND_NAMES)
def test_non_integer_level_is_einval(name: str) -> None:
    for bad in (3.0, "3", True):
        expect_errno(errno.EINVAL, create_codec, name, AlgoParams(level=bad))  # type: ignore[arg-type]


def _brotli_q(page: bytes, quality: int) -> bytes:
    enc = brotli.Compressor(quality=quality, lgwin=12)
    return bytes(enc.process(page) + enc.finish())


def _zstd_ref(page: bytes, level: int) -> bytes:
    # The kernel's ZSTD_getParams frame parameters: content size, no checksum.
    c = zstandard.ZstdCompressor(
        level=level, write_checksum=False, write_content_size=True, write_dict_id=True
    )
    return c.compress(page)


# What each backend's unset level must mean, as the bare library call (kernel defaults).
DEFAULTS: dict[str, tuple[AlgoParams, Callable[[bytes], bytes]]] = {
    # The kernel's parse with the accelerator, python-lz4's without (lz4.py).
    "lz4": (AlgoParams(level=1),
            kernel_lz4.compress if lz4_backend.ACCELERATED else
            lambda p: lz4.block.compress(p, mode="fast", acceleration=1, store_size=False)),
    "lz4hc": (AlgoParams(level=9),
              lambda p: lz4.block.compress(p, mode="high_compression", compression=9,
                                           store_size=False)),
    "zstd": (AlgoParams(level=3), lambda p: _zstd_ref(p, 3)),
    "deflate": (AlgoParams(level=-1, deflate_winbits=11), lambda p: zlib.compress(p, 6, -11)),
    "brotli": (AlgoParams(level=5), lambda p: _brotli_q(p, 5)),
}


@pytest.mark.parametrize("name", BACKEND_NAMES)
def test_defaults_match_the_kernel_and_the_docs(name: str) -> None:
    resolved, reference = DEFAULTS[name]
    codec = create_codec(name)
    assert codec.params == resolved
    for page in text_pages()[:4] + binary_pages()[:2]:
        assert codec.compress(page) == reference(page)


def test_lz4hc_default_is_the_librarys_default() -> None:
    from lz4.block import _block  # the C module exports LZ4HC's own constants

    assert create_codec("lz4hc").params.level == _block.HC_LEVEL_DEFAULT
    assert _block.HC_LEVEL_MAX == 12


def test_library_clamping_the_docstrings_rely_on() -> None:
    """Out-of-range-but-accepted levels behave as the clamped level (so accepting them is safe)."""
    page = text_pages()[5]

    def c(name: str, level: int) -> bytes:
        return create_codec(name, AlgoParams(level=level)).compress(page)

    assert c("lz4", 0) == c("lz4", -3) == c("lz4", 1)
    assert c("lz4", 10**6) == c("lz4", 65537) != c("lz4", 1)
    assert c("lz4hc", 0) == c("lz4hc", 9)
    assert c("lz4hc", 100) == c("lz4hc", 12)
    assert c("zstd", 0) == c("zstd", 3)
    # zstd's own floor: the library treats anything lower as -131072, so that is our bound.
    assert _zstd_ref(page, -131073) == _zstd_ref(page, -131072) == c("zstd", -131072)


@pytest.mark.parametrize(
    ("name", "fast", "dense"),
    [("lz4", 64, 1), ("lz4hc", 1, 12), ("zstd", -10, 19), ("deflate", 1, 9), ("brotli", 0, 9)],
)
def test_level_is_actually_applied(name: str, fast: int, dense: int) -> None:
    pages = text_pages()[:12]

    def total(level: int) -> int:
        codec = create_codec(name, AlgoParams(level=level))
        return sum(len(codec.compress(p)) for p in pages)

    assert total(dense) < total(fast)


def test_deflate_winbits_validation_and_effect() -> None:
    for bad in (8, 16, 0, -11):
        expect_errno(errno.EINVAL, create_codec, "deflate", AlgoParams(deflate_winbits=bad))
    rnd = random.Random(7)
    head = rnd.randbytes(1500) + b"-" * 1096
    page = head + head[: PAGE_SIZE - len(head)]  # repeats at distance 2596: needs a 4 KiB window
    narrow = create_codec("deflate", AlgoParams(deflate_winbits=9))
    wide = create_codec("deflate", AlgoParams(deflate_winbits=15))
    assert wide.params.deflate_winbits == 15 and narrow.params.deflate_winbits == 9
    assert len(wide.compress(page)) < len(narrow.compress(page)) - 1000
    for codec in (narrow, wide):
        assert codec.decompress(codec.compress(page)) == page
    assert zlib.decompress(wide.compress(page), -15) == page  # raw deflate, no zlib header


def test_winbits_is_ignored_by_other_backends() -> None:
    """Like the kernel, deflate.winbits only means something to deflate."""
    for name in ("lz4", "lz4hc", "zstd", "brotli"):
        codec = create_codec(name, AlgoParams(deflate_winbits=99))
        assert codec.decompress(codec.compress(text_pages()[0])) == text_pages()[0]


def test_lz4_and_lz4hc_write_raw_blocks() -> None:
    """No size header: the bare library reads our output given only the page size."""
    for name in ("lz4", "lz4hc"):
        codec = create_codec(name)
        for page in text_pages()[:4] + binary_pages()[:2] + tuple(special_pages()):
            blob = codec.compress(page)
            assert lz4.block.decompress(blob, uncompressed_size=PAGE_SIZE) == page
            assert blob[:4] != struct.pack("<I", PAGE_SIZE)  # no python-lz4 size prefix


def test_zstd_frames_carry_the_kernels_frame_parameters() -> None:
    """ZSTD_getParams' (the kernel's zstd_get_params): content size, no
    checksum, a dictionary's id when it has one; a page's frame is single
    segment with a 2-byte content size, 10 bytes of framing in all."""
    raw = b"".join(text_pages(1)[:4])  # raw content: no id
    samples: list[bytes | bytearray | memoryview] = []
    samples += [p[:512] for p in text_pages(2)] * 4
    trained = zstandard.train_dictionary(4096, samples)
    for params, dict_id in (
        (AlgoParams(), 0),
        (AlgoParams(dictionary=raw), 0),
        (AlgoParams(dictionary=trained.as_bytes()), trained.dict_id()),
    ):
        codec = create_codec("zstd", params)
        blob = codec.compress(text_pages()[0])
        fp = zstandard.get_frame_parameters(blob)
        assert fp.content_size == PAGE_SIZE
        assert fp.dict_id == dict_id and not fp.has_checksum
        if not dict_id:
            # Frame_Header_Descriptor: 2-byte FCS, single segment; then 4096 - 256.
            assert blob[4:7] == b"\x60\x00\x0f"
        assert codec.decompress(blob) == text_pages()[0]
    # A frame that claims another size, or none, is not ours: EIO before decoding.
    codec = create_codec("zstd")
    page = text_pages()[0]
    no_size = zstandard.ZstdCompressor(level=3, write_content_size=False).compress(page)
    expect_errno(errno.EIO, codec.decompress, no_size)
    other = zstandard.ZstdCompressor(level=3).compress(page[:4000] + bytes(95))
    expect_errno(errno.EIO, codec.decompress, other)
    checked = zstandard.ZstdCompressor(level=3, write_checksum=True).compress(page)
    expect_errno(errno.EIO, codec.decompress, checked)


# --------------------------------------------------------------------------- dictionaries


@pytest.mark.parametrize("name", DICT_BACKENDS)
def test_dictionary_round_trips_helps_and_is_required(name: str) -> None:
    sample = text_pages(1)[:8]
    dictionary = b"".join(sample)
    plain = create_codec(name)
    with_dict = create_codec(name, AlgoParams(dictionary=dictionary))
    assert with_dict.params.dictionary == dictionary
    # pages that resemble the dictionary: the sample pages with a few bytes changed
    pages = [p[:100] + b"#changed#" + p[109:] for p in sample]
    size_dict = sum(len(with_dict.compress(p)) for p in pages)
    assert size_dict < 0.5 * sum(len(plain.compress(p)) for p in pages)
    for page in pages + list(all_pages()):
        blob = with_dict.compress(page)
        assert with_dict.decompress(blob) == page
    # the dictionary is part of the format: decoding without it must not return the page
    blob = with_dict.compress(pages[0])
    try:
        out = plain.decompress(blob)
    except ZramError as e:
        assert e.errno == errno.EIO
    else:
        assert out != pages[0]


@pytest.mark.parametrize("name", DICT_BACKENDS)
def test_empty_dictionary_is_einval(name: str) -> None:
    expect_errno(errno.EINVAL, create_codec, name, AlgoParams(dictionary=b""))


@pytest.mark.parametrize("name", NO_DICT_BACKENDS)
def test_dictionary_for_a_backend_without_one_is_einval(name: str) -> None:
    expect_errno(errno.EINVAL, create_codec, name, AlgoParams(dictionary=b"x" * 4096))


def test_zstd_structured_dictionary_that_does_not_parse_is_einval() -> None:
    bogus = struct.pack("<I", 0xEC30A437) + struct.pack("<I", 1234) + b"\x00garbage" * 64
    expect_errno(errno.EINVAL, create_codec, "zstd", AlgoParams(dictionary=bogus))


def test_zstd_trained_dictionary_improves_total_size() -> None:
    """A dictionary trained on sample pages compresses unseen but similar pages better."""
    train: list[bytes | bytearray | memoryview] = list(text_pages(0, 48))
    held_out = text_pages(1, 48)
    trained = zstandard.train_dictionary(8192, train, k=64, d=8).as_bytes()
    assert trained[:4] == struct.pack("<I", 0xEC30A437)  # a structured dictionary, not raw content
    plain = create_codec("zstd")
    with_dict = create_codec("zstd", AlgoParams(dictionary=trained))
    size_plain = sum(len(plain.compress(p)) for p in held_out)
    size_dict = sum(len(with_dict.compress(p)) for p in held_out)
    assert size_dict < 0.97 * size_plain, (size_dict, size_plain)
    for p in held_out:
        assert with_dict.decompress(with_dict.compress(p)) == p


def test_zstd_dictionary_works_with_levels() -> None:
    dictionary = b"".join(text_pages(1)[:4])
    for level in (-5, 1, 3, 19):
        codec = create_codec("zstd", AlgoParams(level=level, dictionary=dictionary))
        for page in text_pages()[:3]:
            assert codec.decompress(codec.compress(page)) == page


# --------------------------------------------------------------------------- threads


THREAD_CASES = [(n, False) for n in BACKEND_NAMES] + [(n, True) for n in DICT_BACKENDS]


@pytest.mark.parametrize(
    ("name", "with_dict"), THREAD_CASES, ids=[n + "+dict" * d for n, d in THREAD_CASES]
)
def test_concurrent_compress_and_decompress_from_four_threads(name: str, with_dict: bool) -> None:
    dictionary = b"".join(text_pages(1)[:4]) if with_dict else None
    codec = create_codec(name, AlgoParams(dictionary=dictionary))
    pages = list(text_pages()[:24]) + list(binary_pages()[:8]) + special_pages()
    expected = [codec.compress(p) for p in pages]  # single-threaded reference
    start = threading.Barrier(4)
    rounds = 2 if codec.name == "brotli" else 4

    def worker(seed: int) -> int:
        order = list(range(len(pages)))
        random.Random(seed).shuffle(order)
        start.wait()
        done = 0
        for _ in range(rounds):
            for i in order:
                blob = codec.compress(pages[i])
                assert blob == expected[i]
                assert codec.decompress(blob) == pages[i]
                j = (i + 1) % len(pages)  # and someone else's page, decoded concurrently
                assert codec.decompress(expected[j]) == pages[j]
                done += 1
        return done

    with ThreadPoolExecutor(max_workers=4) as pool:
        results = list(pool.map(worker, range(4)))
    assert results == [rounds * len(pages)] * 4


# --------------------------------------------------------------------------- corruption


def _must_be_page_or_eio(codec: Codec, blob: bytes, dst_len: int = PAGE_SIZE) -> None:
    try:
        out = codec.decompress(blob, dst_len)
    except ZramError as e:
        assert e.errno == errno.EIO, e
    else:
        assert type(out) is bytes and len(out) == dst_len


@pytest.mark.parametrize("name", BACKEND_NAMES)
def test_truncated_and_empty_input_is_eio(name: str) -> None:
    codec = create_codec(name)
    for page in (text_pages()[1], binary_pages()[1]):
        blob = codec.compress(page)
        for cut in (0, 1, 4, len(blob) // 2, len(blob) - 1):
            expect_errno(errno.EIO, codec.decompress, blob[:cut])


@pytest.mark.parametrize("name", BACKEND_NAMES)
@FAST
@given(data=st.data())
def test_corrupt_input_gives_eio_or_exactly_dst_len(name: str, data: st.DataObject) -> None:
    codec = _default_codec(name)
    page = data.draw(st.sampled_from(text_pages()[:8] + binary_pages()[:4]))
    blob = bytearray(codec.compress(page))
    how = data.draw(st.sampled_from(["flip", "overwrite", "append", "random"]))
    if how == "flip":
        for _ in range(data.draw(st.integers(1, 4))):
            blob[data.draw(st.integers(0, len(blob) - 1))] ^= 1 << data.draw(st.integers(0, 7))
    elif how == "overwrite":
        at = data.draw(st.integers(0, len(blob) - 1))
        junk = data.draw(st.binary(min_size=1, max_size=16))
        blob[at : at + len(junk)] = junk
    elif how == "append":
        blob += data.draw(st.binary(min_size=1, max_size=64))
    else:
        blob = bytearray(data.draw(st.binary(max_size=600)))
    _must_be_page_or_eio(codec, bytes(blob))


def test_zstd_header_claiming_a_huge_content_size_is_eio_not_memoryerror() -> None:
    codec = create_codec("zstd")
    for size in (2**62, 2**40, 2**33):
        # magic, FHD = 8-byte content size + single segment, the size, then a raw empty last block
        frame = struct.pack("<IBQ", 0xFD2FB528, 0xE0, size) + b"\x01\x00\x00"
        expect_errno(errno.EIO, codec.decompress, frame)


def test_brotli_trailing_garbage_is_eio() -> None:
    codec = create_codec("brotli")
    blob = codec.compress(text_pages()[2])
    expect_errno(errno.EIO, codec.decompress, blob + b"\x00\x01")


def test_brotli_stream_longer_than_dst_len_is_eio_even_if_output_stops_there() -> None:
    """The decoder's output limit can stop exactly at dst_len with data still pending."""
    codec = create_codec("brotli")
    long_data = text_pages()[0] * 12
    blob = codec.compress(long_data)
    probe = brotli.Decompressor()
    first = len(probe.process(blob, output_buffer_limit=1))  # the decoder's first output chunk
    assert first < len(long_data) and not probe.is_finished()
    expect_errno(errno.EIO, codec.decompress, blob, first)
    assert codec.decompress(blob, len(long_data)) == long_data


def test_corrupt_page_error_names_the_algorithm() -> None:
    err = expect_errno(errno.EIO, create_codec("lz4").decompress, b"\xff" * 10)
    assert "lz4" in str(err)


# --------------------------------------------------------------------------- zstd batches


@pytest.mark.parametrize("count", [1, 2, 3, 37, 256])
@pytest.mark.parametrize("threads", [1, 2, 3])
def test_zstd_batches_split_over_threads_equal_page_by_page(count: int, threads: int) -> None:
    """`compress_pages` / `decompress_pages` give `compress` / `decompress`
    of every page, in order, however the batch is split (the first part on
    the caller, the rest on the sidecar threads)."""
    codec = create_codec("zstd")
    pool = (list(text_pages()) + list(binary_pages()) + special_pages()) * 4
    pages = pool[:count]
    assert len(pages) == count
    data = b"\xa5" * 100 + b"".join(pages)  # batches need not start at 0
    frames = codec.compress_pages(data, 100, count, threads)  # type: ignore[attr-defined]
    assert [bytes(f) for f in frames] == [codec.compress(p) for p in pages]
    back = codec.decompress_pages([bytes(f) for f in frames], threads)  # type: ignore[attr-defined]
    assert [bytes(b) for b in back] == pages


def test_zstd_split_batch_with_a_corrupt_page_is_eio_and_the_sidecar_recovers() -> None:
    codec = create_codec("zstd")
    pages = list(text_pages()[:40])
    blobs = [codec.compress(p) for p in pages]
    for bad in (3, 35):  # in the caller's part, then in the sidecar's
        broken = list(blobs)
        broken[bad] = blobs[bad][:6] + b"\xff" * (len(blobs[bad]) - 6)
        expect_errno(errno.EIO, codec.decompress_pages, broken, 2)  # type: ignore[attr-defined]
    back = codec.decompress_pages(blobs, 2)  # type: ignore[attr-defined]
    assert [bytes(b) for b in back] == pages


def test_zstd_batch_parts_cover_the_batch_evenly() -> None:
    from zramfs.backends import zstd as zmod

    for count in range(0, 40):
        for threads in range(1, 5):
            parts = zmod._parts(count, threads)
            assert sum(n for _, n in parts) == count
            starts = [sum(n for _, n in parts[:i]) for i in range(len(parts))]
            assert [a for a, _ in parts] == starts
            assert 1 <= len(parts) <= max(1, min(threads, zmod._CPUS))
            sizes = [n for _, n in parts]
            assert max(sizes) - min(sizes) <= 1


def test_zstd_split_batches_work_in_a_forked_child() -> None:
    """The sidecar threads do not survive fork(); a child makes its own
    instead of queueing its parts to threads that are not there."""
    codec = create_codec("zstd")
    pages = list(text_pages()[:40])
    data = b"".join(pages)
    want = [codec.compress(p) for p in pages]
    assert [bytes(f) for f in codec.compress_pages(data, 0, 40, 2)] == want  # type: ignore[attr-defined]
    check_in_child(
        lambda: [bytes(f) for f in codec.compress_pages(data, 0, 40, 2)] == want,  # type: ignore[attr-defined]
        "a split batch",
    )
