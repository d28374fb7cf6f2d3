"""The bare benchmark file system with an ``Operations.read_nowait`` and a
``write_nowait`` that exercise every branch of the contract our pyfuse3 patch
adds (patches/pyfuse3-3.5.0-nowait.patch); tests/test_pyfuse3_patch.py reads
and writes its image through a real mount.

Which branch a read takes depends on the 4 KiB page it starts in; the async
`read` (the bytearray, all zeros) answers whatever `read_nowait` passes on:

=====  ==========================================  =====================
page   read_nowait                                 the reader gets
=====  ==========================================  =====================
0      returns ``b"N" * size``                     ``N`` bytes
1      returns None                                zeros (async `read`)
2      raises ``FUSEError(ENOLINK)``               ENOLINK
3      raises RuntimeError                         zeros (logged)
4      returns 42 (not a buffer)                   zeros (logged)
5      returns ``memoryview(b"M" * size)``         ``M`` bytes
=====  ==========================================  =====================

and the async `write` (into the bytearray) whatever `write_nowait` passes on:

=====  ==========================================  =====================
page   write_nowait                                the writer gets
=====  ==========================================  =====================
8      returns ``len(buf)``, stores nothing        success; zeros stay
9      returns None                                success; data stored
10     raises ``FUSEError(ENOLINK)``               ENOLINK
11     raises RuntimeError                         success; data stored
12     returns 1                                   a 1-byte write
=====  ==========================================  =====================

Bursts (patches/pyfuse3-3.5.0-burst.patch): a read of page 14 starts a
*ticker*, a system task that does nothing but pass checkpoints, and returns
``S`` bytes; every read of page 13 returns ``B`` bytes and counts the page-13
reads answered since the ticker last ran (its *streak*); a read of page 15
stops the ticker and returns the longest streak, in ASCII.  Without bursts
every worker passes a checkpoint (the read lock) between two requests, so the
ticker runs between any two and the longest streak is 1.

Run as ``python -m tests.nowait_fs [--burst N] --size N MNT`` (``--burst``:
``pyfuse3.NOWAIT_BURST``).
"""

from __future__ import annotations

import errno
import sys

import pyfuse3
import trio

from benchmarks import bare_fs

PAGE = 4096


class ContractOperations(bare_fs.BareOperations):
    streak = 0
    longest = 0
    ticking = False

    async def _ticker(self) -> None:
        while self.ticking:
            self.streak = 0
            await trio.lowlevel.checkpoint()

    def read_nowait(self, fh: int, off: int, size: int) -> object:
        page = off // PAGE
        if page == 13:
            self.streak += 1
            self.longest = max(self.longest, self.streak)
            return b"B" * size
        if page == 14:
            self.streak = self.longest = 0
            if not self.ticking:
                self.ticking = True
                trio.lowlevel.spawn_system_task(self._ticker)
            return b"S" * size
        if page == 15:
            self.ticking = False
            return str(self.longest).encode().ljust(size)[:size]
        if page == 0:
            return b"N" * size
        if page == 2:
            raise pyfuse3.FUSEError(errno.ENOLINK)
        if page == 3:
            raise RuntimeError("read_nowait failed on purpose")
        if page == 4:
            return 42
        if page == 5:
            return memoryview(b"M" * size)
        return None

    def write_nowait(self, fh: int, off: int, buf: bytes) -> int | None:
        page = off // PAGE
        if page == 8:
            return len(buf)
        if page == 10:
            raise pyfuse3.FUSEError(errno.ENOLINK)
        if page == 11:
            raise RuntimeError("write_nowait failed on purpose")
        if page == 12:
            return 1
        return None


if __name__ == "__main__":
    argv = sys.argv[1:]
    if "--burst" in argv:
        i = argv.index("--burst")
        pyfuse3.NOWAIT_BURST = int(argv[i + 1])
        del argv[i : i + 2]
    sys.exit(bare_fs.main(argv, ops_class=ContractOperations))
