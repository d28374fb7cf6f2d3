"""A write's data as a read-only memoryview (``WriteData``).

zramfs sets pyfuse3's ``Operations.write_views`` (our pyfuse3 patch), so the
image's writes arrive as read-only views of pyfuse3's receive buffer, valid
only during the call.  Every write path of the device must take them as it
takes ``bytes`` (same stored pages, same ``mm_stat``), and keep no buffer
derived from them once the call has returned (pyfuse3 would then have to
hand its buffer over; patches/README.md).
"""

from __future__ import annotations

import random

import pytest

from tests.devutil import mm
from zramfs.backends import BACKEND_NAMES
from zramfs.core.device import ZramDevice

PAGE = 4096


def _pages(rng: random.Random, n: int) -> bytes:
    """Same-filled (zeros, a repeated word), compressible, incompressible."""
    out = []
    for _ in range(n):
        kind = rng.randrange(4)
        if kind == 0:
            out.append(bytes(PAGE))
        elif kind == 1:
            out.append(rng.randbytes(8) * (PAGE // 8))
        elif kind == 2:
            out.append((b"zramfs %d " % rng.randrange(1000)) * 400)
        else:
            out.append(rng.randbytes(PAGE))
    return b"".join(p[:PAGE] for p in out)


async def write_view(dev: ZramDevice, off: int, data: bytes) -> int:
    """`ZramDevice.write` of ``data`` as a read-only view, then proof that
    nothing derived from the view outlived the call: its exporter, a
    bytearray, can be resized only when no buffer of it is left."""
    ba = bytearray(data)
    view = memoryview(ba).toreadonly()
    n = await dev.write(off, view)
    view.release()
    ba.append(0)  # BufferError if the device kept a slice of the view
    return n


@pytest.mark.parametrize("alg", BACKEND_NAMES)
async def test_view_writes_store_what_bytes_writes_store(alg: str) -> None:
    """Fresh batches (1 MiB, as pyfuse3 delivers them), overwrites, a single
    page (the nowait path), unaligned heads and tails (read-modify-write),
    one byte: the view-fed device ends byte for byte and counter for counter
    where the bytes-fed one does."""
    rng = random.Random(alg)
    devs = []
    for i in range(2):
        dev = ZramDevice(i, clock=lambda: 1000)
        await dev.store_comp_algorithm(alg.encode())
        await dev.store_disksize(b"8M")
        devs.append(dev)
    by_bytes, by_view = devs
    writes = [
        (0, _pages(rng, 256)),  # fresh batch
        (1 << 20, _pages(rng, 64)),
        (64 * PAGE, _pages(rng, 96)),  # overwrites
        (3 << 20, _pages(rng, 1)),  # one page into a free slot
        (5 * PAGE, _pages(rng, 1)),  # one page over a stored one
        (2 * PAGE + 100, _pages(rng, 3)[:-300]),  # unaligned both ends
        ((4 << 20) - 1000, _pages(rng, 2)),  # unaligned, spanning fresh pages
        (7 * PAGE + 5, b"x"),
    ]
    try:
        for off, data in writes:
            assert await by_bytes.write(off, data) == len(data)
            assert await write_view(by_view, off, data) == len(data)
        size = 8 << 20
        assert await by_view.read(0, size) == await by_bytes.read(0, size)
        assert mm(by_view) == mm(by_bytes)
        assert mm(by_view)[0] > 0
    finally:
        for dev in devs:
            await dev.reset()
