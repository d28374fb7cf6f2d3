"""Device-core throughput against a bare loop of the same codec calls.

Run as ``python -m benchmarks.core_throughput [--size 64M] [--rounds 5]
[--algorithms lz4,zstd] [--profile] [--json]``; README.md in this directory
explains every figure.  Nothing here asserts: goals are printed PASS / MISS.

For each algorithm, every round runs, alternating which goes first:

* bare write: for each 4 KiB page of the data, the same-fill check and
  ``codec.compress(page)``, results dropped;
* core write: ``await dev.write(off, chunk)`` of 1 MiB chunks into a fresh
  `ZramDevice` (as configured: it may offload compression to worker threads);
* core write, inline: the same with offloading disabled (``OFFLOAD_MIN_NS``
  patched for the call), i.e. everything on the trio thread like the bare loop;
* bare read: ``codec.decompress`` of every stored compressed page (read in
  place from one arena, as the core reads from its pool), a copy of every huge
  page and the fill of every same-filled page;
* core read: ``await dev.read(off, 1 MiB)`` over the device just written.

Figures are medians over the rounds; a ratio is the median of the per-round
ratios ``bare time / core time`` (1.0: the core adds nothing to the codec).
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import json
import mmap
import os
import pstats
import statistics
import sys
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import trio

from benchmarks.data import realistic_data
from zramfs.backends import create_codec
from zramfs.backends.base import Codec
from zramfs.core import device as device_mod
from zramfs.core.device import ZramDevice
from zramfs.core.entrylock import LOCK_MASK, WRITER
from zramfs.core.slots import SlotTable
from zramfs.core.zsmalloc import ZsPool

PAGE = 4096
PAGE_WORDS = PAGE // 8
CHUNK = 1 << 20
WRITE_GOAL = 0.85
READ_GOAL = 0.70
GOAL_ALGORITHM = "lz4"
_MADV_POPULATE_WRITE: int = getattr(mmap, "MADV_POPULATE_WRITE", 23)

now_ns = time.perf_counter_ns
cpu_ns = time.process_time_ns  # all threads of the process
thread_ns = time.thread_time_ns

#: (wall ns, process CPU ns) of one timed run.
Timing = tuple[int, int]


def parse_size(text: str) -> int:
    """``64M``, ``1G``, ``65536``...: bytes, rounded up to whole 1 MiB chunks."""
    t = text.strip().upper().removesuffix("B").removesuffix("I")
    mult = 1
    for suffix, m in (("K", 1 << 10), ("M", 1 << 20), ("G", 1 << 30)):
        if t.endswith(suffix):
            t, mult = t[:-1], m
            break
    n = int(t) * mult
    if n <= 0:
        raise argparse.ArgumentTypeError(f"size must be positive: {text!r}")
    return -(-n // CHUNK) * CHUNK


def rss_anon() -> int:
    """This process's anonymous resident memory in bytes (RssAnon)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("RssAnon:"):
                return int(line.split()[1]) * 1024
    return 0


@contextmanager
def offload_disabled() -> Iterator[bool]:
    """Force the core's inline write path; yields False if it cannot."""
    old = getattr(device_mod, "OFFLOAD_MIN_NS", None)
    if old is None:
        yield False
        return
    device_mod.OFFLOAD_MIN_NS = 1 << 62
    try:
        yield True
    finally:
        device_mod.OFFLOAD_MIN_NS = old


# --------------------------------------------------------------------------- bare loops


def is_same(page: bytes) -> bool:
    w = page[:8]
    return w == page[-8:] and w * PAGE_WORDS == page


def bare_write(chunks: list[bytes], codec: Codec) -> Timing:
    """Same-fill check + compress of every page."""
    compress = codec.compress
    c0 = cpu_ns()
    t0 = now_ns()
    for ch in chunks:
        for p in range(0, len(ch), PAGE):
            page = ch[p : p + PAGE]
            w = page[:8]
            if w == page[-8:] and w * PAGE_WORDS == page:
                continue
            compress(page)
    return now_ns() - t0, cpu_ns() - c0


@dataclass
class Stored:
    """The bare read loop's input: what a store would hold, in one arena."""

    arena: bytearray
    same: list[bytes]  # the 8-byte word of each same-filled page
    huge: list[memoryview]  # raw pages
    comp: list[memoryview]  # compressed pages
    order: list[int]  # per page: 0 same, 1 huge, 2 compressed
    huge_threshold: int


def store_bare(chunks: list[bytes], codec: Codec, huge_threshold: int) -> Stored:
    blobs: list[tuple[int, bytes]] = []
    for ch in chunks:
        for p in range(0, len(ch), PAGE):
            page = ch[p : p + PAGE]
            if is_same(page):
                blobs.append((0, page[:8]))
                continue
            c = codec.compress(page)
            blobs.append((1, page) if len(c) >= huge_threshold else (2, c))
    arena = bytearray(sum(len(b) for k, b in blobs if k))
    mv = memoryview(arena)
    st = Stored(arena, [], [], [], [], huge_threshold)
    pos = 0
    for kind, b in blobs:
        st.order.append(kind)
        if kind == 0:
            st.same.append(b)
            continue
        mv[pos : pos + len(b)] = b
        (st.huge if kind == 1 else st.comp).append(mv[pos : pos + len(b)])
        pos += len(b)
    return st


def bare_read(st: Stored, codec: Codec) -> Timing:
    """decompress of every compressed page, copy of huge ones, fill of same ones."""
    decompress = codec.decompress
    c0 = cpu_ns()
    t0 = now_ns()
    for w in st.same:
        _ = w * PAGE_WORDS
    for h in st.huge:
        _ = bytes(h)
    for c in st.comp:
        decompress(c, PAGE)
    return now_ns() - t0, cpu_ns() - c0


# --------------------------------------------------------------------------- core


async def new_device(alg: str, size: int) -> ZramDevice:
    dev = ZramDevice(0)
    await dev.store_comp_algorithm(alg.encode())
    await dev.store_disksize(b"%d" % size)
    return dev


async def core_write(dev: ZramDevice, chunks: list[bytes]) -> Timing:
    off = 0
    c0 = cpu_ns()
    t0 = now_ns()
    for ch in chunks:
        await dev.write(off, ch)
        off += len(ch)
    return now_ns() - t0, cpu_ns() - c0


async def core_read(dev: ZramDevice, size: int) -> Timing:
    c0 = cpu_ns()
    t0 = now_ns()
    for off in range(0, size, CHUNK):
        await dev.read(off, CHUNK)
    return now_ns() - t0, cpu_ns() - c0


# --------------------------------------------------------------------------- locks


async def lock_costs(n: int = 200_000, reps: int = 5) -> dict[str, float]:
    """Net ns per uncontended acquire/release pair (empty-loop time subtracted)."""
    table = SlotTable(4096)
    locks = table.locks
    attr = table.attr
    tlock = trio.Lock()
    dev = ZramDevice(0)

    async def empty() -> int:
        t0 = thread_ns()
        for k in range(n):
            k & 4095
        return thread_ns() - t0

    async def entry_await() -> int:
        t0 = thread_ns()
        for k in range(n):
            i = k & 4095
            await locks.lock(i)
            locks.unlock(i)
        return thread_ns() - t0

    async def entry_try() -> int:
        t0 = thread_ns()
        for k in range(n):
            i = k & 4095
            locks.try_lock(i)
            locks.unlock(i)
        return thread_ns() - t0

    async def entry_inline() -> int:
        # What ZramDevice._write_full does per page: test-and-set on the word.
        t0 = thread_ns()
        for k in range(n):
            i = k & 4095
            a = attr[i]
            if not a & LOCK_MASK:
                attr[i] = a | WRITER
            locks.unlock(i)
        return thread_ns() - t0

    async def trio_lock() -> int:
        t0 = thread_ns()
        for k in range(n):
            k & 4095
            await tlock.acquire()
            tlock.release()
        return thread_ns() - t0

    async def trio_lock_with() -> int:
        t0 = thread_ns()
        for k in range(n):
            k & 4095
            async with tlock:
                pass
        return thread_ns() - t0

    async def dev_lock() -> int:
        t0 = thread_ns()
        for k in range(n):
            k & 4095
            async with dev.dev_lock.read():
                pass
        return thread_ns() - t0

    cases: dict[str, Callable[[], Awaitable[int]]] = {
        "entry_lock_await": entry_await,
        "entry_lock_try": entry_try,
        "entry_lock_inline": entry_inline,
        "trio_lock_acquire_release": trio_lock,
        "trio_lock_async_with": trio_lock_with,
        "dev_lock_read_async_with": dev_lock,
    }
    samples: dict[str, list[int]] = {k: [] for k in ["empty", *cases]}
    for _ in range(reps):
        samples["empty"].append(await empty())
        for name, fn in cases.items():
            samples[name].append(await fn())
    table.close()
    base = statistics.median(samples["empty"])
    return {k: (statistics.median(v) - base) / n for k, v in samples.items() if k != "empty"}


# --------------------------------------------------------------------------- breakdown


async def write_breakdown(
    chunks: list[bytes], codec: Codec, alg: str, size: int, reps: int = 3
) -> dict[str, float]:
    """Per-page CPU µs of each piece of the inline write path, timed in isolation.

    Alternates the pieces with an inline core write of the same data (thread
    CPU time, medians of ``reps``), so both see the same machine load; what
    the pieces do not explain is reported as ``other``.
    """
    pieces: dict[str, list[float]] = {}
    core: list[int] = []
    for _ in range(reps):
        for k, v in _pieces(chunks, codec).items():
            pieces.setdefault(k, []).append(v)
        dev = await new_device(alg, size)
        with offload_disabled():
            t0 = thread_ns()
            await core_write(dev, chunks)
            core.append(thread_ns() - t0)
        await dev.reset()
    out = {k: statistics.median(v) for k, v in pieces.items()}
    core_ns = statistics.median(core)
    explained = sum(v for k, v in out.items() if not k.startswith("  "))
    out["other (slot/stats bookkeeping, frames, request)"] = core_ns - explained
    out["= core write, inline"] = core_ns
    n = size // PAGE
    return {k: v / n / 1000 for k, v in out.items()}


def _pieces(chunks: list[bytes], codec: Codec) -> dict[str, float]:
    """Thread CPU ns of each piece of the inline write path over all pages.

    The pieces of the fresh-slot path (`ZramDevice._store_fresh`): the
    same-fill check and compression of a request's pages in place
    (`compress_run`), then one `ZsPool.store_many` per request; the bare
    loop's own slicing, same-fill check and compression are shown for
    comparison and are not part of the sum.
    """
    out: dict[str, float] = {}
    compress = codec.compress

    t0 = thread_ns()
    for ch in chunks:
        [ch[p : p + PAGE] for p in range(0, len(ch), PAGE)]
    out["  bare: page slicing"] = thread_ns() - t0
    pages = [ch[p : p + PAGE] for ch in chunks for p in range(0, len(ch), PAGE)]
    t0 = thread_ns()
    for pg in pages:
        is_same(pg)
    out["  bare: same-fill check"] = thread_ns() - t0
    todo = [pg for pg in pages if not is_same(pg)]
    t0 = thread_ns()
    for pg in todo:
        compress(pg)
    out["  bare: compress"] = thread_ns() - t0
    del pages, todo

    run = getattr(device_mod, "compress_run", None)
    if run is None:  # an older core: no batched path to break down
        return out
    # Request by request, as the core goes (each piece timed on its own).  A
    # batch codec (zstd) compresses a request in one call, on one thread here
    # (`ZramDevice._compress_pages`; the core may use two when that is faster).
    batch = getattr(device_mod.ZramDevice, "_compress_pages", None)
    if not getattr(codec, "batch_compress", False):
        batch = None
    pool = ZsPool()
    huge = pool.huge_class_size
    t_run = t_store = 0
    for r, ch in enumerate(chunks):
        count = len(ch) // PAGE
        t0 = thread_ns()
        if batch is not None:
            same, blobs = batch(codec, ch, 0, count, 1)
        else:
            same, blobs = run(compress, ch, 0, count)
        t_run += thread_ns() - t0
        skip = set(same)
        ks = [k for k in range(count) if k not in skip]
        stored = [
            ch[k * PAGE : (k + 1) * PAGE] if len(b) >= huge else b
            for k, b in zip(ks, blobs, strict=True)
        ]
        sizes = [len(b) for b in stored]
        owners = [r * count + k for k in ks]
        t0 = thread_ns()
        pool.store_many(stored, sizes, owners)
        t_store += thread_ns() - t0
    name = "compress_pages (batch)" if batch is not None else "compress_run"
    out[f"{name}: same-fill check + compress in place"] = t_run
    out["pool.store_many (incl. zspage pages)"] = t_store
    rows = pool.class_stats()
    pool.close()
    out["  of which: zspage pages (populate)"] = _populate_cost(rows)
    return out


def _populate_cost(rows: list[Any]) -> float:
    """ns to make the pool's pages resident the way `ZsPool` does it."""
    total = sum(r.obj_allocated // r.objs_per_zspage * r.pages_per_zspage for r in rows)
    if not total:
        return 0.0
    mm = mmap.mmap(-1, total * PAGE, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    pos = 0
    t0 = thread_ns()
    try:
        for r in rows:
            nz = r.obj_allocated // r.objs_per_zspage
            zb = r.pages_per_zspage * PAGE
            for _ in range(nz):
                if r.pages_per_zspage > 1:
                    mm.madvise(_MADV_POPULATE_WRITE, pos, zb)
                else:
                    mm[pos] = 0
                pos += zb
        return float(thread_ns() - t0)
    finally:
        mm.close()


def cprofile_write(chunks: list[bytes], alg: str, size: int, inline: bool) -> str:
    """cProfile of one core write; top functions by own time, in µs per page."""
    npages = size // PAGE

    async def run() -> None:
        dev = await new_device(alg, size)
        prof = cProfile.Profile()
        prof.enable()
        await core_write(dev, chunks)
        prof.disable()
        await dev.reset()
        holder.append(prof)

    holder: list[cProfile.Profile] = []
    if inline:
        with offload_disabled():
            trio.run(run)
    else:
        trio.run(run)
    st = pstats.Stats(holder[0])
    raw: dict[Any, Any] = st.stats  # type: ignore[attr-defined]
    rows = []
    for (fname, line, func), (_cc, nc, tt, ct, _callers) in raw.items():
        where = f"{os.path.basename(fname)}:{line}({func})" if line else func
        rows.append((tt, ct, nc, where))
    rows.sort(reverse=True)
    lines = [f"    {'own µs/page':>11} {'cum µs/page':>11} {'calls':>8}  function"]
    for tt, ct, nc, where in rows[:16]:
        lines.append(f"    {tt * 1e6 / npages:11.2f} {ct * 1e6 / npages:11.2f} {nc:8d}  {where}")
    return "\n".join(lines)


# --------------------------------------------------------------------------- main


@dataclass
class AlgResult:
    """Timings of one algorithm: per metric, one (wall, cpu) pair per round."""

    algorithm: str
    pages: int
    runs: dict[str, list[Timing]] = field(default_factory=dict)
    mm_stat: str = ""
    same_pages: int = 0
    huge_pages: int = 0

    def add(self, metric: str, t: Timing) -> None:
        self.runs.setdefault(metric, []).append(t)

    def ratio(self, bare: str, core: str, which: int = 0) -> float:
        """Median over rounds of bare time / core time (0: wall, 1: CPU)."""
        pairs = zip(self.runs[bare], self.runs[core], strict=True)
        return statistics.median(b[which] / c[which] for b, c in pairs)

    def summary(self, size: int) -> dict[str, Any]:
        out: dict[str, Any] = {
            "algorithm": self.algorithm,
            "pages": self.pages,
            "same_pages": self.same_pages,
            "huge_pages": self.huge_pages,
            "mm_stat": [int(v) for v in self.mm_stat.split()],
        }
        for metric, ts in self.runs.items():
            wall = statistics.median(t[0] for t in ts)
            cpu = statistics.median(t[1] for t in ts)
            out[metric] = {
                "MB_s": round(size / wall * 1e3, 1),
                "us_per_page": round(wall / 1000 / self.pages, 3),
                "cpu_us_per_page": round(cpu / 1000 / self.pages, 3),
                "rounds_ms": [round(t[0] / 1e6, 1) for t in ts],
            }
        for key, bare, core in (
            ("write_ratio", "bare_write", "core_write"),
            ("write_inline_ratio", "bare_write", "core_write_inline"),
            ("overwrite_ratio", "bare_write", "core_overwrite"),
            ("read_ratio", "bare_read", "core_read"),
        ):
            if core in self.runs:
                out[key] = round(self.ratio(bare, core), 3)
                out[key + "_cpu"] = round(self.ratio(bare, core, 1), 3)
        return out


async def bench_algorithm(
    alg: str, chunks: list[bytes], size: int, rounds: int, log: Callable[[str], None]
) -> AlgResult:
    codec = create_codec(alg)
    res = AlgResult(alg, pages=size // PAGE)
    # Warm-up (untimed) and a correctness check of the read path.
    dev = await new_device(alg, size)
    await core_write(dev, chunks)
    threshold = dev.huge_class_size
    for k, off in enumerate(range(0, size, CHUNK)):
        if await dev.read(off, CHUNK) != chunks[k]:
            raise SystemExit(f"{alg}: the core read back different data at {off}")
    res.mm_stat = dev.show_mm_stat().decode().strip()
    res.same_pages = dev.stats.same_pages
    res.huge_pages = dev.stats.huge_pages
    await dev.reset()
    stored = store_bare(chunks, codec, threshold)
    with offload_disabled() as can_inline:
        pass
    for r in range(rounds):
        gc.collect()
        # Alternate which side goes first, so drift and load hit both alike.
        core_first = bool(r & 1)
        if not core_first:
            res.add("bare_write", bare_write(chunks, codec))
        dev = await new_device(alg, size)
        res.add("core_write", await core_write(dev, chunks))
        if core_first:
            res.add("bare_write", bare_write(chunks, codec))
        if not core_first:
            res.add("bare_read", bare_read(stored, codec))
        res.add("core_read", await core_read(dev, size))
        if core_first:
            res.add("bare_read", bare_read(stored, codec))
        await dev.reset()
        if can_inline:
            dev = await new_device(alg, size)
            with offload_disabled():
                res.add("core_write_inline", await core_write(dev, chunks))
                # Every slot full: page by page, each old object freed.
                res.add("core_overwrite", await core_write(dev, chunks[1:] + chunks[:1]))
            await dev.reset()
        ms = {k: f"{v[-1][0] / 1e6:.0f}" for k, v in res.runs.items()}
        log(f"  round {r + 1}/{rounds}, ms: write bare {ms['bare_write']} core "
            f"{ms['core_write']} inline {ms.get('core_write_inline', '-')}, "
            f"read bare {ms['bare_read']} core {ms['core_read']}")  # fmt: skip
    return res


async def rss_check(chunks: list[bytes], size: int) -> dict[str, int]:
    """RSS growth across one lz4 write of all the data vs mem_used_total."""
    gc.collect()
    before = rss_anon()
    dev = await new_device(GOAL_ALGORITHM, size)
    await core_write(dev, chunks)
    gc.collect()
    after = rss_anon()
    mem_used = dev.total_pages() * PAGE
    table = 16 * (size // PAGE)
    await dev.reset()
    return {
        "rss_before": before,
        "rss_after": after,
        "rss_growth": after - before,
        "mem_used_total": mem_used,
        "slot_table_bytes": table,
        "excess_over_mem_used": after - before - mem_used,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m benchmarks.core_throughput",
        description="zramfs device-core throughput vs. a bare codec loop (benchmarks/README.md)",
    )
    ap.add_argument("--size", type=parse_size, default=64 << 20, help="data size (default 64M)")
    ap.add_argument("--rounds", type=int, default=5, help="timed rounds (default 5)")
    ap.add_argument("--algorithms", default="lz4,zstd", help="comma-separated (default lz4,zstd)")
    ap.add_argument("--profile", action="store_true", help="add a per-page cost breakdown")
    ap.add_argument("--json", action="store_true", help="print one JSON object instead")
    args = ap.parse_args(argv)
    size: int = args.size
    algs = [a for a in args.algorithms.split(",") if a]

    def log(msg: str) -> None:
        print(msg, file=sys.stderr if args.json else sys.stdout, flush=True)

    t_data = time.monotonic()
    data = realistic_data(size)
    chunks = [data[o : o + CHUNK] for o in range(0, size, CHUNK)]
    del data
    log(f"data: {size >> 20} MiB realistic_data ({time.monotonic() - t_data:.1f} s), "
        f"{size // PAGE} pages, 1 MiB requests, {args.rounds} rounds")  # fmt: skip

    report: dict[str, Any] = {
        "size": size,
        "rounds": args.rounds,
        "cpus": os.cpu_count(),
        "loadavg_start": os.getloadavg(),
        "algorithms": {},
    }

    async def run() -> None:
        report["rss"] = await rss_check(chunks, size)
        for alg in algs:
            log(f"{alg}:")
            res = await bench_algorithm(alg, chunks, size, args.rounds, log)
            summary = res.summary(size)
            report["algorithms"][alg] = summary
            if args.profile:
                pieces = await write_breakdown(chunks, create_codec(alg), alg, size)
                summary["write_breakdown_us_per_page"] = {k: round(v, 3) for k, v in pieces.items()}
        report["lock_ns"] = {k: round(v, 1) for k, v in (await lock_costs()).items()}

    trio.run(run)
    if args.profile:
        for alg in algs:
            for inline in (True, False):
                key = "cprofile_inline" if inline else "cprofile_offloaded"
                report["algorithms"][alg][key] = cprofile_write(chunks, alg, size, inline)
    report["loadavg_end"] = os.getloadavg()

    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print_report(report)
    return 0


def _verdict(alg: str, ratio: float, want: float | None) -> str:
    if want is None or alg != GOAL_ALGORITHM:
        return ""
    return f"  goal >= {want:.2f}: {'PASS' if ratio >= want else 'MISS'}"


def print_report(report: dict[str, Any]) -> None:
    la0 = report["loadavg_start"][0]
    la1 = report["loadavg_end"][0]
    print(f"\n{report['cpus']} CPUs, load average {la0:.2f} at start, {la1:.2f} at end "
          f"(figures are noisy when other work competes for the CPUs)\n")  # fmt: skip
    for alg, s in report["algorithms"].items():
        print(f"== {alg}: {s['pages']} pages, {s['same_pages']} same-filled, "
              f"{s['huge_pages']} huge (median of {report['rounds']} rounds)")  # fmt: skip
        print(f"  {'':18s} {'MB/s':>8s} {'µs/page':>8s} {'CPU µs/page':>12s}")
        for name in (
            "bare_write", "core_write", "core_write_inline", "core_overwrite", "bare_read",
            "core_read",
        ):  # fmt: skip
            if name in s:
                v = s[name]
                print(f"  {name:18s} {v['MB_s']:8.1f} {v['us_per_page']:8.2f} "
                      f"{v['cpu_us_per_page']:12.2f}")  # fmt: skip
        print(f"  {'ratio bare/core':34s} {'wall':>6s} {'CPU':>6s}")
        for key, label, want in (
            ("write_ratio", "write", WRITE_GOAL),
            ("write_inline_ratio", "write, inline (offload disabled)", None),
            ("overwrite_ratio", "overwrite, inline (slots full)", None),
            ("read_ratio", "read", READ_GOAL),
        ):
            if key in s:
                print(f"  {label:34s} {s[key]:6.3f} {s[key + '_cpu']:6.3f}"
                      + _verdict(alg, s[key], want))  # fmt: skip
        print(f"  mm_stat after write: {' '.join(str(v) for v in s['mm_stat'])}")
        if "write_breakdown_us_per_page" in s:
            print("  inline write path, CPU µs per page (pieces timed in isolation):")
            for k, v in s["write_breakdown_us_per_page"].items():
                print(f"    {v:8.3f}  {k}")
        for key in ("cprofile_inline", "cprofile_offloaded"):
            if key in s:
                print(f"  {key} (the profiler inflates Python frames):")
                print(s[key])
        print()
    r = report["rss"]
    mib = 1 << 20
    print(f"== memory (one {GOAL_ALGORITHM} write of all the data into a fresh device)")
    print(f"  RssAnon growth {r['rss_growth'] / mib:.2f} MiB, mem_used_total "
          f"{r['mem_used_total'] / mib:.2f} MiB: growth - mem_used_total = "
          f"{r['excess_over_mem_used'] / mib:+.2f} MiB "
          f"(slot table: at most {r['slot_table_bytes'] / mib:.2f} MiB of it)")  # fmt: skip
    print()
    print("== uncontended lock + unlock pair, ns (thread CPU time, loop overhead subtracted)")
    for k, v in report["lock_ns"].items():
        print(f"  {k:28s} {v:8.1f}")


if __name__ == "__main__":
    sys.exit(main())
