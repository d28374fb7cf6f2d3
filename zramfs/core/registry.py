"""The set of devices: ``num_devices`` at start, ``hot_add`` and ``hot_remove``.

Mirrors the zram module's ``idr``: ids are handed out lowest-free-first
(``idr_alloc(…, 0, 0)``), which kselftest and LTP rely on.
"""

from __future__ import annotations

import errno
from collections.abc import Callable

from ..errors import ZramError, einval
from . import kparse
from .device import ZramDevice

MAX_DEVICES = 1 << 16


class ZramRegistry:
    def __init__(self, num_devices: int = 1) -> None:
        self.devices: dict[int, ZramDevice] = {}
        self.on_change: list[Callable[[], None]] = []
        for _ in range(num_devices):
            self.add()

    def add(self) -> ZramDevice:
        """``hot_add``: a new uninitialized device with the lowest free id."""
        dev_id = next(i for i in range(MAX_DEVICES + 1) if i not in self.devices)
        if dev_id >= MAX_DEVICES:
            raise ZramError(errno.ENOSPC, "too many devices")
        dev = ZramDevice(dev_id)
        self.devices[dev_id] = dev
        self._changed()
        return dev

    async def remove_store(self, buf: bytes) -> None:
        """``hot_remove_store``: kstrtoint, <0 EINVAL, unknown ENODEV, open EBUSY."""
        dev_id = kparse.kstrtoint(buf)
        if dev_id < 0:
            raise einval("negative device id")
        dev = self.devices.get(dev_id)
        if dev is None:
            raise ZramError(errno.ENODEV, f"no zram{dev_id}")
        if dev.openers:
            raise ZramError(errno.EBUSY, f"zram{dev_id} image is open")
        await dev.reset()
        if self.devices.get(dev_id) is dev:
            del self.devices[dev_id]
            self._changed()

    def get(self, dev_id: int) -> ZramDevice | None:
        return self.devices.get(dev_id)

    def _changed(self) -> None:
        for cb in self.on_change:
            cb()

    async def shutdown(self) -> None:
        """Release every device's memory (daemon exit)."""
        for dev in list(self.devices.values()):
            dev.openers = 0
            await dev.reset()
