"""Compression backends: the userspace zcomp.c and its backend_*.c modules.

Each algorithm is one small module exporting `BACKEND` (a `Backend` ops
table: name + setup). Adding an algorithm is one module plus one entry in
`_BACKENDS`; `BACKEND_NAMES` (the comp_algorithm listing order) and
`create_codec` follow from it.

Submodules are named after their algorithm (`zramfs.backends.lz4`, ...);
inside them `import lz4.block` etc. are absolute imports and reach the real
libraries, so the names do not shadow anything.
"""

from __future__ import annotations

import errno

from zramfs.backends import brotli, deflate, lz4, lz4hc, zstd
from zramfs.backends.base import DEFAULT_PARAMS, PAGE_SIZE, AlgoParams, Backend, Buffer, Codec
from zramfs.errors import ZramError

__all__ = [
    "BACKEND_NAMES",
    "DEFAULT_ALGORITHM",
    "DEFAULT_PARAMS",
    "PAGE_SIZE",
    "AlgoParams",
    "Backend",
    "Buffer",
    "Codec",
    "create_codec",
    "get_backend",
]

_BACKENDS: tuple[Backend, ...] = (
    lz4.BACKEND,
    lz4hc.BACKEND,
    zstd.BACKEND,
    deflate.BACKEND,
    brotli.BACKEND,
)
_BY_NAME: dict[str, Backend] = {b.name: b for b in _BACKENDS}

BACKEND_NAMES: tuple[str, ...] = tuple(b.name for b in _BACKENDS)
"""("lz4", "lz4hc", "zstd", "deflate", "brotli"): the comp_algorithm listing order."""

DEFAULT_ALGORITHM = "lz4"
"""What a fresh device uses, as the kernel's CONFIG_ZRAM_DEF_COMP defaults to lz4 (lzo-rle
before 6.x; we have no lzo)."""


def get_backend(name: str) -> Backend:
    """The ops table for `name`; ZramError(EINVAL) if there is no such algorithm.

    This is what a comp_algorithm / recomp_algorithm store checks before it
    accepts a name (the kernel's zcomp_available_algorithm).
    """
    try:
        return _BY_NAME[name]
    except (KeyError, TypeError):
        raise ZramError(errno.EINVAL, f"unknown compression algorithm {name!r}") from None


def create_codec(name: str, params: AlgoParams = DEFAULT_PARAMS) -> Codec:
    """Set up algorithm `name` with `params` (the kernel's zcomp_create).

    Raises ZramError(EINVAL) for an unknown name and for params the backend
    refuses (level out of range, winbits out of range, a dictionary given to
    an algorithm that takes none, an empty or unusable dictionary). Called
    when disksize is written, once per priority; the codec is then used for
    every page and is safe to share between threads.
    """
    return get_backend(name).setup(params)
