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

Frames are the kernel's: it compresses with the parameters of
zstd_get_params(level, PAGE_SIZE), i.e. ZSTD_getParams, whose frame
parameters are content size on, checksum off, dictionary id on (written only
for a dictionary that has one).  So a 4 KiB page's frame has 4 (magic) + 1
(frame header: single segment) + 2 (content size) + 3 (block header) = 10
bytes of framing, and the same blocks, so `compr_data_size` is a kernel zstd
zram's.  (Until session 5 we left the content size out: one byte a page
less than the kernel.)  `decompress` reads the header first and rejects a
frame that does not claim exactly `dst_len` bytes, before python-zstandard
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
whole batch: no Python per page, no GIL hand-off per page, no trio thread
hop.  ``threads`` > 1 splits the batch into contiguous parts: the first runs
on the calling thread, the others on the long-lived `_sidecar` threads,
each with its own contexts.  python-zstandard's own ``threads=2`` was no
help here (it starts a pool and a context per call and splits unevenly:
level 3, 256 pages, 29.2 us/page wall against 29.7 on one thread), while
two threads of ours each compressing half measured 15.4 us/page.  The batch
compressor is built with ``ZstdCompressionParameters.from_level(level,
source_size=4096)``, the parameters ``compress()`` derives for a 4 KiB
input, so every frame is byte-identical to ``compress(page)`` (checked at
levels -50..22); without that hint zstd sizes its tables for an input of
unknown length and the batch runs at half the speed.  The batch contexts,
like the per-page ones, belong to the calling thread.  Not offered with a
dictionary (`ZstdCodec.batch_compress` is False; the per-page path is used).

The accelerator (`ACCELERATED`): when `zramfs._zpages` is built with the zstd
python-zstandard bundles, the codec also offers ``compress_blocks`` and
``compress_pages_begin`` (no dictionary): the same frames, made in C in the
lz4 codec's layout, on the module's parked threads or on its background
helper while the trio thread stores (`ZramDevice._store_fresh_ahead`), which
a python-zstandard call cannot do without a Python thread taking the GIL back
after it.  Its ``decompress_slots`` (``zstd_read_slots``) serves reads of
several pages, also loop's 512 KiB ones in the C ``read_nowait`` without a
coroutine.  Writes and those reads take the C calls; one-page reads,
recompression, overwrites under mem_limit and a dictionary keep to
python-zstandard.
"""

from __future__ import annotations

import os
import threading
from array import array
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import replace
from functools import partial
from types import ModuleType
from typing import Any, Final

import zstandard

from zramfs.backends.base import (
    DEFAULT_PARAMS,
    PAGE_SIZE,
    AlgoParams,
    Backend,
    BackgroundPages,
    Buffer,
    PendingPages,
    corrupt,
    dictionary_of,
    int_param,
    invalid,
    load_accelerator,
)

NAME: Final = "zstd"
DEFAULT_LEVEL: Final = 3  # ZSTD_CLEVEL_DEFAULT
MIN_LEVEL: Final = -(1 << 17)  # ZSTD_minCLevel() == -ZSTD_TARGETLENGTH_MAX
MAX_LEVEL: Final[int] = zstandard.MAX_COMPRESSION_LEVEL  # 22

_ZstdError: Final = zstandard.ZstdError
_MAGIC: Final = 0xFD2FB528  # little-endian at the frame's start
# Frame_Header_Descriptor: field sizes by Dictionary_ID_flag (bits 1-0) and by
# Frame_Content_Size_flag (bits 7-6; flag 0 is 1 byte with Single_Segment).
_DID_BYTES: Final = (0, 1, 2, 4)
_FCS_BYTES: Final = (0, 2, 4, 8)


def claimed_size(frame: Buffer) -> int:
    """The content size a zstd frame's header claims, or -1 if it claims
    none, carries a checksum (we never write one) or is too short."""
    mv = memoryview(frame)
    if len(mv) < 6 or int.from_bytes(mv[:4], "little") != _MAGIC:
        return -1
    fhd = mv[4]
    if fhd & 0x04:
        return -1
    single = fhd & 0x20
    fcs = _FCS_BYTES[fhd >> 6] or (1 if single else 0)
    at = 5 + (0 if single else 1) + _DID_BYTES[fhd & 3]
    if not fcs or len(mv) < at + fcs:
        return -1
    size = int.from_bytes(mv[at : at + fcs], "little")
    return size + 256 if fcs == 2 else size


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
            write_content_size=True,
            write_dict_id=True,
        ).compress
        dctx = zstandard.ZstdDecompressor(dict_data=zdict)
        self.decompress = dctx.decompress
        self.multi_compress = self.multi_decompress = None
        if zdict is None:
            params = zstandard.ZstdCompressionParameters.from_level(
                level,
                source_size=PAGE_SIZE,
                write_checksum=False,
                write_content_size=True,
                write_dict_id=True,
            )
            cctx = zstandard.ZstdCompressor(compression_params=params)
            self.multi_compress = cctx.multi_compress_to_buffer
            self.multi_decompress = dctx.multi_decompress_to_buffer


class ZstdCodec:
    """zstd at one level (and optional dictionary) for one device priority."""

    __slots__ = (
        "name",
        "params",
        "_tls",
        "batch_compress",
        "batch_decompress",
        "compress_blocks",
        "compress_pages_begin",
        "decompress_slots",
    )

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
        # The accelerator's batch calls, in its layout (see `ACCELERATED`):
        # the device looks for these attributes.
        self.compress_blocks: Callable[..., tuple[bytearray, bytes]] | None = None
        self.compress_pages_begin: Callable[[Buffer, int, int], PendingPages] | None = None
        #: A multi-page read in one C call (the device's `_load_joined`, and
        #: the C ``read_nowait`` of loop's 512 KiB reads without a coroutine).
        self.decompress_slots: Callable[..., bytes | None] | None = None
        if ACCELERATED and dictionary is None:
            self.compress_blocks = partial(_blocks_at, level)
            assert _zp is not None
            self.compress_pages_begin = partial(BackgroundPages, _zp.zstd_compress_begin, level)
            self.decompress_slots = _zp.zstd_read_slots

    def compress(self, src: Buffer) -> bytes:
        """One zstd frame of `src` (the kernel's framing) with this thread's cached context."""
        return self._tls.compress(src)

    def decompress(self, src: Buffer, dst_len: int = PAGE_SIZE) -> bytes:
        """Exactly `dst_len` bytes back, or ZramError(EIO).

        The output buffer is `dst_len` bytes (max_output_size); a frame that
        would need more fails inside zstd ("destination buffer too small").
        """
        # The page frame's header (single segment, content size 4096) is
        # tested byte by byte first: parsing it costs as much as decoding.
        if not (
            dst_len == PAGE_SIZE
            and len(src) > 7
            and src[4] == 0x60
            and src[5] == 0x00
            and src[6] == 0x0F
        ) and claimed_size(src) != dst_len:
            raise corrupt(self.name, f"not a frame of {dst_len} bytes as this codec writes them")
        try:
            out = self._tls.decompress(src, max_output_size=dst_len)
        except _ZstdError as e:
            raise corrupt(self.name, str(e)) from None
        if len(out) != dst_len:
            raise corrupt(self.name, f"decoded {len(out)} bytes, expected {dst_len}")
        return out

    def compress_pages(self, data: Buffer, pos: int, count: int, threads: int) -> Sequence[Buffer]:
        """The frames of the ``count`` pages of ``data`` from ``pos``, each
        exactly ``compress(page)``, in GIL-free calls on up to ``threads``
        threads (the caller's and `_sidecar`'s).  A sequence of buffer
        objects (zstd's segments: indexable, ``len()`` is the frame's size),
        valid while the result lives."""
        parts = _parts(count, threads)
        if len(parts) == 1:
            return self._compress_part(data, pos, count)
        return _run_split(self._compress_part, [(data, pos + a * PAGE_SIZE, n) for a, n in parts])

    def _compress_part(self, data: Buffer, pos: int, count: int) -> Sequence[Buffer]:
        multi = self._tls.multi_compress
        assert multi is not None, "compress_pages needs a codec without dictionary"
        batch = zstandard.BufferWithSegments(data, _segments(pos, count))
        return multi(batch, threads=1)  # type: ignore[no-any-return]

    def decompress_pages(self, blobs: Sequence[Buffer], threads: int) -> Sequence[Buffer]:
        """`decompress` of every blob (one page each) in GIL-free calls on up
        to ``threads`` threads (as `compress_pages`): a sequence of 4096-byte
        buffer objects, or ZramError(EIO) if any blob is not a frame of
        exactly one page.

        The blobs are read while the call runs: views into the pool are fine
        because the caller does not yield meanwhile (the pool cannot change;
        the call returns only when every part is done, even when one fails).
        """
        parts = _parts(len(blobs), threads)
        if len(parts) == 1:
            return self._decompress_part(blobs)
        return _run_split(self._decompress_part, [(blobs[a : a + n],) for a, n in parts])

    def _decompress_part(self, blobs: Sequence[Buffer]) -> Sequence[Buffer]:
        multi = self._tls.multi_decompress
        assert multi is not None, "decompress_pages needs a codec without dictionary"
        try:
            return multi(blobs, decompressed_sizes=_page_sizes(len(blobs)), threads=1)  # type: ignore[no-any-return]
        except _ZstdError:
            pass
        # Name the culprit as the per-page path does (it raises ZramError).
        for b in blobs:
            self.decompress(b, PAGE_SIZE)
        raise corrupt(self.name, "batch decompression failed")  # pragma: no cover


def _load_accelerator() -> ModuleType | None:
    """The accelerator if it was built with zstd, and with the zstd release
    python-zstandard bundles (else their frames could differ), else None."""
    zp = load_accelerator()
    version = ".".join(map(str, zstandard.ZSTD_VERSION))
    return zp if getattr(zp, "ZSTD_VERSION", None) == version else None


_zp: Final = _load_accelerator()
ACCELERATED: Final = _zp is not None
"""Whether the C accelerator compresses and reads zstd pages
(`ZstdCodec.compress_blocks`, `ZstdCodec.compress_pages_begin`,
`ZstdCodec.decompress_slots`): `zramfs._zpages` built with the zstd of
python-zstandard's release (setup.py), so its frames are byte-identical to
`ZstdCodec.compress`'s.  Its calls have the lz4 codec's layout, so the device
stores their pages the way it stores lz4's, and a batch's tail can be
compressed on the accelerator's helper thread while the trio thread stores
(`ZramDevice._store_fresh_ahead`): the GIL-free part of a python-zstandard
call cannot overlap the trio thread's Python without a Python thread taking
the GIL back after it."""


def _blocks_at(
    level: int, data: Buffer, pos: int, count: int, threads: int
) -> tuple[bytearray, bytes]:
    """``compress_blocks``: the accelerator's frames of ``count`` pages of
    ``data`` from ``pos`` as ``(out, sizes)``, page k's frame at
    ``k * PAGE_SIZE`` of ``out``, its length the uint16 ``sizes[k]`` (0:
    same-filled, PAGE_SIZE: not shorter than a page), on ``threads`` threads."""
    assert _zp is not None
    return _zp.zstd_compress_pages(data, pos, count, level, threads)  # type: ignore[no-any-return]


_CPUS: Final = os.cpu_count() or 1
_side: ThreadPoolExecutor | None = None
_side_pid = 0
_side_lock = threading.Lock()


def _sidecar() -> ThreadPoolExecutor:
    """The threads that run the second and later parts of a split batch.

    Created on first use with one thread per CPU but one (the caller runs
    the first part), and kept: a thread started per call costs more than
    the hand-off (a ``Future`` round trip, ~30 us here).  Idle threads hold
    only their zstd contexts.  Several callers at once (two devices, or the
    trio thread and a worker) queue their parts; each part still runs on one
    thread with that thread's own contexts.  A fork()ed child has none of
    the parent's threads (an inherited executor would queue its parts
    forever), so it makes its own.
    """
    global _side, _side_pid
    side = _side
    if side is None or _side_pid != os.getpid():
        with _side_lock:
            if _side is None or _side_pid != os.getpid():
                _side = ThreadPoolExecutor(max(1, _CPUS - 1), thread_name_prefix="zramfs-zstd")
                _side_pid = os.getpid()
            side = _side
    return side


def _parts(count: int, threads: int) -> list[tuple[int, int]]:
    """``(first, count)`` of each part when ``count`` items go to ``threads``
    threads: at most one per CPU and two pages per part, sizes within one."""
    k = max(1, min(threads, _CPUS, count // 2))
    base, extra = divmod(count, k)
    out = []
    a = 0
    for i in range(k):
        n = base + (i < extra)
        out.append((a, n))
        a += n
    return out


def _run_split(fn: Callable[..., Sequence[Buffer]], args: list[tuple[Any, ...]]) -> list[Buffer]:
    """``fn(*args[0])`` here and the other parts on `_sidecar`, concatenated in
    order.  Returns (or raises the first part's error) only when every part
    has finished, so no part still reads its inputs afterwards."""
    side = _sidecar()
    futs: list[Future[Sequence[Buffer]]] = [side.submit(fn, *a) for a in args[1:]]
    try:
        out = list(fn(*args[0]))
    finally:
        for f in futs:
            f.exception()  # wait, whatever happened here
    for f in futs:
        out += f.result()
    return out


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
