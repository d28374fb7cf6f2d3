"""The mount's lifecycle (SPEC §2): ``zramfs mount``/``umount``, signals, dead mounts.

Daemons started here with ``zramfs mount`` (no ``-f``) are detached from the
test; the `bg_mounts` fixture finds them by mount point and always unmounts,
detaches loop devices and reaps them. Daemons started by the harness
(`mount_factory`) are torn down by the harness.
"""

from __future__ import annotations

import errno
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.conftest import ZramfsMount, needs_fuse, needs_loop
from zramfs.fs import mounts

pytestmark = needs_fuse

MountFactory = Callable[..., ZramfsMount]


def zramfs(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "zramfs", *args], capture_output=True, text=True, timeout=60
    )


def daemon_pids(mnt: Path) -> list[int]:
    """Processes running ``zramfs mount ... MNT`` (our daemons for this mount point)."""
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            argv = Path("/proc", entry, "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        args = [a.decode(errors="replace") for a in argv if a]
        if "zramfs" in args and "mount" in args and args[-1] == str(mnt):
            pids.append(int(entry))
    return pids


def wait_for(predicate: Callable[[], bool], timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return predicate()


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie is dead for our purposes (its parent, the CLI, has exited).
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ")[1][0] != "Z"
    except OSError:
        return False


def mountinfo(mnt: Path) -> tuple[str, str] | None:
    """(fstype, source) of the mount at ``mnt`` from /proc/self/mountinfo."""
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        left, _, right = line.partition(" - ")
        if left.split()[4] == str(mnt):
            fstype, source = right.split()[:2]
            return fstype, source
    return None


def is_mounted(mnt: Path) -> bool:
    return mounts.find_mount(str(mnt)) is not None


def _cleanup_bg(mnt: Path) -> None:
    """Never raises: loops off, unmount (lazily if dead), daemon reaped."""
    for a in mounts.loops_under(str(mnt)):
        subprocess.run(["losetup", "-d", a.loop], capture_output=True, check=False)
    wait_for(lambda: not mounts.loops_under(str(mnt)), 10)
    if is_mounted(mnt):
        res = mounts.fuse_unmount(str(mnt), lazy=mounts.is_dead(str(mnt)))
        if res.returncode != 0:
            mounts.fuse_unmount(str(mnt), lazy=True)
    pids = daemon_pids(mnt)
    if not wait_for(lambda: not any(pid_alive(p) for p in pids), 10):
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        wait_for(lambda: not any(pid_alive(p) for p in pids), 5)
        if is_mounted(mnt):
            mounts.fuse_unmount(str(mnt), lazy=True)


@pytest.fixture
def bg_dir() -> Iterator[Path]:
    """A mount point for ``zramfs mount`` (background); cleaned up whatever happens."""
    base = Path(tempfile.mkdtemp(prefix="zramfs-lc-"))
    mnt = base / "mnt"
    mnt.mkdir()
    try:
        yield mnt
    finally:
        _cleanup_bg(mnt)
        subprocess.run(["rm", "-rf", "--one-file-system", str(base)], check=False)


def signal_until_exit(m: ZramfsMount, sig: signal.Signals, timeout: float = 15) -> int:
    """Send ``sig`` until the daemon exits; returns its exit status.

    FUSE sends RELEASE asynchronously: right after the last close (or
    ``losetup -d``) the daemon may still count the image as open and refuse
    once, as it should. A refusal is logged; the next signal then succeeds.
    """
    deadline = time.monotonic() + timeout
    while True:
        m.proc.send_signal(sig)
        try:
            return m.proc.wait(timeout=0.5)
        except subprocess.TimeoutExpired:
            if time.monotonic() > deadline:
                raise


def errno_of(fn: Callable[[], object]) -> int:
    with pytest.raises(OSError) as e:
        fn()
    assert e.value.errno is not None
    return e.value.errno


# -------------------------------------------------------------- mount/umount


def test_background_mount_and_umount(bg_dir: Path) -> None:
    mnt = bg_dir
    log = mnt.parent / "daemon.log"
    res = zramfs("mount", "--log", str(log), "--num-devices", "2", str(mnt))
    assert res.returncode == 0, res.stderr
    # Mounted by the time the command returns, served by a detached daemon.
    assert mountinfo(mnt) == ("fuse.zramfs", "zramfs")
    assert sorted(os.listdir(mnt / "dev")) == ["zram0", "zram1"]
    pids = daemon_pids(mnt)
    assert len(pids) == 1 and pid_alive(pids[0])
    assert os.getsid(pids[0]) == pids[0]  # its own session: no terminal's signals
    assert (mnt / "sys/block/zram0/initstate").read_text() == "0\n"
    # A second mount on the same point is refused.
    res = zramfs("mount", "--log", str(log), str(mnt))
    assert res.returncode == 1 and "already a zramfs mount" in res.stderr
    res = zramfs("umount", str(mnt))
    assert res.returncode == 0, res.stderr
    assert not is_mounted(mnt)
    assert wait_for(lambda: not pid_alive(pids[0]))
    assert f"unmounted {mnt}" in log.read_text()
    res = zramfs("umount", str(mnt))
    assert res.returncode == 1 and "not a zramfs mount" in res.stderr


def test_sigterm_right_after_mount_returns(bg_dir: Path) -> None:
    """The handlers are in place before ``zramfs mount`` returns: no dead mount."""
    mnt = bg_dir
    log = mnt.parent / "daemon.log"
    for _ in range(2):
        res = zramfs("mount", "--log", str(log), str(mnt))
        assert res.returncode == 0, res.stderr
        (pid,) = daemon_pids(mnt)
        os.kill(pid, signal.SIGTERM)

        def gone(p: int = pid) -> bool:
            return not pid_alive(p)

        assert wait_for(gone), "daemon ignored SIGTERM"
        assert not mounts.is_dead(str(mnt))
        assert wait_for(lambda: not is_mounted(mnt))
    assert log.read_text().count("SIGTERM: unmounting") == 2


def test_mount_failure_is_reported(bg_dir: Path) -> None:
    missing = bg_dir / "missing"
    res = zramfs("mount", "--log", str(bg_dir.parent / "daemon.log"), str(missing))
    assert res.returncode == 1
    assert "mount failed" in res.stderr
    assert not is_mounted(missing)
    res = zramfs("mount", "--num-devices", "-1", str(bg_dir))
    assert res.returncode == 2
    assert not is_mounted(bg_dir)


@needs_loop
def test_umount_refuses_while_a_loop_device_is_attached(mount_factory: MountFactory) -> None:
    m = mount_factory()
    m.write_attr("disksize", "8M")
    loop = m.losetup()
    res = zramfs("umount", str(m.path))
    assert res.returncode == 1
    assert "zram0" in res.stderr and loop in res.stderr, res.stderr
    assert m.alive() and is_mounted(m.path)
    assert m.read_attr("initstate") == "1\n"  # still serving
    m.detach(loop)
    assert wait_for(lambda: zramfs("umount", str(m.path)).returncode == 0, 10)
    assert not is_mounted(m.path)
    assert m.proc.wait(timeout=10) == 0


def test_umount_refuses_while_the_image_is_open(mount_factory: MountFactory) -> None:
    m = mount_factory()
    m.write_attr("disksize", "1M")
    fd = os.open(m.image(), os.O_RDONLY)
    try:
        res = zramfs("umount", str(m.path))
        assert res.returncode == 1
        assert "zram0" in res.stderr and f"pid {os.getpid()}" in res.stderr, res.stderr
        assert m.alive() and is_mounted(m.path)
    finally:
        os.close(fd)
    assert wait_for(lambda: zramfs("umount", str(m.path)).returncode == 0, 10)
    assert m.proc.wait(timeout=10) == 0


# ------------------------------------------------------------------- signals


@needs_loop
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signal_refused_with_loop_then_clean_exit(
    mount_factory: MountFactory, sig: signal.Signals
) -> None:
    m = mount_factory()
    m.write_attr("disksize", "8M")
    loop = m.losetup()
    with open(loop, "r+b", buffering=0) as f:
        f.write(b"kept" * 1024)
    m.proc.send_signal(sig)
    assert wait_for(lambda: "refusing to unmount" in m.log_text(), 10), m.log_text()
    assert f"{sig.name}: refusing" in m.log_text()
    assert "zram0" in m.log_text()
    time.sleep(0.2)
    assert m.alive() and is_mounted(m.path)
    with open(loop, "rb") as f:  # still serving the loop device
        assert f.read(4096) == b"kept" * 1024
    assert m.read_attr("initstate") == "1\n"
    m.detach(loop)
    assert signal_until_exit(m, sig) == 0
    assert not is_mounted(m.path)
    assert not mounts.is_dead(str(m.path))
    assert os.listdir(m.path) == []  # the bare mount point again


def test_sigterm_without_open_image_exits_cleanly(mount_factory: MountFactory) -> None:
    m = mount_factory("--num-devices", "2")
    m.write_attr("disksize", "4M", dev=1)
    with open(m.image(1), "r+b", buffering=0) as f:
        f.write(os.urandom(1 << 20))
    assert signal_until_exit(m, signal.SIGTERM) == 0
    assert not is_mounted(m.path)
    assert "SIGTERM: unmounting" in m.log_text()
    assert "Traceback" not in m.log_text()


# ------------------------------------------------ errors never kill the daemon


def test_bad_requests_get_errno_not_a_crash(zmount: ZramfsMount) -> None:
    m = zmount
    sysd = m.path / "sys"
    block = m.sys()
    assert errno_of(lambda: os.open(sysd, os.O_WRONLY)) == errno.EISDIR
    assert errno_of(lambda: os.open(block / "disksize" / "x", os.O_RDONLY)) == errno.ENOTDIR
    assert errno_of(lambda: os.mkdir(sysd / "x")) == errno.EPERM
    assert errno_of(lambda: os.open(sysd / "new", os.O_CREAT | os.O_WRONLY)) == errno.EACCES
    assert errno_of(lambda: os.unlink(block / "disksize")) == errno.EPERM
    assert errno_of(lambda: os.rmdir(sysd / "block")) == errno.EPERM
    assert errno_of(lambda: os.rename(block / "disksize", block / "d")) == errno.EPERM
    assert errno_of(lambda: os.chmod(block / "disksize", 0o777)) == errno.EPERM
    assert errno_of(lambda: os.chown(block / "disksize", 1, 1)) == errno.EPERM
    assert errno_of(lambda: os.symlink("x", sysd / "l")) in (errno.ENOSYS, errno.EPERM)
    assert errno_of(lambda: os.link(block / "disksize", sysd / "l")) in (errno.ENOSYS, errno.EPERM)
    assert errno_of(lambda: os.mknod(sysd / "n")) in (errno.EPERM, errno.EACCES)
    assert errno_of(lambda: os.stat(m.path / "dev" / "zram9")) == errno.ENOENT
    assert errno_of(lambda: os.listdir(block / "disksize")) == errno.ENOTDIR
    os.utime(block / "disksize")  # touch: accepted, like sysfs
    os.truncate(block / "disksize", 0)  # O_TRUNC / truncate on sysfs: ignored
    assert errno_of(lambda: os.truncate(m.image(), 1)) == errno.EINVAL
    # fsync on an attribute and on the image.
    fd = os.open(block / "disksize", os.O_RDWR)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    # statfs works.
    assert os.statvfs(m.path).f_bsize == 4096
    assert m.alive() and m.read_attr("initstate") == "0\n"
    assert "Traceback" not in m.log_text()


def test_open_files_of_a_removed_device(zmount: ZramfsMount) -> None:
    """Files opened before hot_remove answer ENODEV (kernfs), and change nothing."""
    m = zmount
    ctl = m.path / "sys/class/zram-control"
    assert (ctl / "hot_add").read_text() == "1\n"
    m.write_attr("disksize", "1M", dev=1)
    rd = os.open(m.sys(1) / "mm_stat", os.O_RDONLY)
    rw = os.open(m.sys(1) / "disksize", os.O_RDWR)
    bs = os.open(m.path / "sys/kernel/debug/zram/zram1/block_state", os.O_RDONLY)
    try:
        head = os.read(rd, 5)  # a snapshot in progress
        assert head
        (ctl / "hot_remove").write_text("1")
        assert not (m.path / "dev/zram1").exists()
        assert errno_of(lambda: os.read(rd, 100)) == errno.ENODEV
        assert errno_of(lambda: os.pread(rd, 100, 0)) == errno.ENODEV
        assert errno_of(lambda: os.pread(bs, 100, 0)) == errno.ENODEV
        assert errno_of(lambda: os.pread(rw, 100, 0)) == errno.ENODEV
        # A store through the stale fd must not revive the removed device.
        assert errno_of(lambda: os.pwrite(rw, b"4M", 0)) == errno.ENODEV
        # The same id comes back as a new, uninitialized device; old fds stay dead.
        assert (ctl / "hot_add").read_text() == "1\n"
        assert m.read_attr("disksize", dev=1) == "0\n"
        assert errno_of(lambda: os.pread(rw, 100, 0)) == errno.ENODEV
        assert errno_of(lambda: os.pwrite(rw, b"4M", 0)) == errno.ENODEV
        assert m.read_attr("disksize", dev=1) == "0\n"
    finally:
        for fd in (rd, rw, bs):
            os.close(fd)
    assert m.alive()
    assert "Traceback" not in m.log_text()


# ------------------------------------------------------------------ dead mounts


@needs_loop
def test_sigkill_leaves_a_dead_mount_that_umount_clears(
    mount_factory: MountFactory, bg_dir: Path
) -> None:
    m = mount_factory()
    m.write_attr("disksize", "8M")
    loop = m.losetup()
    m.proc.kill()
    m.proc.wait(timeout=10)
    assert mounts.is_dead(str(m.path))
    assert errno_of(lambda: os.stat(m.path)) == errno.ENOTCONN
    res = zramfs("umount", str(m.path))
    assert res.returncode == 0, res.stderr
    assert "lost" in res.stderr and loop in res.stderr, res.stderr
    assert not is_mounted(m.path)
    assert wait_for(lambda: not mounts.loops_under(str(m.path)))
    m.loops.remove(loop)
    # The mount point is usable again.
    res = zramfs("mount", "--log", str(bg_dir.parent / "daemon.log"), str(m.path))
    try:
        assert res.returncode == 0, res.stderr
        assert mountinfo(m.path) == ("fuse.zramfs", "zramfs")
        assert m.read_attr("disksize") == "0\n"
        res = zramfs("umount", str(m.path))
        assert res.returncode == 0, res.stderr
    finally:
        _cleanup_bg(m.path)
    assert not is_mounted(m.path)


def test_mount_over_a_dead_mount(mount_factory: MountFactory) -> None:
    """``zramfs mount`` on a dead mount point clears it and mounts afresh."""
    m = mount_factory()
    m.proc.kill()
    m.proc.wait(timeout=10)
    assert mounts.is_dead(str(m.path))
    log = m.path.parent / "remount.log"
    res = zramfs("mount", "--log", str(log), str(m.path))
    try:
        assert res.returncode == 0, res.stderr
        assert not mounts.is_dead(str(m.path))
        assert mountinfo(m.path) == ("fuse.zramfs", "zramfs")
        assert os.listdir(m.path / "dev") == ["zram0"]
        assert "dead mount" in log.read_text()
    finally:
        _cleanup_bg(m.path)
    assert not is_mounted(m.path)


# ------------------------------------------- paths that point back into the mount


def _store_must_not_hang(m: ZramfsMount, attr: str, value: str, timeout: float = 10) -> int:
    """Run ``echo value > attr`` in a child; if the daemon hangs, kill it (aborting
    the connection unblocks the writer) and fail. Returns echo's exit status."""
    script = f"echo '{value}' > {m.sys() / attr}"
    writer = subprocess.Popen(["bash", "-c", script], stderr=subprocess.PIPE)
    try:
        writer.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        m.proc.kill()  # closing /dev/fuse aborts the connection: the writer returns
        writer.wait(timeout=10)
        pytest.fail(f"daemon deadlocked on {script!r}")
    finally:
        if writer.stderr is not None:
            writer.stderr.close()
    return writer.returncode


def test_dict_path_inside_the_mount_does_not_deadlock(zmount: ZramfsMount) -> None:
    """The daemon must not block its own event loop on a path it serves."""
    m = zmount
    assert (m.path / "sys/class/zram-control/hot_add").read_text() == "1\n"
    m.write_attr("disksize", "1M", dev=1)
    target = m.sys(1) / "disksize"
    _store_must_not_hang(m, "algorithm_params", f"dict={target}", timeout=4)
    assert m.alive() and m.read_attr("initstate") == "0\n"


def test_backing_dev_inside_the_mount_is_refused(zmount: ZramfsMount) -> None:
    m = zmount
    assert (m.path / "sys/class/zram-control/hot_add").read_text() == "1\n"
    m.write_attr("disksize", "1M", dev=1)
    assert _store_must_not_hang(m, "backing_dev", str(m.image(1))) == 1
    assert m.read_attr("backing_dev") == "none\n"
    assert m.alive() and m.read_attr("initstate") == "0\n"
    assert m.read_attr("initstate", dev=1) == "1\n"
    # The refused open released the image again: zram1 can be reset.
    assert wait_for(lambda: _try_reset(m, 1))


def _try_reset(m: ZramfsMount, dev: int) -> bool:
    try:
        m.write_attr("reset", "1", dev=dev)
    except OSError:
        return False
    return True
