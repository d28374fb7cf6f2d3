"""The runnable examples in examples/, each run for real with small sizes.

Every script is run as a user would run it (``bash examples/X.sh``), with
``ZRAMFS`` pointing at this checkout's CLI. Each test checks the exit status,
the lines the script promises to print, and that it leaves nothing behind: no
zramfs mount under its root, no loop device backed by a file there, no swap
on such a loop device, no file system left mounted. Whatever a failing script
does leave behind is undone by the ``leftovers`` fixture, so a failure never
strands a swap or a loop device on the machine.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.conftest import ZramfsMount, needs_fuse, needs_loop, run
from zramfs.fs import mounts

pytestmark = [needs_fuse, needs_loop]

REPO = Path(__file__).resolve().parent.parent
EXAMPLES = REPO / "examples"
ZRAMFS_CLI = REPO / ".venv" / "bin" / "zramfs"
SIZE = "64M"


def script_env(root: Path | None = None) -> dict[str, str]:
    env = dict(os.environ)
    env.pop("ZRAMFS_ROOT", None)
    env["ZRAMFS"] = str(ZRAMFS_CLI)
    if root is not None:
        env["ZRAMFS_ROOT"] = str(root)
    return env


def run_example(
    name: str, *args: str, root: Path | None = None, timeout: float = 40.0
) -> subprocess.CompletedProcess[str]:
    """Run ``examples/<name>`` (stdout not a tty: no colour); exit status unchecked."""
    return subprocess.run(
        ["bash", str(EXAMPLES / name), *args],
        capture_output=True, text=True, check=False, timeout=timeout,
        env=script_env(root), stdin=subprocess.DEVNULL,
    )  # fmt: skip


def ok(res: subprocess.CompletedProcess[str]) -> str:
    assert res.returncode == 0, f"exit {res.returncode}:\n{res.stdout}\n{res.stderr}"
    return res.stdout


def proc_swaps() -> dict[str, list[str]]:
    """/proc/swaps: device → [type, size KiB, used KiB, priority]."""
    with open("/proc/swaps") as f:
        lines = f.read().splitlines()[1:]
    return {parts[0]: parts[1:] for parts in (line.split() for line in lines)}


def mounted_at(path: Path) -> list[mounts.Mount]:
    real = os.path.realpath(path)
    return [m for m in mounts.mounts() if m.mountpoint == real]


def loops_under(root: Path) -> list[str]:
    return [a.loop for a in mounts.loops_under(os.path.realpath(root))]


def wait_for(pred: Callable[[], bool], timeout: float = 5.0) -> bool:
    """Loop devices let go of their backing file asynchronously."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(0.05)
    return pred()


def backing_file(loop: str) -> str | None:
    try:
        return Path(f"/sys/block/{Path(loop).name}/loop/backing_file").read_text().strip()
    except OSError:
        return None


def assert_clean(root: Path, loops: list[str], *fs_dirs: Path) -> None:
    """Nothing of the script's left: no zramfs mount, loop device, swap or file system."""
    real = os.path.realpath(root)
    assert wait_for(lambda: not loops_under(root)), f"loop devices left: {loops_under(root)}"
    zmounts = [m for m in mounts.zramfs_mounts() if m.mountpoint.startswith(real)]
    assert not zmounts, f"zramfs mounts left: {zmounts}"
    # A loop device the script used may since serve someone else (tests run
    # concurrently): only a swap on it still backed from under root counts.
    for loop in loops:
        bf = backing_file(loop)
        assert loop not in proc_swaps() or not (bf or "").startswith(real), proc_swaps()
    for d in fs_dirs:
        assert not mounted_at(d), f"{d} still mounted: {mounted_at(d)}"


def note_loops(out: str) -> list[str]:
    """The loop devices a script attached, from the lines losetup --show printed."""
    return re.findall(r"^(/dev/loop\d+)$", out, re.MULTILINE)


def undo(root: Path, *fs_dirs: Path) -> None:
    """Best-effort teardown of anything a script left under ``root``; never raises."""
    real = os.path.realpath(root)
    backed = set(loops_under(root))
    for dev in proc_swaps():
        if dev in backed:
            subprocess.run(["swapoff", dev], capture_output=True, check=False)
    for m in reversed(mounts.mounts()):
        if m.source in backed or any(m.mountpoint == os.path.realpath(d) for d in fs_dirs):
            subprocess.run(["umount", m.mountpoint], capture_output=True, check=False)
    for loop in backed:
        subprocess.run(["losetup", "-d", loop], capture_output=True, check=False)
    wait_for(lambda: not loops_under(root), timeout=10)
    for m in mounts.zramfs_mounts():
        inside = m.mountpoint == real or m.mountpoint.startswith(real.rstrip("/") + "/")
        if inside and mounts.fuse_unmount(m.mountpoint).returncode != 0:
            mounts.fuse_unmount(m.mountpoint, lazy=True)


@pytest.fixture
def leftovers(tmp_path: Path) -> Iterator[Path]:
    """A scratch directory; anything the scripts leave under it is undone after."""
    try:
        yield tmp_path
    finally:
        undo(tmp_path, tmp_path / "tmp", tmp_path / "scratch")


# --- swap.sh -----------------------------------------------------------------


def test_swap_tears_down(leftovers: Path) -> None:
    root = leftovers / "root"
    out = ok(run_example("swap.sh", SIZE, root=root))
    (loop,) = note_loops(out)
    assert "Setting up swapspace version 1, size = 64 MiB" in out, out
    # /proc/swaps as printed while it was on: the loop device, priority 100.
    assert re.search(rf"^{loop}\s+partition\s+65532\s+\d+\s+100$", out, re.MULTILINE), out
    assert re.search(r"^(\s*\d+){9}$", out, re.MULTILINE), f"no mm_stat line:\n{out}"
    assert out.rstrip().endswith("torn down"), out
    # Teardown is the undos last first (other tests may swap on and off meanwhile:
    # assert_clean only counts a swap still backed from under root).
    steps = [ln[2:] for ln in out.splitlines() if ln.startswith("$ ")]
    assert steps[-4:] == [
        f"swapoff {loop}", f"losetup -d {loop}", f"echo 1 > {root}/sys/block/zram0/reset",
        f"{ZRAMFS_CLI} umount {root}",
    ], steps  # fmt: skip
    assert_clean(root, [loop])
    assert root.is_dir()  # $ZRAMFS_ROOT is the user's: kept


def test_swap_keep_then_undo(leftovers: Path) -> None:
    root = leftovers / "root"
    out = ok(run_example("swap.sh", "--keep", SIZE, root=root))
    (loop,) = note_loops(out)
    assert "torn down" not in out
    entry = proc_swaps().get(loop)
    assert entry is not None and entry[0] == "partition" and entry[3] == "100", proc_swaps()
    assert loops_under(root) == [loop]
    assert [m.fstype for m in mounted_at(root)] == [mounts.FSTYPE]
    # The printed undo line does the whole teardown.
    (undo_line,) = [ln.strip() for ln in out.splitlines() if ln.strip().startswith("swapoff ")]
    run("bash", "-c", undo_line)
    assert loop not in proc_swaps()
    assert_clean(root, [loop])


# --- tmp-ext4.sh -------------------------------------------------------------


def test_tmp_ext4_tears_down(leftovers: Path) -> None:
    root, tmp = leftovers / "root", leftovers / "tmp"
    tmp.mkdir()  # an existing DIR is the user's: mounted over, then left as it was
    out = ok(run_example("tmp-ext4.sh", SIZE, str(tmp), root=root))
    (loop,) = note_loops(out)
    assert f"echo zstd > {root}/sys/block/zram0/comp_algorithm" in out, out
    assert f"mount -o discard,nosuid,nodev {loop} {tmp}" in out, out
    assert f"drwxrwxrwt {tmp}" in out, out
    assert re.search(rf"^{loop}\s+\d+M\s+.*{re.escape(str(tmp))}$", out, re.MULTILINE), out
    m = re.search(r"compression ratio (\d+\.\d+):1", out)
    assert m is not None and float(m.group(1)) > 1.0, out
    assert out.rstrip().endswith("torn down"), out
    assert_clean(root, [loop], tmp)
    assert tmp.is_dir() and not any(tmp.iterdir())


def test_tmp_ext4_keep_then_undo(leftovers: Path) -> None:
    root, tmp = leftovers / "root", leftovers / "tmp"
    out = ok(run_example("tmp-ext4.sh", "--keep", SIZE, str(tmp), root=root))
    (loop,) = note_loops(out)
    (fs,) = mounted_at(tmp)
    assert fs.fstype == "ext4" and fs.source == loop, fs
    with open("/proc/self/mounts") as f:
        opts = next(ln.split()[3] for ln in f if ln.split()[1] == os.path.realpath(tmp))
    assert "discard" in opts.split(","), opts
    assert (tmp.stat().st_mode & 0o7777) == 0o1777
    # It is usable /tmp: a file written there lands, compressed, in zram0.
    (tmp / "hello.txt").write_text("hello zram\n" * 4096)
    run("sync")
    orig = int((root / "sys/block/zram0/mm_stat").read_text().split()[0])
    assert orig > 0
    (undo_line,) = [ln.strip() for ln in out.splitlines() if ln.strip().startswith("umount ")]
    run("bash", "-c", undo_line)
    assert_clean(root, [loop], tmp)


@pytest.mark.parametrize(
    ("name", "args", "error"),
    [
        ("swap.sh", ["0"], "Invalid argument"),  # fails at disksize: before any loop device
        ("tmp-ext4.sh", ["16K"], "Not enough space"),  # fails at mkfs: loop device attached
    ],
)
def test_failure_undoes_everything(leftovers: Path, name: str, args: list[str], error: str) -> None:
    root, tmp = leftovers / "root", leftovers / "tmp"
    extra = [str(tmp)] if name == "tmp-ext4.sh" else []
    res = run_example(name, *args, *extra, root=root)
    assert res.returncode != 0, res.stdout
    assert error in res.stderr, res.stderr
    assert_clean(root, note_loops(res.stdout), tmp)
    assert "torn down" not in res.stdout


# --- build-dir.sh ------------------------------------------------------------


def test_build_dir(leftovers: Path) -> None:
    # Without $ZRAMFS_ROOT: the script makes, and removes, its own mount point.
    out = ok(run_example("build-dir.sh", SIZE))
    loops = note_loops(out)
    mnt = re.search(r"zramfs mount (/tmp/zramfs-build\.\w+)$", out, re.MULTILINE)
    build = re.search(r"noatime,discard /dev/loop\d+ (/tmp/zramfs-build-dir\.\w+)$", out, re.M)
    assert mnt is not None and build is not None, out
    root, build_dir = Path(mnt.group(1)), Path(build.group(1))
    try:
        assert f"echo lz4 > {root}/sys/block/zram0/comp_algorithm" in out, out
        built = re.search(r"^built (\d+) \.pyc files from (\d+) \.py files$", out, re.MULTILINE)
        assert built is not None and int(built.group(1)) >= int(built.group(2)) > 50, out
        ratio = re.search(r"compression ratio (\d+\.\d+):1", out)
        assert ratio is not None and float(ratio.group(1)) > 1.0, out
        assert out.rstrip().endswith("torn down"), out
        assert_clean(root, loops, build_dir)
        assert not root.exists() and not build_dir.exists()
    finally:
        undo(root, build_dir)


# --- live-ratio.sh -----------------------------------------------------------

ROW = re.compile(
    r"^(\d\d:\d\d:\d\d) (zram\d+)\s+(\d+)\s+(\d+)\s+(\d+)\s+(\d+\.\d\d|-)\s+(\d+)\s+(\d+)$"
)


def test_live_ratio(zmount: ZramfsMount) -> None:
    m = zmount
    # zram0 initialized and holding data; zram1 uninitialized: not listed.
    assert (m.path / "sys/class/zram-control/hot_add").read_text().strip() == "1"
    m.write_attr("disksize", "16M")
    with open(m.image(), "r+b", buffering=0) as f:
        f.write(b"\0" * 4096 * 4)  # same-filled pages
        f.write(b"zramfs " * 4096)  # compressible
        f.write(os.urandom(8192))  # incompressible: huge pages
    res = subprocess.run(
        ["bash", str(EXAMPLES / "live-ratio.sh"), str(m.path), "0.1", "3"],
        capture_output=True, text=True, check=False, timeout=20,
    )  # fmt: skip
    out = ok(res)
    lines = out.splitlines()
    assert lines[0].split() == [
        "TIME", "DEVICE", "ORIG", "COMPR", "MEM_USED", "RATIO", "SAME_PAGES", "HUGE_PAGES"
    ]  # fmt: skip
    rows = [ROW.match(ln) for ln in lines[1:]]
    assert len(rows) == 3 and all(rows), out
    mm = m.mm_stat()
    for r in rows:
        assert r is not None
        assert r.group(2) == "zram0"
        orig, compr, used = int(r.group(3)), int(r.group(4)), int(r.group(5))
        assert (orig, compr, used) == (mm[0], mm[1], mm[2])
        assert float(r.group(6)) == pytest.approx(orig / used, abs=0.01)
        assert (int(r.group(7)), int(r.group(8))) == (mm[5], mm[7])
        assert int(r.group(7)) >= 4 and int(r.group(8)) >= 2
    assert m.read_attr("disksize", 1).strip() == "0"


def test_live_ratio_usage(zmount: ZramfsMount, tmp_path: Path) -> None:
    script = str(EXAMPLES / "live-ratio.sh")
    res = subprocess.run(["bash", script], capture_output=True, text=True, check=False)
    assert res.returncode == 2 and "live-ratio.sh MNT [INTERVAL] [COUNT]" in res.stdout
    res = subprocess.run(["bash", script, str(tmp_path)], capture_output=True, text=True)
    assert res.returncode == 1 and "is not a zramfs mount" in res.stderr
    # Nothing initialized: the header only, and it stops after COUNT rounds.
    res = subprocess.run(
        ["bash", script, str(zmount.path), "0.05", "2"], capture_output=True, text=True, timeout=10
    )
    assert res.returncode == 0 and res.stdout.splitlines()[1:] == [], res.stdout


SCRIPTS = ("swap.sh", "tmp-ext4.sh", "build-dir.sh", "live-ratio.sh", "demo.sh")


def test_examples_are_executable() -> None:
    assert shutil.which("bash") is not None
    for name in SCRIPTS:
        path = EXAMPLES / name
        assert os.access(path, os.X_OK), path
        run("bash", "-n", str(path))
    run("bash", "-n", str(EXAMPLES / "lib.sh"))  # sourced, not run


@pytest.mark.parametrize("name", ["swap.sh", "tmp-ext4.sh", "build-dir.sh", "live-ratio.sh"])
def test_help_is_the_header_comment(name: str, tmp_path: Path) -> None:
    header = []
    for line in (EXAMPLES / name).read_text().splitlines()[1:]:
        if not line.startswith("#"):
            break
        header.append(line[2:] if line.startswith("# ") else line[1:])
    # From another directory: lib.sh is found next to the script.
    res = subprocess.run(
        ["bash", str(EXAMPLES / name), "--help"],
        capture_output=True, text=True, check=False, cwd=tmp_path, env=script_env(),
    )  # fmt: skip
    assert res.returncode == 0 and res.stdout.splitlines() == header, res


@pytest.mark.skipif(shutil.which("shellcheck") is None, reason="shellcheck not installed")
def test_examples_pass_shellcheck() -> None:
    paths = [str(EXAMPLES / n) for n in (*SCRIPTS, "lib.sh")]
    res = subprocess.run(["shellcheck", "-x", *paths], capture_output=True, text=True, check=False)
    assert res.returncode == 0, res.stdout
