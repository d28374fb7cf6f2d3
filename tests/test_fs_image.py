"""The image file MNT/dev/zramN through the real mount (SPEC §1, §4).

Size and mode, I/O at any offset and length against a bytearray model
(buffered and ``O_DIRECT``), the end of the device, ``fallocate`` (loop's
discard and write-zeroes), what a loop device sees, and ``mkfs.ext4`` straight
on the image.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import mmap
import os
import random
import stat
import threading
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from tests.conftest import ZramfsMount, needs_fuse, needs_loop, run

pytestmark = needs_fuse

PAGE = 4096
FALLOC_FL_KEEP_SIZE = 0x01
FALLOC_FL_PUNCH_HOLE = 0x02
FALLOC_FL_ZERO_RANGE = 0x10

_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
_libc.fallocate.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int64, ctypes.c_int64]


def fallocate(fd: int, mode: int, offset: int, length: int) -> None:
    if _libc.fallocate(fd, mode, offset, length) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


@contextmanager
def image_fd(m: ZramfsMount, flags: int = os.O_RDWR, dev: int = 0) -> Iterator[int]:
    fd = os.open(m.image(dev), flags)
    try:
        yield fd
    finally:
        os.close(fd)


def aligned(data: bytes) -> mmap.mmap:
    """A page-aligned buffer holding ``data`` (for O_DIRECT)."""
    buf = mmap.mmap(-1, max(len(data), PAGE))
    buf.write(data)
    return buf


def page_payload(rng: random.Random, n: int) -> bytes:
    """Mixed content: random, compressible text, same-filled words, zeros."""
    kind = rng.randrange(4)
    if kind == 0:
        return rng.randbytes(n)
    if kind == 1:
        return (b"zramfs model %d " % rng.randrange(1000) * (n // 10 + 1))[:n]
    if kind == 2:
        return (rng.randbytes(8) * (n // 8 + 1))[:n]
    return bytes(n)


def read_all(m: ZramfsMount, dev: int = 0) -> bytes:
    with open(m.image(dev), "rb") as f:
        return f.read()


# ------------------------------------------------------------- size and mode


def test_size_and_mode(zmount: ZramfsMount) -> None:
    st = os.stat(zmount.image())
    assert stat.S_ISREG(st.st_mode)
    assert stat.S_IMODE(st.st_mode) == 0o660
    assert (st.st_uid, st.st_gid) == (0, 6)  # root:disk, like /dev/zramN
    assert st.st_size == 0
    assert read_all(zmount) == b""
    with image_fd(zmount) as fd:
        assert errno_of(lambda: os.pwrite(fd, b"x", 0)) == errno.ENOSPC
    zmount.write_attr("disksize", "5000")
    assert zmount.read_attr("disksize") == "8192\n"
    assert os.stat(zmount.image()).st_size == 8192
    assert read_all(zmount) == bytes(8192)  # unwritten reads as zeros
    assert zmount.mm_stat()[0] == 0  # reading allocates nothing
    zmount.write_attr("reset", "1")
    assert os.stat(zmount.image()).st_size == 0
    zmount.write_attr("disksize", "64M")
    st = os.stat(zmount.image())
    assert st.st_size == 64 << 20
    assert st.st_blocks == 0
    assert run("stat", "-c", "%s %a %G", str(zmount.image())).stdout == f"{64 << 20} 660 disk\n"
    # The size is disksize and nothing else.
    with image_fd(zmount) as fd:
        assert errno_of(lambda: os.ftruncate(fd, 0)) == errno.EINVAL
        assert errno_of(lambda: os.ftruncate(fd, 128 << 20)) == errno.EINVAL
        os.ftruncate(fd, 64 << 20)  # same size: a no-op
    assert os.stat(zmount.image()).st_size == 64 << 20


def errno_of(fn: object) -> int:
    assert callable(fn)
    with pytest.raises(OSError) as e:
        fn()
    assert e.value.errno is not None
    return e.value.errno


# ------------------------------------------------------------- data against a model


def test_random_io_against_model(zmount: ZramfsMount) -> None:
    size = 64 * PAGE
    zmount.write_attr("disksize", str(size))
    model = bytearray(size)
    rng = random.Random(0x5A4D)
    with image_fd(zmount) as fd:
        for _ in range(400):
            off = rng.randrange(size)
            n = rng.choice(
                [1, 7, 511, 4095, 4096, 4097, 8191, 3 * PAGE + 13, rng.randrange(1, 40000)]
            )
            n = min(n, size - off)
            if rng.random() < 0.6:
                data = page_payload(rng, n)
                assert os.pwrite(fd, data, off) == n
                model[off : off + n] = data
            else:
                assert os.pread(fd, n, off) == model[off : off + n]
        # Reads crossing the end are short, at or past it empty.
        assert os.pread(fd, 100, size - 10) == model[-10:]
        assert os.pread(fd, 100, size) == b""
        assert os.pread(fd, 100, size + 12345) == b""
    assert read_all(zmount) == model
    mm = zmount.mm_stat()
    stored = sum(1 for p in range(0, size, PAGE) if any(model[p : p + PAGE]))
    assert mm[0] >= stored * PAGE  # pages written with zeros still count as stored
    assert zmount.io_stat()[:2] == [0, 0]  # no failed reads or writes


def test_o_direct_io(zmount: ZramfsMount) -> None:
    size = 32 * PAGE
    zmount.write_attr("disksize", str(size))
    model = bytearray(size)
    rng = random.Random(7)
    with image_fd(zmount, os.O_RDWR | os.O_DIRECT) as fd:
        for _ in range(60):
            first = rng.randrange(32)
            count = rng.randrange(1, 33 - first)
            off, n = first * PAGE, count * PAGE
            if rng.random() < 0.6:
                data = b"".join(page_payload(rng, PAGE) for _ in range(count))
                assert os.pwritev(fd, [aligned(data)], off) == n
                model[off : off + n] = data
            else:
                buf = aligned(bytes(n))
                assert os.preadv(fd, [buf], off) == n
                assert buf[:n] == model[off : off + n]
        # FUSE direct I/O has no alignment rule: odd offsets work too.
        assert os.pwrite(fd, b"odd", 4099) == 3
        model[4099:4102] = b"odd"
        assert os.pread(fd, 10, 4097) == model[4097:4107]
    assert read_all(zmount) == model


def test_concurrent_partial_writes_to_shared_pages(zmount: ZramfsMount) -> None:
    """Read-modify-write of one page by several writers at once loses nothing."""
    pages = 16
    zmount.write_attr("disksize", str(pages * PAGE))
    writers = 8
    piece = PAGE // writers

    def work(k: int) -> None:
        with image_fd(zmount) as fd:
            for rnd in range(12):
                for p in range(pages):
                    data = bytes([(k * 31 + rnd + p) % 251 + 1]) * piece
                    os.pwrite(fd, data, p * PAGE + k * piece)

    threads = [threading.Thread(target=work, args=(k,)) for k in range(writers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    got = read_all(zmount)
    for p in range(pages):
        for k in range(writers):
            want = bytes([(k * 31 + 11 + p) % 251 + 1]) * piece
            off = p * PAGE + k * piece
            assert got[off : off + piece] == want, (p, k)


@needs_loop
def test_concurrent_sub_page_writes_through_loop(zmount: ZramfsMount) -> None:
    """A 512-byte-sector loop device with direct I/O sends many partial-page
    writes at once (the image's own writes are serialized by the inode lock):
    every read-modify-write must see the others' pieces."""
    pages, writers, piece, rounds = 32, 8, 512, 6
    zmount.write_attr("disksize", str(pages * PAGE))
    loop = run("losetup", "-f", "--show", "--direct-io=on", "-b", "512",
               str(zmount.image())).stdout.strip()  # fmt: skip
    zmount.loops.append(loop)

    def fill(k: int, rnd: int, p: int) -> bytes:
        return bytes([(k * 31 + rnd + p) % 251 + 1]) * piece

    def work(k: int) -> None:
        fd = os.open(loop, os.O_RDWR | os.O_DIRECT)
        buf = mmap.mmap(-1, PAGE)
        try:
            for rnd in range(rounds):
                for p in range(pages):
                    buf[:piece] = fill(k, rnd, p)
                    os.pwritev(fd, [memoryview(buf)[:piece]], p * PAGE + k * piece)
        finally:
            os.close(fd)

    threads = [threading.Thread(target=work, args=(k,)) for k in range(writers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    zmount.detach(loop)
    got = read_all(zmount)
    for p in range(pages):
        for k in range(writers):
            off = p * PAGE + k * piece
            assert got[off : off + piece] == fill(k, rounds - 1, p), (p, k)
    assert zmount.io_stat()[:2] == [0, 0]


def test_writes_at_the_end(zmount: ZramfsMount) -> None:
    size = 4 * PAGE
    zmount.write_attr("disksize", str(size))
    with image_fd(zmount) as fd:
        assert os.pwrite(fd, b"a" * 100, size - 40) == 40  # short write
        assert errno_of(lambda: os.pwrite(fd, b"b", size)) == errno.ENOSPC
        assert errno_of(lambda: os.pwrite(fd, b"b", size + PAGE)) == errno.ENOSPC
        assert os.pread(fd, 100, size - 50) == bytes(10) + b"a" * 40
    # Buffered writers see ENOSPC too (dd, cp).
    res = run("dd", "if=/dev/zero", f"of={zmount.image()}", "bs=4096", "count=5",
              "conv=notrunc", check=False)  # fmt: skip
    assert res.returncode == 1 and "No space left on device" in res.stderr
    assert zmount.io_stat()[1] == 0  # ENOSPC is not a failed write of the device


# ------------------------------------------------------------------ fallocate


def _allocated(m: ZramfsMount) -> int:
    return m.mm_stat()[0] // PAGE


def test_punch_hole_and_zero_range(zmount: ZramfsMount) -> None:
    size = 64 * PAGE
    zmount.write_attr("disksize", str(size))
    rng = random.Random(3)
    model = bytearray(rng.randbytes(size))
    with image_fd(zmount) as fd:
        assert os.pwrite(fd, model, 0) == size
    assert _allocated(zmount) == 64
    cases = [
        # mode, offset, length: whole pages in range are freed, edges zeroed.
        (FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, 2 * PAGE, 3 * PAGE),  # aligned
        (FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, 8 * PAGE + 100, 4 * PAGE),  # both edges
        (FALLOC_FL_ZERO_RANGE | FALLOC_FL_KEEP_SIZE, 20 * PAGE + 7, 2 * PAGE - 7),  # head edge
        (FALLOC_FL_ZERO_RANGE | FALLOC_FL_KEEP_SIZE, 30 * PAGE, PAGE + 1000),  # tail edge
        (FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, 40 * PAGE + 10, 100),  # inside one page
        (FALLOC_FL_ZERO_RANGE, 50 * PAGE, 2 * PAGE),  # within size, no KEEP_SIZE needed
        (FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, 62 * PAGE, 10 * PAGE),  # past the end
    ]
    for mode, off, length in cases:
        free0 = zmount.io_stat()[3]
        alloc0 = _allocated(zmount)
        with image_fd(zmount) as fd:
            fallocate(fd, mode, off, length)
        end = min(off + length, size)
        whole = max(0, end // PAGE - -(-off // PAGE))
        model[off:end] = bytes(end - off)
        assert zmount.io_stat()[3] - free0 == whole, (mode, off, length)
        assert _allocated(zmount) == alloc0 - whole, (mode, off, length)
        assert read_all(zmount) == model, (mode, off, length)
        assert os.stat(zmount.image()).st_size == size
    assert zmount.io_stat()[:2] == [0, 0]
    # The util-linux tool, as a user would run it.
    free0 = zmount.io_stat()[3]
    run("fallocate", "--punch-hole", "-o", str(10 * PAGE), "-l", str(2 * PAGE), str(zmount.image()))
    run("fallocate", "--zero-range", "--keep-size", "-o", str(16 * PAGE), "-l", str(PAGE),
        str(zmount.image()))  # fmt: skip
    assert zmount.io_stat()[3] - free0 == 3
    model[10 * PAGE : 12 * PAGE] = bytes(2 * PAGE)
    model[16 * PAGE : 17 * PAGE] = bytes(PAGE)
    assert read_all(zmount) == model


def test_fallocate_modes(zmount: ZramfsMount) -> None:
    size = 16 * PAGE
    zmount.write_attr("disksize", str(size))
    data = os.urandom(size)
    with image_fd(zmount) as fd:
        os.pwrite(fd, data, 0)
        fallocate(fd, 0, 0, size)  # plain allocation inside the device: fine
        fallocate(fd, 0, PAGE + 5, 100)
        os.posix_fallocate(fd, 0, size)
        for mode, off, length in [
            (0, 0, size + 1),  # would grow the file
            (FALLOC_FL_ZERO_RANGE, size - PAGE, 2 * PAGE),  # would grow the file
        ]:
            assert errno_of(lambda m=mode, o=off, n=length: fallocate(fd, m, o, n)) in (
                errno.EOPNOTSUPP,
                errno.EFBIG,
                errno.ENOSPC,
            ), mode
        assert errno_of(lambda: fallocate(fd, FALLOC_FL_PUNCH_HOLE, 0, PAGE)) == errno.EOPNOTSUPP
    with image_fd(zmount, os.O_RDONLY) as fd:
        mode = FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE
        assert errno_of(lambda: fallocate(fd, mode, 0, PAGE)) == errno.EBADF
    assert read_all(zmount) == data
    assert os.stat(zmount.image()).st_size == size


def test_punch_hole_edges_in_unwritten_pages_allocate_nothing(zmount: ZramfsMount) -> None:
    zmount.write_attr("disksize", "1M")
    with image_fd(zmount) as fd:
        fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, 100, 100)
        fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, 3 * PAGE - 8, 3 * PAGE)
    # Unallocated edges already read as zeros: a hole punch must not store a
    # zero page there (it would make a discard grow orig_data_size).
    assert zmount.mm_stat()[0] == 0
    assert zmount.io_stat()[3] == 2


# ------------------------------------------------------------- block users


@needs_loop
def test_loop_device_size_and_busy(zmount: ZramfsMount) -> None:
    zmount.write_attr("disksize", "4M")
    loop = zmount.losetup()
    assert run("blockdev", "--getsize64", loop).stdout.strip() == str(4 << 20)
    # While the loop device holds the image, its size cannot change under it:
    # reset and disksize refuse (EBUSY) and losetup -c keeps the size.
    for attr, value in [("reset", "1"), ("disksize", "8M")]:
        with pytest.raises(OSError) as e:
            zmount.write_attr(attr, value)
        assert e.value.errno == errno.EBUSY
    run("losetup", "-c", loop)
    assert run("blockdev", "--getsize64", loop).stdout.strip() == str(4 << 20)
    data = os.urandom(PAGE * 3)
    with open(loop, "r+b", buffering=0) as f:
        f.seek(PAGE * 100)
        f.write(data)
        os.fsync(f.fileno())
    with image_fd(zmount, os.O_RDONLY) as fd:
        assert os.pread(fd, len(data), PAGE * 100) == data
    # Discard and write-zeroes on the loop device reach the device's discard path.
    free0 = zmount.io_stat()[3]
    run("blkdiscard", "-o", str(PAGE * 100), "-l", str(PAGE * 2), loop)
    run("blkdiscard", "-z", "-o", str(PAGE * 102), "-l", str(PAGE), loop)
    assert zmount.io_stat()[3] - free0 == 3
    assert zmount.mm_stat()[0] == 0
    zmount.detach(loop)
    # Reset and a new disksize, then a fresh attachment sees the new size.
    zmount.write_attr("reset", "1")
    zmount.write_attr("disksize", "8M")
    loop = zmount.losetup(direct_io=False)
    assert run("blockdev", "--getsize64", loop).stdout.strip() == str(8 << 20)
    run("losetup", "-c", loop)
    assert run("blockdev", "--getsize64", loop).stdout.strip() == str(8 << 20)
    zmount.detach(loop)


@needs_loop
def test_mkfs_ext4_directly_on_the_image(zmount: ZramfsMount) -> None:
    zmount.write_attr("disksize", "32M")
    run("mkfs.ext4", "-q", "-F", str(zmount.image()))
    assert zmount.io_stat()[3] > 0  # mke2fs discards a file with PUNCH_HOLE
    run("fsck.ext4", "-n", "-f", str(zmount.image()))
    target = zmount.path.parent / (zmount.path.name + "-ext4")
    zmount.mount_fs(str(zmount.image()), target)  # mount(8) sets up the loop device
    payload = os.urandom(1 << 20)
    (target / "data").write_bytes(payload)
    (target / "text").write_text("hello zram\n" * 1000)
    zmount.umount_fs(target)
    zmount.mount_fs(str(zmount.image()), target, "ro")
    assert (target / "data").read_bytes() == payload
    assert (target / "text").read_text() == "hello zram\n" * 1000
    zmount.umount_fs(target)
    mm = zmount.mm_stat()
    assert mm[0] > len(payload) and mm[2] > 0
