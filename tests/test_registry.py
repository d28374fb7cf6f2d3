"""hot_add / hot_remove (reference §1, §4 "Control class"): lowest free id, errno."""

from __future__ import annotations

import errno

import pytest

from zramfs.core.registry import ZramRegistry
from zramfs.errors import ZramError


async def remove_errno(reg: ZramRegistry, buf: bytes) -> int:
    with pytest.raises(ZramError) as ei:
        await reg.remove_store(buf)
    assert ei.value.errno is not None
    return ei.value.errno


def test_num_devices_precreates_contiguous_ids() -> None:
    assert sorted(ZramRegistry(3).devices) == [0, 1, 2]
    assert ZramRegistry(0).devices == {}
    reg = ZramRegistry()
    assert sorted(reg.devices) == [0]
    dev = reg.devices[0]
    assert dev.id == 0 and dev.name == "zram0" and not dev.initialized


async def test_hot_add_reuses_the_lowest_free_id() -> None:
    reg = ZramRegistry(0)
    assert reg.add().id == 0
    assert reg.add().id == 1
    await reg.remove_store(b"0")
    assert sorted(reg.devices) == [1]
    assert reg.add().id == 0  # idr_alloc(..., 0, 0): lowest free id
    assert reg.add().id == 2
    await reg.remove_store(b"1\n")
    await reg.remove_store(b"0")
    assert sorted(reg.devices) == [2]
    assert [reg.add().id for _ in range(3)] == [0, 1, 3]
    assert reg.get(3) is reg.devices[3] and reg.get(4) is None


async def test_hot_remove_errno() -> None:
    reg = ZramRegistry(2)
    # kstrtoint base 10: garbage, spaces, hex -> EINVAL; overflow -> ERANGE.
    for bad in (b"", b"abc", b" 1", b"1 ", b"0x1", b"1\n\n", b"one"):
        assert await remove_errno(reg, bad) == errno.EINVAL, bad
    assert await remove_errno(reg, b"99999999999") == errno.ERANGE
    assert await remove_errno(reg, b"-1") == errno.EINVAL
    assert await remove_errno(reg, b"-2147483648") == errno.EINVAL
    assert await remove_errno(reg, b"2") == errno.ENODEV
    assert await remove_errno(reg, b"2147483647") == errno.ENODEV
    reg.devices[1].openers = 1
    assert await remove_errno(reg, b"1") == errno.EBUSY
    assert sorted(reg.devices) == [0, 1]
    reg.devices[1].openers = 0
    await reg.remove_store(b"+1\n")
    assert sorted(reg.devices) == [0]
    assert await remove_errno(reg, b"1") == errno.ENODEV


async def test_hot_remove_resets_the_device_and_notifies() -> None:
    reg = ZramRegistry(1)
    events: list[list[int]] = []
    reg.on_change.append(lambda: events.append(sorted(reg.devices)))
    dev = reg.add()
    await dev.store_disksize(b"1M")
    await dev.write(0, b"x" * 8192)
    busy = reg.devices[0]
    busy.openers = 1
    with pytest.raises(ZramError):
        await reg.remove_store(b"0")
    await reg.remove_store(b"1")
    assert not dev.initialized and dev.table is None and dev.pool is None
    assert dev.show_mm_stat().split() == [b"0"] * 9
    assert events == [[0, 1], [0]]
    # The busy device was left alone.
    assert reg.devices[0] is busy


async def test_shutdown_releases_everything() -> None:
    reg = ZramRegistry(2)
    for dev in reg.devices.values():
        await dev.store_disksize(b"64K")
        await dev.write(0, b"y" * 4096)
    reg.devices[0].openers = 1
    await reg.shutdown()
    assert all(not d.initialized and d.openers == 0 for d in reg.devices.values())
