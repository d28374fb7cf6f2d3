"""Helpers shared by the benchmarks: a zramfs mount outside pytest, sizes, logging.

`start_daemon` / `stop_daemon` are the one mount starter for benchmarks and
tests: ``python -m zramfs mount -f`` in a subprocess, wait for the mount, then
unmount and reap the daemon (lazily and by kill if need be, also on Ctrl-C).
`mounted()` runs them on a fresh temporary directory and also removes it,
SIGTERM included.  ``tests/conftest.py``'s ``start_mount`` / ``stop_mount``
and ``ZramfsMount`` (a `Mount`) build on them: this module does not import
pytest, so benchmarks can use it too.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any, ClassVar, TextIO, TypeVar

from zramfs.fs import mounts

PAGE = 4096
MiB = 1 << 20

KERNEL_ZRAM0 = Path("/sys/block/zram0")
# Every test and benchmark that configures zram0 holds this flock meanwhile.
KERNEL_ZRAM0_LOCK = "/run/zramfs-tests-kernel-zram0.lock"


class KernelZramUnavailable(Exception):
    """The kernel's zram0 is absent, held by another run, or in use: skip."""


@contextlib.contextmanager
def kernel_zram0(lock_wait: float) -> Iterator[Path]:
    """The kernel's zram0, unused, under `KERNEL_ZRAM0_LOCK`; reset afterwards.

    Raises `KernelZramUnavailable` (before touching anything) when it is
    absent, not ours to use (not root), held by another run for more than
    ``lock_wait`` seconds, or already initialized by someone else.
    """
    if os.geteuid() != 0 or not KERNEL_ZRAM0.exists():
        raise KernelZramUnavailable("no /sys/block/zram0 (or not root)")
    with open(KERNEL_ZRAM0_LOCK, "w") as lock:
        deadline = time.monotonic() + lock_wait
        while True:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise KernelZramUnavailable(
                        f"zram0 held by another run for over {lock_wait:g} s"
                    ) from None
                time.sleep(0.2)
        if (KERNEL_ZRAM0 / "initstate").read_text().strip() != "0":
            raise KernelZramUnavailable("the kernel's zram0 is in use")
        try:
            yield KERNEL_ZRAM0
        finally:
            for _ in range(50):  # EBUSY while a last opener lets go
                try:
                    (KERNEL_ZRAM0 / "reset").write_text("1")
                    break
                except OSError:
                    time.sleep(0.1)


def parse_size(text: str) -> int:
    """``32M``, ``512K``, ``1G``, ``65536``: bytes, rounded up to whole pages."""
    t = text.strip().upper().removesuffix("B").removesuffix("I")
    mult = 1
    for suffix, m in (("K", 1 << 10), ("M", 1 << 20), ("G", 1 << 30)):
        if t.endswith(suffix):
            t, mult = t[:-1], m
            break
    n = int(t) * mult
    if n <= 0:
        raise ValueError(f"size must be positive: {text!r}")
    return -(-n // PAGE) * PAGE


class Log:
    """Progress lines: stdout normally, stderr under ``--json`` (stdout is the JSON)."""

    def __init__(self, to_stderr: bool) -> None:
        self.stream: TextIO = sys.stderr if to_stderr else sys.stdout

    def __call__(self, msg: str) -> None:
        print(msg, file=self.stream, flush=True)


def machine() -> dict[str, Any]:
    """CPU count and load average, for the report header."""
    return {"cpus": os.cpu_count(), "loadavg": list(os.getloadavg())}


def code_state() -> dict[str, str]:
    """What was measured: the checkout's HEAD and a digest of ``zramfs/**/*.py``
    and the accelerator's C (``zramfs/**/*.c``) as they are on disk
    (uncommitted changes included), to tell runs apart."""
    root = Path(__file__).resolve().parent.parent
    h = hashlib.sha256()
    sources = [*(root / "zramfs").rglob("*.py"), *(root / "zramfs").rglob("*.c")]
    for p in sorted(sources):
        h.update(str(p.relative_to(root)).encode() + b"\0" + p.read_bytes())
    head = subprocess.run(
        ["git", "-C", str(root), "rev-parse", "--short", "HEAD"],
        capture_output=True, text=True, check=False,
    ).stdout.strip()  # fmt: skip
    return {"head": head or "?", "zramfs_sources_sha256": h.hexdigest()[:12]}


def latency_summary(lat: list[float], seconds: float) -> dict[str, float]:
    """Reads, reads/s and latency percentiles in ms of one measured phase."""
    n = len(lat)
    if n == 0:
        return {"reads": 0, "seconds": seconds, "reads_per_s": 0.0}
    if n >= 2:
        q = statistics.quantiles(lat, n=1000, method="inclusive")
        p50, p99, p999 = q[499], q[989], q[998]
    else:
        p50 = p99 = p999 = lat[0]
    return {
        "reads": n,
        "seconds": round(seconds, 3),
        "reads_per_s": round(n / seconds, 1) if seconds > 0 else 0.0,
        "p50_ms": round(p50 * 1e3, 4),
        "p99_ms": round(p99 * 1e3, 4),
        "p999_ms": round(p999 * 1e3, 3),
        "max_ms": round(max(lat) * 1e3, 3),
        "over_10ms": sum(x > 0.010 for x in lat),
        "over_50ms": sum(x > 0.050 for x in lat),
        "over_100ms": sum(x > 0.100 for x in lat),
    }


# --------------------------------------------------------------------------- mount


@dataclass
class Mount:
    """A running zramfs daemon and its mount point."""

    path: Path
    proc: subprocess.Popen[bytes]
    log: Path

    # What the helpers raise when the daemon misbehaves: a failed start, a
    # short write to an attribute.  The tests' subclass makes both assertions.
    failure: ClassVar[type[Exception]] = RuntimeError
    short_write: ClassVar[type[Exception]] = OSError

    def sys(self, dev: int = 0) -> Path:
        return self.path / "sys" / "block" / f"zram{dev}"

    def image(self, dev: int = 0) -> Path:
        return self.path / "dev" / f"zram{dev}"

    def read_attr(self, name: str, dev: int = 0) -> str:
        return (self.sys(dev) / name).read_text()

    def write_attr(self, name: str, value: str | bytes, dev: int = 0) -> None:
        """One write(2) of the whole value, like ``echo`` (raises OSError)."""
        data = value.encode() if isinstance(value, str) else value
        fd = os.open(self.sys(dev) / name, os.O_WRONLY)
        try:
            n = os.write(fd, data)
            if n != len(data):
                raise self.short_write(f"short write to {name}: {n} of {len(data)}")
        finally:
            os.close(fd)

    def stat_line(self, name: str, dev: int = 0) -> list[int]:
        return [int(x) for x in self.read_attr(name, dev).split()]

    def mm_stat(self, dev: int = 0) -> list[int]:
        return self.stat_line("mm_stat", dev)

    def io_stat(self, dev: int = 0) -> list[int]:
        return self.stat_line("io_stat", dev)

    def bd_stat(self, dev: int = 0) -> list[int]:
        return self.stat_line("bd_stat", dev)

    def block_flags(self, dev: int = 0) -> list[str]:
        """The flag column of debugfs ``block_state`` (``s w h i r n``), one per slot."""
        text = (self.path / "sys/kernel/debug/zram" / f"zram{dev}" / "block_state").read_text()
        return [line.split()[2] for line in text.splitlines()]

    def write_image(self, data: bytes, offset: int = 0, dev: int = 0) -> None:
        """``data`` in 1 MiB pwrites."""
        fd = os.open(self.image(dev), os.O_WRONLY)
        try:
            for pos in range(0, len(data), MiB):
                chunk = data[pos : pos + MiB]
                if os.pwrite(fd, chunk, offset + pos) != len(chunk):
                    raise OSError("short write to the image")
        finally:
            os.close(fd)

    def read_image(self, size: int, offset: int = 0, dev: int = 0) -> bytes:
        """In 128 KiB preads (FUSE splits larger unaligned reads mid-page)."""
        fd = os.open(self.image(dev), os.O_RDONLY)
        step = 128 << 10
        try:
            parts = [
                os.pread(fd, min(step, size - pos), offset + pos) for pos in range(0, size, step)
            ]
            return b"".join(parts)
        finally:
            os.close(fd)

    def alive(self) -> bool:
        return self.proc.poll() is None

    def rss(self, settle: float = 0.6) -> int:
        """The daemon's steady resident memory in bytes (`settled_rss`)."""
        return settled_rss(self.proc.pid, settle)

    def log_text(self) -> str:
        try:
            return self.log.read_text()
        except OSError:
            return ""


M = TypeVar("M", bound=Mount)


def start_daemon(
    cls: type[M], path: Path, *extra: str, timeout: float = 20.0, module: str = "zramfs"
) -> M:
    """``python -m MODULE mount -f EXTRA... PATH``, its output in ``PATH.log``
    next to ``PATH``; returns ``cls(path, proc, log)`` once it is mounted, or
    raises ``cls.failure`` (with the log) after stopping it.

    ``module`` is the daemon's entry point: ``zramfs``, or a test wrapper
    with the same CLI (``zramfs.backends.faulty``).
    """
    log = path.parent / (path.name + ".log")
    with open(log, "wb") as logf:
        proc = subprocess.Popen(
            [sys.executable, "-m", module, "mount", "-f", *extra, str(path)],
            stdin=subprocess.DEVNULL, stdout=logf, stderr=logf,
        )  # fmt: skip
    m = cls(path, proc, log)
    why = wait_for_mount(path, proc, mounts.FSTYPE, path / "dev", timeout)
    if why is None:
        return m
    if proc.poll() is None:
        stop_daemon(m)
    raise cls.failure(f"{module} {why}:\n{m.log_text()}")


def wait_for_mount(
    path: Path, proc: subprocess.Popen[bytes], fstype: str, ready: Path, timeout: float
) -> str | None:
    """Poll until ``path`` is a ``fstype`` mount and ``ready`` exists: None;
    or why not ("daemon exited N", "did not mount within T s")."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = mounts.find_mount(str(path))
        if found is not None and found.fstype == fstype and ready.exists():
            return None
        if proc.poll() is not None:
            return f"daemon exited {proc.returncode}"
        time.sleep(0.02)
    return f"did not mount within {timeout} s"


def stop_daemon(m: Mount) -> None:
    """Unmount (lazily if busy) and reap the daemon, killing it after 15 s;
    never raises, except to pass on a Ctrl-C / SIGTERM that landed meanwhile."""
    with contextlib.suppress(Exception):
        if mounts.find_mount(str(m.path)) is not None:
            res = mounts.fuse_unmount(str(m.path))
            if res.returncode != 0:  # busy (an fd still open): detach lazily
                mounts.fuse_unmount(str(m.path), lazy=True)
    try:
        m.proc.wait(timeout=15)
    except BaseException:
        # Timed out, or Ctrl-C / SIGTERM landed while waiting: the daemon
        # must not outlive us, nor its mount (the caller's finally removes
        # the directory next).
        m.proc.kill()
        with contextlib.suppress(Exception):
            m.proc.wait(timeout=5)
        with contextlib.suppress(Exception):
            mounts.fuse_unmount(str(m.path), lazy=True)
        if not isinstance(sys.exc_info()[1], subprocess.TimeoutExpired):
            raise


def raise_exit(signum: int, frame: FrameType | None) -> None:
    """A SIGTERM handler: SystemExit, so that ``finally`` teardowns run."""
    raise SystemExit(128 + signum)


@contextlib.contextmanager
def scratch_mountpoint(prefix: str) -> Iterator[Path]:
    """``TMP/mnt`` in a new temporary directory ``TMP``, removed with all in it
    afterwards; SIGTERM is turned into SystemExit meanwhile so that the
    caller's teardown (stopping its daemon) runs."""
    base = Path(tempfile.mkdtemp(prefix=prefix))
    old = signal.signal(signal.SIGTERM, raise_exit)
    try:
        path = base / "mnt"
        path.mkdir()
        yield path
    finally:
        signal.signal(signal.SIGTERM, old)
        shutil.rmtree(base, ignore_errors=True)


@contextlib.contextmanager
def mounted(*extra: str, timeout: float = 20.0) -> Iterator[tuple[Mount, Path]]:
    """A fresh mount in a new temporary directory: ``(mount, scratch dir)``.

    The scratch directory (for backing files, dictionaries...) is the mount
    point's parent; it is removed with everything in it afterwards
    (`scratch_mountpoint`).
    """
    with scratch_mountpoint("zramfs-bench-") as path:
        m = start_daemon(Mount, path, *extra, timeout=timeout)
        try:
            yield m, path.parent
        finally:
            stop_daemon(m)


# --------------------------------------------------------------------------- loop devices


def attach_loop(image: Path, direct_io: bool = True) -> str:
    """``losetup [--direct-io=on] -f --show IMAGE``: the new ``/dev/loopN``."""
    args = ["losetup", "-f", "--show"]
    if direct_io:
        args.append("--direct-io=on")
    res = subprocess.run([*args, str(image)], capture_output=True, text=True, check=False)
    if res.returncode != 0:
        raise RuntimeError(f"losetup {image} failed: {res.stderr.strip()}")
    return res.stdout.strip()


def _backing_file(loop: str) -> str | None:
    try:
        text = Path(f"/sys/block/{Path(loop).name}/loop/backing_file").read_text()
    except OSError:
        return None
    return text.rstrip("\n")


def detach_loop(loop: str, timeout: float = 10.0) -> None:
    """``losetup -d`` and wait until the kernel has dropped the backing file
    (it does so asynchronously); never raises."""
    with contextlib.suppress(Exception):
        subprocess.run(["losetup", "-d", loop], capture_output=True, check=False)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and _backing_file(loop) is not None:
        time.sleep(0.02)


def detach_loops_under(mountpoint: Path | str, timeout: float = 10.0) -> list[str]:
    """Detach every loop device whose backing file lies inside ``mountpoint``
    (whoever attached it); returns their names.  Never raises."""
    found: list[str] = []
    with contextlib.suppress(Exception):
        found = [a.loop for a in mounts.loops_under(str(mountpoint))]
    for loop in found:
        detach_loop(loop, timeout)
    return found


# --------------------------------------------------------------------------- processes


def proc_rss(pid: int) -> int:
    """VmRSS of ``pid`` in bytes (from /proc/PID/status)."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS for process {pid}")


def settled_rss(pid: int, settle: float = 0.6) -> int:
    """The lowest VmRSS over ``settle`` seconds: zramfs returns freed request
    buffers to the kernel every 0.2 s, so one reading right after a burst of
    I/O can be high by a few buffers (daemon._trim_heap)."""
    best = proc_rss(pid)
    deadline = time.monotonic() + settle
    while time.monotonic() < deadline:
        time.sleep(0.1)
        best = min(best, proc_rss(pid))
    return best


def proc_cpu_seconds(pid: int) -> float:
    """utime + stime of ``pid``, all threads (from /proc/PID/stat), in seconds."""
    with open(f"/proc/{pid}/stat") as f:
        text = f.read()
    fields = text[text.rindex(")") + 2 :].split()  # after "pid (comm) "
    utime, stime = int(fields[11]), int(fields[12])  # fields 14 and 15 of proc(5)
    return (utime + stime) / os.sysconf("SC_CLK_TCK")
