"""ext4 on a zramfs image, for real: a loop device, mkfs, a real tree, fsck, trim.

The tree is the Python standard library (~50 MB of text and bytecode), copied
with ``cp -a`` and checked file by file with SHA-256 — after a remount on a
*fresh* loop device, so every byte read back comes from zramfs, not from a
page cache.  Deleting the tree and trimming (``fstrim``, ``-o discard``) must
hand the memory back: loop turns discard into ``fallocate(PUNCH_HOLE)`` on the
image, which zramfs maps to zram's discard path (``notify_free``).
"""

from __future__ import annotations

import hashlib
import os
import re
import sysconfig
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.conftest import ZramfsMount, needs_fuse, needs_loop, run

pytestmark = [needs_fuse, needs_loop]

MiB = 1 << 20
TREE_BUDGET = 60 * MiB
# A ~10 MB slice of the stdlib for the cheaper variants.
SMALL_PARTS = ("email", "asyncio", "json", "xml", "unittest", "multiprocessing", "concurrent")

# mm_stat columns
ORIG, COMPR, MEM_USED = 0, 1, 2
# io_stat columns
NOTIFY_FREE = 3


def stdlib_dir() -> Path:
    """This Python's standard library (of which `pick_entries` skips site-packages)."""
    for cand in (Path(sysconfig.get_paths()["stdlib"]), Path(os.__file__).parent):
        if (cand / "os.py").is_file():
            return cand
    pytest.skip("no Python standard library directory found")


def entry_bytes(p: Path) -> int:
    return tree_bytes(p) if p.is_dir() and not p.is_symlink() else p.lstat().st_size


def pick_entries(src: Path, budget: int) -> list[str]:
    """Top-level stdlib entries (no site-packages) adding up to at most ``budget`` bytes."""
    chosen: list[str] = []
    total = 0
    for name in sorted(os.listdir(src)):
        if name in ("site-packages", "dist-packages") or name.startswith("config-"):
            continue
        size = entry_bytes(src / name)
        if total + size <= budget:
            chosen.append(name)
            total += size
    return chosen


def tree_digest(root: Path, names: list[str] | None = None) -> dict[str, str]:
    """Relative path → sha256 of every file, target of every symlink, and each directory.

    With ``names``, only those top-level entries of ``root``.
    """
    out: dict[str, str] = {}
    if names is not None:
        for name in names:
            p = root / name
            if p.is_symlink():
                out[name] = "link:" + os.readlink(p)
            elif p.is_dir():
                out[name] = "dir"
                out.update({f"{name}/{k}": v for k, v in tree_digest(p).items()})
            else:
                out[name] = hashlib.sha256(p.read_bytes()).hexdigest()
        return out
    for dirpath, dirnames, filenames in os.walk(root):
        base = Path(dirpath)
        for d in dirnames:
            p = base / d
            rel = str(p.relative_to(root))
            out[rel] = "link:" + os.readlink(p) if p.is_symlink() else "dir"
        for name in filenames:
            p = base / name
            rel = str(p.relative_to(root))
            if p.is_symlink():
                out[rel] = "link:" + os.readlink(p)
            else:
                out[rel] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


def tree_bytes(root: Path) -> int:
    total = 0
    for dirpath, _, filenames in os.walk(root):
        for name in filenames:
            p = Path(dirpath) / name
            if not p.is_symlink():
                total += p.stat().st_size
    return total


def wait_for(cond: Callable[[], bool], timeout: float = 15.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(0.1)
    return cond()


def fsck_clean(device: str) -> None:
    res = run("e2fsck", "-fn", device, check=False)
    assert res.returncode == 0, f"e2fsck -fn {device} exited {res.returncode}:\n{res.stdout}"


def copy_small_tree(dest: Path) -> None:
    src = stdlib_dir()
    dest.mkdir()
    run("cp", "-a", *(str(src / part) for part in SMALL_PARTS), str(dest))


class Source:
    """The stdlib slice the big test copies, and its digest taken before the copy."""

    def __init__(self) -> None:
        self.root = stdlib_dir()
        self.names = pick_entries(self.root, TREE_BUDGET)
        self.digest = tree_digest(self.root, self.names)
        self.size = sum(entry_bytes(self.root / n) for n in self.names)


@pytest.fixture(scope="module")
def source() -> Source:
    src = Source()
    if src.size < 20 * MiB:
        pytest.skip(f"only {src.size / MiB:.0f} MiB of stdlib at {src.root}; want >= 20 MiB")
    return src


def test_stdlib_tree_survives_remount_fsck_and_trim(
    zmount: ZramfsMount, tmp_path: Path, source: Source
) -> None:
    m = zmount
    m.write_attr("comp_algorithm", "lz4")
    m.write_attr("disksize", "256M")
    loop = m.losetup()
    run("mkfs.ext4", "-q", loop)
    mnt = m.mount_fs(loop, tmp_path / "fs")
    run("sync", "-f", str(mnt))
    empty = m.mm_stat()
    rss_empty = m.rss()

    tree = mnt / "stdlib"
    tree.mkdir()
    run("cp", "-a", *(str(source.root / n) for n in source.names), str(tree))
    run("sync", "-f", str(mnt))
    assert tree_digest(tree) == source.digest
    m.umount_fs(mnt)
    fsck_clean(loop)

    full = m.mm_stat()
    rss_full = m.rss()
    src_bytes = source.size
    assert full[ORIG] - empty[ORIG] >= src_bytes * 0.9, (empty, full, src_bytes)
    assert 0 < full[COMPR] < full[ORIG], full  # python source compresses
    assert 0 < full[MEM_USED] < full[ORIG], full
    # SPEC §5: the daemon's memory tracks mem_used_total (no per-page Python objects).
    grown = rss_full - rss_empty
    want = full[MEM_USED] - empty[MEM_USED]
    assert grown <= want * 1.25 + 8 * MiB, f"RSS +{grown / MiB:.1f} MiB for {want / MiB:.1f} MiB"

    # A fresh loop device has no cached pages: every read goes to zramfs.
    m.detach(loop)
    loop = m.losetup()
    fsck_clean(loop)
    mnt = m.mount_fs(loop, tmp_path / "fs")
    assert tree_digest(tree) == source.digest

    freed_before = m.io_stat()[NOTIFY_FREE]
    run("rm", "-rf", str(tree))
    run("sync", "-f", str(mnt))  # commit the frees, or fstrim skips them
    out = run("fstrim", "-v", str(mnt)).stdout
    trimmed = re.search(r"\((\d+) bytes\) trimmed", out)
    assert trimmed is not None and int(trimmed.group(1)) >= src_bytes * 0.9, out
    after = m.mm_stat()
    assert m.io_stat()[NOTIFY_FREE] - freed_before >= src_bytes // 4096 * 0.9
    # Back to (about) the empty file system: what stays is the journal and metadata.
    assert after[ORIG] <= empty[ORIG] + 16 * MiB, (empty, full, after)
    assert after[ORIG] < full[ORIG] // 4, (full, after)
    assert after[MEM_USED] < full[MEM_USED] // 4, (full, after)
    # ... and the daemon gives that memory back.
    assert m.rss() < rss_full - (full[MEM_USED] - after[MEM_USED]) // 2, (rss_full, m.rss())

    m.umount_fs(mnt)
    fsck_clean(loop)
    m.detach(loop)
    m.write_attr("reset", "1")
    assert m.read_attr("disksize") == "0\n"
    assert m.mm_stat()[:3] == [0, 0, 0]


def test_mount_o_discard_frees_pages_online(zmount: ZramfsMount, tmp_path: Path) -> None:
    m = zmount
    m.write_attr("disksize", "128M")
    loop = m.losetup()
    run("mkfs.ext4", "-q", loop)
    mnt = m.mount_fs(loop, tmp_path / "fs", "discard")
    run("sync", "-f", str(mnt))
    empty = m.mm_stat()

    tree = mnt / "tree"
    copy_small_tree(tree)
    run("sync", "-f", str(mnt))
    digest = tree_digest(tree)
    full = m.mm_stat()
    size = tree_bytes(tree)
    assert full[ORIG] - empty[ORIG] >= size * 0.9
    freed_before = m.io_stat()[NOTIFY_FREE]

    run("rm", "-rf", str(tree))
    run("sync", "-f", str(mnt))
    # ext4 issues the discards when the transaction that freed the blocks commits.
    assert wait_for(lambda: m.mm_stat()[ORIG] <= empty[ORIG] + 8 * MiB), (empty, full, m.mm_stat())
    assert m.io_stat()[NOTIFY_FREE] - freed_before >= size // 4096 * 0.9

    # The file system is intact and usable after the online discards.
    copy_small_tree(tree)
    run("sync", "-f", str(mnt))
    m.umount_fs(mnt)
    fsck_clean(loop)
    m.detach(loop)
    loop = m.losetup()
    mnt = m.mount_fs(loop, tmp_path / "fs", "discard")
    assert tree_digest(tree) == digest


def test_ext4_directly_on_the_image_file(zmount: ZramfsMount, tmp_path: Path) -> None:
    """``mkfs.ext4 MNT/dev/zram0; mount MNT/dev/zram0 /x`` (mount sets up a buffered loop)."""
    m = zmount
    m.write_attr("comp_algorithm", "zstd")
    m.write_attr("disksize", "64M")
    image = str(m.image())
    # mkfs on a regular file discards with PUNCH_HOLE and zeroes with ZERO_RANGE.
    run("mkfs.ext4", "-q", "-F", image)
    assert m.io_stat()[NOTIFY_FREE] >= (64 * MiB) // 4096
    mnt = m.mount_fs(image, tmp_path / "fs")
    tree = mnt / "tree"
    copy_small_tree(tree)
    run("sync", "-f", str(mnt))
    digest = tree_digest(tree)
    m.umount_fs(mnt)
    fsck_clean(image)  # e2fsck on the image file itself
    mm = m.mm_stat()
    assert 0 < mm[COMPR] < mm[ORIG]
    mnt = m.mount_fs(image, tmp_path / "fs")
    assert tree_digest(tree) == digest
    m.umount_fs(mnt)
    # mount's auto-clear loop device lets go of the image: reset works.
    assert wait_for(lambda: _reset_ok(m), timeout=10), "reset stayed EBUSY after umount"
    assert m.read_attr("initstate") == "0\n"


def _reset_ok(m: ZramfsMount) -> bool:
    try:
        m.write_attr("reset", "1")
    except OSError:
        return False
    return True
