"""fio through a loop device on the image: random I/O with crc32c verification.

Two jobs on separate halves of the device (so their verify state never
overlaps), libaio, O_DIRECT, queue depth 8.  Each block fio writes carries a
header with a crc32c of the block; every block is read back and checked both
while the job runs (``verify_backlog``) and in the final verify pass.  A
control run corrupts one block behind fio's back and expects the verify to
catch it, so a silent "verify did nothing" cannot pass.
"""

from __future__ import annotations

import fcntl
import hashlib
import mmap
import os
import random
import shutil
import struct
from pathlib import Path
from typing import Any

import pytest

from tests import fioutil
from tests.conftest import ZramfsMount, needs_fuse, needs_loop
from tests.fioutil import Opts

pytestmark = [
    needs_fuse,
    needs_loop,
    pytest.mark.skipif(shutil.which("fio") is None, reason="needs fio"),
]

MiB = 1 << 20
JOB_SIZE = 64 * MiB
NJOBS = 2


def fio(tmp: Path, loop: str, name: str, opts: Opts, *, check: bool = True) -> Any:
    """Run two non-overlapping jobs on ``loop``; returns the parsed JSON report."""
    # runtime: a bound, not a target (the jobs end after `size`); a fio still
    # running after 240 s is stuck I/O, killed before pytest's 300 s timeout.
    glob: Opts = {"size": JOB_SIZE, "runtime": 60, **opts}
    jobs: list[Opts] = [{"offset": j * JOB_SIZE} for j in range(NJOBS)]
    return fioutil.run(fioutil.jobfile(tmp, name, loop, glob, jobs), 240, check=check)


def assert_clean(report: Any, *, min_read: int) -> None:
    jobs = report["jobs"]
    assert len(jobs) == NJOBS
    for job in jobs:
        assert job["error"] == 0, job
        assert job["write"]["io_bytes"] > 0, job["jobname"]
        # the verify reads (backlog and final pass) really happened
        assert job["read"]["io_bytes"] >= min_read, (job["jobname"], job["read"]["io_bytes"])
        assert job["read"]["short_ios"] == 0 and job["write"]["short_ios"] == 0


def setup_device(m: ZramfsMount, alg: str) -> str:
    m.write_attr("comp_algorithm", alg)
    m.write_attr("disksize", str(NJOBS * JOB_SIZE))
    loop = m.losetup()
    # SPEC §4: the loop device really runs O_DIRECT on the image (no second cache).
    assert Path(f"/sys/block/{Path(loop).name}/loop/dio").read_text() == "1\n"
    return loop


@pytest.mark.parametrize(
    ("alg", "bs"),
    [("lz4", "4k"), ("lz4", "128k"), ("zstd", "128k")],
)
def test_fio_random_rw_verify(zmount: ZramfsMount, tmp_path: Path, alg: str, bs: str) -> None:
    m = zmount
    loop = setup_device(m, alg)
    workload: Opts = dict(
        rw="randrw", rwmixread=30, bs=bs, do_verify=1, verify_backlog=64,
        # compressible buffers (half zeros), fresh for every write
        buffer_compress_percentage=50, refill_buffers=1,
    )  # fmt: skip
    report = fio(tmp_path, loop, "rw", workload)
    assert_clean(report, min_read=1)
    mm = m.mm_stat()
    io = m.io_stat()
    assert io[0] == 0 and io[1] == 0, f"failed reads/writes: {io}"
    assert mm[0] > 0 and 0 < mm[1] < mm[0], mm  # stored, and it compressed
    # (fio cannot replay a randrw workload with verify_only: its replay treats
    # the read share as writes and reports never-written blocks — also on a
    # plain file.  The randwrite test below does the replay.)
    # Both ways into the store agree: the loop device and the image file.
    assert sha256_of(loop) == sha256_of(str(m.image()))


def sha256_of(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb", buffering=0) as f:
        while chunk := f.read(4 * MiB):
            h.update(chunk)
    return h.hexdigest()


def test_fio_randwrite_full_verify_and_corruption_is_caught(
    zmount: ZramfsMount, tmp_path: Path
) -> None:
    m = zmount
    loop = setup_device(m, "lz4")
    workload: Opts = dict(
        rw="randwrite", bs="16k", do_verify=1, buffer_compress_percentage=50, refill_buffers=1
    )
    report = fio(tmp_path, loop, "w", workload)
    for job in report["jobs"]:
        assert job["error"] == 0
        # every block written once (random map), then all read back
        assert job["write"]["io_bytes"] == JOB_SIZE
        assert job["read"]["io_bytes"] == JOB_SIZE
    # A second, pure verify pass replaying the workload: still all good.
    again = fio(tmp_path, loop, "w", {**workload, "verify_only": 1})
    for job in again["jobs"]:
        assert job["error"] == 0 and job["read"]["io_bytes"] == JOB_SIZE, job
    # Corrupt one byte in job 1's region through the image, behind the loop device.
    fd = os.open(m.image(), os.O_RDWR)
    try:
        off = JOB_SIZE + 5 * MiB + 1000
        old = os.pread(fd, 1, off)
        os.pwrite(fd, bytes([old[0] ^ 0xFF]), off)
    finally:
        os.close(fd)
    bad = fio(tmp_path, loop, "w", {**workload, "verify_only": 1}, check=False)
    assert bad["_rc"] != 0, "verify missed a corrupted block"
    errors = {job["jobname"]: job["error"] for job in bad["jobs"]}
    assert errors["w0"] == 0 and errors["w1"] != 0, errors


BLKDISCARD = 0x1277  # _IO(0x12, 119)
BLKZEROOUT = 0x127F  # _IO(0x12, 127)


def test_blkdiscard_and_blkzeroout_against_a_model(zmount: ZramfsMount) -> None:
    """Random writes, discards and zero-outs at 512-byte granularity through the loop device.

    loop turns BLKDISCARD into ``fallocate(PUNCH_HOLE)`` and BLKZEROOUT into
    ``fallocate(ZERO_RANGE)`` on the image; zramfs frees whole pages and zeroes
    partial ones, so both read back as zeros.  Checked through the loop
    device (O_DIRECT) and through the image file.
    """
    m = zmount
    size = 8 * MiB
    m.write_attr("disksize", str(size))
    loop = m.losetup()
    rng = random.Random(20)
    model = bytearray(size)
    fd = os.open(loop, os.O_RDWR | os.O_DIRECT)
    img = os.open(m.image(), os.O_RDONLY)

    def write(off: int, data: bytes) -> None:
        with mmap.mmap(-1, len(data)) as buf:  # page-aligned for O_DIRECT
            buf[:] = data
            assert os.pwritev(fd, [buf], off) == len(data)
        model[off : off + len(data)] = data

    def check() -> None:
        with mmap.mmap(-1, size) as buf:
            assert os.preadv(fd, [buf], 0) == size
            assert buf[:] == model, "loop device differs from the model"
        assert os.pread(img, size, 0) == model, "image differs from the model"

    try:
        write(0, os.urandom(size))
        freed0 = m.io_stat()[3]
        whole_pages = 0
        for step in range(300):
            op = rng.choice("wdz")
            off = rng.randrange(size // 512) * 512
            n = min(rng.choice([512, 1024, 3584, 4096, 4608, 8192, 65536, 150 * 1024]), size - off)
            if op == "w":
                write(off, os.urandom(n))
            else:
                fcntl.ioctl(fd, BLKDISCARD if op == "d" else BLKZEROOUT, struct.pack("QQ", off, n))
                model[off : off + n] = bytes(n)
                whole_pages += max(0, (off + n) // 4096 - (off + 4095) // 4096)
            if step % 25 == 0:
                check()
        check()
    finally:
        os.close(img)
        os.close(fd)
    assert m.io_stat()[3] - freed0 >= whole_pages
    assert m.io_stat()[:2] == [0, 0]
