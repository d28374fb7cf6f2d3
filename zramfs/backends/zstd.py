"""zstd: Zstandard frames, like the kernel's drivers/block/zram/backend_zstd.c.

`level`: not set -> 3 (ZSTD_CLEVEL_DEFAULT; the kernel uses zstd_default_clevel()).
Accepted: ZSTD_minCLevel() .. ZSTD_maxCLevel(), i.e. -131072..22, 0 meaning
the default. The library itself clamps below the minimum and python-zstandard
raises above 22; we refuse both ends with EINVAL so that `algorithm_params`
never silently means something else.

A dictionary (dict=PATH) is loaded as ZSTD_dct_auto, as the kernel's
zstd_create_cdict_byreference does: a file starting with the zstd dictionary
magic is a structured (e.g. `zstd --train` / zstandard.train_dictionary)
dictionary, anything else is raw content. A structured dictionary that does
not parse is refused with EINVAL at setup.

Frames are kept minimal: no checksum (zram pages are in RAM, not on a wire),
no dictionary id (the device knows its dictionary) and no content size (the
caller passes `dst_len`). Per 4 KiB page that is 4 (magic) + 1 (frame header)
+ 1 (window) + 3 (block header) = 9 bytes of framing. Leaving the content
size out also makes `decompress` safe against a corrupt header: a frame that
claims a content size cannot be ours and is rejected before python-zstandard
would allocate whatever size it claims.

Thread safety: zstd contexts must never be shared by threads (doing so
crashed on this machine), and python-zstandard builds a dictionary's
digested form lazily and without a lock. So every thread gets its own
compressor, decompressor and dictionary object (`_Contexts`, a
threading.local), created on the thread's first call and reused for every
later page: no per-page object construction. The price is memory: each
thread that touches a codec holds its own contexts and, with a dictionary,
its own copy of it and its digested forms.

Cost: a realistic 4 KiB page takes ~20 us to compress and ~7 us to
decompress here at level 3; this wrapper adds ~0.2-0.4 us (thread-local
lookup, the header check, the length check).

Batches (`ZstdCodec.compress_pages`, `ZstdCodec.decompress_pages`): a
request's pages go to python-zstandard's ``multi_compress_to_buffer`` /
``multi_decompress_to_buffer`` in one call that releases the GIL for the
whole batch and splits it over ``threads`` threads of zstd's own pool: no
Python per page, no GIL hand-off per page, no trio thread hop.  The batch
compressor is built with ``ZstdCompressionParameters.from_level(level,
source_size=4096)``, the parameters ``compress()`` derives for a 4 KiB
input, so every frame is byte-identical to ``compress(page)`` (checked at
levels -50..22); without that hint zstd sizes its tables for an input of
unknown length and the batch runs at half the speed.  The batch contexts,
like the per-page ones, belong to the calling thread.  Not offered with a
dictionary (`ZstdCodec.batch_compress` is False; the per-page path is used).
"""

from __future__ import annotations

import threading
from array import array
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any, Final

import zstandard

from zramfs.backends.base import (
    DEFAULT_PARAMS,
    PAGE_SIZE,
    AlgoParams,
    Backend,
    Buffer,
    corrupt,
    dictionary_of,
    int_param,
    invalid,
)

NAME: Final = "zstd"
DEFAULT_LEVEL: Final = 3  # ZSTD_CLEVEL_DEFAULT
MIN_LEVEL: Final = -(1 << 17)  # ZSTD_minCLevel() == -ZSTD_TARGETLENGTH_MAX
MAX_LEVEL: Final[int] = zstandard.MAX_COMPRESSION_LEVEL  # 22

# Frame_Header_Descriptor bits 7-5: Frame_Content_Size_flag and Single_Segment_flag.
# Both are zero in every frame we write (no content size).
_FHD_CONTENT_SIZE_BITS: Final = 0xE0
_ZstdError: Final = zstandard.ZstdError


class _Contexts(threading.local):
    """One thread's zstd contexts; `__init__` runs again on each thread's first use."""

    compress: Callable[[Buffer], bytes]
    decompress: Callable[..., bytes]
    multi_compress: Callable[..., Any] | None
    multi_decompress: Callable[..., Any] | None

    def __init__(self, level: int, dictionary: bytes | None) -> None:
        zdict = None if dictionary is None else zstandard.ZstdCompressionDict(dictionary)
        self.compress = zstandard.ZstdCompressor(
            level=level,
            dict_data=zdict,
            write_checksum=False,
            write_content_size=False,
            write_dict_id=False,
        ).compress
        dctx = zstandard.ZstdDecompressor(dict_data=zdict)
        self.decompress = dctx.decompress
        self.multi_compress = self.multi_decompress = None
        if zdict is None:
            params = zstandard.ZstdCompressionParameters.from_level(
                level,
                source_size=PAGE_SIZE,
                write_checksum=False,
                write_content_size=False,
                write_dict_id=False,
            )
            cctx = zstandard.ZstdCompressor(compression_params=params)
            self.multi_compress = cctx.multi_compress_to_buffer
            self.multi_decompress = dctx.multi_decompress_to_buffer


class ZstdCodec:
    """zstd at one level (and optional dictionary) for one device priority."""

    __slots__ = ("name", "params", "_tls", "batch_compress", "batch_decompress")

    batch_parallel = True  # the batch calls can split over threads

    def __init__(self, params: AlgoParams = DEFAULT_PARAMS) -> None:
        """Validate params and prove they work by one round trip (EINVAL if not).

        The round trip runs on the calling thread, so a structured dictionary
        that zstd rejects fails here, at disksize time, not on the first page.
        """
        level = DEFAULT_LEVEL
        if params.level is not None:
            level = int_param(NAME, "level", params.level, MIN_LEVEL, MAX_LEVEL)
        dictionary = dictionary_of(NAME, params)
        self.name: str = NAME
        self.params: AlgoParams = replace(params, level=level)
        probe = b"zram setup probe " * 241  # 4097 bytes: more than one page, any content
        try:
            self._tls = _Contexts(level, dictionary)
            blob = self._tls.compress(probe)
            ok = self._tls.decompress(blob, max_output_size=len(probe)) == probe
        except _ZstdError as e:
            raise invalid(NAME, f"unusable parameters or dictionary: {e}") from None
        if not ok:  # pragma: no cover - would be a zstd bug
            raise invalid(NAME, "setup round trip failed")
        #: Whether `compress_pages` / `decompress_pages` may be used.
        self.batch_compress: bool = dictionary is None
        self.batch_decompress: bool = dictionary is None

    def compress(self, src: Buffer) -> bytes:
        """One minimal zstd frame of `src` with this thread's cached context."""
        return self._tls.compress(src)

    def decompress(self, src: Buffer, dst_len: int = PAGE_SIZE) -> bytes:
        """Exactly `dst_len` bytes back, or ZramError(EIO).

        The output buffer is `dst_len` bytes (max_output_size); a frame that
        would need more fails inside zstd ("destination buffer too small").
        """
        if len(src) < 5 or src[4] & _FHD_CONTENT_SIZE_BITS:
            raise corrupt(self.name, "not a frame this codec wrote")
        try:
            out = self._tls.decompress(src, max_output_size=dst_len)
        except _ZstdError as e:
            raise corrupt(self.name, str(e)) from None
        if len(out) != dst_len:
            raise corrupt(self.name, f"decoded {len(out)} bytes, expected {dst_len}")
        return out

    def compress_pages(self, data: Buffer, pos: int, count: int, threads: int) -> Sequence[Buffer]:
        """The frames of the ``count`` pages of ``data`` from ``pos``, each
        exactly ``compress(page)``, made in one GIL-free call on ``threads``
        threads.  A sequence of buffer objects (zstd's segments: indexable,
        ``len()`` is the frame's size), valid while the result lives."""
        multi = self._tls.multi_compress
        assert multi is not None, "compress_pages needs a codec without dictionary"
        batch = zstandard.BufferWithSegments(data, _segments(pos, count))
        return multi(batch, threads=threads)  # type: ignore[no-any-return]

    def decompress_pages(self, blobs: Sequence[Buffer], threads: int) -> Sequence[Buffer]:
        """`decompress` of every blob (one page each) in one GIL-free call on
        ``threads`` threads: a sequence of 4096-byte buffer objects, or
        ZramError(EIO) if any blob is not a frame of exactly one page.

        The blobs are read while the call runs: views into the pool are fine
        because the caller does not yield meanwhile (the pool cannot change).
        """
        multi = self._tls.multi_decompress
        assert multi is not None, "decompress_pages needs a codec without dictionary"
        try:
            return multi(blobs, decompressed_sizes=_page_sizes(len(blobs)), threads=threads)  # type: ignore[no-any-return]
        except _ZstdError:
            pass
        # Name the culprit as the per-page path does (it raises ZramError).
        for b in blobs:
            self.decompress(b, PAGE_SIZE)
        raise corrupt(self.name, "batch decompression failed")  # pragma: no cover


_SEGMENTS: dict[tuple[int, int], bytes] = {}
_PAGE_SIZES: dict[int, bytes] = {}


def _segments(pos: int, count: int) -> bytes:
    """``BufferWithSegments`` layout (offset, length pairs) of ``count`` pages from ``pos``."""
    key = (pos, count)
    segs = _SEGMENTS.get(key)
    if segs is None:
        segs = array(
            "Q", [x for k in range(count) for x in (pos + k * PAGE_SIZE, PAGE_SIZE)]
        ).tobytes()
        if len(_SEGMENTS) < 1024:
            _SEGMENTS[key] = segs
    return segs


def _page_sizes(n: int) -> bytes:
    """``decompressed_sizes`` for ``n`` pages."""
    sizes = _PAGE_SIZES.get(n)
    if sizes is None:
        sizes = array("Q", [PAGE_SIZE]).tobytes() * n
        if len(_PAGE_SIZES) < 1024:
            _PAGE_SIZES[n] = sizes
    return sizes


BACKEND: Final = Backend(name=NAME, setup=ZstdCodec)
