"""The bare benchmark file system deferring its writes (our pyfuse3 patch,
patches/pyfuse3-3.5.0-defer.patch): ``write_nowait`` returns
``pyfuse3.DEFERRED`` for every write of more than one page, keeping a slice
of the request's view, and stores it later: when the next write comes (then
answering it with ``pyfuse3.reply_deferred`` from inside that handler), or
in ``write_drain``.  tests/test_pyfuse3_patch.py drives it through a real
mount and a loop device.

A write at page 40 is deferred and then "forgotten" by ``write_drain``
(pyfuse3 must answer it with EIO).  A read of page 22 answers, in ASCII:
``deferred=N later=M drained=D coroutine-saw-deferred=C``: writes deferred,
those answered from a later write's handler, those finished by
``write_drain``, and how many times an async handler ran while a deferred
write was outstanding (the patch promises never).

Run as ``python -m tests.defer_fs --size N MNT``.
"""

from __future__ import annotations

import sys

import pyfuse3

from benchmarks import bare_fs

PAGE = 4096
FORGOTTEN = 40


class DeferOperations(bare_fs.BareOperations):
    write_views = True

    def __init__(self, size: int) -> None:
        super().__init__(size)
        self.outstanding: list[tuple[int, memoryview]] = []
        self.deferred = self.later = self.drained = self.violations = 0

    def _finish(self) -> None:
        off, view = self.outstanding.pop(0)
        if off // PAGE == FORGOTTEN:
            self.outstanding.insert(0, (off, view))  # left for pyfuse3's EIO
            return
        self.data[off : off + len(view)] = view
        pyfuse3.reply_deferred(len(view))

    def write_nowait(self, fh: int, off: int, buf: bytes) -> object:
        if self.outstanding and self.outstanding[0][0] // PAGE != FORGOTTEN:
            self._finish()  # answered from this later request's handler
            self.later += 1
        if len(buf) <= PAGE or not isinstance(buf, memoryview):
            return None
        self.outstanding.append((off, memoryview(buf)[:]))  # a slice: pyfuse3 hands its buffer over
        self.deferred += 1
        return pyfuse3.DEFERRED

    def write_drain(self) -> None:
        while self.outstanding and self.outstanding[0][0] // PAGE != FORGOTTEN:
            self._finish()
            self.drained += 1
        self.outstanding.clear()  # the forgotten one: pyfuse3 answers EIO

    async def write(self, fh: int, off: int, buf: bytes) -> int:
        self.violations += bool(self.outstanding)
        return await super().write(fh, off, buf)

    async def read(self, fh: int, off: int, size: int) -> bytes:
        self.violations += bool(self.outstanding)
        return await super().read(fh, off, size)

    def read_nowait(self, fh: int, off: int, size: int) -> object:
        if off // PAGE != 22:
            return None
        report = (
            f"deferred={self.deferred} later={self.later} drained={self.drained}"
            f" coroutine-saw-deferred={self.violations}"
        )
        return report.encode().ljust(size)[:size]


if __name__ == "__main__":
    sys.exit(bare_fs.main(sys.argv[1:], ops_class=DeferOperations))
