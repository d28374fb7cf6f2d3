"""The writeback backing store: ``backing_dev``'s file, its block bitmap and its I/O.

The kernel's zram writes idle/huge pages to a block device (``backing_dev``)
in PAGE_SIZE blocks and tracks used blocks in a bitmap (``zram->bitmap``,
``zram_reserve_bdev_block`` / ``zram_release_bdev_block``).  This module is
that, for a userspace device: a block device *or* a regular file (SPEC §3),
cut into 4 KiB blocks, with a free-block bitmap of one bit per block.

Blocks are handed out lowest-free-first from block 0, like the current
kernel (``find_next_zero_bit(bitmap, nr_pages, 0)``; kernels before 6.x
skipped block 0 because a zero handle meant "empty" — here the ``WB`` flag
says what the handle is, so block 0 is an ordinary block).

Threading: `BackingStore.open`, `read_block`, `write_block` and `sync` are blocking
and meant for worker threads (``trio.to_thread.run_sync``); `try_read_block`
is the non-blocking fast path for the trio thread (``RWF_NOWAIT``: served
from the page cache or not at all).  The bitmap (`reserve` / `release`) is
only touched on the trio thread.

Opening (``backing_dev_store``): ``O_RDWR | O_EXCL`` like the kernel, so a
block device in use (mounted, claimed) fails with EBUSY; the open's errno is
passed through.  The open is also ``O_NONBLOCK`` and checked with ``fstat``
before anything else, so a FIFO or a character device cannot hang the
daemon: those are ENOTBLK (the kernel's answer for "not a block device"),
a directory fails the open itself with EISDIR.  A regular file additionally
gets an exclusive ``flock`` (EBUSY if taken), the file analogue of O_EXCL:
two devices (or two daemons) never share one backing file.  A file on any
zramfs mount is refused with EINVAL: writeback into our own FUSE tree would
have the daemon wait on itself.  Size 0 (fewer than one block) is EINVAL, as
in the kernel ("also prevents self reference").

TODO: a loop device whose backing file is on a zramfs mount is not detected
(it would only deadlock when it is backed by the same zram device).
"""

from __future__ import annotations

import errno
import fcntl
import os
import re
import stat as stat_mod

from ..errors import ZramError

BLOCK_SHIFT = 12
BLOCK_SIZE = 1 << BLOCK_SHIFT
ZRAMFS_FSTYPE = "fuse.zramfs"

_NOWAIT: int | None = getattr(os, "RWF_NOWAIT", None)
_NOT_FULL = re.compile(rb"[^\xff]")


def _on_zramfs(st_dev: int) -> bool:
    """Whether ``st_dev`` is a zramfs FUSE mount (from /proc/self/mountinfo)."""
    want = f"{os.major(st_dev)}:{os.minor(st_dev)}"
    try:
        with open("/proc/self/mountinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                fields = line.split()
                if len(fields) < 3 or fields[2] != want:
                    continue
                try:
                    sep = fields.index("-")
                except ValueError:
                    continue
                if sep + 1 < len(fields) and fields[sep + 1] == ZRAMFS_FSTYPE:
                    return True
    except OSError:
        return False
    return False


class BackingStore:
    """An open backing device/file of ``nr_blocks`` 4 KiB blocks."""

    __slots__ = ("fd", "path", "nr_blocks", "is_blockdev", "used", "_bitmap", "_hint", "_nowait")

    def __init__(self, fd: int, path: bytes, nr_blocks: int, is_blockdev: bool) -> None:
        self.fd = fd
        #: What ``backing_dev`` shows: the opened file's path (``file_path()``).
        self.path = path
        self.nr_blocks = nr_blocks
        self.is_blockdev = is_blockdev
        #: Blocks currently reserved (the kernel's bd_count, kept here too).
        self.used = 0
        # One bit per block, set = in use; bits past nr_blocks are pre-set so
        # the search never hands them out.
        nbytes = (nr_blocks + 7) >> 3
        self._bitmap = bytearray(nbytes)
        tail = nr_blocks & 7
        if tail:
            self._bitmap[-1] = 0xFF & ~((1 << tail) - 1)
        # Lowest byte index that may hold a zero bit.
        self._hint = 0
        self._nowait = _NOWAIT is not None

    # ------------------------------------------------------------- opening

    @classmethod
    def open(cls, path: bytes) -> BackingStore:
        """Open ``path`` as a backing store (blocking: call from a worker thread).

        Raises `ZramError` with the open's errno, ENOTBLK (neither a block
        device nor a regular file), EBUSY (file locked by another user),
        EINVAL (size below one block, or a file on a zramfs mount).
        """
        flags = os.O_RDWR | os.O_EXCL | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOCTTY
        flags |= getattr(os, "O_LARGEFILE", 0)
        try:
            fd = os.open(path, flags)
        except OSError as e:
            raise ZramError(e.errno or errno.EIO, f"backing_dev: {e.strerror}") from None
        except ValueError as e:  # embedded NUL cannot happen (kparse stops there)
            raise ZramError(errno.EINVAL, f"backing_dev: {e}") from None
        try:
            st = os.fstat(fd)
            mode = st.st_mode
            if not (stat_mod.S_ISBLK(mode) or stat_mod.S_ISREG(mode)):
                raise ZramError(errno.ENOTBLK, "backing_dev: not a block device or regular file")
            if _on_zramfs(st.st_dev):
                raise ZramError(errno.EINVAL, "backing_dev: a file inside a zramfs mount")
            if stat_mod.S_ISBLK(mode):
                size = os.lseek(fd, 0, os.SEEK_END)
                os.lseek(fd, 0, os.SEEK_SET)
            else:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except OSError as e:
                    if e.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
                        raise ZramError(errno.EBUSY, "backing_dev: file in use") from None
                    raise
                size = st.st_size
            nr_blocks = size >> BLOCK_SHIFT
            if not nr_blocks:
                raise ZramError(errno.EINVAL, "backing_dev: smaller than one block")
            fl = fcntl.fcntl(fd, fcntl.F_GETFL)
            fcntl.fcntl(fd, fcntl.F_SETFL, fl & ~os.O_NONBLOCK)
            try:
                shown = os.readlink(f"/proc/self/fd/{fd}").encode("utf-8", "surrogateescape")
            except OSError:
                shown = os.fsencode(path)
            return cls(fd, shown, nr_blocks, stat_mod.S_ISBLK(mode))
        except ZramError:
            os.close(fd)
            raise
        except OSError as e:
            os.close(fd)
            raise ZramError(e.errno or errno.EIO, f"backing_dev: {e.strerror}") from None
        except BaseException:
            os.close(fd)
            raise

    def close(self) -> None:
        """Close the file (``reset_bdev``); the bitmap is forgotten."""
        if self.fd >= 0:
            fd, self.fd = self.fd, -1
            os.close(fd)

    # --------------------------------------------------------------- blocks

    def reserve(self) -> int | None:
        """``zram_reserve_bdev_block``: the lowest free block, or None if full."""
        m = _NOT_FULL.search(self._bitmap, self._hint)
        if m is None:
            self._hint = len(self._bitmap)
            return None
        i = m.start()
        self._hint = i
        b = self._bitmap[i]
        bit = (~b & (b + 1)).bit_length() - 1  # lowest zero bit
        self._bitmap[i] = b | (1 << bit)
        self.used += 1
        return (i << 3) | bit

    def release(self, block: int) -> None:
        """``zram_release_bdev_block``: give ``block`` back (must be in use)."""
        i = block >> 3
        bit = 1 << (block & 7)
        b = self._bitmap[i]
        if not b & bit:
            raise RuntimeError(f"backing block {block} released twice")
        self._bitmap[i] = b & ~bit
        self.used -= 1
        if i < self._hint:
            self._hint = i

    def in_use(self, block: int) -> bool:
        return bool(self._bitmap[block >> 3] & (1 << (block & 7)))

    # ------------------------------------------------------------------ I/O

    def try_read_block(self, block: int) -> bytes | None:
        """Read ``block`` only if it needs no waiting (page cache hit), else None."""
        if not self._nowait or _NOWAIT is None:
            return None
        buf = bytearray(BLOCK_SIZE)
        try:
            n = os.preadv(self.fd, [buf], block << BLOCK_SHIFT, _NOWAIT)
        except BlockingIOError:
            return None
        except OSError as e:
            if e.errno in (errno.EOPNOTSUPP, errno.EINVAL):
                self._nowait = False  # file system without RWF_NOWAIT support
            return None
        if n != BLOCK_SIZE:
            return None  # partly cached: let the blocking path do it
        return bytes(buf)

    def read_block(self, block: int) -> bytes:
        """Read one block (blocking).  EIO on a short read."""
        off = block << BLOCK_SHIFT
        try:
            data = os.pread(self.fd, BLOCK_SIZE, off)
            while len(data) < BLOCK_SIZE:
                more = os.pread(self.fd, BLOCK_SIZE - len(data), off + len(data))
                if not more:
                    raise ZramError(errno.EIO, f"backing block {block}: short read")
                data += more
        except OSError as e:
            if isinstance(e, ZramError):
                raise
            raise ZramError(e.errno or errno.EIO, f"backing block {block}: {e.strerror}") from None
        return data

    def sync(self) -> int:
        """Wait until every block written so far is on the device: 0 or an errno.

        ``pwrite`` to a block device (or to a file on most file systems) only
        fills the page cache; an I/O error surfaces when the kernel writes the
        cache out, long after ``pwrite`` returned success.  Writeback frees a
        page's RAM copy once its block is written, so it must wait for that
        (the kernel's zram waits for its bio's completion) or a failing disk
        loses pages silently.  ``fdatasync`` reports such an error exactly
        once per open file (errseq), so a batch is synced before its pages are
        committed.  EINVAL/EROFS mean "cannot be synced": nothing to wait for.
        """
        try:
            os.fdatasync(self.fd)
        except OSError as e:
            if e.errno in (errno.EINVAL, errno.EROFS):
                return 0
            return e.errno or errno.EIO
        return 0

    def write_block(self, block: int, data: bytes) -> int:
        """Write one block (blocking, padded to BLOCK_SIZE); 0 or an errno."""
        if len(data) < BLOCK_SIZE:
            data = data + bytes(BLOCK_SIZE - len(data))
        off = block << BLOCK_SHIFT
        mv = memoryview(data)
        done = 0
        try:
            while done < BLOCK_SIZE:
                n = os.pwrite(self.fd, mv[done:], off + done)
                if n <= 0:
                    return errno.EIO
                done += n
        except OSError as e:
            return e.errno or errno.EIO
        return 0
