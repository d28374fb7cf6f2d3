"""Random-read latency of the image while ``recompress`` (brotli 11) or ``writeback`` runs.

Run as ``python -m benchmarks.recompress_latency [--size 32M] [--wb-size SIZE]
[--idle 5] [--hot 4M] [--max-pages N] [--rounds N] [--only recompress|writeback]
[--json]`` (root or a user allowed to mount FUSE); README.md in this directory
explains the figures.  Nothing here asserts: goals are printed PASS / MISS.

The seed's claim (issue 4): slow post-processing holds only the slots it
works on, so the device keeps serving.  Measured through a real mount of its
own (a temporary directory, always unmounted at the end):

1. ``comp_algorithm lz4``, ``--size`` bytes of `realistic_data` written to
   ``/dev/zram0`` of the mount;
2. one reader (this process's main thread) does 4 KiB ``O_DIRECT`` reads at
   random page offsets of the first ``--hot`` bytes of the image, one at a
   time, each one timed: ``--idle`` seconds with nothing else running (the
   baseline), then for as long as the post-processing write(2) — issued from
   another thread — takes, then ``--idle`` seconds again afterwards;
3. recompress scenario: ``recomp_algorithm algo=brotli``, ``algorithm_params
   priority=1 level=11``, then ``recompress`` (every page, or
   ``max_pages=N``);
   writeback scenario (a fresh device, ``--wb-size`` bytes): ``backing_dev``
   = a file in the temporary directory, ``idle all``, then ``writeback
   type=idle``.

``--rounds N`` pairs the baseline with the load, for a shared machine whose
load swings over minutes: the operation is split into N writes (recompress:
``max_pages`` slices, the last one unbounded; writeback: ``page_indexes=``
slices of the whole image, no ``idle all``), each preceded by an ``--idle``
window; the idle windows are pooled into the baseline, the busy ones into
"during".

Why a hot set: a read clears the slot's ``PP_SLOT`` mark, and the kernel
(and zramfs) then skips that slot, so a reader spread over the whole image
would leave recompression little to do.  The default reads the first 4 MiB,
as an application does its working set; ``--hot all`` reads everywhere.
"""

from __future__ import annotations

import argparse
import json
import mmap
import os
import random
import sys
import threading
import time
from pathlib import Path
from typing import Any

from benchmarks.common import (
    PAGE,
    Log,
    Mount,
    code_state,
    latency_summary,
    machine,
    mounted,
    parse_size,
)
from benchmarks.data import realistic_data

RATIO_GOAL = 0.30  # reads/s during ÷ reads/s idle
MAX_LATENCY_GOAL_MS = 100.0
BACKING_NAME = "backing.img"


class Reader:
    """4 KiB reads of the image at random page offsets, one at a time, timed."""

    def __init__(self, image: Path, pages: int, seed: int = 7) -> None:
        try:
            self.fd = os.open(image, os.O_RDONLY | os.O_DIRECT)
            self.direct = True
        except OSError:
            self.fd = os.open(image, os.O_RDONLY)
            self.direct = False
        self.buf = mmap.mmap(-1, PAGE)  # page-aligned, as O_DIRECT wants
        self.pages = pages
        self.rng = random.Random(seed)

    def run(self, until: threading.Event | float) -> tuple[list[float], list[float], float]:
        """Read until the deadline (monotonic s) or the event: (starts, latencies, seconds)."""
        starts: list[float] = []
        lat: list[float] = []
        fd, buf, pages, rand = self.fd, [self.buf], self.pages, self.rng.randrange
        clock = time.perf_counter
        t_begin = clock()
        deadline = until - time.monotonic() + t_begin if isinstance(until, float) else None
        event = until if isinstance(until, threading.Event) else None
        while True:
            if deadline is not None:
                if clock() >= deadline:
                    break
            elif event is not None and event.is_set():
                break
            off = rand(pages) * PAGE
            t0 = clock()
            n = os.preadv(fd, buf, off)
            t1 = clock()
            if n != PAGE:
                raise OSError(f"short read at {off}: {n}")
            starts.append(t0 - t_begin)
            lat.append(t1 - t0)
        return starts, lat, clock() - t_begin

    def close(self) -> None:
        os.close(self.fd)
        self.buf.close()


Run = tuple[list[float], list[float], float]  # read start times, latencies, seconds


def phase(runs: list[Run]) -> dict[str, Any]:
    """Latency summary of one or more pooled windows, plus the slowest whole
    second (reads started in it) of any window, and the load average."""
    lat = [x for run in runs for x in run[1]]
    fig: dict[str, Any] = latency_summary(lat, sum(run[2] for run in runs))
    fig["windows"] = len(runs)
    bins_min: int | None = None
    for starts, _, seconds in runs:
        bins = [0] * int(seconds)
        for t in starts:
            b = int(t)
            if b < len(bins):
                bins[b] += 1
        if bins:
            bins_min = min(bins) if bins_min is None else min(bins_min, *bins)
    fig["min_reads_in_1s"] = bins_min
    fig["loadavg_1m"] = round(os.getloadavg()[0], 2)
    return fig


class PostProcess(threading.Thread):
    """One write(2) of ``value`` to ``attr`` (the slow part), timed."""

    def __init__(self, m: Mount, attr: str, value: str) -> None:
        super().__init__(daemon=True)  # never keeps a Ctrl-C'ed run alive
        self.m, self.attr, self.value = m, attr, value
        self.done = threading.Event()
        self.seconds = 0.0
        self.error: str | None = None

    def run(self) -> None:
        t0 = time.perf_counter()
        try:
            self.m.write_attr(self.attr, self.value)
        except OSError as e:
            self.error = f"{self.attr}: {e}"
        finally:
            self.seconds = time.perf_counter() - t0
            self.done.set()


def flag_counts(flags: list[str]) -> dict[str, int]:
    """Slots per ``block_state`` flag (``s w h i r n``)."""
    names = ("same", "wb", "huge", "idle", "recompressed", "incompressible")
    return {name: sum(f[i] != "." for f in flags) for i, name in enumerate(names)}


def commands(kind: str, pages: int, args: argparse.Namespace) -> list[str]:
    """What to write to the attribute, one value per round."""
    rounds = max(1, args.rounds)
    if kind == "recompress":
        # "\n" as echo sends it: a 0-byte write(2) never reaches the daemon.
        if rounds == 1:
            return [f"max_pages={args.max_pages}" if args.max_pages else "\n"]
        total = args.max_pages or pages
        per = -(-total // rounds)
        last = f"max_pages={total - per * (rounds - 1)}" if args.max_pages else "\n"
        return [f"max_pages={per}"] * (rounds - 1) + [last]
    if rounds == 1:
        return ["type=idle"]  # after `idle all`
    per = -(-pages // rounds)
    return [
        f"page_indexes={lo}-{min(lo + per, pages) - 1}" for lo in range(0, pages, per)
    ]  # fmt: skip


def scenario(
    m: Mount, scratch: Path, kind: str, data: bytes, args: argparse.Namespace, log: Log
) -> dict[str, Any]:
    size = len(data)
    pages = size // PAGE
    hot = pages if args.hot in (0, None) else min(pages, args.hot // PAGE)
    m.write_attr("comp_algorithm", "lz4")
    if kind == "recompress":
        m.write_attr("recomp_algorithm", "algo=brotli")
        m.write_attr("algorithm_params", f"priority=1 level={args.level}")
        attr = "recompress"
    else:
        backing = scratch / BACKING_NAME
        with open(backing, "wb") as f:
            f.truncate(size)
        m.write_attr("backing_dev", str(backing))
        attr = "writeback"
    values = commands(kind, pages, args)
    m.write_attr("disksize", str(size))
    t0 = time.monotonic()
    m.write_image(data)
    log(f"  wrote {size >> 20} MiB in {time.monotonic() - t0:.1f} s; "
        f"reading 4 KiB at random in the first {hot} pages")  # fmt: skip
    mm_before = m.mm_stat()
    bd_before = m.bd_stat()

    reader = Reader(m.image(), hot)
    res: dict[str, Any] = {"attr": attr, "values": values, "o_direct": reader.direct}
    idle: list[Run] = []
    busy: list[Run] = []
    took: list[float] = []
    errors: list[str] = []
    try:
        reader.run(time.monotonic() + 0.5)  # warm up: caches, the daemon's buffers
        for value in values:
            idle.append(reader.run(time.monotonic() + args.idle))
            if kind == "writeback" and len(values) == 1:
                m.write_attr("idle", "all")
            worker = PostProcess(m, attr, value)
            worker.start()
            busy.append(reader.run(worker.done))
            worker.join()
            took.append(worker.seconds)
            if worker.error:
                errors.append(worker.error)
            worst = max(busy[-1][1], default=0.0) * 1e3
            log(f"  idle {idle[-1][2]:.1f} s: {len(idle[-1][1])} reads; echo "
                f"{value.strip() or '(newline)'} > {attr}: {worker.seconds:.1f} s, "
                f"{len(busy[-1][1])} reads, max {worst:.1f} ms")  # fmt: skip
        after = reader.run(time.monotonic() + args.idle)
    finally:
        reader.close()
    res["idle"] = phase(idle)
    res["during"] = phase(busy)
    res["idle_after"] = phase([after])
    for name in ("idle", "during", "idle_after"):
        log(f"  {name:10s} {_line(res[name])}")
    res["errors"] = errors
    res["seconds"] = round(sum(took), 3)
    res["mm_stat_before"] = mm_before
    res["mm_stat_after"] = m.mm_stat()
    res["bd_stat_before"] = bd_before
    res["bd_stat_after"] = m.bd_stat()
    res["pages"] = pages
    res["hot_pages"] = hot
    res["flags"] = flag_counts(m.block_flags())
    m.write_attr("compact", "1")  # give back the zspages the moved objects left half empty
    res["mm_stat_compacted"] = m.mm_stat()
    res["data_intact"] = m.read_image(size) == data
    idle_rate = res["idle"]["reads_per_s"]
    after_rate = res["idle_after"]["reads_per_s"]
    busy_rate = res["during"]["reads_per_s"]
    res["throughput_ratio"] = round(busy_rate / idle_rate, 3) if idle_rate else None
    res["throughput_ratio_vs_after"] = round(busy_rate / after_rate, 3) if after_rate else None
    res["goals"] = {
        "throughput_ratio": _goal(res["throughput_ratio"], RATIO_GOAL, at_least=True),
        "max_latency_ms": _goal(res["during"].get("max_ms"), MAX_LATENCY_GOAL_MS, at_least=False),
    }
    m.write_attr("reset", "1")
    return res


def _goal(value: float | None, want: float, at_least: bool) -> dict[str, Any]:
    ok = value is not None and (value >= want if at_least else value < want)
    return {"value": value, "goal": (">= " if at_least else "< ") + f"{want:g}", "pass": ok}


def _line(p: dict[str, Any]) -> str:
    if not p["reads"]:
        return f"no reads in {p['seconds']:.1f} s"
    return (
        f"{p['reads']:7d} reads in {p['seconds']:6.1f} s = {p['reads_per_s']:7.0f}/s  "
        f"p50 {p['p50_ms']:.3f}  p99 {p['p99_ms']:.3f}  p99.9 {p['p999_ms']:.2f}  "
        f"max {p['max_ms']:.1f} ms"
    )


def _ratio(mm: list[int]) -> float:
    return mm[0] / mm[1] if mm[1] else 0.0


def print_report(report: dict[str, Any]) -> None:
    m0, m1 = report["machine_start"], report["machine_end"]
    code = report["code"]
    print(f"\ncode: HEAD {code['head']}, zramfs sources sha256 {code['zramfs_sources_sha256']}")
    print(f"\n{m0['cpus']} CPUs, load average {m0['loadavg'][0]:.2f} at start, "
          f"{m1['loadavg'][0]:.2f} at end; realistic_data, lz4 primary "
          f"(figures are noisy when other work competes for the CPUs)")  # fmt: skip
    for kind, r in report["scenarios"].items():
        vals = r["values"]
        what = vals[0].strip() or "(newline)"
        if len(vals) > 1:
            what = f"{what} ... {vals[-1].strip() or '(newline)'}: {len(vals)} rounds"
        print(f"\n== {kind}: {r['pages'] * PAGE >> 20} MiB, echo {what} > {r['attr']} "
              f"(reader: 4 KiB {'O_DIRECT ' if r['o_direct'] else ''}random reads of "
              f"{r['hot_pages']} of {r['pages']} pages)")  # fmt: skip
        for name in ("idle", "during", "idle_after"):
            print(f"  {name:10s} {_line(r[name])}  (load {r[name]['loadavg_1m']:.1f})")
        print("  reads over 10/50/100 ms: " + ", ".join(
            f"{name} {r[name].get('over_10ms', 0)}/{r[name].get('over_50ms', 0)}/"
            f"{r[name].get('over_100ms', 0)}" for name in ("idle", "during", "idle_after")
        ) + f"; slowest second during: {r['during']['min_reads_in_1s']} reads")  # fmt: skip
        print(f"  {r['attr']} took {r['seconds']:.1f} s"
              + "".join(f"  ERROR {e}" for e in r["errors"]))  # fmt: skip
        b, a = r["mm_stat_before"], r["mm_stat_after"]
        fl = r["flags"]
        print(f"  mm_stat before: {' '.join(map(str, b))}")
        print(f"  mm_stat after:  {' '.join(map(str, a))}")
        c = r["mm_stat_compacted"]
        print(f"  after compact:  {' '.join(map(str, c))}")
        if kind == "recompress":
            print(f"  pages recompressed: {fl['recompressed']}, marked incompressible: "
                  f"{fl['incompressible']} (of {r['pages']})")  # fmt: skip
            gain = _ratio(a) / _ratio(b) if _ratio(b) else 0.0
            mem_gain = b[2] / c[2] if c[2] else 0.0
            print(f"  compr_data_size {b[1]} -> {a[1]}: ratio {_ratio(b):.3f} -> "
                  f"{_ratio(a):.3f} (x{gain:.3f}); mem_used_total {b[2]} -> {a[2]}, "
                  f"{c[2]} after compact (x{mem_gain:.3f})")  # fmt: skip
        else:
            bd = r["bd_stat_after"]
            print(f"  pages written back: {fl['wb']} (of {r['pages']}); bd_stat after "
                  f"(count reads writes): {' '.join(map(str, bd))}")  # fmt: skip
            print(f"  in RAM: compr_data_size {b[1]} -> {a[1]}, mem_used_total {b[2]} -> "
                  f"{a[2]}, {c[2]} after compact")  # fmt: skip
        print(f"  data read back identical: {'yes' if r['data_intact'] else 'NO'}")
        print(f"  reads/s during / idle after: {r['throughput_ratio_vs_after']} (not a goal: "
              f"a second baseline, to tell a load swing from the operation's cost)")  # fmt: skip
        for name, g in r["goals"].items():
            v = g["value"]
            shown = "n/a" if v is None else f"{v:.3f}" if name == "throughput_ratio" else f"{v:.1f}"
            print(f"  {name:18s} {shown:>8s}  goal {g['goal']}: {'PASS' if g['pass'] else 'MISS'}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m benchmarks.recompress_latency",
        description="4 KiB random reads of a zramfs image while recompress / writeback run "
        "(benchmarks/README.md)",
    )
    ap.add_argument("--size", type=parse_size, default=32 << 20, help="data (default 32M)")
    ap.add_argument("--idle", type=float, default=5.0, help="idle phases, s (default 5)")
    ap.add_argument(
        "--hot", default="4M",
        help="read the first SIZE of the image (default 4M); 'all' reads all of it",
    )  # fmt: skip
    ap.add_argument("--wb-size", type=parse_size, help="writeback data (default: --size)")
    ap.add_argument("--max-pages", type=int, default=0, help="recompress max_pages (default all)")
    ap.add_argument(
        "--rounds", type=int, default=1,
        help="split the operation into N writes, each after an idle window (default 1)",
    )  # fmt: skip
    ap.add_argument("--level", type=int, default=11, help="brotli level (default 11)")
    ap.add_argument("--only", choices=("recompress", "writeback"), help="run one scenario")
    ap.add_argument("--json", action="store_true", help="print one JSON object instead")
    args = ap.parse_args(argv)
    args.hot = 0 if args.hot == "all" else parse_size(args.hot)
    log = Log(args.json)

    wb_size = args.wb_size or args.size
    report: dict[str, Any] = {
        "size": args.size,
        "wb_size": wb_size,
        "idle_seconds": args.idle,
        "brotli_level": args.level,
        "max_pages": args.max_pages or None,
        "rounds": args.rounds,
        "code": code_state(),
        "machine_start": machine(),
        "scenarios": {},
    }
    kinds = [args.only] if args.only else ["recompress", "writeback"]
    with mounted() as (m, scratch):
        for kind in kinds:
            size = args.size if kind == "recompress" else wb_size
            t0 = time.monotonic()
            data = realistic_data(size)
            log(f"{kind}: {size >> 20} MiB realistic_data ({time.monotonic() - t0:.1f} s)")
            report["scenarios"][kind] = scenario(m, scratch, kind, data, args, log)
            del data
    report["machine_end"] = machine()
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print_report(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
