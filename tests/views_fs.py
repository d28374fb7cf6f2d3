"""The bare benchmark file system with ``Operations.write_views`` set (our
pyfuse3 patch, patches/pyfuse3-3.5.0-views.patch): `write` and `write_nowait`
get a read-only memoryview of the request.  tests/test_pyfuse3_patch.py
writes through a real mount and reads back what the handlers saw.

Writes store into the bytearray as the bare FS does; some also keep what the
contract says a handler may keep, or must not use, after it returns:

=====  ===============  ===============================================
page   handler          keeps
=====  ===============  ===============================================
20     async `write`    a slice of the view, and a copy of its bytes
21     async `write`    the view itself
23     `write_nowait`   a slice of the view, and a copy of its bytes
=====  ===============  ===============================================

(other pages: `write_nowait` passes every write on to `write`).  A read of
page 22 answers, in ASCII: the types the handlers got (``memoryview`` or
``bytes``, ``ro`` when read-only), whether the two kept slices still hold
the bytes they were written with (``ok``, else ``CHANGED``), and whether
using the kept view raises ValueError after its handler returned
(``released``).

Run as ``python -m tests.views_fs --size N MNT``.
"""

from __future__ import annotations

import sys

from benchmarks import bare_fs

PAGE = 4096


def _kind(buf: object) -> str:
    if isinstance(buf, memoryview):
        return "memoryview-ro" if buf.readonly else "memoryview-rw"
    return type(buf).__name__


class ViewOperations(bare_fs.BareOperations):
    write_views = True

    def __init__(self, size: int) -> None:
        super().__init__(size)
        self.kinds: set[str] = set()
        self.kept: dict[int, tuple[memoryview, bytes]] = {}
        self.kept_view: memoryview | None = None

    def _keep(self, off: int, buf: memoryview) -> None:
        page = off // PAGE
        if page in (20, 23):
            self.kept[page] = (buf[:64], bytes(buf[:64]))
        elif page == 21:
            self.kept_view = buf

    async def write(self, fh: int, off: int, buf: bytes) -> int:
        self.kinds.add(_kind(buf))
        if isinstance(buf, memoryview):
            self._keep(off, buf)
        return await super().write(fh, off, buf)

    def write_nowait(self, fh: int, off: int, buf: bytes) -> int | None:
        self.kinds.add("nowait:" + _kind(buf))
        if off // PAGE != 23 or not isinstance(buf, memoryview):
            return None
        self._keep(off, buf)
        self.data[off : off + len(buf)] = buf
        return len(buf)

    def read_nowait(self, fh: int, off: int, size: int) -> object:
        if off // PAGE != 22:
            return None
        slices = " ".join(
            f"slice{p}={'ok' if bytes(v) == b else 'CHANGED'}"
            for p, (v, b) in sorted(self.kept.items())
        )
        state = "none"
        if self.kept_view is not None:
            try:
                bytes(self.kept_view)
                state = "usable"
            except ValueError:
                state = "released"
        report = f"{','.join(sorted(self.kinds))} {slices} view21={state}"
        return report.encode().ljust(size)[:size]


if __name__ == "__main__":
    sys.exit(bare_fs.main(sys.argv[1:], ops_class=ViewOperations))
