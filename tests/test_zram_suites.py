"""Ports of the public zram test suites (reference §16) to a zramfs mount.

kselftest ``tools/testing/selftests/zram`` (zram01.sh, zram02.sh, zram_lib.sh)
and LTP ``testcases/kernel/device-drivers/zram`` (zram01.sh, zram02.sh,
zram03.c), step by step: every ``/sys/...`` and ``/dev/...`` path is prefixed
with the mount point, and where the scripts use ``/dev/zramN`` as a block
device (mkfs, mount, mkswap, mmap) a loop device attached to the image stands
in for it.  What the scripts only print (kselftest's ``[PASS]/[FAIL]``) is
asserted here.
"""

from __future__ import annotations

import errno
import mmap
import os
import time
from pathlib import Path

import pytest

from tests.conftest import ZramfsMount, needs_fuse, needs_loop, run

pytestmark = [needs_fuse, needs_loop]

MiB = 1 << 20
PAGE = 4096


class ZramLib:
    """``zram_lib.sh`` over a zramfs mount (kselftest and LTP share the logic)."""

    def __init__(self, m: ZramfsMount, tmp: Path) -> None:
        self.m = m
        self.tmp = tmp
        self.devs: list[int] = []
        self.loops: dict[int, str] = {}
        self.mnts: dict[int, Path] = {}
        self.swaps: set[int] = set()

    @property
    def control(self) -> Path:
        return self.m.path / "sys" / "class" / "zram-control"

    def dev_nodes(self) -> list[str]:
        return sorted(p.name for p in (self.m.path / "dev").glob("zram*"))

    def load(self, dev_num: int) -> list[int]:
        """``zram_load``: hot_add ``dev_num`` devices, ids right after the existing ones."""
        dev_start = len(self.dev_nodes())  # ls /dev/zram* | wc -w
        for i in range(dev_num):
            new = int((self.control / "hot_add").read_text())
            assert new == dev_start + i, f"hot_add gave zram{new}, expected zram{dev_start + i}"
            assert (self.m.image(new)).exists() and self.m.sys(new).is_dir()
            self.devs.append(new)
        return self.devs

    def algorithms(self, dev: int) -> list[str]:
        return self.m.read_attr("comp_algorithm", dev).replace("[", "").replace("]", "").split()

    def compress_alg_ltp(self) -> str:
        """LTP ``zram_compress_alg``: every device gets every listed algorithm, in order."""
        last = ""
        for dev in self.devs:
            for alg in self.algorithms(dev):
                self.m.write_attr("comp_algorithm", alg, dev)
                assert f"[{alg}]" in self.m.read_attr("comp_algorithm", dev)
                last = alg
        return last

    def set_disksizes(self, size: int | str) -> None:
        for dev in self.devs:
            self.m.write_attr("disksize", str(size), dev)
            assert self.m.read_attr("initstate", dev) == "1\n"

    def set_memlimit(self, limit: str) -> None:
        for dev in self.devs:
            self.m.write_attr("mem_limit", limit, dev)

    def block(self, dev: int) -> str:
        """The block device standing in for /dev/zramN."""
        if dev not in self.loops:
            self.loops[dev] = self.m.losetup(dev)
        return self.loops[dev]

    def makefs(self, fs: str, dev: int) -> None:
        run(f"mkfs.{fs}", "-q", self.block(dev))

    def mount(self, fs: str, dev: int) -> Path:
        target = self.m.mount_fs(self.block(dev), self.tmp / f"zram{dev}")
        assert fs in run("findmnt", "-no", "FSTYPE", str(target)).stdout
        self.mnts[dev] = target
        return target

    def makeswap(self, dev: int) -> None:
        run("mkswap", self.block(dev))
        self.m.swapon(self.block(dev))
        self.swaps.add(dev)

    def swapoff(self, dev: int) -> None:
        self.m.swapoff(self.block(dev))
        self.swaps.discard(dev)

    def cleanup(self) -> None:
        """``zram_cleanup``: swapoff, umount, reset, hot_remove — each must succeed."""
        for dev in list(self.swaps):
            self.swapoff(dev)
        for dev, target in list(self.mnts.items()):
            self.m.umount_fs(target)
            del self.mnts[dev]
        for dev, loop in list(self.loops.items()):
            self.m.detach(loop)
            del self.loops[dev]
        for dev in self.devs:
            self.m.write_attr("reset", "1", dev)
            assert self.m.read_attr("initstate", dev) == "0\n"
        for dev in self.devs:
            (self.control / "hot_remove").write_text(str(dev))
            assert not self.m.image(dev).exists() and not self.m.sys(dev).exists()
        self.devs = []


@pytest.fixture
def lib(zmount: ZramfsMount, tmp_path: Path) -> ZramLib:
    return ZramLib(zmount, tmp_path)


def fill_with_appends(path: Path) -> int:
    """``dd if=/dev/zero of=file bs=1k count=1 oflag=append conv=notrunc`` until it fails.

    Each round opens the file for appending, writes 1 KiB of zeros and closes
    it, as one dd invocation does.  Returns b, the KiB written.
    """
    zeros = bytes(1024)
    b = 0
    while True:
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        except OSError as e:
            assert e.errno == errno.ENOSPC, e
            return b
        try:
            if os.write(fd, zeros) != 1024:
                return b
        except OSError as e:
            assert e.errno in (errno.ENOSPC, errno.EDQUOT), e
            return b
        finally:
            try:
                os.close(fd)
            except OSError as e:  # delayed allocation can report at close
                assert e.errno == errno.ENOSPC, e
        b += 1


def mem_used_total(m: ZramfsMount, dev: int) -> int:
    """LTP: retry reading mm_stat column 3 with exponential backoff (10 s) until non-zero."""
    delay = 0.01
    deadline = time.monotonic() + 10
    while True:
        used = m.mm_stat(dev)[2]
        if used or time.monotonic() > deadline:
            return used
        time.sleep(delay)
        delay *= 2


def fill_and_ratio(lib: ZramLib, dev: int) -> None:
    """zram01's last step: fill, then v = 100*1024*b/mem_used_total must be >= 100."""
    m = lib.m
    b = fill_with_appends(lib.mnts[dev] / "file")
    assert b > 0, "nothing written"  # LTP: TBROK
    used = mem_used_total(m, dev)
    assert used > 0, m.mm_stat(dev)
    v = 100 * 1024 * b // used
    assert v >= 100, f"compression ratio {v / 100:.2f}:1 (b={b} KiB, mem_used={used})"
    # Stronger than the scripts: once the data really reached the device.
    run("sync", "-f", str(lib.mnts[dev]))
    mm = m.mm_stat(dev)
    assert mm[0] >= b * 1024 // 2, (b, mm)  # the zeros are stored (same-filled pages)
    v = 100 * 1024 * b // mm[2]
    assert v >= 100, f"after sync: ratio {v / 100:.2f}:1 (b={b} KiB, mm_stat={mm})"
    assert m.io_stat(dev)[:2] == [0, 0], m.io_stat(dev)


# ------------------------------------------------------------ kselftest


@pytest.mark.parametrize("alg", ["lz4", "lz4hc", "zstd", "deflate", "brotli"])
def test_kselftest_zram01(lib: ZramLib, alg: str) -> None:
    """zram01.sh with each of our algorithms instead of lzo: 2 MiB, mem_limit 2M, ext4."""
    (dev,) = lib.load(1)
    lib.m.write_attr("comp_algorithm", alg, dev)
    lib.set_disksizes(2097152)
    lib.set_memlimit("2M")
    assert lib.m.mm_stat(dev)[3] == 2 * MiB  # mem_limit column
    lib.makefs("ext4", dev)
    lib.mount("ext4", dev)
    fill_and_ratio(lib, dev)
    assert lib.m.mm_stat(dev)[1] > 0  # the algorithm really compressed metadata
    lib.cleanup()


def test_kselftest_zram02(lib: ZramLib) -> None:
    """zram02.sh: 1 MiB disksize, mem_limit 1M, mkswap + swapon + swapoff."""
    (dev,) = lib.load(1)
    lib.set_disksizes(1048576)
    lib.set_memlimit("1M")
    lib.makeswap(dev)
    lib.swapoff(dev)
    lib.cleanup()


# ------------------------------------------------------------------ LTP


def ltp_filesystems() -> list[str]:
    """``tst_supported_fs``: kernel support and a mkfs for it (of those LTP knows)."""
    with open("/proc/filesystems") as f:
        known = {line.split()[-1] for line in f}
    return [
        fs for fs in ("ext2", "ext3", "ext4", "xfs", "btrfs", "vfat", "exfat")
        if fs in known and any(Path(d, f"mkfs.{fs}").exists() for d in ("/sbin", "/usr/sbin"))
    ]  # fmt: skip


def test_ltp_zram01(lib: ZramLib) -> None:
    """LTP zram01.sh: one device per supported fs, 25 MiB / 25M each, all at once."""
    fss = [fs for fs in ltp_filesystems() if fs not in ("xfs", "btrfs")]  # need >= 1 GiB RAM
    assert fss, "no file system to test"
    devs = lib.load(len(fss))
    last = lib.compress_alg_ltp()
    for dev in devs:
        assert f"[{last}]" in lib.m.read_attr("comp_algorithm", dev)  # the last one stays
    lib.set_disksizes(26214400)
    lib.set_memlimit("25M")
    for fs, dev in zip(fss, devs, strict=True):
        lib.makefs(fs, dev)
        lib.mount(fs, dev)
    for dev in devs:
        fill_and_ratio(lib, dev)
    lib.cleanup()


def test_ltp_zram02(lib: ZramLib) -> None:
    """LTP zram02.sh: a sparse 100 GiB device, mem_limit 1M, swap on and off."""
    (dev,) = lib.load(1)
    lib.compress_alg_ltp()
    lib.set_disksizes(107374182400)
    assert os.stat(lib.m.image(dev)).st_size == 107374182400
    lib.set_memlimit("1M")
    lib.makeswap(dev)
    assert lib.m.mm_stat(dev)[2] <= 1 * MiB
    lib.swapoff(dev)
    lib.cleanup()


def test_ltp_zram03(lib: ZramLib) -> None:
    """LTP zram03.c: 512 MiB of 'a' (last byte NUL) through a shared mapping, then reset."""
    m = lib.m
    size = 536870912
    (dev,) = lib.load(1)
    m.write_attr("disksize", str(size), dev)
    loop = lib.block(dev)

    fd = os.open(loop, os.O_RDWR)
    try:
        with mmap.mmap(fd, size, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE) as mm:
            chunk = b"a" * (4 * MiB)
            for off in range(0, size, len(chunk)):
                mm[off : off + len(chunk)] = chunk
            mm[size - 1] = 0
            mm.flush()  # msync
        os.fsync(fd)  # and the loop device's cache reaches the image
    finally:
        os.close(fd)

    # dump_info
    assert m.read_attr("initstate", dev) == "1\n"
    assert m.read_attr("disksize", dev) == f"{size}\n"
    orig, compr, used, _, _, same = m.mm_stat(dev)[:6]
    npages = size // PAGE
    assert orig == size
    assert same == npages - 1  # every page but the last is 0x6161... (same-filled)
    assert 0 < compr < PAGE  # only the last page is compressed
    assert 0 < used <= 8 * PAGE
    stat = m.read_attr("stat", dev).split()
    assert len(stat) == 17
    assert int(stat[0]) > 0 and int(stat[4]) > 0  # read I/Os, write I/Os

    # verify, as zram03.c: O_RDONLY + MAP_PRIVATE of the block device
    fd = os.open(loop, os.O_RDONLY)
    try:
        with mmap.mmap(fd, size, mmap.MAP_PRIVATE, mmap.PROT_READ) as mm:
            want = b"a" * (4 * MiB)
            for off in range(0, size - len(want), len(want)):
                assert mm[off : off + len(want)] == want, f"bad data near {off}"
            tail = size - len(want)
            assert mm[tail : size - 1] == want[:-1] and mm[size - 1] == 0
    finally:
        os.close(fd)
    # ... and straight from the image file, bypassing the loop device's cache.
    with open(m.image(dev), "rb", buffering=0) as f:
        want = b"a" * (4 * MiB)
        for off in range(0, size, len(want)):
            got = f.read(len(want))
            expect = want if off + len(want) < size else want[:-1] + b"\0"
            assert got == expect, f"image differs near {off}"
        assert f.read(1) == b""

    # reset refuses while the loop device holds the image; works after detach
    with pytest.raises(OSError) as e:
        m.write_attr("reset", "1", dev)
    assert e.value.errno == errno.EBUSY
    with pytest.raises(OSError) as e:
        (lib.control / "hot_remove").write_text(str(dev))
    assert e.value.errno == errno.EBUSY
    m.detach(loop)
    del lib.loops[dev]
    m.write_attr("reset", "1", dev)
    assert m.read_attr("initstate", dev) == "0\n"
    assert m.read_attr("disksize", dev) == "0\n"
    assert m.mm_stat(dev)[:6] == [0] * 6
    # zram_reset_device: part_stat_set_all(disk->part0, 0)
    assert [int(x) for x in m.read_attr("stat", dev).split()] == [0] * 17
    lib.cleanup()


def test_hot_add_hot_remove_flows(lib: ZramLib) -> None:
    """The id bookkeeping both libs rely on: lowest free id, ENODEV/EBUSY/EINVAL."""
    m = lib.m
    assert lib.dev_nodes() == ["zram0"]
    devs = lib.load(3)
    assert devs == [1, 2, 3]
    assert lib.dev_nodes() == ["zram0", "zram1", "zram2", "zram3"]
    # remove the middle one; the next hot_add reuses its id (idr_alloc lowest free)
    (lib.control / "hot_remove").write_text("2")
    assert lib.dev_nodes() == ["zram0", "zram1", "zram3"]
    assert int((lib.control / "hot_add").read_text()) == 2
    assert lib.dev_nodes() == ["zram0", "zram1", "zram2", "zram3"]
    # errors: no such device, negative / garbage, busy
    for value, err in (("9", errno.ENODEV), ("-1", errno.EINVAL), ("x", errno.EINVAL)):
        with pytest.raises(OSError) as e:
            (lib.control / "hot_remove").write_text(value)
        assert e.value.errno == err, value
    m.write_attr("disksize", "4M", 3)
    loop = lib.block(3)
    with pytest.raises(OSError) as e:
        (lib.control / "hot_remove").write_text("3")
    assert e.value.errno == errno.EBUSY
    assert lib.dev_nodes()[-1] == "zram3"
    # a hot-added device is a full device: data through its loop device
    data = os.urandom(PAGE) * 4
    with open(loop, "r+b", buffering=0) as f:
        f.write(data)
        os.fsync(f.fileno())
    with open(m.image(3), "rb") as f:
        assert f.read(len(data)) == data
    # the other devices did not notice
    assert m.read_attr("initstate", 1) == "0\n"
    assert m.mm_stat(0)[0] == 0
    lib.cleanup()
    assert lib.dev_nodes() == ["zram0"]
    assert sorted(p.name for p in (m.path / "sys" / "block").iterdir()) == ["zram0"]
