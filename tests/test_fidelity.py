"""Fidelity against the kernel: the same data to /dev/zram0 and to a ZramDevice, both lz4.

The acceptance criteria of the issue, on 64 MiB written in 1 MiB requests:

* ``orig_data_size`` and ``same_pages`` equal;
* ``huge_pages`` apart by at most 0.5 % of the pages stored;
* ``compr_data_size`` within 2 %;
* ``mem_used_total`` within 3 %.

Two data sets: `benchmarks.data.realistic_data` (a tar of /usr: what a file
system on zram holds) and `benchmarks.data.swap_like_data` (zero, same-filled,
heap-like, text and random pages: what swap on zram holds).

With the C accelerator (``zramfs._zpages``) our lz4 blocks are the kernel's:
it implements the kernel's ``LZ4_compress_fast`` parse of a page (16-bit hash
table, 8192 entries), so every line of ``mm_stat`` must be *equal*, and every
page's stored size too (`test_zsmalloc_model_matches_kernel_exactly`,
`test_lz4_acceleration_matches_kernel`).  Without it (``ZRAMFS_NO_ACCEL=1``),
python-lz4 compresses through ``LZ4_compress_fast_continue`` on a fresh
stream (32-bit table, 4096 entries) and comes out ~0.5-0.7 % larger, with
some pages near the huge threshold (3625 bytes) on the other side of it; the
criteria above are what then holds.

Beyond the criteria, `test_zsmalloc_model_matches_kernel_exactly` takes the
codec out of the picture: it measures the kernel's compressed size of every
page (one O_DIRECT page write at a time, reading ``compr_data_size`` after each)
and feeds exactly those sizes, in the same order, to `ZsPool`: its
``mem_used_total`` must equal the kernel's to the byte.

Run with ``pytest -s tests/test_fidelity.py`` to see both mm_stat lines.
"""

from __future__ import annotations

import mmap
import os
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, fields
from pathlib import Path

import pytest

from benchmarks.data import realistic_data, swap_like_data
from zramfs import _zpages
from zramfs.backends import create_codec
from zramfs.backends import lz4 as lz4_backend
from zramfs.core.device import CHAIN_SIZE, ZramDevice
from zramfs.core.slots import SAME, SIZE_MASK
from zramfs.core.zsmalloc import ZsPool, huge_class_size_for

pytestmark = [pytest.mark.kernel_zram, pytest.mark.timeout(120)]

SIZE = 64 << 20
DISKSIZE = b"64M"
CHUNK = 1 << 20
PAGE = 4096
ALGORITHM = "lz4"

DATASETS: dict[str, Callable[[int], bytes]] = {
    "realistic": realistic_data,
    "swap_like": swap_like_data,
}

# The acceptance criteria.
HUGE_TOL_OF_PAGES = 0.005
COMPR_TOL = 0.02
MEM_TOL = 0.03


@dataclass(frozen=True)
class MmStat:
    orig_data_size: int
    compr_data_size: int
    mem_used_total: int
    mem_limit: int
    mem_used_max: int
    same_pages: int
    pages_compacted: int
    huge_pages: int
    huge_pages_since: int

    @classmethod
    def parse(cls, text: str | bytes) -> MmStat:
        if isinstance(text, bytes):
            text = text.decode()
        return cls(*(int(v) for v in text.split()[: len(fields(cls))]))

    @property
    def pages_stored(self) -> int:
        return self.orig_data_size // PAGE


@pytest.fixture(scope="module", params=sorted(DATASETS))
def dataset(request: pytest.FixtureRequest) -> tuple[str, bytes]:
    name: str = request.param
    return name, DATASETS[name](SIZE)


@pytest.fixture
def kzram(kernel_zram: Path) -> Iterator[Path]:
    """The kernel's zram0, skipped unless it offers lz4."""
    algs = (kernel_zram / "comp_algorithm").read_text().replace("[", " ").replace("]", " ")
    if ALGORITHM not in algs.split():
        pytest.skip(f"kernel zram has no {ALGORITHM}: {algs.strip()}")
    yield kernel_zram


# --------------------------------------------------------------------------- kernel side


def _kernel_setup(sysdir: Path) -> None:
    (sysdir / "comp_algorithm").write_text(ALGORITHM)
    (sysdir / "disksize").write_text(DISKSIZE.decode())


def _kernel_reset(sysdir: Path) -> None:
    (sysdir / "reset").write_text("1")


def kernel_store(sysdir: Path, data: bytes) -> MmStat:
    """Write ``data`` to /dev/zram0 with O_DIRECT in 1 MiB requests; its mm_stat."""
    _kernel_setup(sysdir)
    buf = mmap.mmap(-1, CHUNK)  # page-aligned, as O_DIRECT wants
    fd = os.open("/dev/zram0", os.O_WRONLY | os.O_DIRECT)
    try:
        for off in range(0, len(data), CHUNK):
            n = min(CHUNK, len(data) - off)
            buf[:n] = data[off : off + n]
            assert os.pwrite(fd, memoryview(buf)[:n], off) == n
        os.fsync(fd)
    finally:
        os.close(fd)
        buf.close()
    os.sync()
    return MmStat.parse((sysdir / "mm_stat").read_text())


def kernel_page_sizes(sysdir: Path, data: bytes, *, reset: bool = True) -> tuple[list[int], MmStat]:
    """The kernel's stored size of every page: -1 same-filled, 4096 huge.

    One O_DIRECT page write at a time, reading ``compr_data_size`` and
    ``same_pages`` after each.  The device is set up afresh (reset first
    unless ``reset`` is false: the caller reset it and set parameters).
    """
    if reset:
        _kernel_reset(sysdir)
    _kernel_setup(sysdir)
    buf = mmap.mmap(-1, PAGE)
    fd = os.open("/dev/zram0", os.O_WRONLY | os.O_DIRECT)
    mm_path = sysdir / "mm_stat"
    sizes: list[int] = []
    try:
        prev = MmStat.parse(mm_path.read_text())
        for off in range(0, len(data), PAGE):
            buf[:] = data[off : off + PAGE]
            os.pwrite(fd, buf, off)
            cur = MmStat.parse(mm_path.read_text())
            if cur.same_pages != prev.same_pages:
                sizes.append(-1)
            else:
                sizes.append(cur.compr_data_size - prev.compr_data_size)
            prev = cur
    finally:
        os.close(fd)
        buf.close()
    return sizes, prev


# --------------------------------------------------------------------------- core side


async def core_store(data: bytes) -> tuple[MmStat, ZramDevice]:
    """Write ``data`` to a fresh ZramDevice (lz4) in 1 MiB requests."""
    dev = ZramDevice(0)
    await dev.store_comp_algorithm(ALGORITHM.encode())
    await dev.store_disksize(DISKSIZE)
    for off in range(0, len(data), CHUNK):
        chunk = data[off : off + CHUNK]
        assert await dev.write(off, chunk) == len(chunk)
    return MmStat.parse(dev.show_mm_stat()), dev


def core_object_sizes(dev: ZramDevice) -> list[int]:
    """The core's stored size of every page: -1 same-filled, 4096 huge."""
    assert dev.table is not None
    attr = dev.table.attr
    return [-1 if attr[i] & SAME else attr[i] & SIZE_MASK for i in range(dev.npages)]


def model_mem_used(sizes: list[int]) -> int:
    """mem_used_total of a fresh `ZsPool` after malloc'ing ``sizes`` in order."""
    pool = ZsPool()
    try:
        for i, s in enumerate(sizes):
            if s > 0:
                pool.malloc(s, i)
        return pool.total_pages() * PAGE
    finally:
        pool.close()


# --------------------------------------------------------------------------- reporting


def _rel(a: int, b: int) -> float:
    return (a - b) / b if b else float(a != 0)


def compare(kernel: MmStat, core: MmStat) -> tuple[list[str], list[str]]:
    """(report lines, failed criteria): every field equal with the accelerator
    (the kernel's lz4 blocks), the issue's criteria without it."""
    if lz4_backend.ACCELERATED:
        rows = [
            (f.name, getattr(kernel, f.name), getattr(core, f.name), "equal",
             getattr(kernel, f.name) == getattr(core, f.name))
            for f in fields(MmStat)
        ]  # fmt: skip
        return _report(rows)
    pages = kernel.pages_stored
    huge_tol = HUGE_TOL_OF_PAGES * pages
    rows = [
        ("orig_data_size", kernel.orig_data_size, core.orig_data_size, "equal",
         core.orig_data_size == kernel.orig_data_size),
        ("same_pages", kernel.same_pages, core.same_pages, "equal",
         core.same_pages == kernel.same_pages),
        ("huge_pages", kernel.huge_pages, core.huge_pages,
         f"|d| <= {huge_tol:.1f} (0.5% of {pages} pages)",
         abs(core.huge_pages - kernel.huge_pages) <= huge_tol),
        ("compr_data_size", kernel.compr_data_size, core.compr_data_size, "within 2%",
         abs(_rel(core.compr_data_size, kernel.compr_data_size)) <= COMPR_TOL),
        ("mem_used_total", kernel.mem_used_total, core.mem_used_total, "within 3%",
         abs(_rel(core.mem_used_total, kernel.mem_used_total)) <= MEM_TOL),
    ]  # fmt: skip
    return _report(rows)


def _report(rows: list[tuple[str, int, int, str, bool]]) -> tuple[list[str], list[str]]:
    lines = []
    failed = []
    for name, k, c, crit, ok in rows:
        d = c - k
        lines.append(
            f"  {name:16s} kernel {k:>10d}  core {c:>10d}  delta {d:+9d} ({_rel(c, k):+.3%})"
            f"  [{crit}: {'ok' if ok else 'FAIL'}]"
        )
        if not ok:
            failed.append(name)
    return lines, failed


def codec_report(data: bytes, ksizes: list[int], core_sizes: list[int]) -> list[str]:
    """Per-page comparison of the core's stored sizes with the kernel's."""
    diff = Counter[int]()
    flips_up = flips_down = same_mismatch = 0
    for k, c in zip(ksizes, core_sizes, strict=True):
        if (k < 0) != (c < 0):
            same_mismatch += 1
        elif k >= 0:
            diff[c - k] += 1
            if (c == PAGE) != (k == PAGE):
                if c == PAGE:
                    flips_up += 1
                else:
                    flips_down += 1
    nonsame = sum(diff.values())
    changed = nonsame - diff[0]
    ksum = sum(k for k in ksizes if k > 0)
    csum = sum(c for c in core_sizes if c > 0)
    # What the core's codec call gives for the pages the kernel stored huge:
    # how close to the threshold the disagreements are.
    compress = create_codec(ALGORITHM).compress
    near = [
        len(compress(data[i * PAGE : (i + 1) * PAGE]))
        for i, (k, c) in enumerate(zip(ksizes, core_sizes, strict=True))
        if k >= 0 and (c == PAGE) != (k == PAGE)
    ][:8]
    return [
        f"  per page: {changed} of {nonsame} compressed pages differ in size; "
        f"core - kernel total {csum - ksum:+d} bytes ({_rel(csum, ksum):+.3%})",
        f"  huge flips: {flips_up} huge only in the core, {flips_down} only in the kernel "
        f"(our sizes of some: {near}); same-filled mismatches: {same_mismatch}",
        f"  most common size deltas (core - kernel: pages): {diff.most_common(6)}",
    ]


# --------------------------------------------------------------------------- tests


async def test_mm_stat_matches_kernel(kzram: Path, dataset: tuple[str, bytes]) -> None:
    name, data = dataset
    kernel = kernel_store(kzram, data)
    core, dev = await core_store(data)
    try:
        lines, failed = compare(kernel, core)
        print(f"\n[{name}, {len(data) >> 20} MiB, {ALGORITHM}]  mm_stat")
        print(f"  kernel: {' '.join(f'{v:8d}' for v in vars(kernel).values())}")
        print(f"  core:   {' '.join(f'{v:8d}' for v in vars(core).values())}")
        print("\n".join(lines))

        # The core's own accounting must be its zsmalloc model applied to its
        # own object sizes (fresh device, writes only: no frees, no compaction).
        core_sizes = core_object_sizes(dev)
        assert model_mem_used(core_sizes) == core.mem_used_total
        assert sum(s for s in core_sizes if s > 0) == core.compr_data_size
        assert sum(1 for s in core_sizes if s == PAGE) == core.huge_pages
        assert sum(1 for s in core_sizes if s < 0) == core.same_pages

        if failed:
            # Take the codec apart from the allocator before reporting.
            ksizes, _ = kernel_page_sizes(kzram, data)
            diag = codec_report(data, ksizes, core_sizes)
            diag.append(
                f"  zsmalloc model on the kernel's own sizes: {model_mem_used(ksizes)} "
                f"vs kernel mem_used_total {kernel.mem_used_total}"
            )
            pytest.fail(f"{name}: criteria failed: {failed}\n" + "\n".join(lines + diag))
    finally:
        await dev.reset()


async def test_zsmalloc_model_matches_kernel_exactly(
    kzram: Path, dataset: tuple[str, bytes]
) -> None:
    """The kernel's per-page sizes through `ZsPool`: the kernel's mem_used_total exactly."""
    name, data = dataset
    ksizes, kernel = kernel_page_sizes(kzram, data)
    assert sum(1 for s in ksizes if s < 0) == kernel.same_pages
    assert sum(1 for s in ksizes if s == PAGE) == kernel.huge_pages
    assert sum(s for s in ksizes if s > 0) == kernel.compr_data_size
    model = model_mem_used(ksizes)
    core, dev = await core_store(data)
    try:
        core_sizes = core_object_sizes(dev)
        print(f"\n[{name}] zsmalloc model on the kernel's sizes: {model} B, "
              f"kernel mem_used_total {kernel.mem_used_total} B")  # fmt: skip
        print("\n".join(codec_report(data, ksizes, core_sizes)))
    finally:
        await dev.reset()
    assert model == kernel.mem_used_total
    if lz4_backend.ACCELERATED:  # the kernel's blocks: every page the kernel's size
        assert core_sizes[: len(ksizes)] == ksizes


@pytest.mark.skipif(not lz4_backend.ACCELERATED, reason="python-lz4 is not the kernel's LZ4")
@pytest.mark.parametrize("level", [2, 8, 100, (1 << 26) + 1])
def test_lz4_acceleration_matches_kernel(kzram: Path, level: int) -> None:
    """``algorithm_params algo=lz4 level=N`` (LZ4's acceleration) in the kernel
    and ours give every page the same stored size.  2**26 + 1: the kernel's
    32-bit search counter wraps to acceleration 1's, and so does ours.  (Not
    2**26: there the kernel's counter wraps to 0 and it stores corrupt blocks;
    see tests/test_zpages.py for what we do instead.)"""
    params = kzram / "algorithm_params"
    if not params.exists():
        pytest.skip("kernel zram has no algorithm_params")
    data = realistic_data(8 << 20)
    _kernel_reset(kzram)
    (kzram / "comp_algorithm").write_text(ALGORITHM)  # algo= names a selected one
    params.write_text(f"algo={ALGORITHM} level={level}")
    ksizes, _ = kernel_page_sizes(kzram, data, reset=False)
    n = len(data) // PAGE
    _, sizes = _zpages.lz4_compress_pages(data, 0, n, level, 2)
    huge = huge_class_size_for(CHAIN_SIZE)
    ours = [-1 if s == 0 else PAGE if s >= huge else s for s in memoryview(sizes).cast("H")]
    assert ours == ksizes
