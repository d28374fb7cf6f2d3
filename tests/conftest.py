"""Shared fixtures: a real zramfs mount in a subprocess, cleaned up even on failure.

Modelled on pyfuse3's test harness: the daemon runs as ``python -m zramfs
mount -f`` in a subprocess, the fixture waits for the mount to appear, and the
teardown always detaches loop devices backed by the mount, unmounts whatever
file systems sit on them, then unmounts the tree and reaps the daemon.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from benchmarks.common import KernelZramUnavailable, kernel_zram0
from zramfs.fs import mounts


def _have_fuse() -> bool:
    return os.path.exists("/dev/fuse") and shutil.which("fusermount3") is not None


def _have_loop() -> bool:
    return os.geteuid() == 0 and os.path.exists("/dev/loop-control")


needs_fuse = pytest.mark.skipif(not _have_fuse(), reason="needs /dev/fuse and fusermount3")
needs_loop = pytest.mark.skipif(not _have_loop(), reason="needs root and loop devices")


def run(
    *cmd: str, check: bool = True, input: bytes | None = None
) -> subprocess.CompletedProcess[str]:
    """Run a command, failing the test with its output when it fails."""
    res = subprocess.run(
        cmd, capture_output=True, text=True, check=False,
        input=input.decode() if input is not None else None,
    )  # fmt: skip
    if check and res.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} exited {res.returncode}:\n{res.stdout}{res.stderr}")
    return res


@dataclass
class ZramfsMount:
    """A running daemon and its mount point, with helpers to drive it."""

    path: Path
    proc: subprocess.Popen[bytes]
    log: Path
    loops: list[str] = field(default_factory=list)
    fs_mounts: list[Path] = field(default_factory=list)
    swaps: list[str] = field(default_factory=list)

    def sys(self, dev: int = 0) -> Path:
        return self.path / "sys" / "block" / f"zram{dev}"

    def image(self, dev: int = 0) -> Path:
        return self.path / "dev" / f"zram{dev}"

    def read_attr(self, name: str, dev: int = 0) -> str:
        return (self.sys(dev) / name).read_text()

    def write_attr(self, name: str, value: str | bytes, dev: int = 0) -> None:
        """One write(2) of the whole buffer, like ``echo`` (raises OSError)."""
        data = value.encode() if isinstance(value, str) else value
        fd = os.open(self.sys(dev) / name, os.O_WRONLY)
        try:
            n = os.write(fd, data)
            assert n == len(data)
        finally:
            os.close(fd)

    def mm_stat(self, dev: int = 0) -> list[int]:
        return [int(x) for x in self.read_attr("mm_stat", dev).split()]

    def io_stat(self, dev: int = 0) -> list[int]:
        return [int(x) for x in self.read_attr("io_stat", dev).split()]

    def losetup(self, dev: int = 0, direct_io: bool = True) -> str:
        args = ["losetup", "-f", "--show"]
        if direct_io:
            args.append("--direct-io=on")
        loop = run(*args, str(self.image(dev))).stdout.strip()
        self.loops.append(loop)
        return loop

    def detach(self, loop: str) -> None:
        run("losetup", "-d", loop)
        self.loops.remove(loop)
        # The loop device drops its reference to the image asynchronously.
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and any(
            a.loop == loop for a in mounts.loops_under(str(self.path))
        ):
            time.sleep(0.02)

    def mount_fs(self, device: str, target: Path, *options: str) -> Path:
        target.mkdir(parents=True, exist_ok=True)
        args = ["mount"]
        if options:
            args += ["-o", ",".join(options)]
        run(*args, device, str(target))
        self.fs_mounts.append(target)
        return target

    def umount_fs(self, target: Path) -> None:
        run("umount", str(target))
        self.fs_mounts.remove(target)

    def swapon(self, device: str, *options: str) -> None:
        """``swapon [options] device``; the teardown swaps it off if the test does not."""
        run("swapon", *options, device)
        self.swaps.append(device)

    def swapoff(self, device: str) -> None:
        run("swapoff", device)
        self.swaps.remove(device)

    def alive(self) -> bool:
        return self.proc.poll() is None

    def rss(self, settle: float = 0.6) -> int:
        """The daemon's steady resident memory in bytes (VmRSS).

        The daemon returns freed request buffers to the kernel every 0.2 s
        (daemon._trim_heap), so a reading right after a burst of I/O can be
        high by up to a few request buffers: take the lowest of readings over
        ``settle`` seconds.
        """
        best = self._vmrss()
        deadline = time.monotonic() + settle
        while time.monotonic() < deadline:
            time.sleep(0.1)
            best = min(best, self._vmrss())
        return best

    def _vmrss(self) -> int:
        with open(f"/proc/{self.proc.pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
        raise AssertionError(f"no VmRSS for daemon {self.proc.pid}")

    def log_text(self) -> str:
        try:
            return self.log.read_text()
        except OSError:
            return ""


def start_mount(
    path: Path, *extra: str, timeout: float = 20.0, module: str = "zramfs"
) -> ZramfsMount:
    """``python -m MODULE mount -f EXTRA... PATH``; returns once it is mounted.

    ``module`` is the daemon's entry point: ``zramfs``, or a test wrapper
    with the same CLI (``zramfs.backends.faulty``).
    """
    log = path.parent / (path.name + ".log")
    logf = open(log, "wb")  # noqa: SIM115 - owned by the daemon process
    proc = subprocess.Popen(
        [sys.executable, "-m", module, "mount", "-f", *extra, str(path)],
        stdin=subprocess.DEVNULL, stdout=logf, stderr=logf,
    )  # fmt: skip
    logf.close()
    m = ZramfsMount(path, proc, log)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = mounts.find_mount(str(path))
        if found is not None and found.fstype == mounts.FSTYPE and (path / "dev").exists():
            return m
        if proc.poll() is not None:
            raise AssertionError(f"{module} daemon exited {proc.returncode}:\n{m.log_text()}")
        time.sleep(0.02)
    stop_mount(m)
    raise AssertionError(f"{module} did not mount within {timeout}s:\n{m.log_text()}")


def stop_mount(m: ZramfsMount) -> None:
    """Tear everything down, outermost first; never raises."""
    for sw in reversed(m.swaps):
        subprocess.run(["swapoff", sw], capture_output=True, check=False)
    for target in reversed(m.fs_mounts):
        subprocess.run(["umount", str(target)], capture_output=True, check=False)
    # Any loop device backed by this mount, whoever attached it.
    for a in mounts.loops_under(str(m.path)):
        subprocess.run(["losetup", "-d", a.loop], capture_output=True, check=False)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and mounts.loops_under(str(m.path)):
        time.sleep(0.05)
    if mounts.find_mount(str(m.path)) is not None:
        res = mounts.fuse_unmount(str(m.path))
        if res.returncode != 0:
            mounts.fuse_unmount(str(m.path), lazy=True)
    try:
        m.proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        m.proc.kill()
        m.proc.wait(timeout=5)
        with contextlib.suppress(Exception):
            mounts.fuse_unmount(str(m.path), lazy=True)


@pytest.fixture
def mount_factory() -> Iterator[object]:
    """Start any number of mounts (with CLI options); all are torn down after."""
    started: list[ZramfsMount] = []
    base = Path(tempfile.mkdtemp(prefix="zramfs-test-"))

    def factory(*extra: str, name: str = "mnt") -> ZramfsMount:
        path = base / f"{name}{len(started)}"
        path.mkdir()
        m = start_mount(path, *extra)
        started.append(m)
        return m

    try:
        yield factory
    finally:
        for m in reversed(started):
            stop_mount(m)
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
def zmount(mount_factory: object) -> ZramfsMount:
    """One mounted tree with zram0, uninitialized."""
    assert callable(mount_factory)
    m: ZramfsMount = mount_factory()
    return m


@pytest.fixture
def kernel_zram() -> Iterator[Path]:
    """The kernel's own zram0 as a reference; skipped when absent, reset after.

    Holds an exclusive flock for the whole test, so two test runs on this
    machine (developers, CI) never configure the one zram0 at the same time.
    """
    with contextlib.ExitStack() as stack:
        try:
            sysdir = stack.enter_context(kernel_zram0(lock_wait=300))
        except KernelZramUnavailable as e:
            pytest.skip(f"kernel zram0 not usable: {e}")
        yield sysdir
