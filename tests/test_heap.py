"""The daemon keeps request-sized buffers in glibc's heap (`daemon.tune_malloc`).

Counted in page faults, not time: with glibc's defaults every 1 MiB request
buffer is faulted in afresh (256 minor faults), with the daemon's thresholds
it is reused.  Each check runs its control too, so it cannot pass on a libc
that never faulted in the first place.
"""

from __future__ import annotations

import os
import subprocess
import sys

from tests.conftest import ZramfsMount, needs_fuse

MiB = 1 << 20

# Two 1 MiB buffers alive at once, then both freed: what a FUSE write (its
# bytes) and the batch's compressed output do.  Prints the minor faults of
# 50 such requests.
_CHURN = """
import resource, sys
from zramfs.fs import daemon
if sys.argv[1] == "tuned":
    assert daemon.tune_malloc()
def request():
    a = bytearray(1 << 20)
    b = bytearray(1 << 20)
    a[::4096] = b"x" * 256
    b[::4096] = b"y" * 256
for _ in range(5):
    request()
f0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(50):
    request()
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - f0)
"""


def _churn_faults(mode: str) -> int:
    out = subprocess.run(
        [sys.executable, "-c", _CHURN, mode], capture_output=True, text=True, check=True
    )
    return int(out.stdout)


def test_tuned_heap_reuses_request_buffers() -> None:
    untuned = _churn_faults("default")
    tuned = _churn_faults("tuned")
    # 50 requests x 2 buffers x 256 pages, give or take.
    assert untuned >= 50 * 256, untuned
    assert tuned < 256, tuned


def _minflt(pid: int) -> int:
    with open(f"/proc/{pid}/stat") as f:
        return int(f.read().rsplit(")", 1)[1].split()[7])


@needs_fuse
def test_daemon_writes_do_not_fault_in_their_buffers(zmount: ZramfsMount) -> None:
    """64 MiB of 1 MiB direct writes of very compressible data: the zspages
    need a few pages per MiB, so faults near 256 per MiB would be the
    request buffers being faulted in again."""
    zmount.write_attr("disksize", "64M")
    page = (b"zramfs heap " * 342)[:4096]
    chunk = page * 256
    fd = os.open(zmount.image(), os.O_WRONLY | os.O_DIRECT)
    try:
        buf = memoryview(bytearray(MiB + 4096))
        off = (-_address(buf)) % 4096
        aligned = buf[off : off + MiB]
        aligned[:] = chunk
        os.pwrite(fd, aligned, 0)  # warm-up: the heap reaches its size
        f0 = _minflt(zmount.proc.pid)
        for i in range(1, 64):
            os.pwrite(fd, aligned, i * MiB)
        faults = _minflt(zmount.proc.pid) - f0
    finally:
        os.close(fd)
    with open(zmount.image(), "rb") as f:
        assert f.read(MiB) == chunk
    assert faults < 63 * 64, f"{faults} minor faults for 63 MiB written"


def _address(mv: memoryview) -> int:
    import ctypes

    return ctypes.addressof(ctypes.c_char.from_buffer(mv))
