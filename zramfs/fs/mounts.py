"""What the running system says about zramfs mounts and the loop devices on them.

Read from /proc/self/mountinfo and /sys/block/loop*/loop/backing_file, so the
CLI can refuse an unmount that would strand a loop device and name the device.
"""

from __future__ import annotations

import errno
import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

FSTYPE = "fuse.zramfs"


@dataclass(frozen=True)
class Mount:
    mountpoint: str
    fstype: str
    source: str


def _unescape(field: str) -> str:
    """Undo the octal escapes (``\\040`` for space) of mountinfo fields."""
    out, i = [], 0
    while i < len(field):
        if field[i] == "\\" and i + 3 < len(field) + 0 and field[i + 1 : i + 4].isdigit():
            out.append(chr(int(field[i + 1 : i + 4], 8)))
            i += 4
        else:
            out.append(field[i])
            i += 1
    return "".join(out)


def mounts() -> list[Mount]:
    result = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            left, _, right = line.partition(" - ")
            parts = left.split()
            rparts = right.split()
            if len(parts) < 5 or len(rparts) < 2:
                continue
            result.append(Mount(_unescape(parts[4]), rparts[0], _unescape(rparts[1])))
    return result


def zramfs_mounts() -> list[Mount]:
    return [m for m in mounts() if m.fstype == FSTYPE]


def find_mount(path: str) -> Mount | None:
    real = os.path.realpath(path) if not is_dead(path) else os.path.abspath(path)
    for m in reversed(mounts()):
        if m.mountpoint == real:
            return m
    return None


def is_dead(path: str) -> bool:
    """A FUSE mount whose daemon is gone answers every access with ENOTCONN."""
    try:
        os.stat(path)
    except OSError as e:
        return e.errno == errno.ENOTCONN
    return False


@dataclass(frozen=True)
class LoopAttachment:
    loop: str  # /dev/loopN
    backing_file: str


def loops_under(mountpoint: str) -> list[LoopAttachment]:
    """Loop devices whose backing file lies inside ``mountpoint``."""
    prefix = mountpoint.rstrip("/") + "/"
    found = []
    for bf in sorted(Path("/sys/block").glob("loop*/loop/backing_file")):
        try:
            backing = bf.read_text().rstrip("\n")
        except OSError:
            continue
        backing = backing.removesuffix(" (deleted)")
        if backing.startswith(prefix):
            found.append(LoopAttachment("/dev/" + bf.parent.parent.name, backing))
    return found


@dataclass(frozen=True)
class ImageHolder:
    pid: int
    comm: str
    image: str  # MNT/dev/zramN


def image_holders(mountpoint: str) -> list[ImageHolder]:
    """Processes with an image under ``mountpoint`` open (from /proc/*/fd).

    readlink on /proc/PID/fd never reaches the FUSE daemon, so this is safe
    on a hung or dead mount too.
    """
    prefix = mountpoint.rstrip("/") + "/dev/"
    found: set[ImageHolder] = set()
    for pid in (p for p in os.listdir("/proc") if p.isdigit()):
        try:
            fds = os.listdir(f"/proc/{pid}/fd")
        except OSError:
            continue
        for fd in fds:
            try:
                target = os.readlink(f"/proc/{pid}/fd/{fd}")
            except OSError:
                continue
            if target.startswith(prefix):
                try:
                    comm = Path(f"/proc/{pid}/comm").read_text().strip()
                except OSError:
                    comm = "?"
                found.add(ImageHolder(int(pid), comm, target))
    return sorted(found, key=lambda h: (h.image, h.pid))


def wait_until(predicate: object, timeout: float, interval: float = 0.02) -> bool:
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if callable(predicate) and predicate():
            return True
        time.sleep(interval)
    return bool(callable(predicate) and predicate())


def fuse_unmount(mountpoint: str, lazy: bool = False) -> subprocess.CompletedProcess[str]:
    """Unmount with fusermount3 (works for root and for the mounting user)."""
    cmd = ["fusermount3", "-u"]
    if lazy:
        cmd.append("-z")
    cmd.append(mountpoint)
    return subprocess.run(cmd, capture_output=True, text=True, check=False)
