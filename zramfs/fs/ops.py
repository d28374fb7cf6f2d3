"""FUSE operations: the kernel's sysfs and block-device behaviour over pyfuse3.

Each handler's contract is the one real zram gives through ``/sys`` and
``/dev``; every refusal is an errno the caller would see from the kernel.
No exception other than `pyfuse3.FUSEError` may leave a handler — pyfuse3
would end the main loop and leave a dead mount — so each handler is wrapped by
`_guard`, which turns `ZramError` into its errno and anything unexpected into
EIO with a logged traceback (``read`` and ``write``, the data path, inline the
same ``try`` instead: `_failed`).
"""

from __future__ import annotations

import errno
import functools
import logging
import os
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any, ParamSpec, TypeVar

import pyfuse3
import trio

from ..core.device import (
    WRITE_DEFERRED,
    WriteData,
    ZramDevice,
    read_fast_path,
    write_fast_path,
)
from ..core.registry import ZramRegistry
from ..errors import ZramError
from .tree import Kind, Node, Tree

log = logging.getLogger(__name__)

P = ParamSpec("P")
R = TypeVar("R")

FALLOC_FL_KEEP_SIZE = 0x01
FALLOC_FL_PUNCH_HOLE = 0x02
FALLOC_FL_ZERO_RANGE = 0x10
ATTR_FILE_SIZE = 4096  # sysfs reports every attribute as 4096 bytes
SYSFS_WRITE_MAX = 4096  # kernfs: atomic_write_len = PAGE_SIZE, larger → E2BIG


def _guard(fn: Callable[P, Coroutine[Any, Any, R]]) -> Callable[P, Coroutine[Any, Any, R]]:
    @functools.wraps(fn)
    async def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return await fn(*args, **kwargs)
        except pyfuse3.FUSEError:
            raise
        except ZramError as e:
            raise pyfuse3.FUSEError(e.errno or errno.EIO) from None
        except trio.Cancelled:
            raise
        except Exception:
            log.exception("%s failed", fn.__name__)
            raise pyfuse3.FUSEError(errno.EIO) from None

    return wrapper


def _failed(name: str, exc: Exception) -> pyfuse3.FUSEError:
    """`_guard`'s mapping, for handlers that inline its ``try`` (read, write)."""
    if isinstance(exc, ZramError):
        return pyfuse3.FUSEError(exc.errno or errno.EIO)
    log.exception("%s failed", name)
    return pyfuse3.FUSEError(errno.EIO)


@dataclass
class Handle:
    node: Node
    dev: ZramDevice | None
    writable: bool
    snapshot: bytes | None = None
    # `dev` when the node is the image file (else None): one attribute test
    # on the 4 KiB path instead of `node.kind is Kind.IMAGE` (an Enum
    # class-attribute lookup costs ~0.2 µs hot).
    image: ZramDevice | None = None


# Our pyfuse3 patch's deferred writes (patches/README.md, "defer"): a stock
# or older pyfuse3 has none, and zramfs then never defers.
CAN_DEFER = all(hasattr(pyfuse3, a) for a in ("DEFERRED", "reply_deferred", "request_waiting"))


class PyfuseDeferral:
    """`core.device.WriteDeferral` through pyfuse3: another request queued on
    /dev/fuse (``pyfuse3.request_waiting``), and the deferred write's answer
    (``pyfuse3.reply_deferred``: pyfuse3 answers its deferred writes in the
    order they were deferred)."""

    __slots__ = ()

    def waiting(self) -> bool:
        return bool(pyfuse3.request_waiting())

    def reply(self, result: int | ZramError) -> None:
        if isinstance(result, ZramError):
            pyfuse3.reply_deferred(pyfuse3.FUSEError(result.errno or errno.EIO))
        else:
            pyfuse3.reply_deferred(result)


class ZramOperations(pyfuse3.Operations):  # type: ignore[misc]
    """The mount's request handlers."""

    supports_dot_lookup = False
    enable_writeback_cache = False
    enable_acl = False
    # Our pyfuse3 patch: `write` / `write_nowait` get a read-only memoryview
    # of the request instead of a bytes copy (one copy of every written byte
    # less: ~4 % of the trio thread's time writing 1 MiB requests).  The
    # device keeps no reference past the call; control files take a copy.
    write_views = True

    def __init__(self, registry: ZramRegistry) -> None:
        super().__init__()
        self.registry = registry
        self._devices = registry.devices  # the registry's own dict, changed in place
        self.tree = Tree(registry)
        self.handles: dict[int, Handle] = {}
        # pyfuse3's synchronous handlers (our pyfuse3 patch adds
        # `Operations.read_nowait` / `write_nowait`; a stock pyfuse3 ignores
        # them): 4 KiB image reads answered without a coroutine, in C for
        # lz4 pages, else by the Python `read_nowait` method, else the async
        # `read` ...
        self.read_nowait = read_fast_path(  # type: ignore[method-assign,assignment]
            self.handles, self._devices, self.read_nowait
        )
        # ... and 4 KiB image writes: in C for the common case, else the
        # Python `write_nowait` (the method), else the async `write`.
        self.write_nowait = write_fast_path(  # type: ignore[method-assign,assignment]
            self.handles, self._devices, self.write_nowait
        )
        # A run of image pages may be answered later (`ZramDevice.write_nowait`
        # with a deferral): at most one write is deferred at a time, on
        # `_deferring`; `write_drain` finishes it.
        self.deferral: PyfuseDeferral | None = PyfuseDeferral() if CAN_DEFER else None
        self._deferring: ZramDevice | None = None
        self._next_fh = 1
        self._t0 = time.time_ns()
        self._uid = os.getuid()
        self._invalidate_send: trio.MemorySendChannel[int] | None = None
        registry.on_change.append(self._devices_changed)
        for dev in registry.devices.values():
            dev.on_resize.append(self._resized)

    # ----------------------------------------------------------- plumbing

    def start_background(self, nursery: trio.Nursery) -> None:
        """Run the inode-invalidation sender (must not run inside a handler)."""
        send, recv = trio.open_memory_channel[int](1000)
        self._invalidate_send = send
        nursery.start_soon(self._invalidator, recv)

    async def _invalidator(self, recv: trio.MemoryReceiveChannel[int]) -> None:
        async for inode in recv:
            try:
                await trio.to_thread.run_sync(pyfuse3.invalidate_inode, inode, True)
            except OSError as e:  # ENOENT: the kernel does not know it; fine
                log.debug("invalidate_inode(%d): %s", inode, e)

    def _resized(self, dev: ZramDevice) -> None:
        if self._invalidate_send is not None:
            try:
                self._invalidate_send.send_nowait(self.tree.image_inode(dev.id))
            except trio.WouldBlock:
                pass

    def _devices_changed(self) -> None:
        for dev in self.registry.devices.values():
            if self._resized not in dev.on_resize:
                dev.on_resize.append(self._resized)
        self.tree.rebuild()

    def _node(self, inode: int) -> Node:
        node = self.tree.get(inode)
        if node is None:
            raise pyfuse3.FUSEError(errno.ENOENT)
        return node

    def _dev(self, node: Node) -> ZramDevice:
        dev = self.registry.get(node.dev_id) if node.dev_id is not None else None
        if dev is None:
            raise pyfuse3.FUSEError(errno.ENODEV)
        return dev

    def _entry(self, node: Node) -> pyfuse3.EntryAttributes:
        e = pyfuse3.EntryAttributes()
        e.st_ino = node.inode
        e.st_mode = node.mode
        e.st_nlink = 2 + len([c for c in node.children]) if node.kind is Kind.DIR else 1
        e.st_uid = 0
        e.st_gid = node.gid
        e.st_blksize = 4096
        e.st_atime_ns = e.st_mtime_ns = e.st_ctime_ns = self._t0
        # Sizes change behind the kernel's back (disksize, hot_add): no caching.
        e.attr_timeout = 0
        e.entry_timeout = 0
        if node.kind is Kind.IMAGE:
            dev = self.registry.get(node.dev_id) if node.dev_id is not None else None
            if dev is not None:
                e.st_size = dev.disksize
                e.st_blocks = dev.total_pages() * 8  # du shows the RAM really used
        elif node.kind is not Kind.DIR:
            e.st_size = ATTR_FILE_SIZE
        return e

    # ---------------------------------------------------------- metadata

    @_guard
    async def lookup(
        self, parent_inode: int, name: bytes, ctx: pyfuse3.RequestContext
    ) -> pyfuse3.EntryAttributes:
        parent = self._node(parent_inode)
        if name == b".":
            return self._entry(parent)
        child = parent.children.get(name)
        if child is None:
            raise pyfuse3.FUSEError(errno.ENOENT)
        return self._entry(self._node(child))

    @_guard
    async def getattr(self, inode: int, ctx: pyfuse3.RequestContext) -> pyfuse3.EntryAttributes:
        return self._entry(self._node(inode))

    @_guard
    async def setattr(
        self,
        inode: int,
        attr: pyfuse3.EntryAttributes,
        fields: pyfuse3.SetattrFields,
        fh: int | None,
        ctx: pyfuse3.RequestContext,
    ) -> pyfuse3.EntryAttributes:
        """Only no-op truncates: ``echo > attr`` (O_TRUNC) and same-size images.

        sysfs files ignore truncation; the image's size is ``disksize`` and
        nothing else (EINVAL, as for a block device).  Ownership, mode and
        times are fixed (EPERM).
        """
        node = self._node(inode)
        if fields.update_mode or fields.update_uid or fields.update_gid:
            raise pyfuse3.FUSEError(errno.EPERM)
        if fields.update_size:
            if node.kind is Kind.DIR:
                raise pyfuse3.FUSEError(errno.EISDIR)
            if node.kind is Kind.IMAGE and attr.st_size != self._dev(node).disksize:
                raise pyfuse3.FUSEError(errno.EINVAL)
        return self._entry(node)

    @_guard
    async def opendir(self, inode: int, ctx: pyfuse3.RequestContext) -> int:
        node = self._node(inode)
        if node.kind is not Kind.DIR:
            raise pyfuse3.FUSEError(errno.ENOTDIR)
        return inode

    @_guard
    async def readdir(self, fh: int, start_id: int, token: pyfuse3.ReaddirToken) -> None:
        node = self._node(fh)
        entries = sorted(node.children.items(), key=lambda kv: kv[1])
        for name, ino in entries:
            if ino <= start_id:
                continue
            child = self.tree.get(ino)
            if child is None:
                continue
            if not pyfuse3.readdir_reply(token, name, self._entry(child), ino):
                break

    async def releasedir(self, fh: int) -> None:
        return None

    @_guard
    async def statfs(self, ctx: pyfuse3.RequestContext) -> pyfuse3.StatvfsData:
        s = pyfuse3.StatvfsData()
        s.f_bsize = s.f_frsize = 4096
        total = sum(d.npages for d in self.registry.devices.values())
        used = sum(d.total_pages() for d in self.registry.devices.values())
        s.f_blocks = total
        s.f_bfree = s.f_bavail = max(total - used, 0)
        s.f_files = len(self.tree.nodes)
        s.f_ffree = s.f_favail = 0
        s.f_namemax = 255
        return s

    # ------------------------------------------------------------- files

    @_guard
    async def open(self, inode: int, flags: int, ctx: pyfuse3.RequestContext) -> pyfuse3.FileInfo:
        node = self._node(inode)
        if node.kind is Kind.DIR:
            raise pyfuse3.FUSEError(errno.EISDIR)
        acc = flags & os.O_ACCMODE
        wants_read = acc in (os.O_RDONLY, os.O_RDWR)
        wants_write = acc in (os.O_WRONLY, os.O_RDWR)
        # kernfs refuses wrong-direction opens even for root.
        if (wants_read and not node.mode & 0o444) or (wants_write and not node.mode & 0o222):
            raise pyfuse3.FUSEError(errno.EACCES)
        dev = self._dev(node) if node.dev_id is not None else None
        if node.kind is Kind.IMAGE:
            assert dev is not None
            dev.openers += 1
        fh = self._next_fh
        self._next_fh += 1
        image = dev if node.kind is Kind.IMAGE else None
        self.handles[fh] = Handle(node, dev, wants_write, image=image)
        return pyfuse3.FileInfo(fh=fh, direct_io=True, keep_cache=False)

    async def release(self, fh: int) -> None:
        h = self.handles.pop(fh, None)
        if h is not None and h.node.kind is Kind.IMAGE and h.dev is not None:
            h.dev.openers -= 1

    async def flush(self, fh: int) -> None:
        return None

    @_guard
    async def fsync(self, fh: int, datasync: bool) -> None:
        h = self._handle(fh)
        if h.node.kind is Kind.IMAGE and h.dev is not None:
            h.dev.flush()

    def _handle(self, fh: int) -> Handle:
        h = self.handles.get(fh)
        if h is None:
            raise pyfuse3.FUSEError(errno.EBADF)
        if h.dev is not None and self._devices.get(h.dev.id) is not h.dev:
            # Opened before hot_remove: kernfs answers ENODEV once the kobject
            # is gone (a store must not re-initialize the removed device).
            raise pyfuse3.FUSEError(errno.ENODEV)
        return h

    # read and write: the image of a live device is served first, with
    # `_guard` and `_handle` inlined (one coroutine frame and two calls less
    # per 4 KiB request; docs/profile.md, "4 KiB requests"); everything else,
    # errors included, goes through `_handle` as in the other handlers.

    async def read(self, fh: int, off: int, size: int) -> bytes:
        try:
            h = self.handles.get(fh)
            dev = None if h is None else h.image
            if dev is not None and self._devices.get(dev.id) is dev:
                return await dev.read(off, size)
            h = self._handle(fh)  # EBADF; ENODEV, also for a removed device's image
            if off == 0 or h.snapshot is None:
                h.snapshot = await self._show(h)
            return h.snapshot[off : off + size]
        except pyfuse3.FUSEError:
            raise
        except Exception as e:
            raise _failed("read", e) from None

    async def _show(self, h: Handle) -> bytes:
        node = h.node
        if node.kind is Kind.HOT_ADD:
            return b"%d\n" % self.registry.add().id
        assert node.attr is not None and node.attr.show is not None and h.dev is not None
        return node.attr.show(h.dev)

    async def write(self, fh: int, off: int, buf: WriteData) -> int:
        try:
            h = self.handles.get(fh)
            dev = None if h is None else h.image
            if dev is not None and self._devices.get(dev.id) is dev:
                return await dev.write(off, buf)
            buf = bytes(buf)  # (a control file: what it stores may keep it)
            h = self._handle(fh)  # EBADF; ENODEV, also for a removed device's image
            dev = h.dev
            kind = h.node.kind
            if len(buf) > SYSFS_WRITE_MAX:
                raise pyfuse3.FUSEError(errno.E2BIG)
            if kind is Kind.HOT_REMOVE:
                await self.registry.remove_store(buf)
                return len(buf)
            attr = h.node.attr
            assert attr is not None and attr.store is not None and dev is not None
            await attr.store(dev, buf)
            return len(buf)
        except pyfuse3.FUSEError:
            raise
        except Exception as e:
            raise _failed("write", e) from None

    def _live_image(self, fh: int) -> ZramDevice | None:
        """The live device whose image ``fh`` is open on (None for a control
        file, a bad handle, or a device removed under its handle)."""
        h = self.handles.get(fh)
        dev = None if h is None else h.image
        return dev if dev is not None and self._devices.get(dev.id) is dev else None

    def read_nowait(self, fh: int, off: int, size: int) -> bytes | None:
        """pyfuse3's synchronous `read` (our patch adds ``Operations.read_nowait``).

        A live device's image: `ZramDevice.read_nowait` (one page held in
        RAM, any codec, or None to await `read`); anything else: None.
        """
        dev = self._live_image(fh)
        if dev is None:
            return None
        try:
            return dev.read_nowait(off, size)
        except Exception as e:
            raise _failed("read", e) from None

    def write_nowait(self, fh: int, off: int, buf: WriteData) -> object:
        """pyfuse3's synchronous `write` (our patch adds ``Operations.write_nowait``).

        A live device's image: `ZramDevice.write_nowait` (one page or a run
        of whole pages stored inline, or None to await `write`), or
        ``pyfuse3.DEFERRED`` for a run whose end it deferred (answered by the
        device through `deferral`, or `write_drain`); anything else: None.
        """
        dev = self._live_image(fh)
        if dev is None:
            return None
        try:
            prior = self._deferring
            if prior is not None and prior is not dev:
                self._deferring = None
                prior.finish_deferred()  # another device's: answered first
            got = dev.write_nowait(off, buf, self.deferral)
        except Exception as e:
            raise _failed("write", e) from None
        if got == WRITE_DEFERRED:
            self._deferring = dev
            return pyfuse3.DEFERRED
        return got

    def write_drain(self) -> None:
        """pyfuse3's ``Operations.write_drain`` (our patch): finish and answer
        the deferred write, if any (the burst that received it ends, or a
        coroutine is about to run)."""
        dev = self._deferring
        self._deferring = None
        if dev is not None:
            dev.finish_deferred()

    @_guard
    async def fallocate(self, fh: int, mode: int, offset: int, length: int) -> None:
        """loop's discard (PUNCH_HOLE|KEEP_SIZE = 3) and write-zeroes (ZERO_RANGE|KEEP_SIZE = 17).

        Both free the whole pages in range (``notify_free``) and zero partial
        edges.  Allocation (mode 0 inside the device, KEEP_SIZE anywhere) is a no-op: RAM
        is committed on write.  Anything that would change the size: EOPNOTSUPP.
        """
        h = self._handle(fh)
        if h.node.kind is not Kind.IMAGE or h.dev is None:
            raise pyfuse3.FUSEError(errno.ENODEV)
        if not h.writable:
            raise pyfuse3.FUSEError(errno.EBADF)
        dev = h.dev
        if offset < 0 or length <= 0:
            raise pyfuse3.FUSEError(errno.EINVAL)
        end = offset + length
        if mode in (FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, FALLOC_FL_ZERO_RANGE,
                    FALLOC_FL_ZERO_RANGE | FALLOC_FL_KEEP_SIZE):  # fmt: skip
            if not mode & FALLOC_FL_KEEP_SIZE and end > dev.disksize:
                raise pyfuse3.FUSEError(errno.EOPNOTSUPP)
            await dev.discard(offset, length)
            return
        if mode in (0, FALLOC_FL_KEEP_SIZE):
            # Allocation: RAM is committed on write, so inside the device there
            # is nothing to do; with KEEP_SIZE neither is there beyond it, as
            # for a regular file.  Only growing the image is impossible.
            if mode == 0 and end > dev.disksize:
                raise pyfuse3.FUSEError(errno.EOPNOTSUPP)
            return
        raise pyfuse3.FUSEError(errno.EOPNOTSUPP)

    # Nothing can be created, removed or renamed in this tree.
    async def create(self, parent_inode: int, name: bytes, mode: int, flags: int,
                     ctx: pyfuse3.RequestContext) -> Any:  # fmt: skip
        raise pyfuse3.FUSEError(errno.EACCES)

    async def mknod(self, *args: Any) -> Any:
        raise pyfuse3.FUSEError(errno.EPERM)

    async def mkdir(self, *args: Any) -> Any:
        raise pyfuse3.FUSEError(errno.EPERM)

    async def unlink(self, *args: Any) -> None:
        raise pyfuse3.FUSEError(errno.EPERM)

    async def rmdir(self, *args: Any) -> None:
        raise pyfuse3.FUSEError(errno.EPERM)

    async def rename(self, *args: Any) -> None:
        raise pyfuse3.FUSEError(errno.EPERM)

    @property
    def open_images(self) -> list[str]:
        """Devices whose image is open (a loop device attached, or any open)."""
        return [d.name for d in self.registry.devices.values() if d.openers]
