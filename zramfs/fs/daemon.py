"""The mount's lifecycle, in the s3ql manner.

``run()`` mounts, serves until the file system is unmounted (``zramfs
umount``/``fusermount3 -u``) or a signal asks it to stop, and always leaves
through the same exit stack: the FUSE session is closed (unmounting if the
kernel has not already), every device's memory is released, and no dead mount
is left behind when the daemon exits on its own.

Signals (SPEC §2): SIGTERM, SIGINT and SIGHUP mean "unmount", but only while
no image is open — a loop device attached to an image would lose its disk.
Then the daemon logs that it refuses and keeps serving.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import sys
from dataclasses import dataclass

import pyfuse3
import trio

from ..core.registry import ZramRegistry
from . import mounts
from .ops import ZramOperations

log = logging.getLogger("zramfs")


@dataclass
class MountOptions:
    mountpoint: str
    num_devices: int = 1
    allow_other: bool = False
    debug: bool = False
    mlock: bool = False
    ready_fd: int | None = None


def fuse_options(opts: MountOptions) -> set[str]:
    options = set(pyfuse3.default_options)  # default_permissions
    options |= {"fsname=zramfs", "subtype=zramfs"}
    if opts.allow_other:
        options.add("allow_other")
    if opts.debug:
        options.add("debug")
    return options


async def _watch_signals(
    ops: ZramOperations,
    stopping: list[bool],
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT, signal.SIGHUP) as sigs:
        task_status.started()
        async for signum in sigs:
            name = signal.Signals(signum).name
            busy = ops.open_images
            if busy:
                log.warning(
                    "%s: refusing to unmount, image open: %s (detach the loop device first)",
                    name,
                    ", ".join(busy),
                )
                continue
            log.info("%s: unmounting", name)
            stopping[0] = True
            pyfuse3.terminate()
            return


# glibc mallopt() parameters (malloc.h).
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
# A request's transient buffers stay below this: the 1 MiB of a FUSE write
# (pyfuse3 copies it into a bytes object), the batch's compressed output, the
# joined pages of a read (512 KiB).  So they come from the heap, not mmap.
MALLOC_MMAP_THRESHOLD = 4 << 20
# Free heap memory glibc may keep at the top before shrinking it on free():
# a few requests' worth.  `_trim_heap` gives it back within 0.2 s anyway.
MALLOC_TRIM_THRESHOLD = 8 << 20


def tune_malloc() -> bool:
    """Keep request-sized buffers in glibc's heap between requests.

    With glibc's defaults a 1 MiB buffer is mmap'd, or, once the dynamic
    threshold has risen past it, taken from the heap top that free() then
    trims (the threshold for trimming is only twice the mmap threshold, and
    two freed request buffers exceed it).  Either way every 1 MiB write faulted
    in ~256 fresh pages and gave them back: measured here, 1.1 ms of the trio
    thread's 2.0 ms of system time per MiB written, and the compression
    helper's 0.4 ms, so dd wrote 180-218 MB/s instead of 229-253.
    Fixed thresholds (which also turn the dynamic one off) keep the buffers
    resident from one request to the next; `_trim_heap` still returns whatever
    stays free, five times a second, so RSS keeps following
    ``mem_used_total``.  Returns False where there is no glibc ``mallopt``.
    """
    import ctypes

    try:
        mallopt = ctypes.CDLL("libc.so.6").mallopt
    except (OSError, AttributeError):
        return False
    return bool(
        mallopt(_M_MMAP_THRESHOLD, MALLOC_MMAP_THRESHOLD)
        and mallopt(_M_TRIM_THRESHOLD, MALLOC_TRIM_THRESHOLD)
    )


async def _trim_heap(interval: float = 0.2) -> None:
    """Give freed heap memory back to the kernel five times a second.

    Request buffers (up to 1 MiB per FUSE write, the joined pages of a read)
    come and go through glibc's heap; with its dynamic mmap threshold they end
    up in ``brk`` space that glibc keeps after they are freed, so RSS would
    drift tens of MiB above ``mem_used_total``.  ``malloc_trim(0)`` returns
    free heap pages (MADV_DONTNEED in the middle, shrink at the top); it costs
    ~5 µs when there is nothing to give back (measured here).
    """
    import ctypes

    try:
        libc = ctypes.CDLL("libc.so.6")
        trim = libc.malloc_trim
    except (OSError, AttributeError):
        return
    while True:
        await trio.sleep(interval)
        trim(0)


async def _serve(ops: ZramOperations, opts: MountOptions, stopping: list[bool]) -> None:
    async with trio.open_nursery() as nursery:
        ops.start_background(nursery)
        nursery.start_soon(_trim_heap)
        # Handlers first, "ready" after: a SIGTERM right after `zramfs mount`
        # returns must not hit the default action (death, a dead mount).
        await nursery.start(_watch_signals, ops, stopping)
        if opts.ready_fd is not None:
            with contextlib.suppress(OSError):
                os.write(opts.ready_fd, b"ok\n")
                os.close(opts.ready_fd)
        await pyfuse3.main()
        nursery.cancel_scope.cancel()
    await ops.registry.shutdown()


def run(opts: MountOptions) -> int:
    """Mount and serve in the foreground; returns the exit status."""
    mnt = os.path.abspath(opts.mountpoint)
    if mounts.is_dead(mnt):
        log.warning("%s is a dead mount (its daemon died); clearing it first", mnt)
        mounts.fuse_unmount(mnt, lazy=True)
    if not os.path.isdir(mnt):
        log.error("mount point %s is not a directory", mnt)
        return 1
    if not tune_malloc():
        log.debug("no glibc mallopt: request buffers are glibc's default")
    if opts.mlock:
        _mlockall()
    registry = ZramRegistry(opts.num_devices)
    ops = ZramOperations(registry)
    stopping = [False]
    with contextlib.ExitStack() as stack:
        pyfuse3.init(ops, mnt, fuse_options(opts))
        # If serving fails, unmount: never leave a dead mount behind.
        unmount = [True]
        stack.callback(lambda: pyfuse3.close(unmount=unmount[0]))
        try:
            trio.run(_serve, ops, opts, stopping)
        except BaseException:
            log.exception("zramfs daemon failed; unmounting %s", mnt)
            raise
        # pyfuse3.main() returned: either terminate() (we unmount in close) or
        # the kernel already unmounted us (fusermount3 -u): nothing to undo.
        unmount[0] = stopping[0]
    log.info("unmounted %s", mnt)
    return 0


def _mlockall() -> None:
    """Lock the daemon in RAM so it can never be swapped out through itself.

    ``MCL_ONFAULT`` matters: without it every later mapping would be populated
    at once — the demand-paged slot table of a 100 GiB device (400 MiB) at
    ``disksize`` time, and every zsmalloc arena segment when it is mapped —
    and RSS would no longer follow ``mem_used_total``.
    """
    import ctypes

    libc = ctypes.CDLL("libc.so.6", use_errno=True)
    MCL_CURRENT, MCL_FUTURE, MCL_ONFAULT = 1, 2, 4
    if libc.mlockall(MCL_CURRENT | MCL_FUTURE | MCL_ONFAULT) != 0:
        err = ctypes.get_errno()
        log.warning("mlockall failed: %s", os.strerror(err))


def setup_logging(debug: bool, stream: object = None) -> None:
    logging.basicConfig(
        level=logging.DEBUG if debug else logging.INFO,
        format="%(asctime)s zramfs[%(process)d] %(levelname)s %(name)s: %(message)s",
        stream=stream if stream is not None else sys.stderr,  # type: ignore[arg-type]
    )
