"""The bare pyfuse3 + trio file system: the ceiling for any Python FUSE file system here.

Run as ``python -m benchmarks.bare_fs --size 256M MNT`` (foreground).  It
serves one file, ``MNT/dev/zram0``, backed by a ``bytearray`` of ``--size``
bytes: a read answers with a slice of it (no copy), a write copies the
request into it.  Nothing else happens per request, so whatever zramfs does
beyond this (slot table, compression, locks, statistics) is what a ratio
against this file system measures.

For the comparison to be fair it speaks to the kernel exactly as zramfs does
(``zramfs/fs/daemon.py`` and ``zramfs/fs/ops.py``): the same mount options
(``pyfuse3.default_options``, i.e. ``default_permissions``, plus
``fsname``/``subtype``), the same `Operations` class flags (no writeback
cache, no dot lookup, no ACLs), the same open reply (``direct_io=True``,
``keep_cache=False``), the same zero attribute and entry timeouts (so the
kernel asks for attributes as often), the same tree depth for the image
(``MNT/dev/zram0``, mode 0660 root:disk), and ``pyfuse3.main()`` with its
default worker tasks.  It has no ``sys/`` tree: nothing in the benchmark reads
attributes of this file system.

SIGTERM and SIGINT call ``pyfuse3.terminate()``; the file system is then
unmounted through ``pyfuse3.close(unmount=True)``.  Detach any loop device on
the file first (the benchmark harness does).
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import os
import signal
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import cast

import pyfuse3
import trio

from benchmarks.common import parse_size, scratch_mountpoint, wait_for_mount
from zramfs.fs import mounts

ROOT_INODE = pyfuse3.ROOT_INODE  # 1
DEV_INODE = 2
IMAGE_INODE = 3
IMAGE_NAME = b"zram0"
DISK_GID = 6  # Debian's "disk" group, as zramfs' /dev/zramN
FSNAME = "zramfs-bare"
FSTYPE = "fuse." + FSNAME
REPO_ROOT = Path(__file__).resolve().parent.parent


def fuse_options() -> set[str]:
    """zramfs' options (``daemon.fuse_options``) with this file system's name."""
    options = set(pyfuse3.default_options)  # default_permissions
    options |= {f"fsname={FSNAME}", f"subtype={FSNAME}"}
    return options


class BareOperations(pyfuse3.Operations):  # type: ignore[misc]
    """``/``, ``/dev`` and ``/dev/zram0``: a bytearray of a fixed size."""

    supports_dot_lookup = False
    enable_writeback_cache = False
    enable_acl = False

    def __init__(self, size: int) -> None:
        super().__init__()
        self.size = size
        self.data = bytearray(size)
        self.view = memoryview(self.data)
        self._t0 = time.time_ns()
        self._next_fh = 1
        self._children: dict[int, dict[bytes, int]] = {
            ROOT_INODE: {b"dev": DEV_INODE},
            DEV_INODE: {IMAGE_NAME: IMAGE_INODE},
        }

    def _entry(self, inode: int) -> pyfuse3.EntryAttributes:
        e = pyfuse3.EntryAttributes()
        e.st_ino = inode
        e.st_uid = 0
        e.st_blksize = 4096
        e.st_atime_ns = e.st_mtime_ns = e.st_ctime_ns = self._t0
        e.attr_timeout = 0  # as zramfs: no attribute or entry caching
        e.entry_timeout = 0
        if inode == IMAGE_INODE:
            e.st_mode = stat.S_IFREG | 0o660
            e.st_nlink = 1
            e.st_gid = DISK_GID
            e.st_size = self.size
            e.st_blocks = self.size // 512
        elif inode in self._children:
            e.st_mode = stat.S_IFDIR | 0o755
            e.st_nlink = 2 + len(self._children[inode])
            e.st_gid = 0
        else:
            raise pyfuse3.FUSEError(errno.ENOENT)
        return e

    async def lookup(
        self, parent_inode: int, name: bytes, ctx: pyfuse3.RequestContext
    ) -> pyfuse3.EntryAttributes:
        children = self._children.get(parent_inode)
        if children is None:
            raise pyfuse3.FUSEError(errno.ENOTDIR)
        if name == b".":
            return self._entry(parent_inode)
        child = children.get(name)
        if child is None:
            raise pyfuse3.FUSEError(errno.ENOENT)
        return self._entry(child)

    async def getattr(self, inode: int, ctx: pyfuse3.RequestContext) -> pyfuse3.EntryAttributes:
        return self._entry(inode)

    async def setattr(
        self,
        inode: int,
        attr: pyfuse3.EntryAttributes,
        fields: pyfuse3.SetattrFields,
        fh: int | None,
        ctx: pyfuse3.RequestContext,
    ) -> pyfuse3.EntryAttributes:
        """Only a no-op truncate to the current size (as zramfs' image)."""
        if fields.update_mode or fields.update_uid or fields.update_gid:
            raise pyfuse3.FUSEError(errno.EPERM)
        if fields.update_size:
            if inode != IMAGE_INODE:
                raise pyfuse3.FUSEError(errno.EISDIR)
            if attr.st_size != self.size:
                raise pyfuse3.FUSEError(errno.EINVAL)
        return self._entry(inode)

    async def opendir(self, inode: int, ctx: pyfuse3.RequestContext) -> int:
        if inode not in self._children:
            raise pyfuse3.FUSEError(errno.ENOTDIR)
        return inode

    async def readdir(self, fh: int, start_id: int, token: pyfuse3.ReaddirToken) -> None:
        for name, ino in sorted(self._children[fh].items(), key=lambda kv: kv[1]):
            if ino <= start_id:
                continue
            if not pyfuse3.readdir_reply(token, name, self._entry(ino), ino):
                break

    async def releasedir(self, fh: int) -> None:
        return None

    async def statfs(self, ctx: pyfuse3.RequestContext) -> pyfuse3.StatvfsData:
        s = pyfuse3.StatvfsData()
        s.f_bsize = s.f_frsize = 4096
        s.f_blocks = self.size // 4096
        s.f_bfree = s.f_bavail = 0
        s.f_files = 3
        s.f_ffree = s.f_favail = 0
        s.f_namemax = 255
        return s

    async def open(self, inode: int, flags: int, ctx: pyfuse3.RequestContext) -> pyfuse3.FileInfo:
        if inode != IMAGE_INODE:
            raise pyfuse3.FUSEError(errno.EISDIR if inode in self._children else errno.ENOENT)
        fh = self._next_fh
        self._next_fh += 1
        return pyfuse3.FileInfo(fh=fh, direct_io=True, keep_cache=False)

    async def read(self, fh: int, off: int, size: int) -> bytes:
        # pyfuse3 replies with PyObject_GetBuffer(): any buffer will do, so a
        # view of the bytearray is sent without a copy on the Python side.
        return cast(bytes, self.view[off : min(off + size, self.size)])

    async def write(self, fh: int, off: int, buf: bytes) -> int:
        if off >= self.size:
            raise pyfuse3.FUSEError(errno.ENOSPC)
        n = min(len(buf), self.size - off)
        self.data[off : off + n] = buf[:n] if n < len(buf) else buf
        return n

    async def flush(self, fh: int) -> None:
        return None

    async def fsync(self, fh: int, datasync: bool) -> None:
        return None

    async def release(self, fh: int) -> None:
        return None


class NowaitBareOperations(BareOperations):
    """`BareOperations` answering reads and writes in pyfuse3's request
    handler (``read_nowait`` / ``write_nowait``, our pyfuse3 patch), as
    zramfs does for 4 KiB requests: the ceiling with the patch
    (``--nowait``; not the benchmark's reference, which is stock pyfuse3)."""

    def read_nowait(self, fh: int, off: int, size: int) -> memoryview:
        return self.view[off : min(off + size, self.size)]

    def write_nowait(self, fh: int, off: int, buf: bytes) -> int | None:
        if off >= self.size:
            return None  # write's ENOSPC
        n = min(len(buf), self.size - off)
        self.data[off : off + n] = buf[:n] if n < len(buf) else buf
        return n


async def _serve(stopping: list[bool]) -> None:
    async with trio.open_nursery() as nursery:

        async def watch_signals(task_status: trio.TaskStatus[None]) -> None:
            with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as sigs:
                task_status.started()
                async for _ in sigs:
                    stopping[0] = True
                    pyfuse3.terminate()
                    return

        await nursery.start(watch_signals)
        await pyfuse3.main()
        nursery.cancel_scope.cancel()


def serve(size: int, mountpoint: str, ops_class: type[BareOperations] = BareOperations) -> int:
    """Mount, serve until unmounted or signalled, unmount; the exit status."""
    ops = ops_class(size)
    pyfuse3.init(ops, mountpoint, fuse_options())
    # As zramfs: unmount after terminate() or a failure; not when the kernel
    # already unmounted us (fusermount3 -u ended pyfuse3.main()).
    stopping = [True]
    try:
        stopping[0] = False
        trio.run(_serve, stopping)
    except BaseException:
        stopping[0] = True
        raise
    finally:
        pyfuse3.close(unmount=stopping[0])
    return 0


def main(argv: list[str] | None = None, ops_class: type[BareOperations] = BareOperations) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m benchmarks.bare_fs", description="a bare pyfuse3 file system (ceiling)"
    )
    ap.add_argument("--size", type=parse_size, default=parse_size("256M"),
                    help="size of MNT/dev/zram0 (default 256M)")  # fmt: skip
    ap.add_argument("--nowait", action="store_true",
                    help="answer in pyfuse3's synchronous handlers (our patch)")  # fmt: skip
    ap.add_argument("mountpoint")
    args = ap.parse_args(argv)
    if args.nowait:
        ops_class = NowaitBareOperations
    if not os.path.isdir(args.mountpoint):
        print(f"bare_fs: {args.mountpoint} is not a directory", file=sys.stderr)
        return 1
    return serve(args.size, args.mountpoint, ops_class)


# ----------------------------------------------------------- harness side


@dataclass
class BareMount:
    """A running bare file system (started by `bare_mounted`)."""

    path: Path
    proc: subprocess.Popen[bytes]
    log: Path

    def image(self) -> Path:
        return self.path / "dev" / IMAGE_NAME.decode()

    def log_text(self) -> str:
        try:
            return self.log.read_text()
        except OSError:
            return ""


def _stop(m: BareMount) -> None:
    """SIGTERM the daemon (it unmounts itself) and reap it.  Raises nothing but
    an interrupt (Ctrl-C during the wait), and even then leaves no daemon and
    no mount behind."""
    try:
        if m.proc.poll() is None:
            m.proc.send_signal(signal.SIGTERM)
        try:
            m.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            pass
    finally:
        with contextlib.suppress(Exception):
            if m.proc.poll() is None:
                m.proc.kill()
                m.proc.wait(timeout=5)
        with contextlib.suppress(Exception):
            if mounts.find_mount(str(m.path)) is not None:
                res = mounts.fuse_unmount(str(m.path))
                if res.returncode != 0:
                    mounts.fuse_unmount(str(m.path), lazy=True)


@contextlib.contextmanager
def bare_mounted(
    size: int, timeout: float = 20.0, module: str = "benchmarks.bare_fs", *options: str
) -> Iterator[BareMount]:
    """``python -m MODULE`` (this one, or a variant built on `serve`) on a
    fresh temporary directory.

    Waits for the mount, always stops the daemon and removes the directory
    afterwards (also on SIGTERM, turned into SystemExit meanwhile).  Loop
    devices on the image must be detached by the caller first.
    """
    with scratch_mountpoint("zramfs-bare-") as path:
        log = path.parent / "mnt.log"
        with open(log, "wb") as logf:
            proc = subprocess.Popen(
                [sys.executable, "-m", module, "--size", str(size), *options, str(path)],
                stdin=subprocess.DEVNULL, stdout=logf, stderr=logf, cwd=REPO_ROOT,
                # Its own session: a Ctrl-C in the terminal reaches the harness only,
                # which detaches loop devices before stopping the daemon.
                start_new_session=True,
            )  # fmt: skip
        m = BareMount(path, proc, log)
        try:
            why = wait_for_mount(path, proc, FSTYPE, m.image(), timeout)
            if why is not None:
                raise RuntimeError(f"bare_fs {why}:\n{m.log_text()}")
            yield m
        finally:
            _stop(m)


if __name__ == "__main__":
    sys.exit(main())
