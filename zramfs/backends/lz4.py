"""lz4: raw LZ4 blocks, as the kernel's drivers/block/zram/backend_lz4.c writes them.

Format: one LZ4 block with no size header (the kernel knows the page size,
and so do we: `dst_len`), so `lz4.block.decompress(blob, uncompressed_size=4096)`
reads our output, and the kernel's LZ4_decompress_safe would too.

Same blocks as the kernel: zram calls the kernel's LZ4_compress_fast (an LZ4
1.8 port), which parses a page with a 16-bit hash table.  python-lz4 (LZ4
1.9.4, through a fresh stream: a 32-bit table) picks other matches: on the
benchmark's 256 MiB, 89 % of pages came out a different length,
`compr_data_size` 0.7 % larger and 8 % more pages huge, so `mm_stat` was not
the kernel's.  The accelerator
(`zramfs._zpages`, C) has its own implementation of the kernel's parse
(`kz_compress`), so with it every page has the kernel's compressed length,
`compr_data_size`, `huge_pages` and `mem_used_total` included
(tests/test_fidelity.py checks them against /dev/zram0).  Without the
accelerator (not built, or ``ZRAMFS_NO_ACCEL=1``) compression falls back to
python-lz4: valid blocks, the same data back, sizes within ~0.5 % of the
kernel's.

`level` is LZ4's *acceleration*, exactly as the kernel passes params->level
to LZ4_compress_fast: not set -> 1 (LZ4_ACCELERATION_DEFAULT); values below
1 count as 1; large values behave as in the kernel, whose search counter
(``acceleration << 6``, 32 bits) wraps, except multiples of 2**26: there the
kernel's counter wraps to 0 and it stores corrupt blocks (seen on this
machine's zram0), and we compress at LZ4's maximum, 65537, instead.  We
refuse only what cannot be passed to C: values outside a C int.

A dictionary (dict=PATH) is supported like the kernel's LZ4_loadDict +
LZ4_compress_fast_continue path, through python-lz4: the dictionary (its
last 64 KiB) is loaded into a fresh stream on every call, so compression
with a dictionary pays a dictionary hash per page (measured here: ~9 us/page
without, 25-33 us with a 16-64 KiB dictionary); decompression uses
LZ4_decompress_safe_usingDict and is barely slower.

Cost: on this machine a realistic 4 KiB page takes ~9 us to compress and
~3 us to decompress.

Thread safety: python-lz4's block functions and the accelerator keep their
LZ4 state per call, so there is no context to share; both drop the GIL for
batches.

With the accelerator and no dictionary, a request's pages are compressed
and decompressed in one GIL-free call (`compress_pages`, `decompress_slots`),
on two threads when that measures faster, and a single page goes through C
functions without python-lz4's keyword parsing (`compress`,
`decompress_page`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from functools import partial
from typing import Final

import lz4.block

from zramfs.backends.base import (
    C_INT_MAX,
    C_INT_MIN,
    DEFAULT_PARAMS,
    PAGE_SIZE,
    AlgoParams,
    Backend,
    BackgroundPages,
    Buffer,
    PendingPages,
    block_views,
    corrupt,
    dictionary_of,
    int_param,
    load_accelerator,
)

NAME: Final = "lz4"
DEFAULT_ACCELERATION: Final = 1  # LZ4_ACCELERATION_DEFAULT, the kernel's default level

# Bound once: attribute lookups on the lz4 package are not free per page.
_compress: Final[Callable[..., bytes]] = lz4.block.compress
_decompress: Final[Callable[..., bytes]] = lz4.block.decompress
_LZ4BlockError: Final[type[Exception]] = lz4.block.LZ4BlockError


_zp: Final = load_accelerator()
ACCELERATED: Final = _zp is not None
"""Whether the C accelerator (`zramfs._zpages`) is in use."""


class Lz4Codec:
    """LZ4 (fast mode) for one device priority; see the module docstring.

    `compress(src) -> bytes`: one raw LZ4 block of `src`, read in place (a
    memoryview slice is not copied), with no per-call argument building on
    the hot path.  With the accelerator (fast mode, no dictionary) it is the
    C `lz4_compress_page` (the kernel's blocks), else a functools.partial of
    lz4.block.compress with this codec's arguments bound in `__init__`; the
    `dict` argument is bound only when there is a dictionary, because even
    `dict=None` costs python-lz4 a measurable extra argument parse per page.
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
        "compress_pages_begin",
        "compress_blocks",
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
        self.compress_pages_begin: Callable[[Buffer, int, int], PendingPages] | None = None
        self.compress_blocks: Callable[..., tuple[bytearray, bytes]] | None = None
        self.decompress_page: Callable[[Buffer], bytes] | None = None
        self.decompress_slots: Callable[..., bytes | None] | None = None
        if fast:
            assert _zp is not None
            hc = mode["mode"] == "high_compression"
            self._pages = _zp.lz4hc_compress_pages if hc else _zp.lz4_compress_pages
            self.decompress_page = _zp.lz4_decompress_page
            self.decompress_slots = _zp.lz4_read_slots
            self.compress_blocks = self._compress_blocks
            if not hc:
                self.compress_pages_begin = partial(
                    BackgroundPages, _zp.lz4_compress_begin, level
                )
                # The kernel's blocks (the batch calls make the same), and
                # no python-lz4 keyword parsing.
                self.compress = (
                    _zp.lz4_compress_page
                    if level == DEFAULT_ACCELERATION
                    else partial(_page_at, _zp.lz4_compress_page, level)
                )

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
        out, sizes = self._compress_blocks(data, pos, count, threads)
        return block_views(out, sizes, 0, count)

    def _compress_blocks(
        self, data: Buffer, pos: int, count: int, threads: int
    ) -> tuple[bytearray, bytes]:
        """`compress_pages` as the accelerator lays it out: ``(out, sizes)``,
        page k's block at ``k * PAGE_SIZE`` of ``out``, its length the uint16
        ``sizes[k]`` (0: same-filled, PAGE_SIZE: incompressible)."""
        assert self._pages is not None, "compress_pages needs the accelerator"
        return self._pages(data, pos, count, self._level, threads)

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


def _page_at(page_fn: Callable[[Buffer, int], bytes], acceleration: int, src: Buffer) -> bytes:
    """``page_fn(src, acceleration)``: the accelerator's one-page call with
    its positional acceleration bound (functools.partial binds only leading
    arguments)."""
    return page_fn(src, acceleration)


BACKEND: Final = Backend(name=NAME, setup=Lz4Codec)
