"""Every control attribute of ``/sys/block/zramN/``, declared once.

One `Attr` entry is the whole declaration: name, sysfs mode, how to show it and
how to store it.  The FUSE layer builds the directory from this table (order,
modes, EACCES on wrong-direction opens), so adding an attribute is one line
here plus its show/store: a `ZramDevice` method (``D``) or, for the
post-processing attributes, a postprocess.py function of the device (``P``).

Modes are the kernel's (``DEVICE_ATTR_RO/WO/RW``): 0444, 0200, 0644.  A
``show`` is synchronous (it formats counters); a ``store`` is a coroutine
(it may take ``dev_lock`` or run long work) that raises `ZramError` with the
kernel's errno and otherwise consumes the whole buffer.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from . import postprocess as P
from .device import ZramDevice

RO = 0o444
WO = 0o200
RW = 0o644

Show = Callable[[ZramDevice], bytes]
Store = Callable[[ZramDevice, bytes], Awaitable[None]]


@dataclass(frozen=True)
class Attr:
    name: str
    mode: int
    show: Show | None = None
    store: Store | None = None

    def __post_init__(self) -> None:
        assert (self.show is not None) == bool(self.mode & 0o444), self.name
        assert (self.store is not None) == bool(self.mode & 0o222), self.name


D = ZramDevice

ATTRS: tuple[Attr, ...] = (
    Attr("disksize", RW, D.show_disksize, D.store_disksize),
    Attr("initstate", RO, D.show_initstate),
    Attr("reset", WO, store=D.store_reset),
    Attr("compact", WO, store=D.store_compact),
    Attr("mem_limit", WO, store=D.store_mem_limit),
    Attr("mem_used_max", WO, store=D.store_mem_used_max),
    Attr("idle", WO, store=D.store_idle),
    Attr("comp_algorithm", RW, D.show_comp_algorithm, D.store_comp_algorithm),
    Attr("algorithm_params", WO, store=D.store_algorithm_params),
    Attr("recomp_algorithm", RW, D.show_recomp_algorithm, D.store_recomp_algorithm),
    Attr("recompress", WO, store=P.store_recompress),
    Attr("bd_stat", RO, P.show_bd_stat),
    Attr("backing_dev", RW, P.show_backing_dev, P.store_backing_dev),
    Attr("writeback", WO, store=P.store_writeback),
    Attr("writeback_limit", RW, P.show_writeback_limit, P.store_writeback_limit),
    Attr(
        "writeback_limit_enable", RW, P.show_writeback_limit_enable, P.store_writeback_limit_enable
    ),
    Attr("writeback_batch_size", RW, P.show_writeback_batch_size, P.store_writeback_batch_size),
    Attr("compressed_writeback", RW, P.show_compressed_writeback, P.store_compressed_writeback),
    Attr("io_stat", RO, D.show_io_stat),
    Attr("mm_stat", RO, D.show_mm_stat),
    Attr("debug_stat", RO, D.show_debug_stat),
    Attr("stat", RO, D.show_stat),
)

BY_NAME: dict[str, Attr] = {a.name: a for a in ATTRS}

# debugfs: /sys/kernel/debug/zram/zramN/<name> (0400).
DEBUGFS_ATTRS: tuple[Attr, ...] = (
    Attr("block_state", 0o400, D.show_block_state),
    # zramfs extension (no such file in the kernel): entry-lock and dev_lock counters.
    Attr("lock_stat", 0o400, D.show_lock_stat),
)
