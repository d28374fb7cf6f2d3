"""Typed stub of the C extension zramfs._zpages (source: zramfs/_zpages.c).

Batch LZ4 / LZ4HC page loops: see the module and function docstrings in the
C source for the full contract (sizes, same-filled pages, store-raw, GIL).
"""

from collections.abc import Sequence
from typing import Final

from typing_extensions import Buffer

PAGE_SIZE: Final[int]
"""4096: the page size every call works in."""

LZ4_VERSION: Final[str]
"""LZ4_versionString() of the linked liblz4, e.g. "1.9.4"."""

ZSTD_VERSION: Final[str]
"""ZSTD_versionString() of the zstd compiled in, e.g. "1.5.7"; absent, with the
``zstd_*`` calls, in a module built without zstd (setup.py)."""

HANDLE_SEG_SHIFT: Final[int]
HANDLE_OFF_MASK: Final[int]
"""The zsmalloc handle layout zs_store / zs_free / write_nowait were built
for (zramfs.core.zsmalloc uses them only if it is the module's own)."""

def lz4_compress_pages(
    src: Buffer, pos: int, count: int, acceleration: int, threads: int, /
) -> tuple[bytearray, bytes]:
    """LZ4 fast mode over ``count`` pages of ``src`` from ``pos``, GIL released.

    Returns ``(out, sizes)``: ``out`` holds page k's block at ``k*4096``,
    ``sizes`` is ``count`` little-endian uint16: 0 same-filled, 4096 store
    raw, else the block's length (the kernel's LZ4_compress_fast block).
    """

def lz4hc_compress_pages(
    src: Buffer, pos: int, count: int, level: int, threads: int, /
) -> tuple[bytearray, bytes]:
    """``lz4_compress_pages`` with LZ4HC at ``level`` (python-lz4 high_compression)."""

class Pending:
    """Pages being compressed on the module's background helper."""

    count: int
    out: bytearray
    sizes: bytearray
    finished_ns: int

    def wait(self, want: int, /) -> int:
        """Block (GIL released) until >= min(want, count) leading pages are
        final; returns how many are.  RuntimeError in a fork()ed child for a
        batch begun in the parent."""

def lz4_compress_begin(src: Buffer, pos: int, count: int, acceleration: int, /) -> Pending:
    """``lz4_compress_pages``'s blocks, made on a background thread while the
    caller goes on; a busy helper means they are made before this returns."""

def zstd_compress_pages(
    src: Buffer, pos: int, count: int, level: int, threads: int, /
) -> tuple[bytearray, bytes]:
    """``lz4_compress_pages`` with zstd frames at ``level`` (the kernel's
    backend_zstd parameters; python-zstandard's frames)."""

def zstd_compress_begin(src: Buffer, pos: int, count: int, level: int, /) -> Pending:
    """``lz4_compress_begin`` with ``zstd_compress_pages``'s frames."""

def zstd_decompress_pages(objs: Sequence[Buffer], threads: int, /) -> bytes:
    """``lz4_decompress_pages`` for zstd frames (each exactly one frame of a page)."""

def zstd_read_slots(
    views: Sequence[Buffer],
    attr: Buffer,
    handle: Buffer,
    first: int,
    stop: int,
    layout: tuple[int, int, int, int, int, int],
    now: int,
    threads: int,
    /,
) -> bytes | None:
    """``lz4_read_slots`` for a device whose objects are zstd frames."""

def lz4_decompress_pages(objs: Sequence[Buffer], threads: int, /) -> bytes:
    """One page per object (b"" -> zeros, 4096 bytes -> raw copy, else an LZ4
    block of exactly 4096 bytes or ValueError naming the page), GIL released."""

def lz4_decompress_gather(
    views: Sequence[Buffer],
    segs: Sequence[int],
    offs: Sequence[int],
    sizes: Sequence[int],
    fills: Sequence[tuple[int, int]],
    threads: int,
    /,
) -> bytes:
    """``lz4_decompress_pages`` of ``views[segs[k]][offs[k]:offs[k]+sizes[k]]``
    (a size-0 page's place is not read), then every ``(k, word)`` of ``fills``
    makes page k that 8-byte word repeated; GIL released."""

def lz4_read_slots(
    views: Sequence[Buffer],
    attr: Buffer,
    handle: Buffer,
    first: int,
    stop: int,
    layout: tuple[int, int, int, int, int, int],
    now: int,
    threads: int,
    /,
) -> bytes | None:
    """``lz4_decompress_gather`` of slots ``first..stop-1`` of a slot table
    (uint64 ``attr``/``handle`` buffers) decoded in C with ``layout`` =
    (slow, size_mask, same, keep, seg_shift, off_mask): None if a slot has a
    ``slow`` bit, else the pages, and each slot holding one stamped
    ``attr = attr & keep | now``; GIL released."""

def lz4_decompress_page(obj: Buffer, /) -> bytes:
    """One LZ4 block back to exactly 4096 bytes, or ValueError; keeps the GIL."""

def lz4_compress_page(page: Buffer, acceleration: int = 1, /) -> bytes:
    """One LZ4 fast-mode block of ``page`` (the kernel's, up to 65535 bytes); keeps the GIL."""

def zs_fill(
    cls: object,
    zspages: list[int] | None,
    ks: list[int],
    i: int,
    blobs: list[Buffer],
    sizes: list[int],
    owners: list[int],
    handles: list[int],
    /,
) -> int:
    """``ZsPool.store_many``'s fill loop for one non-huge class on the pool's
    own state: objects ``ks[i:]`` into fresh ``zspages`` or, if None, the
    class's partial zspages fullest first; returns the next index in ``ks``."""

def zs_store_batch(
    pool: object,
    out: Buffer | list[Buffer],
    sizes: Buffer,
    lo: int,
    hi: int,
    data: Buffer,
    pos: int,
    first: int,
    handle: Buffer,
    attr: Buffer,
    bits: int,
    huge_bit: int,
    same_bit: int,
    /,
) -> tuple[int, int, int]:
    """``ZramDevice._commit_fresh`` of pages ``lo..hi-1`` of an accelerator
    batch ``(out, sizes)``, or of a list of any codec's frames ``out`` with
    their ``sizes``, into empty slots ``first..`` of a table, on the pool's
    own state (`ZsPool.store_batch`): ``(compressed bytes, huge pages,
    same-filled pages)``."""

def zs_alloc_zspages(
    pool: object, cls: object, n: int, dontneed: object, /
) -> list[tuple[int, int]] | int:
    """`ZsPool._alloc_zspages` with ``MADV_POPULATE_WRITE``: the runs
    ``(first slot, count)``, or the madvise's errno (nothing allocated)."""

def read_nowait(
    cfg: tuple[object, ...], fh: int, off: int, size: int, /
) -> bytes | None:
    """pyfuse3's ``Operations.read_nowait`` for zramfs: see
    `zramfs.core.device.read_fast_path`, which binds ``cfg``.  Never raises
    for a request: None means "take the async read"."""

def zs_store(pool: object, data: Buffer, owner: int, /) -> int:
    """``ZsPool.store`` on the pool's own Python state (the same zspage,
    object and fullness-list order): the new object's handle."""

def zs_free(pool: object, handle: int, /) -> None:
    """``ZsPool.free`` on the pool's own Python state; ValueError, nothing
    changed, for an invalid or stale handle."""

def write_nowait(cfg: tuple[object, ...], fh: int, off: int, buf: Buffer, /) -> int | None:
    """pyfuse3's ``Operations.write_nowait`` for zramfs: see
    `zramfs.core.device.write_fast_path`, which binds ``cfg``.  The common
    4 KiB image write here, anything else ``cfg``'s fallback."""

def boottime_seconds() -> int:
    """``(u32)ktime_get_boottime_seconds()``."""
