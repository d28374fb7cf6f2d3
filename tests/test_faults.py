"""Faults through the real mount (issue 6): nothing is ever lost silently.

* ``mem_limit`` reached mid-stream, by raw writes to the image and by ext4 on a
  loop device: the writes fail with EIO, ``failed_writes`` counts them,
  everything stored before reads back intact, and writing works again after
  a discard (punch hole / ``fstrim``), a ``compact``, or a higher limit.
* Backing-store faults under ``writeback``: a full file system (ENOSPC from
  the write), a full backing file (no free block), a file system that answers
  EIO (``faultyfs``, below: directly, and as the file behind a loop device
  used as a *block* backing device, whose writes go through the page cache),
  a backing file truncated or removed underneath.  Writeback reports the
  error, the slots stay readable from RAM, and nothing is flagged ``w`` (or
  counted in ``bd_stat``) that is not really on the backing store.
* A codec that fails (`zramfs.backends.faulty`, installed only in a daemon
  these tests start themselves): EIO, ``failed_writes``/``failed_reads``, the
  slot keeps its old content; also inside writeback and recompress.
* SIGHUP with and without an attached loop device (SIGTERM/SIGINT/SIGKILL are
  in test_fs_lifecycle.py).

device-mapper (dm-error/dm-flakey) would be the textbook EIO source, but this
kernel has no device-mapper (``/dev/mapper/control`` is missing), so the EIO
comes from ``faultyfs``: a 60-line pyfuse3 file system, run in a subprocess,
whose one file fails reads and/or writes with a chosen errno on command —
the same thing a dying disk does, at a place we choose.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import hashlib
import os
import signal
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import ZramfsMount, needs_fuse, needs_loop, run, start_mount, stop_mount
from tests.test_fs_lifecycle import is_mounted, signal_until_exit, wait_for
from zramfs.backends import BACKEND_NAMES, faulty
from zramfs.fs import mounts

pytestmark = needs_fuse

PAGE = 4096
MiB = 1 << 20
CHUNK = 128 << 10  # FUSE request size used for reading images back
REPO = Path(__file__).resolve().parents[1]

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (mount, loop devices)")


# ---------------------------------------------------------------------------- helpers


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def pwrite_image(m: ZramfsMount, data: bytes, offset: int = 0, dev: int = 0) -> None:
    fd = os.open(m.image(dev), os.O_WRONLY)
    try:
        for pos in range(0, len(data), MiB):
            chunk = data[pos : pos + MiB]
            assert os.pwrite(fd, chunk, offset + pos) == len(chunk)
    finally:
        os.close(fd)


def pread_image(m: ZramfsMount, size: int, offset: int = 0, dev: int = 0) -> bytes:
    fd = os.open(m.image(dev), os.O_RDONLY)
    try:
        parts = []
        for pos in range(0, size, CHUNK):
            n = min(CHUNK, size - pos)
            got = os.pread(fd, n, offset + pos)
            assert len(got) == n
            parts.append(got)
        return b"".join(parts)
    finally:
        os.close(fd)


def write_errno(m: ZramfsMount, attr: str, value: str, dev: int = 0) -> int:
    """The errno of ``echo value > attr`` (0 when it succeeds)."""
    try:
        m.write_attr(attr, value, dev)
    except OSError as e:
        assert e.errno is not None
        return e.errno
    return 0


def block_state(m: ZramfsMount, dev: int = 0) -> dict[int, str]:
    path = m.path / "sys/kernel/debug/zram" / f"zram{dev}" / "block_state"
    out = {}
    for line in path.read_text().splitlines():
        idx, _, flags = line.split()
        out[int(idx)] = flags
    return out


def bd_stat(m: ZramfsMount, dev: int = 0) -> list[int]:
    return [int(x) for x in m.read_attr("bd_stat", dev).split()]


def written_back(m: ZramfsMount, dev: int = 0) -> set[int]:
    return {i for i, f in block_state(m, dev).items() if f[1] == "w"}


def assert_wb_consistent(m: ZramfsMount, npages: int, dev: int = 0) -> set[int]:
    """bd_count == slots flagged ``w``; every page still stored (orig_data_size);
    compr_data_size counts exactly the huge pages left in RAM.  Returns the ``w`` set."""
    wb = written_back(m, dev)
    bd = bd_stat(m, dev)
    mm = m.mm_stat(dev)
    assert bd[0] == len(wb), (bd, len(wb))
    assert mm[0] == npages * PAGE, mm
    assert mm[1] == (npages - len(wb)) * PAGE, (mm, len(wb))  # all pages here are huge
    return wb


def figure(text: str) -> None:
    """A measured figure, for docs/reliability.md (shown with ``pytest -s``)."""
    print(f"\nFIGURE {text}")


def no_tracebacks(m: ZramfsMount) -> None:
    assert m.alive(), m.log_text()
    assert "Traceback" not in m.log_text(), m.log_text()


def compressible_page(seed: int, payload: int) -> bytes:
    """A page that compresses to about ``payload`` bytes: random head, zero tail."""
    head = hashlib.shake_256(b"%d" % seed).digest(payload)
    return head + bytes(PAGE - payload)


# ======================================================================== mem_limit


def test_mem_limit_mid_stream_raw_writes(zmount: ZramfsMount) -> None:
    """Incompressible stream into a 2 MiB limit: EIO at the limit, earlier data
    intact, the failing page keeps its old content, even overwrites are refused
    at the limit (new object first, old freed after — as the kernel does), and
    a punch hole or a higher limit lets writing go on."""
    m = zmount
    size = 16 * MiB
    m.write_attr("disksize", str(size))
    limit = 2 * MiB
    m.write_attr("mem_limit", str(limit))
    data = os.urandom(size)  # every page huge: one pool page each
    fd = os.open(m.image(), os.O_RDWR)
    try:
        pos = 0
        step = 64 << 10
        with pytest.raises(OSError) as ei:
            while pos < size:
                assert os.pwrite(fd, data[pos : pos + step], pos) == step
                pos += step
        assert ei.value.errno == errno.EIO
        mm = m.mm_stat()
        io = m.io_stat()
        assert io[1] >= 1, io  # failed_writes
        assert mm[2] <= mm[3] == limit, mm  # never above the limit
        assert mm[4] <= limit + PAGE, mm  # mem_used_max: at most the refused page over
        stored = mm[0] // PAGE
        assert pos // PAGE <= stored < pos // PAGE + step // PAGE
        figure(f"mem_limit 2 MiB, incompressible stream: EIO after {stored} pages "
               f"({mm[0]} B stored, mem_used_total {mm[2]}, mem_used_max {mm[4]}, "
               f"failed_writes {io[1]})")  # fmt: skip
        # Everything before the failing request, and the prefix of it that was
        # stored, reads back; the failed page and everything after are still zeros.
        end = stored * PAGE
        assert sha(pread_image(m, end)) == sha(data[:end])
        assert pread_image(m, size - end, end) == bytes(size - end)
        # At the limit an overwrite of a stored page is refused too: the old
        # page stays.
        with pytest.raises(OSError) as ei:
            os.pwrite(fd, os.urandom(PAGE), 0)
        assert ei.value.errno == errno.EIO
        assert os.pread(fd, PAGE, 0) == data[:PAGE]
        assert m.io_stat()[1] == io[1] + 1
        # A sub-page write to a stored page (read-modify-write) likewise.
        with pytest.raises(OSError) as ei:
            os.pwrite(fd, b"x" * 100, PAGE + 10)
        assert ei.value.errno == errno.EIO
        assert os.pread(fd, PAGE, PAGE) == data[PAGE : 2 * PAGE]
        # Discard 256 KiB (loop's PUNCH_HOLE): the same limit has room again.
        _punch(fd, 0, 256 << 10)
        assert m.mm_stat()[0] == end - (256 << 10)
        assert os.pwrite(fd, data[end : end + (128 << 10)], end) == 128 << 10
        end += 128 << 10
        # A higher limit: the rest of the stream goes in.
        m.write_attr("mem_limit", "0")
        for p in range(end, size, MiB):
            assert os.pwrite(fd, data[p : p + MiB], p) == min(MiB, size - p)
        assert pread_image(m, 256 << 10) == bytes(256 << 10)
        assert sha(pread_image(m, size - (256 << 10), 256 << 10)) == sha(data[256 << 10 :])
    finally:
        os.close(fd)
    no_tracebacks(m)


_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
_libc.fallocate.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int64, ctypes.c_int64]


def _punch(fd: int, offset: int, length: int) -> None:
    """fallocate(PUNCH_HOLE | KEEP_SIZE): loop's discard."""
    if _libc.fallocate(fd, 0x01 | 0x02, offset, length) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


def test_mem_limit_recovered_by_compact(zmount: ZramfsMount) -> None:
    """Fragmentation is what holds memory: free every other object of one size
    class, pin the limit at what the pool holds, and a page of another class
    cannot be stored (EIO) until ``compact`` gives the half-empty zspages back."""
    m = zmount
    m.write_attr("disksize", "8M")
    n = 1024
    a_pages = [compressible_page(i, 900) for i in range(n)]  # one size class
    pwrite_image(m, b"".join(a_pages))
    fd = os.open(m.image(), os.O_RDWR)
    try:
        for i in range(0, n, 2):
            _punch(fd, i * PAGE, PAGE)
        mm = m.mm_stat()
        m.write_attr("mem_limit", str(mm[2]))
        b_page = compressible_page(10**6, 2500)  # another class: needs a new zspage
        with pytest.raises(OSError) as ei:
            os.pwrite(fd, b_page, (n + 10) * PAGE)
        assert ei.value.errno == errno.EIO
        failed = m.io_stat()[1]
        assert failed >= 1
        m.write_attr("compact", "1")
        after = m.mm_stat()
        assert after[6] > 0 and after[2] < mm[2], (mm, after)  # pages_compacted
        figure(f"compact: half-freed class, mem_used_total {mm[2]} -> {after[2]}, "
               f"pages_compacted {after[6]}; the refused page then fits")  # fmt: skip
        assert os.pwrite(fd, b_page, (n + 10) * PAGE) == PAGE
        assert m.io_stat()[1] == failed
        assert os.pread(fd, PAGE, (n + 10) * PAGE) == b_page
        got = pread_image(m, n * PAGE)
        for i in range(n):
            want = bytes(PAGE) if i % 2 == 0 else a_pages[i]
            assert got[i * PAGE : (i + 1) * PAGE] == want, i
    finally:
        os.close(fd)
    no_tracebacks(m)


@needs_loop
def test_mem_limit_under_ext4_on_loop(zmount: ZramfsMount, tmp_path: Path) -> None:
    """ext4 on loop on the image hits the limit: fsync fails with EIO and
    failed_writes counts.  ext4 may also abort its journal (a metadata write
    failed: it goes read-only, its own protection).  Recovery: a higher limit,
    umount, e2fsck, mount — files synced before are intact and writes work.
    Then the same limit again: fstrim returns the deleted file's pages and
    writes work under it."""
    m = zmount
    m.write_attr("disksize", "128M")
    loop = m.losetup()
    run("mkfs.ext4", "-q", "-E", "nodiscard", loop)
    target = tmp_path / "fs"
    fs = m.mount_fs(loop, target)
    kept: dict[str, str] = {}
    for i in range(4):
        data = os.urandom(MiB)
        (fs / f"keep{i}").write_bytes(data)
        kept[f"keep{i}"] = sha(data)
    run("sync")
    limit = m.mm_stat()[2] + 8 * MiB
    m.write_attr("mem_limit", str(limit))

    def dd(name: str, mib: int) -> subprocess.CompletedProcess[str]:
        return run("dd", "if=/dev/urandom", f"of={fs / name}", "bs=1M", f"count={mib}",
                   "conv=fsync", check=False)  # fmt: skip

    res = dd("big", 32)
    assert res.returncode != 0 and "Input/output error" in res.stderr, res.stderr
    assert m.io_stat()[1] > 0  # failed_writes
    mm = m.mm_stat()
    assert mm[2] <= mm[3] == limit, mm
    # A higher limit; repair whatever ext4 could not write.
    m.write_attr("mem_limit", "0")
    m.umount_fs(fs)
    res = run("e2fsck", "-fy", loop, check=False)
    assert res.returncode in (0, 1), res.stdout + res.stderr  # 1: errors corrected
    fs = m.mount_fs(loop, target)
    for name, digest in kept.items():
        assert sha((fs / name).read_bytes()) == digest, name
    res = dd("after-limit", 1)
    assert res.returncode == 0, res.stderr
    kept["after-limit"] = sha((fs / "after-limit").read_bytes())
    # A limit below what the pool holds, with the partial file deleted: its
    # pages stay allocated until fstrim discards them; then the limit has room.
    (fs / "big").unlink(missing_ok=True)
    run("sync")
    used = m.mm_stat()[2]
    limit = used - 2 * MiB
    m.write_attr("mem_limit", str(limit))
    run("fstrim", str(fs))
    trimmed = m.mm_stat()[2]
    assert trimmed < limit - MiB, (used, trimmed, limit)
    figure(f"ext4: fsync EIO at the limit, failed_writes {m.io_stat()[1]}; "
           f"fstrim {used} -> {trimmed} B; writes fit again under {limit}")  # fmt: skip
    res = dd("after-trim", 1)
    assert res.returncode == 0, res.stderr
    kept["after-trim"] = sha((fs / "after-trim").read_bytes())
    # Remount (reads come from the device, not the page cache), fsck clean.
    m.umount_fs(fs)
    res = run("e2fsck", "-fn", loop, check=False)
    assert res.returncode == 0, res.stdout + res.stderr
    fs = m.mount_fs(loop, target)
    for name, digest in kept.items():
        assert sha((fs / name).read_bytes()) == digest, name
    m.umount_fs(fs)
    m.detach(loop)
    no_tracebacks(m)


# ======================================================================== faultyfs


def faultyfs_main(mountpoint: str, size: int) -> None:
    """A file system whose file ``data`` fails on command (run in a subprocess).

    ``data``: ``size`` bytes in memory, opened ``direct_io`` (no page cache on
    top, so every read and write reaches us).  ``ctl``: write ``r=ERRNO
    w=ERRNO`` (0 = succeed) to make reads/writes/fsync of ``data`` fail.
    """
    import pyfuse3
    import trio

    data_ino, ctl_ino = 2, 3

    class FaultyFS(pyfuse3.Operations):  # type: ignore[misc]
        def __init__(self) -> None:
            super().__init__()
            self.data = bytearray(size)
            self.fail_r = 0
            self.fail_w = 0

        def _attr(self, ino: int) -> pyfuse3.EntryAttributes:
            e = pyfuse3.EntryAttributes()
            e.st_ino = ino
            e.attr_timeout = e.entry_timeout = 0
            if ino == pyfuse3.ROOT_INODE:
                e.st_mode = stat.S_IFDIR | 0o755
            else:
                e.st_mode = stat.S_IFREG | 0o644
                e.st_size = len(self.data) if ino == data_ino else 4096
            return e

        async def getattr(self, inode: int, ctx: object = None) -> pyfuse3.EntryAttributes:
            return self._attr(inode)

        async def lookup(
            self, parent: int, name: bytes, ctx: object = None
        ) -> pyfuse3.EntryAttributes:
            ino = {b"data": data_ino, b"ctl": ctl_ino}.get(name)
            if parent != pyfuse3.ROOT_INODE or ino is None:
                raise pyfuse3.FUSEError(errno.ENOENT)
            return self._attr(ino)

        async def setattr(
            self, inode: int, attr: object, fields: object, fh: object, ctx: object
        ) -> pyfuse3.EntryAttributes:
            return self._attr(inode)

        async def open(self, inode: int, flags: int, ctx: object) -> pyfuse3.FileInfo:
            return pyfuse3.FileInfo(fh=inode, direct_io=True)

        async def read(self, fh: int, off: int, n: int) -> bytes:
            if fh == data_ino:
                if self.fail_r:
                    raise pyfuse3.FUSEError(self.fail_r)
                return bytes(self.data[off : off + n])
            return b"r=%d w=%d\n" % (self.fail_r, self.fail_w)

        async def write(self, fh: int, off: int, buf: bytes) -> int:
            if fh == ctl_ino:
                kv = dict(t.split(b"=", 1) for t in buf.split())
                self.fail_r = int(kv.get(b"r", b"0"))
                self.fail_w = int(kv.get(b"w", b"0"))
                return len(buf)
            if self.fail_w:
                raise pyfuse3.FUSEError(self.fail_w)
            end = min(off + len(buf), len(self.data))
            if off >= end:
                raise pyfuse3.FUSEError(errno.ENOSPC)
            self.data[off:end] = buf[: end - off]
            return end - off

        async def fsync(self, fh: int, datasync: bool) -> None:
            if fh == data_ino and self.fail_w:
                raise pyfuse3.FUSEError(self.fail_w)

        async def flush(self, fh: int) -> None:
            return None

        async def release(self, fh: int) -> None:
            return None

    pyfuse3.init(FaultyFS(), mountpoint, {"fsname=faultyfs", "subtype=faultyfs"})
    try:
        trio.run(pyfuse3.main)
    finally:
        pyfuse3.close(unmount=True)


@dataclass
class FaultyFS:
    path: Path
    proc: subprocess.Popen[bytes]

    @property
    def data(self) -> Path:
        return self.path / "data"

    def fail(self, reads: int = 0, writes: int = 0) -> None:
        (self.path / "ctl").write_bytes(b"r=%d w=%d" % (reads, writes))


FAULTYFS_SIZE = 8 * MiB


@pytest.fixture
def faultyfs() -> Iterator[FaultyFS]:
    base = Path(tempfile.mkdtemp(prefix="zramfs-faultyfs-"))
    mnt = base / "mnt"
    mnt.mkdir()
    code = (
        "import sys; from tests.test_faults import faultyfs_main as main; "
        "main(sys.argv[1], int(sys.argv[2]))"
    )
    with open(base / "log", "wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-c", code, str(mnt), str(FAULTYFS_SIZE)],
            cwd=REPO, stdin=subprocess.DEVNULL, stdout=log, stderr=log,
        )  # fmt: skip
    fs = FaultyFS(mnt, proc)
    try:
        assert wait_for(lambda: (mnt / "data").exists() or proc.poll() is not None, 20)
        assert proc.poll() is None, (base / "log").read_text()
        yield fs
    finally:
        for a in mounts.loops_under(str(mnt)):
            subprocess.run(["losetup", "-d", a.loop], capture_output=True, check=False)
        wait_for(lambda: not mounts.loops_under(str(mnt)), 10)
        mounted = mounts.find_mount(str(mnt)) is not None
        if mounted and mounts.fuse_unmount(str(mnt)).returncode != 0:
            mounts.fuse_unmount(str(mnt), lazy=True)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)
        subprocess.run(["rm", "-rf", "--one-file-system", str(base)], check=False)


# ============================================================ backing-store faults


def _fill_huge(m: ZramfsMount, npages: int, backing: Path | str) -> bytes:
    m.write_attr("backing_dev", str(backing))
    m.write_attr("disksize", str(npages * PAGE))
    data = os.urandom(npages * PAGE)  # incompressible: every page HUGE
    pwrite_image(m, data)
    return data


@pytest.fixture
def small_tmpfs(tmp_path: Path) -> Iterator[Path]:
    """A 256 KiB tmpfs: a sparse backing file on it runs out of space."""
    if os.geteuid() != 0:
        pytest.skip("needs root to mount a tmpfs")
    d = tmp_path / "small"
    d.mkdir()
    run("mount", "-t", "tmpfs", "-o", "size=256k,mode=0700", "tmpfs", str(d))
    try:
        yield d
    finally:
        subprocess.run(["umount", "-l", str(d)], capture_output=True, check=False)


def test_writeback_into_a_full_file_system(
    small_tmpfs: Path, mount_factory: Callable[..., ZramfsMount]
) -> None:
    """A sparse 4 MiB backing file on a 256 KiB tmpfs: ENOSPC from the write
    itself. Pages that did not make it stay in RAM, nothing else is flagged."""
    m = mount_factory()
    backing = small_tmpfs / "backing.img"
    with open(backing, "wb") as f:
        f.truncate(4 * MiB)
    npages = 256
    data = _fill_huge(m, npages, backing)
    assert write_errno(m, "writeback", "huge") == errno.ENOSPC
    wb = assert_wb_consistent(m, npages)
    assert 0 < len(wb) < npages  # about 64 blocks fit
    figure(f"writeback into a 256 KiB tmpfs: ENOSPC after {len(wb)} of {npages} pages")
    assert bd_stat(m)[2] == len(wb)  # bd_writes: successes only
    assert sha(pread_image(m, npages * PAGE)) == sha(data)
    assert bd_stat(m)[1] == len(wb)  # each written-back page read once from the file
    # Freeing written-back pages gives their blocks back; writeback resumes.
    fd = os.open(m.image(), os.O_RDWR)
    try:
        for i in sorted(wb)[:8]:
            _punch(fd, i * PAGE, PAGE)
    finally:
        os.close(fd)
    assert bd_stat(m)[0] == len(wb) - 8
    no_tracebacks(m)


def test_writeback_with_no_free_block(zmount: ZramfsMount, tmp_path: Path) -> None:
    """A 16-block backing file and 64 candidates: ENOSPC after 16, as the kernel."""
    m = zmount
    backing = tmp_path / "backing.img"
    with open(backing, "wb") as f:
        f.truncate(16 * PAGE)
    data = _fill_huge(m, 64, backing)
    assert write_errno(m, "writeback", "huge") == errno.ENOSPC
    wb = assert_wb_consistent(m, 64)
    assert len(wb) == 16
    assert write_errno(m, "writeback", "huge") == errno.ENOSPC  # still full, nothing moves
    assert written_back(m) == wb
    assert sha(pread_image(m, 64 * PAGE)) == sha(data)
    no_tracebacks(m)


def test_writeback_to_a_file_that_fails_with_eio(
    faultyfs: FaultyFS, mount_factory: Callable[..., ZramfsMount]
) -> None:
    """The backing file's writes fail: writeback is EIO, nothing flagged ``w``,
    budget (writeback_limit) rolled back; then reads of pages that *were*
    written back fail with EIO and count in failed_reads — loudly, never zeros."""
    m = mount_factory()
    npages = 64
    data = _fill_huge(m, npages, faultyfs.data)
    m.write_attr("writeback_limit", "1000")
    m.write_attr("writeback_limit_enable", "1")
    faultyfs.fail(writes=errno.EIO)
    assert write_errno(m, "writeback", "huge") == errno.EIO
    assert assert_wb_consistent(m, npages) == set()
    assert bd_stat(m) == [0, 0, 0]
    assert m.read_attr("writeback_limit") == "1000\n"
    assert sha(pread_image(m, npages * PAGE)) == sha(data)
    # Healthy again: half the pages go out.
    faultyfs.fail()
    m.write_attr("writeback", f"page_indexes=0-{npages // 2 - 1}")
    wb = assert_wb_consistent(m, npages)
    assert wb == set(range(npages // 2))
    assert m.read_attr("writeback_limit") == f"{1000 - npages // 2}\n"
    # Now the file fails reads: those pages are lost and say so; the rest are fine.
    faultyfs.fail(reads=errno.EIO)
    fd = os.open(m.image(), os.O_RDONLY)
    try:
        for i in (0, 5, npages // 2 - 1):
            with pytest.raises(OSError) as ei:
                os.pread(fd, PAGE, i * PAGE)
            assert ei.value.errno == errno.EIO
        assert m.io_stat()[0] == 3  # failed_reads
        tail = os.pread(fd, (npages // 2) * PAGE, (npages // 2) * PAGE)
        assert tail == data[(npages // 2) * PAGE :]
        faultyfs.fail()
        assert os.pread(fd, PAGE, 5 * PAGE) == data[5 * PAGE : 6 * PAGE]
    finally:
        os.close(fd)
    no_tracebacks(m)


@needs_loop
def test_writeback_to_a_failing_block_device_is_not_silent(
    faultyfs: FaultyFS, mount_factory: Callable[..., ZramfsMount]
) -> None:
    """The dm-error case: a *block* backing device (loop over faultyfs) whose
    writes fail.  Writes to a block device land in the page cache and fail only
    when the kernel flushes them, so unless writeback waits for that, it would
    report success, free the RAM copies and leave pages that later read back
    as garbage.  Writeback must fail instead and keep every page in RAM."""
    m = mount_factory()
    loop = run("losetup", "-f", "--show", str(faultyfs.data)).stdout.strip()
    try:
        npages = 256
        data = _fill_huge(m, npages, loop)
        faultyfs.fail(writes=errno.EIO)
        assert write_errno(m, "writeback", "huge") == errno.EIO
        wb = assert_wb_consistent(m, npages)
        assert wb == set()
        # What the device holds is what the image says, even with the cache gone.
        faultyfs.fail()
        run("blockdev", "--flushbufs", loop)
        assert sha(pread_image(m, npages * PAGE)) == sha(data)
        # And a healthy block device takes the pages for real.
        m.write_attr("writeback", "huge")
        assert len(assert_wb_consistent(m, npages)) == npages
        run("blockdev", "--flushbufs", loop)
        assert sha(pread_image(m, npages * PAGE)) == sha(data)
        assert bd_stat(m)[1] == npages
        m.write_attr("reset", "1")  # closes the loop device
    finally:
        subprocess.run(["losetup", "-d", loop], capture_output=True, check=False)
    no_tracebacks(m)


def test_backing_file_truncated_underneath(zmount: ZramfsMount, tmp_path: Path) -> None:
    """Someone truncates the backing file: written-back pages read as EIO
    (failed_reads), never as zeros; RAM pages are untouched; writeback works
    again (the file grows back)."""
    m = zmount
    backing = tmp_path / "backing.img"
    with open(backing, "wb") as f:
        f.truncate(MiB)
    npages = 32
    data = _fill_huge(m, npages, backing)
    m.write_attr("writeback", "page_indexes=0-15")
    assert len(assert_wb_consistent(m, npages)) == 16
    os.truncate(backing, 0)
    fd = os.open(m.image(), os.O_RDONLY)
    try:
        for i in range(16):
            with pytest.raises(OSError) as ei:
                os.pread(fd, PAGE, i * PAGE)
            assert ei.value.errno == errno.EIO
        assert m.io_stat()[0] == 16
        assert os.pread(fd, 16 * PAGE, 16 * PAGE) == data[16 * PAGE :]
    finally:
        os.close(fd)
    m.write_attr("writeback", "page_indexes=16-31")
    wb = assert_wb_consistent(m, npages)
    assert wb == set(range(32))
    assert pread_image(m, 16 * PAGE, 16 * PAGE) == data[16 * PAGE :]
    no_tracebacks(m)


def test_backing_file_removed_underneath(zmount: ZramfsMount, tmp_path: Path) -> None:
    """Unlinking the backing file changes nothing for zram: it holds the file
    open (like the kernel holds the block device), writeback and reads go on,
    and the space is freed when the device is reset."""
    m = zmount
    backing = tmp_path / "backing.img"
    with open(backing, "wb") as f:
        f.truncate(MiB)
    npages = 32
    data = _fill_huge(m, npages, backing)
    m.write_attr("writeback", "page_indexes=0-7")
    backing.unlink()
    m.write_attr("writeback", "page_indexes=8-15")
    assert written_back(m) == set(range(16))
    assert m.read_attr("backing_dev") == f"{backing}\n"
    assert sha(pread_image(m, npages * PAGE)) == sha(data)
    m.write_attr("reset", "1")
    assert m.read_attr("backing_dev") == "none\n"
    no_tracebacks(m)


# ============================================================ a codec that fails


@pytest.fixture
def fmount() -> Iterator[ZramfsMount]:
    base = Path(tempfile.mkdtemp(prefix="zramfs-faulty-"))
    mnt = base / "mnt"
    mnt.mkdir()
    m = start_mount(mnt, module="zramfs.backends.faulty")
    try:
        yield m
    finally:
        stop_mount(m)
        subprocess.run(["rm", "-rf", "--one-file-system", str(base)], check=False)


def marked(marker: bytes, seed: int = 0) -> bytes:
    """A compressible page starting with ``marker`` (never same-filled, never huge)."""
    return (marker + b"page %d " % seed * 40).ljust(PAGE, b"\0")


def test_faulty_codec_is_not_listed(fmount: ZramfsMount) -> None:
    """The test hook replaces lz4's implementation; what users see is unchanged."""
    assert fmount.read_attr("comp_algorithm") == "[lz4] lz4hc zstd deflate brotli \n"
    assert write_errno(fmount, "comp_algorithm", "faulty") == errno.EINVAL
    assert "faulty" not in BACKEND_NAMES


@pytest.mark.parametrize(
    "marker",
    [
        pytest.param(faulty.COMPRESS_EIO, id="ZramError"),
        pytest.param(faulty.COMPRESS_BUG, id="RuntimeError"),
    ],
)
def test_compress_error_single_page(fmount: ZramfsMount, marker: bytes) -> None:
    m = fmount
    m.write_attr("disksize", "1M")
    old = marked(b"old content", 1)
    fd = os.open(m.image(), os.O_RDWR)
    try:
        assert os.pwrite(fd, old, 0) == PAGE
        mm = m.mm_stat()
        # A whole page, then a sub-page write whose read-modify-write makes a marker page.
        for buf in (marked(marker), marker):
            with pytest.raises(OSError) as ei:
                os.pwrite(fd, buf, 0)
            assert ei.value.errno == errno.EIO
            assert os.pread(fd, PAGE, 0) == old
        assert m.mm_stat() == mm
        assert m.io_stat()[1] == 2  # failed_writes
        # An unwritten slot stays unwritten.
        with pytest.raises(OSError):
            os.pwrite(fd, marked(marker), 8 * PAGE)
        assert os.pread(fd, PAGE, 8 * PAGE) == bytes(PAGE)
        assert m.mm_stat() == mm
    finally:
        os.close(fd)
    no_tracebacks(m)


@pytest.mark.parametrize(
    "marker",
    [
        pytest.param(faulty.COMPRESS_EIO, id="ZramError"),
        pytest.param(faulty.COMPRESS_BUG, id="RuntimeError"),
    ],
)
def test_compress_error_in_a_large_write(fmount: ZramfsMount, marker: bytes) -> None:
    """1 MiB requests: same guarantees whichever way the device compresses them
    (inline, or on worker threads — it picks by measured cost and explores the
    other way every 32nd large batch, so 40 failing writes take both).  Every
    page of a failed request holds its old or its new content; the failing
    page its old one; each failed request counts once."""
    m = fmount
    m.write_attr("disksize", "4M")
    old = b"".join(marked(b"old", i) for i in range(256))
    new = [marked(b"new", i) for i in range(256)]
    new[100] = marked(marker, 100)
    tries = 40
    fd = os.open(m.image(), os.O_RDWR)
    try:
        for p in range(0, MiB, 4 * PAGE):  # small requests: the device's first
            assert os.pwrite(fd, old[p : p + 4 * PAGE], p) == 4 * PAGE  # large one fails
        for _ in range(tries):
            with pytest.raises(OSError) as ei:
                os.pwrite(fd, b"".join(new), 0)
            assert ei.value.errno == errno.EIO
        got = pread_image(m, MiB)
        for i in range(256):
            page = got[i * PAGE : (i + 1) * PAGE]
            assert page == old[i * PAGE : (i + 1) * PAGE] or (i != 100 and page == new[i]), i
        assert m.io_stat()[1] == tries
    finally:
        os.close(fd)
    no_tracebacks(m)


@pytest.mark.parametrize(
    "marker",
    [
        pytest.param(faulty.DECOMPRESS_EIO, id="ZramError"),
        pytest.param(faulty.DECOMPRESS_BUG, id="RuntimeError"),
    ],
)
def test_decompress_error_on_read(fmount: ZramfsMount, marker: bytes) -> None:
    m = fmount
    m.write_attr("disksize", "1M")
    fd = os.open(m.image(), os.O_RDWR)
    try:
        good = marked(b"good", 2)
        assert os.pwrite(fd, good + marked(marker) + good, 0) == 3 * PAGE
        with pytest.raises(OSError) as ei:
            os.pread(fd, PAGE, PAGE)
        assert ei.value.errno == errno.EIO
        with pytest.raises(OSError):
            os.pread(fd, 3 * PAGE, 0)  # a request covering it fails as a whole
        assert os.pread(fd, PAGE, 0) == good and os.pread(fd, PAGE, 2 * PAGE) == good
        assert m.io_stat()[0] == 2  # failed_reads
        # Overwriting the bad page repairs it.
        assert os.pwrite(fd, good, PAGE) == PAGE
        assert os.pread(fd, 3 * PAGE, 0) == good * 3
    finally:
        os.close(fd)
    no_tracebacks(m)


@pytest.mark.parametrize("marker", [faulty.DECOMPRESS_EIO, faulty.DECOMPRESS_BUG],
                         ids=["ZramError", "RuntimeError"])  # fmt: skip
def test_decompress_error_in_writeback(fmount: ZramfsMount, tmp_path: Path, marker: bytes) -> None:
    """A page that does not decompress cannot be written back: EIO, that slot
    stays in RAM (and unflagged), its block and budget are returned; the good
    pages of the same run are written back."""
    m = fmount
    backing = tmp_path / "backing.img"
    with open(backing, "wb") as f:
        f.truncate(MiB)
    m.write_attr("backing_dev", str(backing))
    m.write_attr("disksize", "1M")
    pages = [marked(b"good", i) for i in range(8)]
    pages[3] = marked(marker, 3)
    pwrite_image(m, b"".join(pages))
    m.write_attr("writeback_limit", "100")
    m.write_attr("writeback_limit_enable", "1")
    assert write_errno(m, "writeback", "page_indexes=0-7") == errno.EIO
    wb = written_back(m)
    assert 3 not in wb
    assert bd_stat(m)[0] == bd_stat(m)[2] == len(wb)
    assert m.read_attr("writeback_limit") == f"{100 - len(wb)}\n"
    fd = os.open(m.image(), os.O_RDONLY)
    try:
        for i in range(8):
            if i != 3:
                assert os.pread(fd, PAGE, i * PAGE) == pages[i], i
    finally:
        os.close(fd)
    no_tracebacks(m)


@pytest.mark.parametrize("marker", [faulty.DECOMPRESS_EIO, faulty.DECOMPRESS_BUG],
                         ids=["ZramError", "RuntimeError"])  # fmt: skip
def test_decompress_error_in_recompress(fmount: ZramfsMount, marker: bytes) -> None:
    """recompress meets a page it cannot decompress: EIO, nothing recompressed
    that should not be, every other page intact."""
    m = fmount
    m.write_attr("recomp_algorithm", "algo=zstd")
    m.write_attr("disksize", "1M")
    pages = [marked(b"good", i) for i in range(64)]
    pages[7] = marked(marker, 7)
    pwrite_image(m, b"".join(pages))
    mm = m.mm_stat()
    assert write_errno(m, "recompress", "max_pages=100000") == errno.EIO
    assert m.mm_stat()[0] == mm[0]
    fd = os.open(m.image(), os.O_RDONLY)
    try:
        for i in range(64):
            if i != 7:
                assert os.pread(fd, PAGE, i * PAGE) == pages[i], i
    finally:
        os.close(fd)
    assert "r" not in block_state(m)[7]
    no_tracebacks(m)


# ========================================================================= signals


def test_sighup_without_open_image_unmounts(mount_factory: Callable[..., ZramfsMount]) -> None:
    m = mount_factory()
    m.write_attr("disksize", "4M")
    pwrite_image(m, os.urandom(MiB))
    assert signal_until_exit(m, signal.SIGHUP) == 0
    assert not is_mounted(m.path)
    assert not mounts.is_dead(str(m.path))
    assert "SIGHUP: unmounting" in m.log_text()
    assert "Traceback" not in m.log_text()


@needs_loop
def test_sighup_refused_with_a_loop_device(mount_factory: Callable[..., ZramfsMount]) -> None:
    """A terminal hang-up must not take the disk away from a loop device."""
    m = mount_factory()
    m.write_attr("disksize", "8M")
    loop = m.losetup()
    with open(loop, "r+b", buffering=0) as f:
        f.write(b"kept" * 1024)
    for k in range(1, 4):
        m.proc.send_signal(signal.SIGHUP)

        def refused(k: int = k) -> bool:
            return m.log_text().count("SIGHUP: refusing") >= k

        assert wait_for(refused), m.log_text()
    time.sleep(0.2)
    assert m.alive() and is_mounted(m.path)
    with open(loop, "rb") as r:
        assert r.read(PAGE) == b"kept" * 1024
    m.detach(loop)
    assert signal_until_exit(m, signal.SIGHUP) == 0
    assert not is_mounted(m.path) and not mounts.is_dead(str(m.path))
    assert "Traceback" not in m.log_text()
