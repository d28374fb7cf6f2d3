"""``zramfs mount --mlock``: the daemon's memory is locked, and freeing still works.

The kernel refuses MADV_DONTNEED on locked ranges; zsmalloc must still give
freed zspages back (unlock, drop, re-lock on fault) or every free would fail
the write that caused it.
"""

from __future__ import annotations

import ctypes
import os

from tests.conftest import ZramfsMount, needs_fuse, run

pytestmark = needs_fuse

FALLOC_FL_KEEP_SIZE, FALLOC_FL_PUNCH_HOLE = 0x01, 0x02


def _locked_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmLck:"):
                return int(line.split()[1])
    raise AssertionError("no VmLck")


def test_mlock_daemon_writes_frees_and_compacts(mount_factory: object) -> None:
    assert callable(mount_factory)
    m: ZramfsMount = mount_factory("--mlock")
    assert _locked_kib(m.proc.pid) > 0
    m.write_attr("disksize", "64M")
    run("mkfs.ext4", "-q", "-F", str(m.image()))  # discards the whole image first
    with open("/usr/share/common-licenses/GPL-3", "rb") as f:
        text = f.read() * 16
    data = os.urandom(1 << 20) + text
    libc = ctypes.CDLL(None, use_errno=True)
    fd = os.open(m.image(), os.O_RDWR)
    try:
        os.pwrite(fd, data, 0)
        before = m.mm_stat()
        rc = libc.fallocate(
            fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, ctypes.c_long(0), ctypes.c_long(1 << 20)
        )
        assert rc == 0, os.strerror(ctypes.get_errno())
        after = m.mm_stat()
        assert after[2] < before[2]  # mem_used_total fell: zspages were given back
        os.pwrite(fd, data, 4096)
        assert os.pread(fd, len(data), 4096) == data
    finally:
        os.close(fd)
    m.write_attr("compact", "1")
    assert "Traceback" not in m.log_text()
