"""brotli: Brotli streams (not in the kernel; an extra, denser-than-zstd option).

`level` is Brotli's quality, 0..11 (what the library accepts; anything else
is EINVAL). The window is fixed at lgwin=12 (4080 bytes; the library minimum
is 10): a page is 4 KiB, so a larger window buys nothing but encoder memory
(see the table below).
No dictionary support (python-brotli has no custom-dictionary API): EINVAL.

Default quality 5, chosen by measurement on 2985 4 KiB pages sampled from
tars of /usr/share/doc and /usr/lib/python3.11 (CPU time per page on this
machine, zero pages excluded; ratio = input bytes / output bytes; lgwin 12):

    quality   compress   decompress   ratio
    0           48 us       24 us     1.82
    1           46 us       23 us     1.90
    3           92 us       20 us     1.98
    4          113 us       20 us     2.01
    5          116 us       16 us     2.08
    6          122 us       16 us     2.08
    9          168 us       16 us     2.08
    11        8050 us       22 us     2.17
    same pages, zstd 3: 23 us, 1.98; zstd 19: 1300 us, 2.06
    quality 5 by lgwin: 10 -> 2.033, 11 -> 2.066, 12 -> 2.077, 13 -> 2.077, 16 -> 2.078

Quality 5 is the knee: 3% denser than 4 for 2% more time (and faster to
decode), while 6..9 add time for no ratio until the very slow 10-11. At 3
and below brotli loses to zstd's default on both axes, so a brotli device
only makes sense from 4 up; quality 5 beats zstd level 19's ratio in ~1/11 of
its time. lgwin 12 is the smallest window with no measurable loss.

Cost notes: python-brotli has no one-shot compress in C and no way to reset
an encoder, so each page builds one Compressor (~1 us, negligible next to
the encoding). Decompression uses a Decompressor with an output limit rather
than brotli.decompress, so a corrupt page cannot expand without bound; that
costs ~1.5 us/page more than brotli.decompress (~18 us).
Both objects are per call, so there is nothing to share between threads.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import Any, Final

import brotli

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

NAME: Final = "brotli"
DEFAULT_QUALITY: Final = 5
MIN_QUALITY: Final = 0
MAX_QUALITY: Final = 11
LGWIN: Final = 12  # window 2**12 - 16 bytes; ratio equal to lgwin 13..16 on 4 KiB pages

_Compressor: Final[Callable[..., Any]] = brotli.Compressor
_Decompressor: Final[Callable[[], Any]] = brotli.Decompressor
_BrotliError: Final[type[Exception]] = brotli.error


class BrotliCodec:
    """Brotli at one quality for one device priority."""

    __slots__ = ("name", "params", "_quality")

    def __init__(self, params: AlgoParams = DEFAULT_PARAMS) -> None:
        """Validate params: EINVAL for a quality outside 0..11 or a dictionary."""
        no_dictionary(NAME, params)
        quality = DEFAULT_QUALITY
        if params.level is not None:
            quality = int_param(NAME, "level (quality)", params.level, MIN_QUALITY, MAX_QUALITY)
        self.name: str = NAME
        self.params: AlgoParams = replace(params, level=quality)
        self._quality = quality

    def compress(self, src: Buffer) -> bytes:
        """One complete brotli stream of `src`."""
        enc = _Compressor(quality=self._quality, lgwin=LGWIN)
        head: bytes = enc.process(src)  # normally empty: the encoder buffers a whole page
        tail: bytes = enc.finish()
        return head + tail if head else tail

    def decompress(self, src: Buffer, dst_len: int = PAGE_SIZE) -> bytes:
        """Exactly `dst_len` bytes back, or ZramError(EIO).

        The decoder stops growing its output once it reaches `dst_len`; a
        stream that is then not finished (truncated, or longer than
        `dst_len`) is corrupt, as is trailing data after the stream.
        """
        dec = _Decompressor()
        try:
            out: bytes = dec.process(src, output_buffer_limit=dst_len)
        except _BrotliError as e:
            raise corrupt(self.name, str(e)) from None
        if not dec.is_finished():
            raise corrupt(self.name, "stream truncated or longer than the page")
        if len(out) != dst_len:
            raise corrupt(self.name, f"decoded {len(out)} bytes, expected {dst_len}")
        return out


BACKEND: Final = Backend(name=NAME, setup=BrotliCodec)
