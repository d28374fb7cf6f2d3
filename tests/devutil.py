"""Small accessors shared by the core-level tests."""

from __future__ import annotations

from zramfs.core.attrs import BY_NAME
from zramfs.core.device import ZramDevice
from zramfs.core.slots import SAME, SIZE_MASK, WB, SlotTable
from zramfs.core.zsmalloc import HANDLE_OFF_MASK, HANDLE_SEG_SHIFT, ZsPool


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


def locations(dev: ZramDevice) -> list[object]:
    """Every slot's handle word with pool handles as (class size, the class's
    own segment index, offset): equal for two devices that stored the same
    objects in the same places, whatever order their classes took segment
    numbers in (a fresh batch stored in pieces grows classes in another
    order than one stored at once; docs/design.md, "Batched stores").
    Same-filled words and backing-device indexes are kept as they are."""
    t, p = table(dev), pool(dev)
    out: list[object] = []
    for a, h in zip(t.attr.tolist(), t.handle.tolist(), strict=True):
        if a & SIZE_MASK and not a & (SAME | WB):
            c, slot0, _q = p._seg_info[h >> HANDLE_SEG_SHIFT]
            out.append((c.size, slot0 >> c.shift, h & HANDLE_OFF_MASK))
        else:
            out.append(h)
    return out


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
