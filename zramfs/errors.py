"""The one exception type the core raises for a refused operation.

Every control-file store and every I/O error surfaces as a `ZramError`
carrying the kernel's errno, so the FUSE layer can answer write(2) with
exactly what the kernel's sysfs store would have returned.
"""

from __future__ import annotations

import errno as _errno
import os


class ZramError(OSError):
    """An operation refused with a kernel errno (EINVAL, EBUSY, ENOMEM, ...)."""

    def __init__(self, err: int, message: str | None = None) -> None:
        super().__init__(err, message or os.strerror(err))

    @property
    def name(self) -> str:
        return _errno.errorcode.get(self.errno or 0, str(self.errno))


def einval(message: str | None = None) -> ZramError:
    return ZramError(_errno.EINVAL, message)
