"""What every compression backend shares: parameters, the codec contract, the ops table.

The kernel splits zram compression into zcomp.c (one generic front end) and
one backend_*.c per algorithm behind a `struct zcomp_ops`. This package has
the same shape: `AlgoParams` is `struct zcomp_params`, `Codec` is a set-up
`struct zcomp` for one device priority, and `Backend` is the ops table each
algorithm module exports as `BACKEND`.

Everything here runs either once per `disksize` write (setup and parameter
validation, which may be slow and must fail with EINVAL like the kernel's
zcomp_create) or once per 4 KiB page (compress/decompress, which must be
thin wrappers around one library call).
"""

from __future__ import annotations

import errno
import os
from collections.abc import Callable
from dataclasses import dataclass
from operator import add
from types import ModuleType
from typing import Any, Protocol, TypeAlias, runtime_checkable

from zramfs.errors import ZramError

PAGE_SIZE = 4096
"""The unit zram compresses; `Codec.decompress` defaults to producing this many bytes."""

Buffer: TypeAlias = bytes | bytearray | memoryview
"""What compress/decompress accept: anything C-contiguous the libraries read without copying."""

C_INT_MIN = -(2**31)
C_INT_MAX = 2**31 - 1


@dataclass(frozen=True)
class AlgoParams:
    """What `algorithm_params` stores for one priority; None = not set (backend default).

    The kernel keeps the same three knobs in `struct zcomp_params` (with
    ZCOMP_PARAM_NOT_SET where we use None). A backend ignores knobs that are
    not its own, except that a dictionary given to an algorithm that cannot
    use one is refused (EINVAL) rather than silently dropped.
    """

    level: int | None = None
    dictionary: bytes | None = None  # contents of the dict=PATH file
    deflate_winbits: int | None = None


DEFAULT_PARAMS = AlgoParams()
"""Nothing set: every backend default. Frozen, so safe as a shared default argument."""


def block_views(out: Buffer, sizes: Buffer, lo: int, hi: int) -> list[Buffer]:
    """Pages ``lo..hi-1`` of a ``compress_blocks`` result ``(out, sizes)`` as
    ``compress_pages`` gives them: views of ``out``, page k's ``sizes[k]``
    (uint16) bytes at ``k * PAGE_SIZE``."""
    mv = memoryview(out)
    starts = range(lo * PAGE_SIZE, hi * PAGE_SIZE, PAGE_SIZE)
    ends = map(add, starts, memoryview(sizes).cast("H")[lo:hi])
    return list(map(mv.__getitem__, map(slice, starts, ends)))


class PendingPages(Protocol):
    """Pages a codec compresses in the background (``compress_pages_begin``)."""

    count: int

    @property
    def finished_ns(self) -> int:
        """``time.perf_counter_ns()`` when the last page was done (read after
        a `wait` that returned ``count``)."""
        ...

    def wait(self, want: int) -> int:
        """Block (the GIL released) until at least ``min(want, count)``
        leading pages are compressed; returns how many are."""
        ...

    def blocks(self) -> tuple[Buffer, Buffer]:
        """The whole range in the block layout, ``(out, sizes)`` as the
        codec's ``compress_blocks`` returns them (pages final up to what
        `wait` returned)."""
        ...


def load_accelerator() -> ModuleType | None:
    """The C accelerator, `zramfs._zpages`, or None: not built (the
    pure-Python paths serve), or turned off with ``ZRAMFS_NO_ACCEL``."""
    if os.environ.get("ZRAMFS_NO_ACCEL"):
        return None
    try:
        from zramfs import _zpages
    except ImportError:
        return None
    return _zpages


class BackgroundPages:
    """`PendingPages` over one of the accelerator's ``*_compress_begin`` calls
    (``zramfs._zpages``: ``begin(data, pos, count, param)``): the pages are
    compressed on its background helper, 16 at a time, while the caller
    stores the ones already done."""

    __slots__ = ("_p", "count")

    def __init__(
        self, begin: Callable[..., Any], param: int, data: Buffer, pos: int, count: int
    ) -> None:
        self._p = begin(data, pos, count, param)
        self.count = count

    def wait(self, want: int) -> int:
        return self._p.wait(want)  # type: ignore[no-any-return]

    @property
    def finished_ns(self) -> int:
        return self._p.finished_ns  # type: ignore[no-any-return]

    def blocks(self) -> tuple[Buffer, Buffer]:
        return self._p.out, self._p.sizes


@runtime_checkable
class Codec(Protocol):
    """A configured compressor for one device priority (the kernel's struct zcomp).

    Thread-safe: compress/decompress may be called concurrently from the trio
    thread and worker threads. Implementations keep library contexts per
    thread (threading.local) or use stateless one-shot library calls; they
    never share a context between threads (a zstd context shared between
    threads crashed on this machine).

    Optional batch interface, probed by the device with ``getattr`` (zstd has
    it; lz4/lz4hc when the C accelerator is built; the rest go page by page):

    * ``batch_compress`` (true) and ``compress_pages(data, pos, count,
      threads)``: every page's compressed form in one GIL-free call.  A page
      compressing to PAGE_SIZE or more may be any PAGE_SIZE-byte buffer (it is
      stored raw), a same-filled page any buffer (it is never stored);
    * ``batch_parallel`` (true): ``threads`` > 1 may pay;
    * ``compress_pages_begin(data, pos, count) -> PendingPages`` (not None,
      only with ``compress_blocks``): the same pages compressed on a
      background thread, readable as they finish, so the caller can store
      the first ones meanwhile;
    * ``compress_blocks(data, pos, count, threads) -> (out, sizes)`` (not
      None): ``compress_pages`` in the accelerator's layout (page k's block at
      ``k * PAGE_SIZE`` of ``out``, its length the uint16 ``sizes[k]``, 0 for
      a same-filled page, PAGE_SIZE for an incompressible one), which
      ``ZsPool.store_batch`` stores with no Python per page;
    * ``batch_decompress`` (true) and ``decompress_pages(blobs, threads)``:
      one PAGE_SIZE buffer per blob;
    * ``decompress_slots(views, attr, handle, first, stop, layout, now,
      threads) -> bytes | None``: a multi-page read straight from the slot
      table and the pool's views (``zramfs._zpages.lz4_read_slots``: the
      device passes its slot-word layout; None when a slot needs the
      general path);
    * ``decompress_page(obj) -> bytes``: one compressed page, no wrapper.
    """

    name: str
    """The algorithm name as listed in comp_algorithm ("lz4", "zstd", ...)."""

    params: AlgoParams
    """The parameters in effect, with backend defaults filled in for `level`
    (and `deflate_winbits` for deflate), like the kernel's setup_params."""

    def compress(self, src: Buffer) -> bytes:
        """Compress `src` (normally one page) into a self-contained blob.

        `src` may be a memoryview slice of a larger buffer; it is read in
        place. The result decodes only with `decompress` of a codec built
        from equal params (same algorithm, same dictionary / winbits).
        """
        ...

    def decompress(self, src: Buffer, dst_len: int = PAGE_SIZE) -> bytes:
        """Undo `compress`: return exactly `dst_len` bytes, the original length.

        Corrupt or truncated input, or input that decodes to any other length,
        raises ZramError(EIO) and nothing else, so the device core can turn it
        into a failed read the way zram_read_page does.
        """
        ...


@dataclass(frozen=True)
class Backend:
    """One algorithm's ops table (the kernel's struct zcomp_ops).

    `setup` validates the params and returns a ready codec, raising
    ZramError(EINVAL) for params the algorithm cannot use; it is called once
    per device priority when disksize is written, never per page.
    """

    name: str
    setup: Callable[[AlgoParams], Codec]


def invalid(backend: str, message: str) -> ZramError:
    """The EINVAL a refused parameter turns into, naming the backend for the log."""
    return ZramError(errno.EINVAL, f"{backend}: {message}")


def corrupt(backend: str, message: str) -> ZramError:
    """The EIO a page that does not decompress turns into (kernel: zram_read_page -EIO)."""
    return ZramError(errno.EIO, f"{backend}: corrupt compressed page: {message}")


def int_param(backend: str, what: str, value: int, lo: int, hi: int) -> int:
    """Return `value` if it is an int in [lo, hi], else raise EINVAL.

    Bounds are the ones the library (or the kernel) enforces; checking them
    here turns a library ValueError/OverflowError at first use into the
    EINVAL the disksize write must report.
    """
    if isinstance(value, bool) or not isinstance(value, int):
        raise invalid(backend, f"{what} must be an integer, not {value!r}")
    if not lo <= value <= hi:
        raise invalid(backend, f"{what} {value} out of range [{lo}, {hi}]")
    return value


def dictionary_of(backend: str, params: AlgoParams) -> bytes | None:
    """The dictionary for a backend that supports one: None or non-empty bytes.

    An empty dict= file is refused (EINVAL): it can only be a mistake, and
    some libraries would silently treat it as "no dictionary".
    """
    d = params.dictionary
    if d is None:
        return None
    if not isinstance(d, bytes | bytearray | memoryview):
        raise invalid(backend, f"dictionary must be bytes, not {type(d).__name__}")
    if len(d) == 0:
        raise invalid(backend, "dictionary is empty")
    return bytes(d)


def no_dictionary(backend: str, params: AlgoParams) -> None:
    """Refuse a dictionary for a backend that cannot use one (EINVAL).

    The kernel would ignore it; refusing is kinder, since a user who set
    dict= expects it to have an effect.
    """
    if params.dictionary is not None:
        raise invalid(backend, "this algorithm does not support a dictionary")
