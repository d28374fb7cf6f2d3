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


class Lz4Codec:
    """LZ4 (fast mode) for one device priority; see the module docstring.

    `compress(src) -> bytes` is a functools.partial of lz4.block.compress with
    this codec's arguments bound in `__init__`: one raw LZ4 block of `src`,
    read in place (a memoryview slice is not copied), with no Python frame
    and no per-call argument building on the hot path. The `dict` argument
    is bound only when there is a dictionary, because even `dict=None`
    costs python-lz4 a measurable extra argument parse per page.
    """

    __slots__ = ("name", "params", "compress", "_dict")

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

    def decompress(self, src: Buffer, dst_len: int = PAGE_SIZE) -> bytes:
        """Exactly `dst_len` bytes back, or ZramError(EIO).

        `uncompressed_size` is only an upper bound for python-lz4 (it returns
        fewer bytes if the block is shorter), hence the explicit length check.
        """
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
