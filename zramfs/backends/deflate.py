"""deflate: raw deflate streams, like the kernel's drivers/block/zram/backend_deflate.c.

Raw deflate (negative wbits: no zlib header or Adler-32 trailer), as the
kernel's zlib_deflateInit2(..., -winbits, ...).

`level`: not set -> -1 (Z_DEFAULT_COMPRESSION, which zlib runs as 6); valid
-1..9, as zlib itself accepts. `deflate_winbits`: not set -> 11
(DEFLATE_DEF_WINBITS, a 2 KiB window); valid 9..15. Both the kernel's zlib
and CPython's zlib (1.2.13 here) refuse 8 for raw deflate (zlib only maps
8 to 9 for the zlib wrapper), so 8 is EINVAL here too. Out-of-range values
are EINVAL, as the kernel's deflate_create failing in zcomp_create is.

The winbits must be the same for compress and decompress (the kernel's
inflateInit2 also gets -winbits), which holds because both live in one codec.

Measured on 4 KiB pages from /usr/share/doc + /usr/lib/python3.11 tars
(CPU time per page, this machine): winbits 11 costs ~145 us/page and gives
ratio 1.99; winbits 12 costs ~105 us/page with ratio 2.02 (a 2 KiB window has
to slide across a 4 KiB page). We keep the kernel's default 11 for fidelity;
`deflate.winbits=12` is strictly better on 4 KiB pages.

Deviation: zlib.compress uses memLevel 8 where the kernel uses 9
(MAX_MEM_LEVEL). The output differs by ~0.001% in size and the one-call
zlib.compress avoids building a compressobj per page (zlib has no
deflateReset in Python, so nothing can be cached per thread anyway). No
dictionary support (the kernel has none for deflate): a dictionary is EINVAL.

Thread safety: zlib.compress/decompress are one-shot and keep no state.
"""

from __future__ import annotations

import zlib
from dataclasses import replace
from typing import Final

from zramfs.backends.base import (
    DEFAULT_PARAMS,
    PAGE_SIZE,
    AlgoParams,
    Backend,
    Buffer,
    corrupt,
    int_param,
    no_dictionary,
)

NAME: Final = "deflate"
DEFAULT_LEVEL: Final = zlib.Z_DEFAULT_COMPRESSION  # -1, i.e. 6
MIN_LEVEL: Final = -1
MAX_LEVEL: Final = 9
DEFAULT_WINBITS: Final = 11  # DEFLATE_DEF_WINBITS
MIN_WINBITS: Final = 9  # raw deflate: zlib refuses 8
MAX_WINBITS: Final = 15

_compress: Final = zlib.compress
_decompress: Final = zlib.decompress
_ZlibError: Final = zlib.error


class DeflateCodec:
    """Raw deflate at one level and window size for one device priority."""

    __slots__ = ("name", "params", "_level", "_wbits")

    def __init__(self, params: AlgoParams = DEFAULT_PARAMS) -> None:
        """Validate params: EINVAL for level not in -1..9, winbits not in 9..15, a dictionary."""
        no_dictionary(NAME, params)
        level = DEFAULT_LEVEL
        if params.level is not None:
            level = int_param(NAME, "level", params.level, MIN_LEVEL, MAX_LEVEL)
        winbits = DEFAULT_WINBITS
        if params.deflate_winbits is not None:
            winbits = int_param(
                NAME, "deflate.winbits", params.deflate_winbits, MIN_WINBITS, MAX_WINBITS
            )
        self.name: str = NAME
        self.params: AlgoParams = replace(params, level=level, deflate_winbits=winbits)
        self._level = level
        self._wbits = -winbits  # negative: raw deflate, no zlib wrapper

    def compress(self, src: Buffer) -> bytes:
        """One finished raw deflate stream of `src`."""
        return _compress(src, self._level, self._wbits)

    def decompress(self, src: Buffer, dst_len: int = PAGE_SIZE) -> bytes:
        """Exactly `dst_len` bytes back, or ZramError(EIO).

        zlib raises for a truncated stream ("incomplete or truncated stream")
        and for distances beyond the window, so only a wrong length is left
        to check. `dst_len` is only the initial buffer size: deflate cannot
        expand more than ~1032:1, so a corrupt page cannot make this allocate
        more than a few MiB before the length check refuses it.
        """
        try:
            out = _decompress(src, self._wbits, dst_len)
        except _ZlibError as e:
            raise corrupt(self.name, str(e)) from None
        if len(out) != dst_len:
            raise corrupt(self.name, f"decoded {len(out)} bytes, expected {dst_len}")
        return out


BACKEND: Final = Backend(name=NAME, setup=DeflateCodec)
