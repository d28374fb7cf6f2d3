"""Small accessors shared by the core-level tests."""

from __future__ import annotations

from zramfs.core.attrs import BY_NAME
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


async def store(dev: ZramDevice, name: str, buf: bytes) -> None:
    """Write ``buf`` to attribute ``name`` through its `attrs.ATTRS` declaration."""
    fn = BY_NAME[name].store
    assert fn is not None, f"{name} is not writable"
    await fn(dev, buf)


def show(dev: ZramDevice, name: str) -> bytes:
    """Read attribute ``name`` through its `attrs.ATTRS` declaration."""
    fn = BY_NAME[name].show
    assert fn is not None, f"{name} is not readable"
    return fn(dev)
