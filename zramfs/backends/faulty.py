"""A codec that fails on purpose: for fault-injection tests only, never for users.

Nothing in zramfs imports this module, so no mount lists or accepts it.  A test
installs it explicitly, in a daemon it starts itself::

    python -m zramfs.backends.faulty mount -f MNT      # = zramfs mount -f MNT, with
                                                       #   lz4 replaced by FaultyCodec

`install` swaps the ops table of an existing algorithm (``lz4``, the default)
for one whose codec wraps the real one, so ``comp_algorithm`` shows exactly
what it always shows.  The wrapped codec behaves like the real one except
for pages that *begin* with one of the markers below, so a test decides per
page, through the image file alone, what fails and how:

* `COMPRESS_EIO` / `COMPRESS_BUG`: ``compress`` raises ``ZramError(EIO)``
  (a refusal inside the codec contract) / ``RuntimeError`` (a library bug:
  the contract says nothing about compress errors, so the device must cope
  with anything).
* `DECOMPRESS_EIO` / `DECOMPRESS_BUG`: the page compresses and is stored;
  ``decompress`` of it raises ``ZramError(EIO)`` (what `Codec.decompress`
  promises for a corrupt object) / ``RuntimeError`` (a contract violation).

Marker pages must be compressible (marker + zeros, say) or they are stored
raw as HUGE and the codec is never asked to decompress them; they must not be
same-filled (the marker sees to that).
"""

from __future__ import annotations

import errno
import sys
from collections.abc import Callable
from typing import Final

from zramfs import backends
from zramfs.backends.base import PAGE_SIZE, AlgoParams, Backend, Buffer, Codec
from zramfs.errors import ZramError

COMPRESS_EIO: Final = b"FAULTY:COMPRESS-EIO\n"
COMPRESS_BUG: Final = b"FAULTY:COMPRESS-BUG\n"
DECOMPRESS_EIO: Final = b"FAULTY:DECOMPRESS-EIO\n"
DECOMPRESS_BUG: Final = b"FAULTY:DECOMPRESS-BUG\n"
_PREFIX: Final = b"FAULTY:"


class InjectedFault(RuntimeError):
    """What the ``*_BUG`` markers raise: an exception outside the codec contract."""


class FaultyCodec:
    """`inner` with failures on marked pages (see the module docstring)."""

    __slots__ = ("name", "params", "inner")

    def __init__(self, inner: Codec) -> None:
        self.inner = inner
        self.name: str = inner.name
        self.params: AlgoParams = inner.params

    def compress(self, src: Buffer) -> bytes:
        head = bytes(src[: len(COMPRESS_EIO)])
        if head.startswith(_PREFIX):
            if head == COMPRESS_EIO:
                raise ZramError(errno.EIO, f"{self.name}: injected compression failure")
            if head == COMPRESS_BUG:
                raise InjectedFault(f"{self.name}: injected compressor crash")
        return self.inner.compress(src)

    def decompress(self, src: Buffer, dst_len: int = PAGE_SIZE) -> bytes:
        out = self.inner.decompress(src, dst_len)
        if out.startswith(_PREFIX):
            if out.startswith(DECOMPRESS_EIO):
                raise ZramError(errno.EIO, f"{self.name}: injected corrupt page")
            if out.startswith(DECOMPRESS_BUG):
                raise InjectedFault(f"{self.name}: injected decompressor crash")
        return out


def install(name: str = "lz4") -> Callable[[], None]:
    """Make algorithm ``name`` faulty in this process; returns the undo function.

    Only the ops table behind the name changes: codecs created afterwards (at
    the next ``disksize`` write) are `FaultyCodec`; the listing is untouched.
    """
    table = backends._BY_NAME
    real = table[name]

    def setup(params: AlgoParams) -> Codec:
        return FaultyCodec(real.setup(params))

    table[name] = Backend(name=name, setup=setup)

    def uninstall() -> None:
        table[name] = real

    return uninstall


def main(argv: list[str] | None = None) -> int:
    """``zramfs`` with `install` applied first (the test hook's entry point)."""
    from zramfs.cli import main as cli_main

    install()
    return cli_main(argv)


if __name__ == "__main__":
    sys.exit(main())
