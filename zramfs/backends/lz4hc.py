"""lz4hc: LZ4 high-compression mode, the kernel's drivers/block/zram/backend_lz4hc.c.

LZ4HC writes ordinary LZ4 blocks (raw, no size header), so decompression is
lz4's and lives in `Lz4Codec`; only compression differs.

`level` is the LZ4HC compression level. Not set -> 9 (LZ4HC_CLEVEL_DEFAULT,
the kernel's default). Like the kernel we pass the level straight through
and let LZ4 clamp it: below 1 means the default 9, above 12 means 12
(LZ4HC_CLEVEL_MAX). So 1..12 are the distinct levels, and we refuse only
what python-lz4 cannot pass to C (values outside a C int).

A dictionary works as in the kernel (LZ4_loadDictHC + LZ4_compress_HC_continue),
but loading it is an HC hash of up to 64 KiB per page: expect several times
slower compression than without one.
"""

from __future__ import annotations

from typing import Final

from zramfs.backends.base import (
    C_INT_MAX,
    C_INT_MIN,
    DEFAULT_PARAMS,
    AlgoParams,
    Backend,
    int_param,
)
from zramfs.backends.lz4 import Lz4Codec

NAME: Final = "lz4hc"
DEFAULT_LEVEL: Final = 9  # LZ4HC_CLEVEL_DEFAULT (lz4.block._block.HC_LEVEL_DEFAULT)
MAX_LEVEL: Final = 12  # LZ4HC_CLEVEL_MAX; higher levels behave as this


class Lz4hcCodec(Lz4Codec):
    """LZ4HC for one device priority; decompression is inherited from lz4.

    `compress(src) -> bytes` is bound in `__init__` as for lz4, here with
    mode="high_compression" and compression=level.
    """

    __slots__ = ()

    def __init__(self, params: AlgoParams = DEFAULT_PARAMS) -> None:
        """Validate params (EINVAL on a non-C-int level or an empty dictionary)."""
        level = DEFAULT_LEVEL
        if params.level is not None:
            level = int_param(NAME, "level", params.level, C_INT_MIN, C_INT_MAX)
        self._setup(NAME, params, level, {"mode": "high_compression", "compression": level})


BACKEND: Final = Backend(name=NAME, setup=Lz4hcCodec)
