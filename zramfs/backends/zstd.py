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
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import replace
from typing import Final

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

    def __init__(self, level: int, dictionary: bytes | None) -> None:
        zdict = None if dictionary is None else zstandard.ZstdCompressionDict(dictionary)
        self.compress = zstandard.ZstdCompressor(
            level=level,
            dict_data=zdict,
            write_checksum=False,
            write_content_size=False,
            write_dict_id=False,
        ).compress
        self.decompress = zstandard.ZstdDecompressor(dict_data=zdict).decompress


class ZstdCodec:
    """zstd at one level (and optional dictionary) for one device priority."""

    __slots__ = ("name", "params", "_tls")

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


BACKEND: Final = Backend(name=NAME, setup=ZstdCodec)
