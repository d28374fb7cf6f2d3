"""What a compression dictionary buys: zstd (and lz4) with ``algorithm_params dict=PATH``.

Run as ``python -m benchmarks.dictionary [--data 64M] [--train 16M] [--test 32M]
[--samples N] [--dict-sizes 64K,112K] [--levels 1,3,9] [--json]``; README.md in
this directory explains the figures.  Nothing here asserts.

1. `realistic_data` of ``--data`` bytes; the training pages are the first
   ``--train`` bytes (or ``--samples`` of those pages, at random), same-filled
   pages left out; the test data is the *last* ``--test`` bytes, i.e. other
   files of the same kinds, never seen by the trainer;
2. one zstd dictionary per ``--dict-sizes`` entry, trained on those pages with
   ``zstandard.train_dictionary`` (fastCOVER, the library defaults), plus one
   "raw" dictionary for comparison: training pages picked at random and
   concatenated (no training, no entropy tables); each written to a file;
3. for each algorithm (zstd at each ``--levels``, lz4) and each dictionary
   (none first: the baseline of the same run), a fresh `ZramDevice` (the core
   API, no FUSE): ``comp_algorithm``, ``algorithm_params [algo=zstd level=L]
   [dict=PATH]``, ``disksize``, the test data written in 1 MiB requests and
   read back (checked), ``mm_stat`` kept.

The improvement factor is ``compr_data_size`` (resp. ``mem_used_total``)
without a dictionary ÷ with it, at the same algorithm and level.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import trio
import zstandard

from benchmarks.common import PAGE, Log, MiB, code_state, machine, parse_size
from benchmarks.data import realistic_data, swap_like_data
from zramfs.core.device import ZramDevice

#: The zstd variant the issue's claim is about ("a trained dictionary improves
#: the ratio"): the default level.
GOAL_LEVEL = 3

MM_FIELDS = (
    "orig_data_size", "compr_data_size", "mem_used_total", "mem_limit", "mem_used_max",
    "same_pages", "pages_compacted", "huge_pages", "huge_pages_since",
)  # fmt: skip


def is_same(page: bytes) -> bool:
    return page[:8] * (PAGE // 8) == page


def training_pages(data: bytes, samples: int, seed: int) -> list[bytes]:
    pages = [data[o : o + PAGE] for o in range(0, len(data), PAGE)]
    pages = [p for p in pages if not is_same(p)]
    if samples and samples < len(pages):
        pages = random.Random(seed).sample(pages, samples)
    return pages


def make_dictionaries(
    pages: list[bytes], sizes: list[int], raw_size: int, out: Path, seed: int, log: Log
) -> dict[str, dict[str, Any]]:
    """Train one zstd dictionary per size, plus one raw; write each to ``out``."""
    dicts: dict[str, dict[str, Any]] = {}
    for size in sizes:
        t0 = time.perf_counter()
        samples: list[bytes | bytearray | memoryview] = list(pages)
        zd = zstandard.train_dictionary(size, samples)
        secs = time.perf_counter() - t0
        blob = zd.as_bytes()
        name = f"trained-{size >> 10}K"
        path = out / f"{name}.zdict"
        path.write_bytes(blob)
        dicts[name] = {"path": str(path), "bytes": len(blob), "train_seconds": round(secs, 2),
                       "k": zd.k, "d": zd.d}  # fmt: skip
        log(f"  {name}: {len(blob)} bytes, trained in {secs:.1f} s (k={zd.k} d={zd.d})")
    if raw_size:
        rng = random.Random(seed + 1)
        picked = rng.sample(pages, min(len(pages), -(-raw_size // PAGE)))
        blob = b"".join(picked)[:raw_size]
        name = f"raw-{raw_size >> 10}K"
        path = out / f"{name}.bin"
        path.write_bytes(blob)
        dicts[name] = {"path": str(path), "bytes": len(blob), "train_seconds": 0.0}
        log(f"  {name}: {len(blob)} bytes of {len(picked)} random training pages")
    return dicts


async def store(alg: str, params: str, chunks: list[bytes], data: bytes) -> dict[str, Any]:
    """One fresh device: configure, write, read back; mm_stat and timings."""
    dev = ZramDevice(0)
    await dev.store_comp_algorithm(alg.encode())
    if params:
        await dev.store_algorithm_params(params.encode())
    size = len(data)
    await dev.store_disksize(b"%d" % size)
    try:
        t0 = time.perf_counter()
        off = 0
        for ch in chunks:
            await dev.write(off, ch)
            off += len(ch)
        t_write = time.perf_counter() - t0
        t0 = time.perf_counter()
        parts = [await dev.read(o, MiB) for o in range(0, size, MiB)]
        t_read = time.perf_counter() - t0
        mm = [int(x) for x in dev.show_mm_stat().split()]
        intact = b"".join(parts) == data
    finally:
        await dev.reset()
    fig: dict[str, Any] = dict(zip(MM_FIELDS, mm, strict=True))
    fig.update(
        ratio=round(mm[0] / mm[1], 4) if mm[1] else None,
        ratio_mem=round(mm[0] / mm[2], 4) if mm[2] else None,
        write_MB_s=round(size / t_write / 1e6, 1),
        read_MB_s=round(size / t_read / 1e6, 1),
        data_intact=intact,
    )
    return fig


async def run_variants(
    chunks: list[bytes],
    data: bytes,
    levels: list[int],
    dicts: dict[str, dict[str, Any]],
    lz4: bool,
    log: Log,
) -> list[dict[str, Any]]:
    algos: list[tuple[str, int | None]] = [("zstd", lv) for lv in levels]
    if lz4:
        algos.append(("lz4", None))
    rows: list[dict[str, Any]] = []
    for alg, level in algos:
        base: dict[str, Any] | None = None
        for dname in (None, *dicts):
            params = []
            if level is not None:
                params.append(f"level={level}")
            if dname is not None:
                params.append(f"dict={dicts[dname]['path']}")
            text = f"algo={alg} " + " ".join(params) if params else ""
            fig = await store(alg, text, chunks, data)
            if base is None:
                base = fig
            fig = {
                "algorithm": alg,
                "level": level,
                "dictionary": dname or "none",
                **fig,
                "improvement": round(base["compr_data_size"] / fig["compr_data_size"], 4),
                "improvement_mem": round(base["mem_used_total"] / fig["mem_used_total"], 4),
            }
            rows.append(fig)
            log(f"  {_label(fig):22s} {_row(fig)}")
    return rows


def _label(r: dict[str, Any]) -> str:
    lv = "" if r["level"] is None else f" {r['level']}"
    return f"{r['algorithm']}{lv} + {r['dictionary']}"


def _row(r: dict[str, Any]) -> str:
    return (
        f"{r['compr_data_size']:10d} {r['mem_used_total']:10d} {r['huge_pages']:6d} "
        f"{r['ratio']:6.3f} {r['ratio_mem']:6.3f} {r['improvement']:7.3f} "
        f"{r['improvement_mem']:7.3f} {r['write_MB_s']:8.1f} {r['read_MB_s']:8.1f}"
        + ("" if r["data_intact"] else "  DATA MISMATCH")
    )


HEADER = (
    f"  {'algorithm + dictionary':22s} {'compr_data':>10s} {'mem_used':>10s} {'huge':>6s} "
    f"{'ratio':>6s} {'r_mem':>6s} {'improv':>7s} {'imp_mem':>7s} {'write':>8s} {'read':>8s}"
)


def print_report(report: dict[str, Any]) -> None:
    m0, m1 = report["machine_start"], report["machine_end"]
    code = report["code"]
    print(f"\ncode: HEAD {code['head']}, zramfs sources sha256 {code['zramfs_sources_sha256']}")
    t = report["test"]
    print(
        f"\n{m0['cpus']} CPUs, load average {m0['loadavg'][0]:.2f} at start, "
        f"{m1['loadavg'][0]:.2f} at end (MB/s figures are noisy under load; sizes are not)"
    )
    print(
        f"training: {report['train']['pages']} pages from the first "
        f"{report['train']['region'] >> 20} MiB; test: {t['pages']} pages "
        f"({t['same_pages']} same-filled) = bytes {t['offset'] >> 20}-"
        f"{(t['offset'] + t['bytes']) >> 20} MiB of {report['data'] >> 20} MiB "
        f"{report['data_set']}" + (" (IN SAMPLE)" if report["in_sample"] else "")
    )
    for name, d in report["dictionaries"].items():
        print(f"  {name:14s} {d['bytes']:7d} bytes  {d['path']}")  # fmt: skip
    print()
    print(HEADER)
    print(
        f"  {'':22s} {'bytes':>10s} {'bytes':>10s} {'pages':>6s} {'':>6s} {'':>6s} "
        f"{'x':>7s} {'x':>7s} {'MB/s':>8s} {'MB/s':>8s}"
    )
    last = None
    for r in report["results"]:
        key = (r["algorithm"], r["level"])
        if last is not None and key != last:
            print()
        last = key
        print(f"  {_label(r):22s} {_row(r)}")
    print(
        "\n  ratio = orig_data_size / compr_data_size, r_mem = orig / mem_used_total; "
        "improv (imp_mem) = compr_data_size (mem_used_total) without a dictionary / with it"
    )
    for g in report["goals"]:
        print(f"  zstd level {GOAL_LEVEL} + {g['dictionary']}: ratio x{g['improvement']:.3f} "
              f"goal > 1: {'PASS' if g['pass'] else 'MISS'}")  # fmt: skip


def _size_or_zero(text: str) -> int:
    return 0 if text.strip() == "0" else parse_size(text)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m benchmarks.dictionary",
        description="zstd / lz4 with a trained dictionary vs. without (benchmarks/README.md)",
    )
    ap.add_argument("--data", type=parse_size, default=64 << 20, help="stream (default 64M)")
    ap.add_argument("--train", type=parse_size, default=16 << 20,
                    help="training region: the first SIZE (default 16M)")  # fmt: skip
    ap.add_argument("--test", type=parse_size, default=32 << 20,
                    help="test data: the last SIZE (default 32M)")  # fmt: skip
    ap.add_argument("--samples", type=int, default=0,
                    help="train on N random pages of the region (default: all)")  # fmt: skip
    ap.add_argument("--dict-sizes", default="64K,112K", help="trained sizes (default 64K,112K)")
    ap.add_argument("--raw-size", type=_size_or_zero, default=112 << 10,
                    help="raw (untrained) dictionary size, 0 for none (default 112K)")  # fmt: skip
    ap.add_argument("--levels", default="1,3,9", help="zstd levels (default 1,3,9)")
    ap.add_argument("--no-lz4", action="store_true", help="leave lz4 out")
    ap.add_argument("--data-set", choices=("realistic", "swap"), default="realistic",
                    help="realistic_data (default) or swap_like_data")  # fmt: skip
    ap.add_argument("--in-sample", action="store_true",
                    help="test on the training region (what the dictionary saw)")  # fmt: skip
    ap.add_argument("--seed", type=int, default=11)
    ap.add_argument("--json", action="store_true", help="print one JSON object instead")
    args = ap.parse_args(argv)
    log = Log(args.json)
    if not args.in_sample and args.train + args.test > args.data:
        ap.error("--train + --test must fit in --data (the test data is never trained on)")
    test_size = args.test // MiB * MiB or args.test
    sizes = [parse_size(s) for s in args.dict_sizes.split(",") if s]
    levels = [int(x) for x in args.levels.split(",") if x]

    t0 = time.monotonic()
    source = realistic_data if args.data_set == "realistic" else swap_like_data
    stream = source(args.data)
    log(f"data: {args.data >> 20} MiB {source.__name__} ({time.monotonic() - t0:.1f} s)")
    pages = training_pages(stream[: args.train], args.samples, args.seed)
    offset = 0 if args.in_sample else args.data - test_size
    test = stream[offset : offset + (args.train if args.in_sample else test_size)]
    del stream
    chunks = [test[o : o + MiB] for o in range(0, len(test), MiB)]
    test_pages = [test[o : o + PAGE] for o in range(0, len(test), PAGE)]
    report: dict[str, Any] = {
        "data": args.data,
        "data_set": source.__name__,
        "in_sample": args.in_sample,
        "train": {
            "region": args.train,
            "pages": len(pages),
            "bytes": sum(map(len, pages)),
        },  # fmt: skip
        "test": {
            "offset": offset,
            "bytes": len(test),
            "pages": len(test_pages),
            "same_pages": sum(map(is_same, test_pages)),
        },  # fmt: skip
        "code": code_state(),
        "machine_start": machine(),
    }
    with tempfile.TemporaryDirectory(prefix="zramfs-dict-") as tmp:
        log(f"training on {len(pages)} pages:")
        dicts = make_dictionaries(pages, sizes, args.raw_size, Path(tmp), args.seed, log)
        log(HEADER)
        rows = trio.run(run_variants, chunks, test, levels, dicts, not args.no_lz4, log)
    report["dictionaries"] = dicts
    report["results"] = rows
    report["goals"] = [
        {
            "dictionary": r["dictionary"],
            "improvement": r["improvement"],
            "pass": r["improvement"] > 1.0,
        }  # fmt: skip
        for r in rows
        if r["algorithm"] == "zstd"
        and r["level"] == GOAL_LEVEL
        and r["dictionary"].startswith("trained")
    ]
    report["machine_end"] = machine()
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print_report(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
