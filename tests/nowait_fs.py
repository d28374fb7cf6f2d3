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

Run as ``python -m tests.nowait_fs --size N MNT``.
"""

from __future__ import annotations

import errno
import sys

import pyfuse3

from benchmarks import bare_fs

PAGE = 4096


class ContractOperations(bare_fs.BareOperations):
    def read_nowait(self, fh: int, off: int, size: int) -> object:
        page = off // PAGE
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
    sys.exit(bare_fs.main(ops_class=ContractOperations))
