"""lz4: raw LZ4 blocks, as the kernel's drivers/block/zram/backend_lz4.c writes them.

Format: one LZ4 block with no size header (the kernel knows the page size,
and so do we: `dst_len`), so `lz4.block.decompress(blob, uncompressed_size=4096)`
reads our output, and the kernel's LZ4_decompress_safe would too. (python-lz4
compresses through a fresh LZ4 stream rather than LZ4_compress_fast_extState,
so individual match choices, not the format, may differ from the kernel's.)

`level` is LZ4's *acceleration*, exactly as the kernel passes params->level
to LZ4_compress_fast: not set -> 1 (LZ4_ACCELERATION_DEFAULT); LZ4 itself
treats values below 1 as 1 and clamps above 65537 (LZ4_ACCELERATION_MAX).
We refuse only what python-lz4 cannot pass to C: values outside a C int.

A dictionary (dict=PATH) is supported like the kernel's LZ4_loadDict +
LZ4_compress_fast_continue path: the dictionary (its last 64 KiB) is loaded
into a fresh stream on every call, so compression with a dictionary pays a
dictionary hash per page (measured here: ~9 us/page without, 25-33 us with
a 16-64 KiB dictionary); decompression uses LZ4_decompress_safe_usingDict
and is barely slower.

Cost: on this machine a realistic 4 KiB page takes ~9 us to compress and
~3 us to decompress with the bare python-lz4 call; this wrapper adds
~0.1 us to each (measured on cached pages, interleaved runs).

Thread safety: python-lz4's block functions keep their LZ4 state on the C
stack per call, so there is no context to share; they also drop the GIL.

The accelerator (`zramfs._zpages`, C, linked against the system's liblz4 of
the same LZ4 release python-lz4 bundles, so its blocks are byte-identical):
when it is built and the codec has no dictionary, a request's pages are
compressed and decompressed in one GIL-free call (`compress_pages`,
`decompress_slots`), on two threads when that measures faster, and a single
page goes through C functions without python-lz4's keyword parsing
(`decompress_page`).  Without it (not built, or ``ZRAMFS_NO_ACCEL=1`` in the
environment) everything works page by page through python-lz4, with the
same results.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import replace
from functools import partial
from operator import add
from types import ModuleType
from typing import Final

import lz4.block

from zramfs.backends.base import (
    C_INT_MAX,
    C_INT_MIN,
    DEFAULT_PARAMS,
    PAGE_SIZE,
    AlgoParams,
    Backend,
    Buffer,
    corrupt,
    dictionary_of,
    int_param,
)

NAME: Final = "lz4"
DEFAULT_ACCELERATION: Final = 1  # LZ4_ACCELERATION_DEFAULT, the kernel's default level

# Bound once: attribute lookups on the lz4 package are not free per page.
_compress: Final[Callable[..., bytes]] = lz4.block.compress
_decompress: Final[Callable[..., bytes]] = lz4.block.decompress
_LZ4BlockError: Final[type[Exception]] = lz4.block.LZ4BlockError


def _load_accelerator() -> ModuleType | None:
    if os.environ.get("ZRAMFS_NO_ACCEL"):
        return None
    try:
        from zramfs import _zpages
    except ImportError:  # not built: the pure-Python paths serve
        return None
    return _zpages


_zp: Final = _load_accelerator()
ACCELERATED: Final = _zp is not None
"""Whether the C accelerator (`zramfs._zpages`) is in use."""


class Lz4Codec:
    """LZ4 (fast mode) for one device priority; see the module docstring.

    `compress(src) -> bytes` is a functools.partial of lz4.block.compress with
    this codec's arguments bound in `__init__`: one raw LZ4 block of `src`,
    read in place (a memoryview slice is not copied), with no Python frame
    and no per-call argument building on the hot path. The `dict` argument
    is bound only when there is a dictionary, because even `dict=None`
    costs python-lz4 a measurable extra argument parse per page.  With the
    accelerator, fast mode at the default acceleration binds the C
    `lz4_compress_page` itself instead (the same blocks, no keyword parsing).
    """

    __slots__ = (
        "name",
        "params",
        "compress",
        "_dict",
        "_level",
        "_pages",
        "batch_compress",
        "batch_parallel",
        "decompress_page",
        "decompress_slots",
    )

    def __init__(self, params: AlgoParams = DEFAULT_PARAMS) -> None:
        """Validate params (EINVAL on a non-C-int level or an empty dictionary)."""
        level = DEFAULT_ACCELERATION
        if params.level is not None:
            level = int_param(NAME, "level (acceleration)", params.level, C_INT_MIN, C_INT_MAX)
        self._setup(NAME, params, level, {"mode": "fast", "acceleration": level})

    def _setup(self, name: str, params: AlgoParams, level: int, mode: dict[str, object]) -> None:
        """Shared by lz4 and lz4hc: record params, bind `compress` with `mode` + raw-block args."""
        self.name: str = name
        self.params: AlgoParams = replace(params, level=level)
        self._dict = dictionary_of(name, params)
        kwargs = {**mode, "store_size": False}
        if self._dict is not None:
            kwargs["dict"] = self._dict
        self.compress: Callable[[Buffer], bytes] = partial(_compress, **kwargs)
        self._level = level
        # The accelerator's batch calls (see the module docstring); the
        # device looks for these attributes.
        fast = _zp is not None and self._dict is None
        self.batch_compress = self.batch_parallel = fast
        self._pages: Callable[..., tuple[bytearray, bytes]] | None = None
        self.decompress_page: Callable[[Buffer], bytes] | None = None
        self.decompress_slots: Callable[..., bytes | None] | None = None
        if fast:
            assert _zp is not None
            hc = mode["mode"] == "high_compression"
            self._pages = _zp.lz4hc_compress_pages if hc else _zp.lz4_compress_pages
            self.decompress_page = _zp.lz4_decompress_page
            self.decompress_slots = _zp.lz4_read_slots
            if not hc and level == DEFAULT_ACCELERATION:
                # The same blocks, without python-lz4's keyword parsing.
                self.compress = _zp.lz4_compress_page

    def compress_pages(self, data: Buffer, pos: int, count: int, threads: int) -> list[Buffer]:
        """The blocks of the ``count`` pages of ``data`` from ``pos``, made in
        one GIL-free call of the accelerator on ``threads`` threads: views of
        one buffer, each exactly `compress` of its page, except that

        * a page that does not compress below PAGE_SIZE bytes gets a
          PAGE_SIZE-byte view (the device stores such a page raw, as huge,
          without reading it), and
        * a same-filled page gets an empty view (the device finds those
          itself, with the same test, and never stores a block for them).
        """
        assert self._pages is not None, "compress_pages needs the accelerator"
        out, sizes = self._pages(data, pos, count, self._level, threads)
        mv = memoryview(out)
        starts = range(0, count * PAGE_SIZE, PAGE_SIZE)
        ends = map(add, starts, memoryview(sizes).cast("H"))
        return list(map(mv.__getitem__, map(slice, starts, ends)))

    def decompress(self, src: Buffer, dst_len: int = PAGE_SIZE) -> bytes:
        """Exactly `dst_len` bytes back, or ZramError(EIO).

        `uncompressed_size` is only an upper bound for python-lz4 (it returns
        fewer bytes if the block is shorter), hence the explicit length check.
        """
        one = self.decompress_page
        if one is not None and dst_len == PAGE_SIZE:
            try:
                return one(src)
            except ValueError as e:
                raise corrupt(self.name, str(e)) from None
        try:
            if self._dict is None:
                out = _decompress(src, uncompressed_size=dst_len)
            else:
                out = _decompress(src, uncompressed_size=dst_len, dict=self._dict)
        except _LZ4BlockError as e:
            raise corrupt(self.name, str(e)) from None
        if len(out) != dst_len:
            raise corrupt(self.name, f"decoded {len(out)} bytes, expected {dst_len}")
        return out


BACKEND: Final = Backend(name=NAME, setup=Lz4Codec)
