"""Shared fixtures: a real zramfs mount in a subprocess, cleaned up even on failure.

Modelled on pyfuse3's test harness: the daemon runs as ``python -m zramfs
mount -f`` in a subprocess, the fixture waits for the mount to appear, and the
teardown always detaches loop devices backed by the mount, unmounts whatever
file systems sit on them, then unmounts the tree and reaps the daemon.  The
starting, unmounting and reaping are ``benchmarks/common.py``'s (one
implementation for tests and benchmarks); the swaps, file systems and loop
devices on top are this harness's.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from benchmarks.common import (
    KernelZramUnavailable,
    Mount,
    detach_loops_under,
    kernel_zram0,
    start_daemon,
    stop_daemon,
)
from zramfs.fs import mounts

if TYPE_CHECKING:
    from zramfs.core.device import ZramDevice


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
class ZramfsMount(Mount):
    """A running daemon and its mount point, with helpers to drive it.

    `Mount`'s (``sys``, ``image``, ``read_attr``, ``write_attr``, ``mm_stat``,
    ``io_stat``, ``alive``, ``rss``, ``log_text``...), plus loop devices, file
    systems and swaps that the teardown undoes.
    """

    failure = AssertionError
    short_write = AssertionError

    loops: list[str] = field(default_factory=list)
    fs_mounts: list[Path] = field(default_factory=list)
    swaps: list[str] = field(default_factory=list)

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


def start_mount(
    path: Path, *extra: str, timeout: float = 20.0, module: str = "zramfs"
) -> ZramfsMount:
    """``python -m MODULE mount -f EXTRA... PATH``; returns once it is mounted
    (`start_daemon`; a failed start is an AssertionError with the daemon's log).

    ``module`` is the daemon's entry point: ``zramfs``, or a test wrapper
    with the same CLI (``zramfs.backends.faulty``).
    """
    return start_daemon(ZramfsMount, path, *extra, timeout=timeout, module=module)


def stop_mount(m: ZramfsMount) -> None:
    """Tear everything down, outermost first; never raises (but passes on a Ctrl-C)."""
    for sw in reversed(m.swaps):
        subprocess.run(["swapoff", sw], capture_output=True, check=False)
    for target in reversed(m.fs_mounts):
        subprocess.run(["umount", str(target)], capture_output=True, check=False)
    detach_loops_under(m.path)  # any loop device backed by this mount, whoever attached it
    stop_daemon(m)


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


@pytest.fixture
def forced_fresh_way() -> Iterator[Callable[[ZramDevice, int], None]]:
    """``force(dev, split)``: the next fresh batch of ``dev`` is stored inline,
    compressed ahead on the codec's background thread (split 1) or all at
    once first (split 0), whatever was measured; the module's figures are
    restored afterwards."""
    from zramfs.core import device as dm

    saved = (dict(dm._par_stats), dict(dm._offload_stats), dict(dm._ahead_stats))

    def force(dev: ZramDevice, split: int) -> None:
        comp = dev.comps[0]
        assert comp is not None
        dev._comp_cost_ns = 10_000
        dm._offload_stats[(comp.name, comp.params.level)] = [10**9, 1]  # inline
        ns = [1000, 500] if split else [500, 1000]
        dm._par_stats[("wf", comp.name, comp.params.level)] = [*ns, 1, 0, 100, 100]

    yield force
    dm._par_stats.clear()
    dm._par_stats.update(saved[0])
    dm._offload_stats.clear()
    dm._offload_stats.update(saved[1])
    dm._ahead_stats.clear()
    dm._ahead_stats.update(saved[2])
