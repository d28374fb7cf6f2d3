"""Small accessors shared by the core-level tests."""

from __future__ import annotations

from zramfs.core.device import ZramDevice
from zramfs.core.slots import SlotTable
from zramfs.core.zsmalloc import ZsPool


def table(dev: ZramDevice) -> SlotTable:
    assert dev.table is not None
    return dev.table


def pool(dev: ZramDevice) -> ZsPool:
    assert dev.pool is not None
    return dev.pool


def mm(dev: ZramDevice) -> list[int]:
    """mm_stat's nine columns as ints."""
    return [int(x) for x in dev.show_mm_stat().split()]


def io(dev: ZramDevice) -> list[int]:
    """io_stat's four columns as ints."""
    return [int(x) for x in dev.show_io_stat().split()]
