"""``zramfs analyze DEVICE``: what each compressor would make of a device's data.

Samples the pages of anything readable — a zramfs image (``MNT/dev/zram0``),
the kernel's ``/dev/zram0``, a loop device, a plain file — and, for every
algorithm of `zramfs.backends` at a few levels (and zstd with a dictionary
trained on half of the sample), reports what a zram device would hold:

* **ratio**: original bytes / ``compr_data_size`` bytes of the sampled pages
  that are not same-filled (huge pages count as PAGE_SIZE, as in zram);
* **memory**: ``mem_used_total`` the device would reach for all of its
  non-same-filled pages, from the zsmalloc size classes of
  `zramfs.core.zsmalloc` (objects of a class packed into its zspages, huge
  pages — compressed length >= ``huge_class_size`` — one page each);
  the sample's figures scaled to the device's estimated page count;
* **compress / decompress MB/s** of zramfs's own codec objects on this
  machine: 10**6 bytes of original data per second of one thread's CPU time
  (so a busy machine slows them little), the best of repeated passes; a huge
  page's "decompression" is the copy zram does;
* **huge**: the share of pages stored uncompressed.

Same-filled pages (all 8-byte words equal, zero pages included, and so every
never-written page of a zram device) are not compressed data of zram: they
cost no memory whatever the algorithm, and are counted separately.

Slow candidates (brotli-11, zstd-19) get a time budget: they compress a
prefix of the (randomly ordered) sample, and their figures are then adjusted
by the ratio estimator against the fully measured candidate whose per-page
sizes correlate best with theirs on that prefix.  The dictionary candidates
are measured on the half of the sample the dictionary was not trained on and
compared with plain zstd on exactly those pages.
"""

from __future__ import annotations

import argparse
import errno
import json
import math
import mmap
import os
import random
import re
import stat
import statistics
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tqdm import tqdm

from zramfs.backends import BACKEND_NAMES, AlgoParams, Codec, create_codec
from zramfs.core.zsmalloc import (
    ZS_HANDLE_SIZE,
    SizeClass,
    build_size_classes,
    get_size_class_index,
)
from zramfs.errors import ZramError

PROG = "zramfs analyze"
PAGE_SIZE = 4096
PAGE_WORDS = PAGE_SIZE // 8
MiB = 1 << 20

DEFAULT_SAMPLE = 4096
DEFAULT_SEED = 0
#: CPU seconds of compression per candidate before it stops at a prefix of the sample.
DEFAULT_BUDGET = 2.0
DEFAULT_MIN_SPEED = 50.0  # MB/s, for the "most memory saved at >= N MB/s" rule
DEFAULT_DICT_SIZE = 64 << 10
#: zstd levels above this are not tried with a dictionary (slow, and budgeted anyway).
DICT_MAX_LEVEL = 9
#: Fewer training pages than this: no dictionary (zstd's trainer needs material).
DICT_MIN_TRAIN_PAGES = 64

#: Levels tried per algorithm by default; lz4's "level" is its acceleration.
DEFAULT_LEVELS: dict[str, tuple[int, ...]] = {
    "lz4": (1,),
    "lz4hc": (4, 9, 12),
    "zstd": (1, 3, 9, 19),
    "deflate": (1, 6, 9),
    "brotli": (1, 5, 11),
}

#: Pages compressed between budget checks and progress updates.
CHUNK = 64
#: Timing: repeat a pass while the passes so far took less than this (s) ...
TIMING_TARGET = 0.2
#: ... but at most this many passes; the fastest pass counts.
MAX_PASSES = 5
#: A saving below this share is "not worth it" in the recommendations.
WORTH = 0.02

Page = bytes

#: What timings measure: this thread's CPU time, so that other processes
#: competing for the CPUs (a shared machine, a busy host) do not count.
_clock = time.thread_time_ns


class AnalyzeError(Exception):
    """A failure reported as one line on stderr; ``code`` is the exit status."""

    def __init__(self, message: str, code: int = 1) -> None:
        super().__init__(message)
        self.code = code


# --------------------------------------------------------------------------- memory model


class ZsModel:
    """``mem_used_total`` of a zsmalloc pool holding objects of given sizes.

    Uses the pool's own class table (`build_size_classes`, class merging and
    all) and the lookup ``zs_malloc`` does (size + ``ZS_HANDLE_SIZE``).  A pool
    filled without frees — a device written once — has every zspage full but
    the last of each class, which is what `pages` computes.
    """

    def __init__(self, chain_size: int | None = None) -> None:
        if chain_size is None:
            # What zramfs devices use (imported here: device.py pulls in trio).
            from zramfs.core.device import CHAIN_SIZE

            chain_size = CHAIN_SIZE
        specs, class_of_index, huge = build_size_classes(chain_size)
        by_index = {s.index: s for s in specs}
        self.chain_size = chain_size
        #: zs_huge_class_size(): zram stores pages compressing to this or more raw.
        self.huge_class_size: int = huge
        self.class_of_size: list[SizeClass] = [
            by_index[class_of_index[get_size_class_index(max(n, 1) + ZS_HANDLE_SIZE)]]
            for n in range(PAGE_SIZE + 1)
        ]

    def stored_size(self, compressed_len: int) -> int:
        """What zram allocates for a page compressing to ``compressed_len`` bytes."""
        return compressed_len if compressed_len < self.huge_class_size else PAGE_SIZE

    def pages(self, stored_sizes: Iterable[int], scale: float = 1.0) -> int:
        """Pool pages for these objects, each standing for ``scale`` objects."""
        counts: Counter[SizeClass] = Counter(self.class_of_size[n] for n in stored_sizes)
        total = 0
        for spec, n in counts.items():
            objs = n * scale
            total += math.ceil(objs / spec.objs_per_zspage - 1e-9) * spec.pages_per_zspage
        return total


# --------------------------------------------------------------------------- sampling


@dataclass
class Sample:
    """The pages read from the device."""

    path: str
    size: int  # bytes
    pages: int  # device pages (a partial last page counts, zero-padded)
    sampled: int
    same_filled: int  # among the sampled pages
    data: list[Page]  # the non-same-filled sampled pages, in random (seeded) order
    direct: bool  # read with O_DIRECT


def _same_filled(page: Page) -> bool:
    """``page_same_filled()``: every 8-byte word equal to the first."""
    w = page[:8]
    return w == page[-8:] and w * PAGE_WORDS == page


def open_device(path: str) -> tuple[int, int, bool]:
    """Open ``path`` for reading: ``(fd, size in bytes, O_DIRECT?)``; AnalyzeError if unusable."""
    try:
        st = os.stat(path)
    except OSError as e:
        raise AnalyzeError(f"{path}: {e.strerror}") from None
    if stat.S_ISDIR(st.st_mode):
        raise AnalyzeError(f"{path}: Is a directory (give a device or image file)")
    if not (stat.S_ISREG(st.st_mode) or stat.S_ISBLK(st.st_mode)):
        raise AnalyzeError(f"{path}: not a regular file or block device")
    fd = -1
    direct = False
    for flags in (os.O_RDONLY | os.O_DIRECT, os.O_RDONLY):
        try:
            fd = os.open(path, flags | os.O_CLOEXEC)
            direct = bool(flags & os.O_DIRECT)
            break
        except OSError as e:
            if flags & os.O_DIRECT and e.errno == errno.EINVAL:
                continue  # no O_DIRECT here (tmpfs, ...): buffered
            raise AnalyzeError(f"{path}: {e.strerror}") from None
    try:
        size = os.lseek(fd, 0, os.SEEK_END)
    except OSError as e:
        os.close(fd)
        raise AnalyzeError(f"{path}: {e.strerror}") from None
    if size <= 0:
        os.close(fd)
        if zram_sysdir(path) is not None:
            what = "the zram device is not initialized (disksize 0)"
        else:
            what = "size 0" if stat.S_ISBLK(st.st_mode) else "the file is empty"
        raise AnalyzeError(f"{path}: nothing to analyze: {what}")
    return fd, size, direct


def _runs(indexes: Sequence[int], max_len: int) -> list[tuple[int, int]]:
    """Sorted page indexes as ``(first, count)`` runs of consecutive pages."""
    runs: list[tuple[int, int]] = []
    for i in indexes:
        if runs and runs[-1][0] + runs[-1][1] == i and runs[-1][1] < max_len:
            runs[-1] = (runs[-1][0], runs[-1][1] + 1)
        else:
            runs.append((i, 1))
    return runs


def read_sample(path: str, sample: int | None, seed: int, quiet: bool) -> Sample:
    """Read ``sample`` pages spread uniformly over the device (None: all of them)."""
    fd, size, direct = open_device(path)
    try:
        npages = -(-size // PAGE_SIZE)
        rng = random.Random(seed)
        if sample is None or sample >= npages:
            indexes: Sequence[int] = range(npages)
        else:
            indexes = sorted(rng.sample(range(npages), sample))
        max_run = 256  # 1 MiB reads
        buf = mmap.mmap(-1, max_run * PAGE_SIZE)  # page-aligned, as O_DIRECT needs
        same = 0
        data: list[Page] = []
        with buf, _bar(len(indexes), "reading", quiet) as bar:
            for first, count in _runs(indexes, max_run):
                want = count * PAGE_SIZE
                off = first * PAGE_SIZE
                got = _pread(fd, buf, want, off, path)
                chunk = buf[:got] + bytes(want - got) if got < want else buf[:want]
                for k in range(count):
                    page = chunk[k * PAGE_SIZE : (k + 1) * PAGE_SIZE]
                    if _same_filled(page):
                        same += 1
                    else:
                        data.append(page)
                bar.update(count)
    finally:
        os.close(fd)
    rng.shuffle(data)
    return Sample(path, size, npages, len(indexes), same, data, direct)


def _pread(fd: int, buf: mmap.mmap, want: int, off: int, path: str) -> int:
    """Fill ``buf[:want]`` from ``off``; returns the bytes read (short only at the end)."""
    view = memoryview(buf)
    got = 0
    try:
        while got < want:
            # Whole pages into a page-aligned buffer, as O_DIRECT needs; the tail
            # of a file that is not a multiple of PAGE_SIZE reads short.
            n = os.preadv(fd, [view[got:want]], off + got)
            if n == 0:
                break
            got += n
    except OSError as e:
        raise AnalyzeError(f"{path}: read at offset {off + got}: {e.strerror}") from None
    finally:
        view.release()
    return got


# --------------------------------------------------------------------------- measuring


@dataclass(frozen=True)
class Candidate:
    """One algorithm at one level, with or without the trained dictionary."""

    algorithm: str
    level: int
    dictionary: bool = False

    @property
    def label(self) -> str:
        base = "lz4" if (self.algorithm, self.level) == ("lz4", 1) else (
            f"{self.algorithm}-{self.level}")  # fmt: skip
        return base + "+dict" if self.dictionary else base


@dataclass
class Result:
    """One candidate's figures (see the module docstring for what they mean)."""

    candidate: Candidate
    positions: list[int]  # which sample pages (indexes into Sample.data) it compressed
    sizes: list[int]  # stored size per page (compressed length, or PAGE_SIZE if huge)
    huge: int
    compress_ns: int  # best pass over `positions`
    decompress_ns: int
    passes: int
    truncated: bool  # stopped by the time budget
    ratio: float = 0.0
    compr_data_size: int = 0  # estimated for the device's non-same-filled pages
    mem_used_total: int = 0
    adjusted_by: str | None = None  # reference candidate of the ratio estimator
    adjust_factor: float = 1.0

    @property
    def pages(self) -> int:
        return len(self.positions)

    @property
    def huge_share(self) -> float:
        return self.huge / len(self.positions) if self.positions else 0.0

    @property
    def compress_mb_s(self) -> float:
        return len(self.positions) * PAGE_SIZE * 1e3 / max(self.compress_ns, 1)

    @property
    def decompress_mb_s(self) -> float:
        return len(self.positions) * PAGE_SIZE * 1e3 / max(self.decompress_ns, 1)


def _best_of(run: Callable[[], object], first_ns: int) -> tuple[int, int]:
    """Repeat ``run`` while cheap; ``(fastest pass ns, passes)`` including the first."""
    best = first_ns
    spent = first_ns
    passes = 1
    while spent < TIMING_TARGET * 1e9 and passes < MAX_PASSES:
        t0 = _clock()
        run()
        dt = _clock() - t0
        best = min(best, dt)
        spent += dt
        passes += 1
    return best, passes


def measure(
    cand: Candidate,
    codec: Codec,
    pages: list[Page],
    positions: list[int],
    model: ZsModel,
    budget: float,
    bar: tqdm[Any],
) -> Result:
    """Compress the pages at ``positions`` (in order) until done or out of budget, then time."""
    compress = codec.compress
    blobs: list[bytes] = []
    spent = 0
    done = 0
    budget_ns = budget * 1e9
    n = len(positions)
    while done < n:
        chunk = [pages[p] for p in positions[done : done + CHUNK]]
        t0 = _clock()
        blobs += map(compress, chunk)
        spent += _clock() - t0
        done += len(chunk)
        bar.update(len(chunk))
        if budget_ns and spent >= budget_ns and done < n:
            bar.update(n - done)
            break
    used = positions[:done]
    src = [pages[p] for p in used]
    comp_ns, cpasses = _best_of(lambda: list(map(compress, src)), spent)

    huge_size = model.huge_class_size
    small = [b for b in blobs if len(b) < huge_size]
    raw = [p for p, b in zip(src, blobs, strict=True) if len(b) >= huge_size]
    decompress = codec.decompress

    def dpass() -> list[bytes]:
        out = list(map(decompress, small))
        for p in raw:
            bytearray(p)  # zram copies a huge page out as it is
        return out

    t0 = _clock()
    back = dpass()
    first = _clock() - t0
    expect = [p for p, b in zip(src, blobs, strict=True) if len(b) < huge_size]
    if back != expect:
        raise AnalyzeError(f"{cand.label}: a page did not decompress to what was compressed")
    del back
    dec_ns, dpasses = _best_of(dpass, first)
    sizes = [model.stored_size(len(b)) for b in blobs]
    return Result(
        candidate=cand,
        positions=used,
        sizes=sizes,
        huge=len(raw),
        compress_ns=comp_ns,
        decompress_ns=dec_ns,
        passes=min(cpasses, dpasses),
        truncated=done < n,
    )


def train_dictionary(pages: list[Page], size: int) -> bytes:
    """A zstd dictionary of at most ``size`` bytes trained on ``pages`` (fastCOVER)."""
    import zstandard

    samples: list[bytes | bytearray | memoryview] = list(pages)
    zd = zstandard.train_dictionary(size, samples)
    blob: bytes = zd.as_bytes()
    return blob


# --------------------------------------------------------------------------- the report


@dataclass
class DictInfo:
    size: int = 0
    train_pages: int = 0
    eval_pages: int = 0
    train_seconds: float = 0.0
    saved_to: str | None = None
    note: str | None = None  # why there is none


@dataclass
class Report:
    sample: Sample
    model: ZsModel
    seed: int
    budget: float
    min_speed: float
    results: list[Result] = field(default_factory=list)
    dictionary: DictInfo | None = None
    current: dict[str, Any] | None = None
    recommendations: list[dict[str, str]] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def same_estimated(self) -> int:
        s = self.sample
        return round(s.pages * s.same_filled / s.sampled) if s.sampled else 0

    @property
    def stored_estimated(self) -> int:
        return self.sample.pages - self.same_estimated

    def by_label(self, label: str) -> Result:
        return next(r for r in self.results if r.candidate.label == label)


def _estimate(report: Report) -> None:
    """Fill each result's device-wide figures (scaled, ratio-adjusted when partial)."""
    stored = report.stored_estimated
    nall = len(report.sample.data)
    full = [r for r in report.results if r.pages == nall and not r.candidate.dictionary]
    for r in report.results:
        if not r.positions:
            continue
        scale = stored / r.pages
        raw_compr = sum(r.sizes)
        r.ratio = r.pages * PAGE_SIZE / raw_compr
        factor = 1.0
        if r.pages < nall and full:
            ref, factor = _adjustment(r, full)
            r.adjusted_by = ref.candidate.label
            r.adjust_factor = factor
            r.ratio /= factor
        r.compr_data_size = round(raw_compr * scale * factor)
        r.mem_used_total = round(report.model.pages(r.sizes, scale) * factor) * PAGE_SIZE


def _adjustment(r: Result, full: list[Result]) -> tuple[Result, float]:
    """The ratio estimator: the best-correlated full result, and mean(all) / mean(these pages)."""
    best: tuple[float, Result] | None = None
    for f in full:
        ys = [f.sizes[p] for p in r.positions]
        try:
            c = statistics.correlation(r.sizes, ys) if len(ys) > 2 else 0.0
        except statistics.StatisticsError:  # constant sizes
            c = 0.0
        if best is None or c > best[0]:
            best = (c, f)
    assert best is not None
    ref = best[1]
    part = sum(ref.sizes[p] for p in r.positions) / len(r.positions)
    whole = sum(ref.sizes) / len(ref.sizes)
    return ref, (whole / part if part else 1.0)


def _mib(n: float) -> str:
    return f"{n / MiB:.1f} MiB"


def recommend(report: Report) -> list[dict[str, str]]:
    """Rule-based advice from the results (see docs/usage.md, zramfs analyze)."""
    plain = [r for r in report.results if not r.candidate.dictionary and r.positions]
    if not plain:
        return []
    recs: list[dict[str, str]] = []

    def rt(r: Result) -> float:  # seconds per MB, compress + decompress
        return 1 / r.compress_mb_s + 1 / r.decompress_mb_s

    swap = min(plain, key=rt)
    recs.append({
        "kind": "swap", "candidate": swap.candidate.label,
        "text": f"swap (latency first): {swap.candidate.label} — fastest round trip "
                f"({swap.compress_mb_s:.0f} MB/s compress, {swap.decompress_mb_s:.0f} MB/s "
                f"decompress), ratio {swap.ratio:.2f}, ~{_mib(swap.mem_used_total)}",
    })  # fmt: skip

    fast = [r for r in plain if r.compress_mb_s >= report.min_speed]
    balanced = min(fast, key=lambda r: r.mem_used_total) if fast else None
    if balanced is None:
        recs.append(
            {
                "kind": "balanced",
                "candidate": "",
                "text": f"nothing compresses at >= {report.min_speed:.0f} MB/s here",
            }
        )
    else:
        saved = swap.mem_used_total - balanced.mem_used_total
        tail = (" (also the fastest)" if balanced is swap
                else f", {_mib(saved)} less than {swap.candidate.label}")  # fmt: skip
        recs.append({
            "kind": "balanced", "candidate": balanced.candidate.label,
            "text": f"most memory saved at >= {report.min_speed:.0f} MB/s compress: "
                    f"{balanced.candidate.label} — ratio {balanced.ratio:.2f}, "
                    f"~{_mib(balanced.mem_used_total)}{tail}",
        })  # fmt: skip

    base = balanced or swap
    dense = min(plain, key=lambda r: r.mem_used_total)
    gain = base.mem_used_total - dense.mem_used_total
    if dense is not base and gain >= WORTH * base.mem_used_total:
        recs.append({
            "kind": "recompress", "candidate": dense.candidate.label,
            "text": f"recompress (cold pages): {dense.candidate.label} saves {_mib(gain)} more "
                    f"than {base.candidate.label} ({100 * gain / base.mem_used_total:.0f} %), at "
                    f"{dense.compress_mb_s:.1f} MB/s: recomp_algorithm 'algo="
                    f"{dense.candidate.algorithm} priority=1', algorithm_params 'priority=1 "
                    f"level={dense.candidate.level}', then 'type=idle' > recompress",
        })  # fmt: skip
    else:
        recs.append({
            "kind": "recompress", "candidate": "",
            "text": f"recompress: not worth it — the densest, {dense.candidate.label}, saves "
                    f"{100 * gain / max(base.mem_used_total, 1):.1f} % over "
                    f"{base.candidate.label}",
        })  # fmt: skip

    d = _dictionary_verdict(report)
    if d is not None:
        recs.append(d)
    if all(r.huge_share > 0.5 for r in plain):
        recs.append({"kind": "incompressible", "candidate": "",
                     "text": "most pages do not compress below huge_class_size with any "
                             "algorithm: zram saves little memory on this data"})  # fmt: skip
    return recs


def dictionary_gains(report: Report) -> list[tuple[Result, Result, float, float, int]]:
    """Per dictionary result: (it, plain zstd same level, compr gain, mem gain, common pages).

    Gains are shares saved on the pages both compressed (the held-out half).
    """
    out = []
    for r in report.results:
        if not r.candidate.dictionary:
            continue
        plain_label = Candidate("zstd", r.candidate.level).label
        try:
            p = report.by_label(plain_label)
        except StopIteration:
            continue
        done = set(p.positions)
        where = {pos: i for i, pos in enumerate(p.positions)}
        common = [(i, where[pos]) for i, pos in enumerate(r.positions) if pos in done]
        if not common:
            continue
        with_d = [r.sizes[i] for i, _ in common]
        without = [p.sizes[j] for _, j in common]
        cg = 1 - sum(with_d) / sum(without)
        # Memory at the device's scale: on a few hundred pages the last,
        # partly filled zspage of each class would dominate the difference.
        m = report.model
        scale = report.stored_estimated / len(common)
        mg = 1 - m.pages(with_d, scale) / max(m.pages(without, scale), 1)
        out.append((r, p, cg, mg, len(common)))
    return out


def _dictionary_verdict(report: Report) -> dict[str, str] | None:
    info = report.dictionary
    if info is None:
        return None
    if info.note is not None:
        return {"kind": "dictionary", "candidate": "", "text": f"dictionary: {info.note}"}
    gains = dictionary_gains(report)
    if not gains:
        return None
    r, p, cg, mg, n = max(gains, key=lambda g: g[2])
    saved = p.mem_used_total * mg
    what = (f"zstd-{r.candidate.level} with a {info.size >> 10} KiB dictionary trained on "
            f"{info.train_pages} sample pages: {100 * cg:.1f} % smaller on the other {n} "
            f"pages than without")  # fmt: skip
    if cg >= WORTH:
        how = ("keep it with --save-dict FILE" if info.saved_to is None
               else f"saved to {info.saved_to}")  # fmt: skip
        text = (f"dictionary pays: {what} (~{_mib(saved)} of memory); {how}, then "
                f"algorithm_params 'algo=zstd level={r.candidate.level} dict=FILE'")  # fmt: skip
        return {"kind": "dictionary", "candidate": r.candidate.label, "text": text}
    return {"kind": "dictionary", "candidate": "",
            "text": f"dictionary does not pay: {what}"}  # fmt: skip


# --------------------------------------------------------------------------- the device's own stats


MM_FIELDS = ("orig_data_size", "compr_data_size", "mem_used_total", "mem_limit", "mem_used_max",
             "same_pages", "pages_compacted", "huge_pages", "huge_pages_since")  # fmt: skip


def zram_sysdir(path: str) -> Path | None:
    """The zram attribute directory behind ``path``, if it is a zram device.

    The kernel's ``/dev/zramN`` (through ``/sys/dev/block/MAJ:MIN``), a zramfs
    image ``MNT/dev/zramN`` (``MNT/sys/block/zramN``), or a loop device backed
    by such an image.
    """
    real = os.path.realpath(path)
    try:
        st = os.stat(real)
    except OSError:
        return None
    if stat.S_ISBLK(st.st_mode):
        sysdev = Path(f"/sys/dev/block/{os.major(st.st_rdev)}:{os.minor(st.st_rdev)}")
        if (sysdev / "mm_stat").exists():
            return sysdev
        try:
            real = (sysdev / "loop" / "backing_file").read_text().strip()
        except OSError:
            return None
    p = Path(real)
    if re.fullmatch(r"zram\d+", p.name) and p.parent.name == "dev":
        sysdir = p.parent.parent / "sys" / "block" / p.name
        if (sysdir / "mm_stat").exists():
            return sysdir
    return None


def current_stats(path: str) -> dict[str, Any] | None:
    """``mm_stat`` and the algorithm of the zram device behind ``path``, or None."""
    sysdir = zram_sysdir(path)
    if sysdir is None:
        return None
    try:
        mm = [int(x) for x in (sysdir / "mm_stat").read_text().split()]
        algs = (sysdir / "comp_algorithm").read_text()
    except (OSError, ValueError):
        return None
    m = re.search(r"\[([^\]]+)\]", algs)
    out: dict[str, Any] = {"sysfs": str(sysdir), "algorithm": m.group(1) if m else None}
    out.update(zip(MM_FIELDS, mm, strict=False))
    return out


# --------------------------------------------------------------------------- running it


def _bar(total: int, desc: str, quiet: bool) -> tqdm[Any]:
    """A progress bar on stderr; off with --quiet and whenever stderr is not a terminal."""
    return tqdm(total=total, desc=desc, unit="page", file=sys.stderr, leave=False,
                disable=True if quiet else None, dynamic_ncols=True)  # fmt: skip


def plan(algorithms: Sequence[str], levels: Mapping[str, Sequence[int]]) -> list[Candidate]:
    """The candidates, validated: AnalyzeError(code 2) for a level a backend refuses."""
    out = []
    for alg in algorithms:
        for lv in levels.get(alg, DEFAULT_LEVELS.get(alg, ())):
            try:
                create_codec(alg, AlgoParams(level=lv))
            except ZramError as e:
                raise AnalyzeError(str(e), 2) from None
            out.append(Candidate(alg, lv))
    return out


def analyze(
    path: str,
    candidates: Sequence[Candidate],
    *,
    sample: int | None = DEFAULT_SAMPLE,
    seed: int = DEFAULT_SEED,
    budget: float = DEFAULT_BUDGET,
    min_speed: float = DEFAULT_MIN_SPEED,
    dictionary: bool = True,
    dict_size: int = DEFAULT_DICT_SIZE,
    save_dict: str | None = None,
    quiet: bool = False,
) -> Report:
    t_start = time.monotonic()
    current = current_stats(path)  # before reading: reads touch nothing in mm_stat anyway
    smp = read_sample(path, sample, seed, quiet)
    report = Report(smp, ZsModel(), seed, budget, min_speed, current=current)
    pages = smp.data
    if not pages:  # every sampled page is same-filled: nothing to compress
        report.seconds = time.monotonic() - t_start
        return report
    everything = list(range(len(pages)))
    zstd_levels = [c.level for c in candidates if c.algorithm == "zstd"]
    dict_levels = [lv for lv in zstd_levels if lv <= DICT_MAX_LEVEL] if dictionary else []
    train_pos, eval_pos = everything[0::2], everything[1::2]
    if dictionary and zstd_levels and not dict_levels:
        report.dictionary = DictInfo(note=f"not tried: no zstd level <= {DICT_MAX_LEVEL} chosen")
    total = len(candidates) * len(pages) + len(dict_levels) * len(eval_pos)
    with _bar(total, "compressing", quiet) as bar:
        for cand in candidates:
            bar.set_description(cand.label)
            codec = create_codec(cand.algorithm, AlgoParams(level=cand.level))
            report.results.append(measure(cand, codec, pages, everything, report.model,
                                          budget, bar))  # fmt: skip
        if dict_levels:
            info = DictInfo(train_pages=len(train_pos), eval_pages=len(eval_pos))
            report.dictionary = info
            blob = b""
            if len(train_pos) < DICT_MIN_TRAIN_PAGES:
                info.note = (f"not tried: {len(train_pos)} training pages, at least "
                             f"{DICT_MIN_TRAIN_PAGES} needed (--sample more)")  # fmt: skip
            else:
                bar.set_description("training zstd dictionary")
                bar.refresh()
                t0 = time.monotonic()
                size = min(dict_size, len(train_pos) * PAGE_SIZE // 16)
                try:
                    blob = train_dictionary([pages[p] for p in train_pos], size)
                except Exception as e:  # zstandard.ZstdError: training can fail on odd data
                    info.note = f"training failed: {e}"
                info.train_seconds = time.monotonic() - t0
                info.size = len(blob)
            if blob and save_dict is not None:
                try:
                    Path(save_dict).write_bytes(blob)
                except OSError as e:
                    raise AnalyzeError(f"--save-dict {save_dict}: {e.strerror}") from None
                info.saved_to = save_dict
            for lv in dict_levels:
                if not blob:
                    bar.update(len(eval_pos))
                    continue
                cand = Candidate("zstd", lv, dictionary=True)
                bar.set_description(cand.label)
                codec = create_codec("zstd", AlgoParams(level=lv, dictionary=blob))
                report.results.append(measure(cand, codec, pages, eval_pos, report.model,
                                              budget, bar))  # fmt: skip
    _estimate(report)
    report.recommendations = recommend(report)
    report.seconds = time.monotonic() - t_start
    return report


# --------------------------------------------------------------------------- output


def to_json(report: Report) -> dict[str, Any]:
    s = report.sample
    d = report.dictionary
    return {
        "device": s.path,
        "size_bytes": s.size,
        "pages": s.pages,
        "sampled_pages": s.sampled,
        "seed": report.seed,
        "direct_io": s.direct,
        "same_filled_pages": {"sampled": s.same_filled, "estimated": report.same_estimated},
        "stored_pages_estimated": report.stored_estimated,
        "huge_class_size": report.model.huge_class_size,
        "chain_size": report.model.chain_size,
        "budget_seconds": report.budget,
        "current": report.current,
        "dictionary": None if d is None else {
            "size_bytes": d.size, "train_pages": d.train_pages, "eval_pages": d.eval_pages,
            "train_seconds": round(d.train_seconds, 2), "saved_to": d.saved_to, "note": d.note,
        },
        "candidates": [
            {
                "name": r.candidate.label,
                "algorithm": r.candidate.algorithm,
                "level": r.candidate.level,
                "dictionary": r.candidate.dictionary,
                "pages": r.pages,
                "truncated": r.truncated,
                "adjusted_by": r.adjusted_by,
                "ratio": round(r.ratio, 4),
                "compr_data_size": r.compr_data_size,
                "mem_used_total": r.mem_used_total,
                "huge_share": round(r.huge_share, 4),
                "compress_MB_s": round(r.compress_mb_s, 1),
                "decompress_MB_s": round(r.decompress_mb_s, 1),
            }
            for r in report.results
        ],
        "recommendations": report.recommendations,
        "seconds": round(report.seconds, 2),
    }  # fmt: skip


def format_text(report: Report) -> str:
    s = report.sample
    lines = [f"{PROG}: {s.path}"]
    how = "O_DIRECT" if s.direct else "buffered"
    lines.append(f"device       {_mib(s.size)} ({s.pages} pages); sampled {s.sampled} pages "
                 f"(seed {report.seed}, {how})")  # fmt: skip
    pct = 100 * s.same_filled / s.sampled if s.sampled else 0.0
    lines.append(f"same-filled  {s.same_filled} sampled pages ({pct:.1f} %, zero and "
                 f"never-written pages included): ~{report.same_estimated} on the device, "
                 "no memory with any algorithm")  # fmt: skip
    lines.append(f"stored       ~{report.stored_estimated} pages "
                 f"({_mib(report.stored_estimated * PAGE_SIZE)}) to compress")  # fmt: skip
    cur = report.current
    if cur is not None and cur.get("mem_used_total") is not None:
        lines.append(f"current      {cur['algorithm']}: compr_data_size "
                     f"{_mib(cur['compr_data_size'])}, mem_used_total "
                     f"{_mib(cur['mem_used_total'])}, same_pages {cur['same_pages']} "
                     f"({cur['sysfs']}/mm_stat)")  # fmt: skip
    if not s.data:
        lines.append("")
        lines.append("nothing to compare: every sampled page is same-filled")
        return "\n".join(lines) + "\n"
    lines.append("")
    hdr = (f"{'candidate':<14} {'pages':>6} {'ratio':>6} {'memory':>11} {'huge':>6} "
           f"{'compress':>10} {'decompress':>11}")  # fmt: skip
    lines.append(hdr)
    lines.append(f"{'':<14} {'':>6} {'':>6} {'(device)':>11} {'':>6} {'MB/s':>10} {'MB/s':>11}")
    for r in report.results:
        mark = "*" if r.adjusted_by and not r.candidate.dictionary else " "
        if r.candidate.dictionary:
            mark = "†"
        lines.append(
            f"{r.candidate.label:<14} {r.pages:>6}{mark}{r.ratio:>6.2f} "
            f"{r.mem_used_total / MiB:>7.1f} MiB {100 * r.huge_share:>5.1f}% "
            f"{r.compress_mb_s:>10.1f} {r.decompress_mb_s:>11.1f}"
        )
    lines.append("")
    lines.append("ratio: original / compressed bytes of the non-same-filled pages (huge pages "
                 "as 4096); memory: mem_used_total")  # fmt: skip
    lines.append(f"for all ~{report.stored_estimated} such pages (zsmalloc classes, chain "
                 f"{report.model.chain_size}, huge_class_size {report.model.huge_class_size}); "
                 "speed: one thread's CPU time, best of repeated passes")  # fmt: skip
    partial = [r for r in report.results if r.adjusted_by and not r.candidate.dictionary]
    if partial:
        lines.append(f"* time budget ({report.budget:g} s) reached: measured on that many "
                     "pages, scaled by the ratio estimator against "
                     + ", ".join(sorted({r.adjusted_by or "" for r in partial})))  # fmt: skip
    d = report.dictionary
    if d is not None and d.note is None:
        lines.append(f"† zstd with a {d.size >> 10} KiB dictionary trained on {d.train_pages} "
                     f"sample pages ({d.train_seconds:.1f} s), measured on the other "
                     f"{d.eval_pages}")  # fmt: skip
        for r, p, cg, mg, n in dictionary_gains(report):
            lines.append(f"  {r.candidate.label}: {-100 * cg:+.1f} % compressed size, "
                         f"{-100 * mg:+.1f} % memory vs {p.candidate.label} on the same {n} "
                         "pages")  # fmt: skip
    lines.append("")
    lines.append("recommendation:")
    for rec in report.recommendations:
        lines.append(f"  {rec['text']}")
    return "\n".join(lines) + "\n"


def plot(report: Report, out: str) -> None:
    """A PNG: memory against compress and decompress speed, one point per candidate."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise AnalyzeError("--plot needs matplotlib (pip install 'zramfs[plot]')") from None
    results = [r for r in report.results if r.positions]
    fig, axes = plt.subplots(1, 2, figsize=(12, 5), sharey=True)
    colors = {name: f"C{i}" for i, name in enumerate(BACKEND_NAMES)}
    for ax, what in zip(axes, ("compress", "decompress"), strict=True):
        for r in results:
            x = r.compress_mb_s if what == "compress" else r.decompress_mb_s
            y = r.mem_used_total / MiB
            ax.scatter([x], [y], color=colors.get(r.candidate.algorithm, "k"),
                       marker="s" if r.candidate.dictionary else "o")  # fmt: skip
            ax.annotate(r.candidate.label, (x, y), textcoords="offset points", xytext=(4, 4),
                        fontsize=8)  # fmt: skip
        ax.set_xscale("log")
        ax.set_xlabel(f"{what} MB/s (one thread, log scale)")
        ax.grid(True, which="both", alpha=0.3)
    axes[0].set_ylabel("memory for the device (mem_used_total, MiB)")
    s = report.sample
    fig.suptitle(f"zramfs analyze {s.path}: {s.sampled} of {s.pages} pages sampled, "
                 f"~{report.stored_estimated} to compress")  # fmt: skip
    fig.tight_layout()
    try:
        fig.savefig(out, format="png", dpi=100)
    except OSError as e:
        raise AnalyzeError(f"--plot {out}: {e.strerror}") from None
    finally:
        plt.close(fig)


# --------------------------------------------------------------------------- command line


def _sample_arg(text: str) -> int | None:
    if text == "all":
        return None
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a page count or 'all': {text!r}") from None
    if n < 0:
        raise argparse.ArgumentTypeError("must be >= 0")
    return None if n == 0 else n


def _algorithms_arg(text: str) -> list[str]:
    names = [a.strip() for a in text.split(",") if a.strip()]
    bad = [a for a in names if a not in BACKEND_NAMES]
    if bad or not names:
        raise argparse.ArgumentTypeError(
            f"unknown algorithm {', '.join(bad) or text!r} (have: {', '.join(BACKEND_NAMES)})"
        )
    return names


def _levels_arg(text: str) -> tuple[str, list[int]]:
    alg, sep, rest = text.partition("=")
    if not sep or alg not in BACKEND_NAMES:
        raise argparse.ArgumentTypeError(f"expected ALG=L[,L...] with ALG one of "
                                         f"{', '.join(BACKEND_NAMES)}: {text!r}")  # fmt: skip
    try:
        levels = [int(x) for x in rest.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"levels must be integers: {text!r}") from None
    if not levels:
        raise argparse.ArgumentTypeError(f"no levels in {text!r}")
    return alg, levels


def _size_arg(text: str) -> int:
    from zramfs.core.kparse import memparse

    n, rest = memparse(text.encode())
    if rest.strip() or n <= 0:
        raise argparse.ArgumentTypeError(f"not a size: {text!r}")
    return n


def _positive_float(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not v >= 0 or math.isinf(v):
        raise argparse.ArgumentTypeError(f"must be >= 0: {text!r}")
    return v


def add_subparser(sub: Any) -> None:
    """Register ``analyze`` on the zramfs argument parser."""
    levels = "; ".join(f"{a} {','.join(map(str, v))}" for a, v in DEFAULT_LEVELS.items())
    p = sub.add_parser(
        "analyze",
        help="what each compressor would make of a device's data (ratio, memory, speed)",
        description="Sample the pages of DEVICE and report, for every zramfs compressor at a "
        "few levels (and zstd with a dictionary trained on half of the sample), the "
        "compression ratio, the memory a zram device would use for the device's data, "
        "compress/decompress speed on this machine, and a recommendation. See docs/usage.md.",
    )
    p.add_argument("device", metavar="DEVICE",
                   help="what to read: a zramfs image (MNT/dev/zram0), /dev/zramN, a loop "
                        "device, a plain file")  # fmt: skip
    p.add_argument("--sample", type=_sample_arg, default=DEFAULT_SAMPLE, metavar="N",
                   help=f"pages to read, spread uniformly over DEVICE (default {DEFAULT_SAMPLE}; "
                        "'all' or 0: every page)")  # fmt: skip
    p.add_argument(
        "--seed",
        type=int,
        default=DEFAULT_SEED,
        help=f"seed of the sample and of its order (default {DEFAULT_SEED})",
    )
    p.add_argument(
        "--algorithms",
        type=_algorithms_arg,
        default=list(BACKEND_NAMES),
        metavar="ALG[,ALG...]",
        help=f"algorithms to try (default all: {','.join(BACKEND_NAMES)})",
    )
    p.add_argument("--levels", type=_levels_arg, action="append", default=[],
                   metavar="ALG=L[,L...]",
                   help=f"levels to try for ALG; repeatable (defaults: {levels}; lz4's level "
                        "is its acceleration)")  # fmt: skip
    p.add_argument("--budget", type=_positive_float, default=DEFAULT_BUDGET, metavar="SECONDS",
                   help=f"CPU seconds of compression per candidate before it stops at part "
                        f"of the sample (default {DEFAULT_BUDGET:g}; 0: no limit)")  # fmt: skip
    p.add_argument("--min-speed", type=_positive_float, default=DEFAULT_MIN_SPEED,
                   metavar="MB/S",
                   help=f"compress speed the 'most memory saved' advice requires "
                        f"(default {DEFAULT_MIN_SPEED:g})")  # fmt: skip
    p.add_argument("--no-dict", action="store_true", help="do not train and try a zstd dictionary")
    p.add_argument(
        "--dict-size",
        type=_size_arg,
        default=DEFAULT_DICT_SIZE,
        metavar="SIZE",
        help=f"zstd dictionary size (default {DEFAULT_DICT_SIZE >> 10}K)",
    )
    p.add_argument(
        "--save-dict",
        metavar="FILE",
        help="write the trained dictionary to FILE (for algorithm_params dict=FILE)",
    )
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.add_argument(
        "--plot",
        metavar="FILE.png",
        help="also draw memory against speed into a PNG (needs matplotlib)",
    )
    p.add_argument(
        "-q",
        "--quiet",
        action="store_true",
        help="no progress bar (it is also off when stderr is not a terminal)",
    )
    p.set_defaults(func=cmd_analyze)


def cmd_analyze(args: argparse.Namespace) -> int:
    levels: dict[str, list[int]] = {}
    for alg, lv in args.levels:
        if alg not in args.algorithms:
            print(f"{PROG}: --levels {alg}: {alg} is not among --algorithms", file=sys.stderr)
            return 2
        mine = levels.setdefault(alg, [])
        mine += [x for x in dict.fromkeys(lv) if x not in mine]
    try:
        candidates = plan(args.algorithms, levels)
        report = analyze(
            args.device, candidates, sample=args.sample, seed=args.seed, budget=args.budget,
            min_speed=args.min_speed, dictionary=not args.no_dict, dict_size=args.dict_size,
            save_dict=args.save_dict, quiet=args.quiet,
        )  # fmt: skip
        if args.plot:
            plot(report, args.plot)
    except AnalyzeError as e:
        print(f"{PROG}: {e}", file=sys.stderr)
        return e.code
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130
    try:
        if args.json:
            json.dump(to_json(report), sys.stdout, indent=2)
            sys.stdout.write("\n")
        else:
            sys.stdout.write(format_text(report))
        sys.stdout.flush()
    except BrokenPipeError:  # `zramfs analyze ... | head`
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return 0
