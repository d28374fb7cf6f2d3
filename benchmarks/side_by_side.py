"""zramfs side by side with the kernel's zram and a bare pyfuse3 file system (issue 5).

Run as ``python -m benchmarks.side_by_side [--size 256M] [--rounds 3] [--quick]
[--json] [--out docs/benchmarks.md] [--plot docs/benchmarks.png] [--targets ...]``
(root; ``make bench`` runs it).  benchmarks/README.md explains every figure.

The same data (`realistic_data`, a tar of /usr, placed in /dev/shm) and the
same tools against every target, in rounds whose target order alternates:

* ``kernel-lz4``: the kernel's ``/dev/zram0`` with lz4 (skipped when absent or
  in use; taken under the tests' flock and reset after every round);
* ``zramfs-{lz4,zstd}-loop``: a zramfs mount's image through
  ``losetup --direct-io=on``; ``zramfs-{lz4,zstd}-image``: the image itself;
* ``bare-loop``, ``bare-image``: the same for `benchmarks.bare_fs`, a pyfuse3
  file system serving a bytearray, the ceiling for a Python FUSE file system.

Per target and round, on a fresh device: ``dd`` writes the whole data
(``bs=1M oflag=direct``), ``mm_stat`` and the daemon's RSS and CPU are read,
``dd`` reads it back (``iflag=direct``, timed), an untimed second read checks
its sha256, then fio runs 4 KiB random reads and writes at queue depth 1 and
16 (libaio, direct, time based).  Figures are medians over rounds; a ratio is
a target's median over its reference's median: dd figures against
``kernel-lz4``, fio figures against the bare file system on the same access
path.  Then the goals' ratios are measured interleaved, the two sides of
each ratio one right after the other (`interleaved_4k`: the 4 KiB jobs
against the bare file system; `interleaved_dd`: dd write and read against
the kernel's zram0), and a goal uses the median of those per-round ratios.
Goals print PASS / MISS; nothing asserts.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import hashlib
import json
import os
import platform
import re
import resource
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any

from benchmarks.bare_fs import bare_mounted
from benchmarks.common import (
    KERNEL_ZRAM0,
    KERNEL_ZRAM0_LOCK,
    PAGE,
    KernelZramUnavailable,
    Log,
    MiB,
    attach_loop,
    code_state,
    detach_loop,
    detach_loops_under,
    kernel_zram0,
    mounted,
    parse_size,
    proc_cpu_seconds,
    settled_rss,
)
from benchmarks.data import realistic_data

REPO_ROOT = Path(__file__).resolve().parent.parent
KERNEL_SYS = KERNEL_ZRAM0
KERNEL_DEV = "/dev/zram0"
MM_STAT_FIELDS = (
    "orig_data_size", "compr_data_size", "mem_used_total", "mem_limit", "mem_used_max",
    "same_pages", "pages_compacted", "huge_pages", "huge_pages_since",
)  # fmt: skip

#: (name, 4 KiB random pattern, queue depth)
FIO_JOBS: tuple[tuple[str, str, int], ...] = (
    ("randread_qd1", "randread", 1),
    ("randread_qd16", "randread", 16),
    ("randwrite_qd1", "randwrite", 1),
    ("randwrite_qd16", "randwrite", 16),
)

# Goals of issue 5 (ratios measured in the same run).
GOAL_SEQ_WRITE = 0.9  # zramfs lz4 dd write / kernel lz4
GOAL_SEQ_READ = 0.6  # zramfs lz4 dd read / kernel lz4
GOAL_ZSTD_WRITE = 0.6  # zramfs zstd dd write / kernel lz4
GOAL_ZSTD_MEM = 0.8  # zramfs zstd mem_used_total / kernel lz4 (>= 20 % less)
GOAL_RANDREAD = 0.85  # zramfs lz4 fio randread IOPS / bare, qd1 and qd16
GOAL_RANDWRITE = 0.75  # zramfs lz4 fio randwrite IOPS / bare, qd16
RSS_FACTOR, RSS_PER_PAGE = 1.10, 16  # RSS growth <= 1.10 x mem_used_total + 16 B/page

#: The 4 KiB goals' jobs, also run interleaved (`interleaved_4k`).
PAIRED_JOBS = tuple(j for j in FIO_JOBS if j[0] in ("randread_qd1", "randread_qd16",
                                                    "randwrite_qd16"))  # fmt: skip


@dataclass(frozen=True)
class Target:
    name: str
    kind: str  # "kernel" | "zramfs" | "bare"
    access: str  # "block" | "loop" | "image"
    algorithm: str | None = None

    @property
    def fio_reference(self) -> str | None:
        """The bare file system on the same access path (zramfs targets)."""
        return f"bare-{self.access}" if self.kind == "zramfs" else None


TARGETS: tuple[Target, ...] = (
    Target("kernel-lz4", "kernel", "block", "lz4"),
    Target("zramfs-lz4-loop", "zramfs", "loop", "lz4"),
    Target("zramfs-lz4-image", "zramfs", "image", "lz4"),
    Target("zramfs-zstd-loop", "zramfs", "loop", "zstd"),
    Target("zramfs-zstd-image", "zramfs", "image", "zstd"),
    Target("bare-loop", "bare", "loop"),
    Target("bare-image", "bare", "image"),
)
BY_NAME = {t.name: t for t in TARGETS}
DD_REFERENCE = "kernel-lz4"


class Skip(Exception):
    """A target cannot run this round (e.g. the kernel's zram0 is absent or busy)."""


@dataclass
class Config:
    size: int
    rounds: int
    fio_runtime: float
    targets: list[Target]
    kernel_lock_wait: float
    quick: bool
    pairs: int = 6  # interleaved 4 KiB rounds (0: none)
    pair_runtime: float = 2.0  # seconds per interleaved fio job


# --------------------------------------------------------------------------- commands


def dd_write_cmd(src: str, dev: str, size: int) -> list[str]:
    # conv=notrunc: dd would otherwise ftruncate a regular file (the image) to 0.
    return ["dd", f"if={src}", f"of={dev}", "bs=1M", f"count={size // MiB}",
            "oflag=direct", "conv=notrunc"]  # fmt: skip


def dd_read_cmd(dev: str, size: int, dst: str = "/dev/null") -> list[str]:
    return ["dd", f"if={dev}", f"of={dst}", "bs=1M", f"count={size // MiB}", "iflag=direct"]


def fio_cmd(dev: str, size: int, rw: str, qd: int, runtime: float, name: str) -> list[str]:
    cmd = [
        "fio", f"--name={name}", f"--filename={dev}", "--ioengine=libaio", "--direct=1",
        f"--rw={rw}", "--bs=4k", f"--iodepth={qd}", f"--size={size}", "--time_based",
        f"--runtime={round(runtime * 1000)}ms", "--norandommap", "--fallocate=none",
        "--output-format=json",
    ]  # fmt: skip
    if rw == "randwrite":
        # Every target is written the same half-compressible buffers, new for each I/O.
        cmd += ["--refill_buffers", "--buffer_compress_percentage=50"]
    return cmd


def _children_cpu() -> float:
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


_DD_SECONDS = re.compile(r"copied, ([0-9.]+) s")


def run_dd(cmd: list[str]) -> tuple[float, float]:
    """Run dd; (seconds dd reports for the copy, dd's own CPU seconds)."""
    cpu0 = _children_cpu()
    t0 = time.perf_counter()
    res = subprocess.run(cmd, capture_output=True, text=True, check=False,
                         env={**os.environ, "LC_ALL": "C"})  # fmt: skip
    wall = time.perf_counter() - t0
    cpu = _children_cpu() - cpu0
    if res.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} exited {res.returncode}: {res.stderr.strip()}")
    m = _DD_SECONDS.search(res.stderr)
    return (float(m.group(1)) if m else wall), cpu


def run_fio(cmd: list[str], cwd: Path) -> tuple[dict[str, Any], float]:
    """Run fio; (its job's JSON report, fio's own CPU seconds)."""
    cpu0 = _children_cpu()
    res = subprocess.run(cmd, capture_output=True, text=True, check=False, cwd=cwd)
    cpu = _children_cpu() - cpu0
    text = res.stdout
    if res.returncode != 0 or "{" not in text:
        raise RuntimeError(f"fio exited {res.returncode}: {res.stderr.strip()}\n{text[-2000:]}")
    report = json.loads(text[text.index("{") :])  # fio may print warnings first
    job: dict[str, Any] = report["jobs"][0]
    if job.get("error"):
        raise RuntimeError(f"fio job error {job['error']}: {res.stderr.strip()}")
    return job, cpu


def read_sha256(dev: str, size: int) -> str:
    """sha256 of the first ``size`` bytes read back with ``dd iflag=direct``."""
    h = hashlib.sha256()
    cmd = ["dd", f"if={dev}", "bs=1M", f"count={size // MiB}", "iflag=direct", "status=none"]
    with subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE) as p:
        try:
            assert p.stdout is not None
            while chunk := p.stdout.read(MiB):
                h.update(chunk)
            err = p.stderr.read() if p.stderr is not None else b""
        except BaseException:
            p.kill()
            raise
    if p.returncode != 0:
        raise RuntimeError(f"read-back dd exited {p.returncode}: {err.decode().strip()}")
    return h.hexdigest()


# --------------------------------------------------------------------------- targets


@dataclass
class Prepared:
    """A fresh device of one target, ready for I/O."""

    dev: str  # what dd and fio open
    pid: int | None  # the FUSE daemon
    mm_stat: Callable[[], list[int]] | None
    mountpoint: str | None = None
    loop: str | None = None


@contextlib.contextmanager
def kernel_zram(size: int, lock_wait: float) -> Iterator[Prepared]:
    """The kernel's zram0 with lz4 and ``size`` bytes, under the tests' flock;
    reset afterwards."""
    with contextlib.ExitStack() as stack:
        try:
            stack.enter_context(kernel_zram0(lock_wait))
        except KernelZramUnavailable as e:
            raise Skip(str(e)) from None
        if "lz4" not in (KERNEL_SYS / "comp_algorithm").read_text().replace("[", " ").replace(
            "]", " "
        ).split():
            raise Skip("the kernel's zram has no lz4")
        (KERNEL_SYS / "comp_algorithm").write_text("lz4")
        (KERNEL_SYS / "disksize").write_text(str(size))

        def mm() -> list[int]:
            return [int(x) for x in (KERNEL_SYS / "mm_stat").read_text().split()]

        yield Prepared(KERNEL_DEV, None, mm)


@contextlib.contextmanager
def prepared(t: Target, cfg: Config) -> Iterator[Prepared]:
    """A fresh device for target ``t``: everything is undone afterwards."""
    if t.kind == "kernel":
        with kernel_zram(cfg.size, cfg.kernel_lock_wait) as p:
            yield p
        return
    if t.kind == "zramfs":
        with mounted() as (m, _base):
            try:
                assert t.algorithm is not None
                m.write_attr("comp_algorithm", t.algorithm)
                m.write_attr("disksize", str(cfg.size))
                p = Prepared(str(m.image()), m.proc.pid, m.mm_stat, str(m.path))
                if t.access == "loop":
                    p.loop = p.dev = attach_loop(m.image())
                yield p
            finally:
                detach_loops_under(m.path)
        return
    with bare_mounted(cfg.size) as b:
        bp = Prepared(str(b.image()), b.proc.pid, None, str(b.path))
        try:
            if t.access == "loop":
                bp.loop = bp.dev = attach_loop(b.image())
            yield bp
        finally:
            if bp.loop is not None:
                detach_loop(bp.loop)
            detach_loops_under(b.path)


def measure(t: Target, p: Prepared, cfg: Config, src: str, scratch: Path) -> dict[str, Any]:
    """One round on one fresh device: the flat figures of this round."""
    size, pages = cfg.size, cfg.size // PAGE
    nreq = size // MiB
    pid = p.pid
    r: dict[str, Any] = {"device": p.dev}
    if p.mountpoint is not None:
        r["mountpoint"] = p.mountpoint
    if p.loop is not None:
        r["loop"] = p.loop

    def cpu() -> float:
        return proc_cpu_seconds(pid) if pid is not None else 0.0

    if pid is not None:
        r["rss_before"] = settled_rss(pid)
    c0 = cpu()
    secs, client = run_dd(dd_write_cmd(src, p.dev, size))
    c1 = cpu()
    r["write_seconds"] = secs
    r["write_MBps"] = size / secs / 1e6
    r["write_client_cpu_us_per_req"] = client / nreq * 1e6
    if pid is not None:
        r["write_daemon_cpu_us_per_req"] = (c1 - c0) / nreq * 1e6
        r["rss_after"] = settled_rss(pid)
        r["rss_growth"] = r["rss_after"] - r["rss_before"]
    if p.mm_stat is not None:
        mm = p.mm_stat()
        r["mm_stat"] = mm
        r.update(zip(MM_STAT_FIELDS, mm, strict=False))
        if mm[1]:
            r["ratio_compr"] = mm[0] / mm[1]
        if mm[2]:
            r["ratio_mem"] = mm[0] / mm[2]
        if pid is not None:
            r["rss_limit"] = RSS_FACTOR * mm[2] + RSS_PER_PAGE * pages
            r["rss_margin"] = r["rss_growth"] / r["rss_limit"]

    c0 = cpu()
    secs, client = run_dd(dd_read_cmd(p.dev, size))
    c1 = cpu()
    r["read_seconds"] = secs
    r["read_MBps"] = size / secs / 1e6
    r["read_client_cpu_us_per_req"] = client / nreq * 1e6
    if pid is not None:
        r["read_daemon_cpu_us_per_req"] = (c1 - c0) / nreq * 1e6

    r["readback_sha256"] = read_sha256(p.dev, size)

    for name, rw, qd in FIO_JOBS:
        c0 = cpu()
        job, client = run_fio(fio_cmd(p.dev, size, rw, qd, cfg.fio_runtime, name), scratch)
        c1 = cpu()
        side = job["read" if rw == "randread" else "write"]
        ios = int(side["total_ios"])
        if ios <= 0:
            raise RuntimeError(f"fio {name} on {p.dev} did no I/O")
        clat = side["clat_ns"]
        r[f"{name}_iops"] = float(side["iops"])
        r[f"{name}_clat_mean_us"] = float(clat["mean"]) / 1e3
        r[f"{name}_clat_p99_us"] = float(clat.get("percentile", {}).get("99.000000", 0)) / 1e3
        r[f"{name}_lat_mean_us"] = float(side["lat_ns"]["mean"]) / 1e3  # submission + completion
        r[f"{name}_ios"] = ios
        r[f"{name}_client_cpu_us_per_req"] = client / ios * 1e6
        if pid is not None:
            r[f"{name}_daemon_cpu_us_per_req"] = (c1 - c0) / ios * 1e6
    return r


# --------------------------------------------------------------------------- the run


def _median(values: list[Any]) -> float | None:
    nums = [float(v) for v in values if isinstance(v, int | float) and not isinstance(v, bool)]
    return statistics.median(nums) if nums else None


def summarize(results: dict[str, list[dict[str, Any]]]) -> dict[str, dict[str, float]]:
    """Per target, the median over its successful rounds of every numeric figure."""
    out: dict[str, dict[str, float]] = {}
    for name, rounds in results.items():
        ok = [r for r in rounds if "error" not in r and "skipped" not in r]
        keys = sorted({k for r in ok for k, v in r.items() if isinstance(v, int | float)})
        med: dict[str, float] = {}
        for k in keys:
            m = _median([r.get(k) for r in ok])
            if m is not None:
                med[k] = m
        if ok:
            med["rounds_ok"] = len(ok)
        out[name] = med
    return out


DD_FIGURES = ("write_MBps", "read_MBps")
FIO_FIGURES = tuple(
    f"{name}_{fig}" for name, _, _ in FIO_JOBS for fig in ("iops", "clat_mean_us", "clat_p99_us")
)


def compute_ratios(medians: dict[str, dict[str, float]]) -> dict[str, dict[str, Any]]:
    """Per zramfs target: each figure / its reference's figure (medians)."""
    out: dict[str, dict[str, Any]] = {}
    for name, med in medians.items():
        t = BY_NAME[name]
        if t.kind != "zramfs" or not med:
            continue
        rat: dict[str, Any] = {}
        kref = medians.get(DD_REFERENCE, {})
        for fig in DD_FIGURES:
            if fig in med and kref.get(fig):
                rat[fig] = {"reference": DD_REFERENCE, "value": med[fig] / kref[fig]}
        if "mem_used_total" in med and kref.get("mem_used_total"):
            rat["mem_used_total"] = {
                "reference": DD_REFERENCE,
                "value": med["mem_used_total"] / kref["mem_used_total"],
            }
        ref = t.fio_reference
        bref = medians.get(ref, {}) if ref is not None else {}
        for fig in FIO_FIGURES:
            if fig in med and bref.get(fig):
                rat[fig] = {"reference": ref, "value": med[fig] / bref[fig]}
        out[name] = rat
    return out


def evaluate_goals(
    medians: dict[str, dict[str, float]],
    ratios: dict[str, dict[str, Any]],
    paired: dict[str, Any] | None = None,
    paired_dd: dict[str, Any] | None = None,
) -> list[dict[str, Any]]:
    """Issue 5's goals, one line per (goal, target); ``pass`` is None when the
    reference or the target did not run.  A 4 KiB goal uses the interleaved
    measurement's median ratio when there is one (`interleaved_4k`), a dd
    goal likewise (`interleaved_dd`), else the ratio of the rounds' medians."""
    goals: list[dict[str, Any]] = []

    def ratio_goal(text: str, target: str, fig: str, op: str, threshold: float) -> None:
        if target not in medians:
            return
        entry = ratios.get(target, {}).get(fig)
        pt = (paired or {}).get(target, {})
        job = pt.get("jobs", {}).get(fig.removesuffix("_iops"))
        if job is None:
            pt = (paired_dd or {}).get(target, {})
            job = pt.get("figures", {}).get(fig)
        if job is not None:
            text += " (interleaved)"
            entry = {"value": job["median_ratio"], "reference": pt["reference"]}
        value = entry["value"] if entry else None
        ok = None if value is None else (value >= threshold if op == ">=" else value <= threshold)
        goals.append({"goal": text, "target": target, "figure": fig, "value": value,
                      "op": op, "threshold": threshold, "pass": ok,
                      "reference": entry["reference"] if entry else None})  # fmt: skip

    for access in ("loop", "image"):
        lz4, zstd = f"zramfs-lz4-{access}", f"zramfs-zstd-{access}"
        ratio_goal("seq 1 MiB write, lz4 vs kernel lz4", lz4, "write_MBps", ">=", GOAL_SEQ_WRITE)
        ratio_goal("seq 1 MiB read, lz4 vs kernel lz4", lz4, "read_MBps", ">=", GOAL_SEQ_READ)
        ratio_goal("seq 1 MiB write, zstd vs kernel lz4", zstd, "write_MBps", ">=",
                   GOAL_ZSTD_WRITE)  # fmt: skip
        ratio_goal("mem_used_total, zstd vs kernel lz4", zstd, "mem_used_total", "<=",
                   GOAL_ZSTD_MEM)  # fmt: skip
        ratio_goal("4 KiB randread qd1 IOPS vs bare", lz4, "randread_qd1_iops", ">=",
                   GOAL_RANDREAD)  # fmt: skip
        ratio_goal("4 KiB randread qd16 IOPS vs bare", lz4, "randread_qd16_iops", ">=",
                   GOAL_RANDREAD)  # fmt: skip
        ratio_goal("4 KiB randwrite qd16 IOPS vs bare", lz4, "randwrite_qd16_iops", ">=",
                   GOAL_RANDWRITE)  # fmt: skip
    for name, med in medians.items():
        if BY_NAME[name].kind != "zramfs" or "rss_margin" not in med:
            continue
        goals.append({
            "goal": "daemon RSS growth <= 1.10 x mem_used_total + 16 B/page",
            "target": name, "figure": "rss_margin", "value": med["rss_margin"], "op": "<=",
            "threshold": 1.0, "pass": med["rss_margin"] <= 1.0, "reference": None,
            "detail": {"rss_growth": med.get("rss_growth"), "rss_limit": med.get("rss_limit")},
        })  # fmt: skip
    return goals


def header(start_load: tuple[float, float, float]) -> dict[str, Any]:
    cpu_model = "?"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu_model = line.split(":", 1)[1].strip()
                break
    try:
        import pyfuse3

        pyfuse3_version = str(pyfuse3.__version__)
    except Exception:  # pragma: no cover - pyfuse3 is a dependency
        pyfuse3_version = "?"
    fio = subprocess.run(["fio", "--version"], capture_output=True, text=True, check=False)
    return {
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M:%S UTC"),
        "kernel": platform.release(),
        "cpu_model": cpu_model,
        "cpus": os.cpu_count(),
        "loadavg_start": [round(x, 2) for x in start_load],
        "python": platform.python_version(),
        "pyfuse3": pyfuse3_version,
        "fio": fio.stdout.strip(),
        "code": code_state(),
    }


_stop_signal: list[int] = []


def _on_signal(signum: int, frame: FrameType | None) -> None:
    _stop_signal.append(signum)
    raise SystemExit(128 + signum)


def run(cfg: Config, log: Log) -> dict[str, Any]:
    start_load = os.getloadavg()
    hdr = header(start_load)
    data = realistic_data(cfg.size)
    src_sha = hashlib.sha256(data).hexdigest()
    results: dict[str, list[dict[str, Any]]] = {t.name: [] for t in cfg.targets}
    fd, src = tempfile.mkstemp(prefix="zramfs-side-by-side-", suffix=".bin", dir="/dev/shm")
    scratch = Path(tempfile.mkdtemp(prefix="zramfs-side-by-side-"))
    t_start = time.monotonic()
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        del data
        for rnd in range(cfg.rounds):
            order = cfg.targets if rnd % 2 == 0 else list(reversed(cfg.targets))
            for t in order:
                t0 = time.monotonic()
                try:
                    with prepared(t, cfg) as p:
                        r = measure(t, p, cfg, src, scratch)
                except Skip as e:
                    r = {"skipped": str(e)}
                except Exception as e:  # one target failing must not end the run
                    r = {"error": f"{type(e).__name__}: {e}"}
                r["round"] = rnd
                r["seconds_total"] = round(time.monotonic() - t0, 2)
                if "readback_sha256" in r:
                    r["readback_ok"] = r["readback_sha256"] == src_sha
                results[t.name].append(r)
                log(_progress_line(t.name, rnd, r))
        paired = interleaved_4k(cfg, src, scratch, log)
        paired_dd = interleaved_dd(cfg, src, log)
    finally:
        with contextlib.suppress(OSError):
            os.unlink(src)
        with contextlib.suppress(OSError):
            for p_ in scratch.iterdir():
                p_.unlink()
            scratch.rmdir()
    hdr["loadavg_end"] = [round(x, 2) for x in os.getloadavg()]
    hdr["seconds"] = round(time.monotonic() - t_start, 1)
    medians = summarize(results)
    ratios = compute_ratios(medians)
    goals = evaluate_goals(medians, ratios, paired, paired_dd)
    return {
        "header": hdr,
        "config": {
            "size": cfg.size, "pages": cfg.size // PAGE, "rounds": cfg.rounds,
            "fio_runtime_s": cfg.fio_runtime, "quick": cfg.quick,
            "pairs": cfg.pairs, "pair_runtime_s": cfg.pair_runtime,
            "targets": [t.name for t in cfg.targets], "source": src,
            "source_sha256": src_sha, "data": "benchmarks/data.py realistic_data(size)",
        },  # fmt: skip
        "commands": commands(cfg),
        "results": results,
        "interleaved_4k": paired,
        "interleaved_dd": paired_dd,
        "medians": medians,
        "ratios": ratios,
        "goals": goals,
    }


def interleaved_4k(cfg: Config, src: str, scratch: Path, log: Log) -> dict[str, Any]:
    """The 4 KiB goals' jobs on each zramfs lz4 target and its bare reference,
    both mounted and filled at once, alternating short fio jobs.

    Why: in the rounds above a target and its reference are measured a minute
    or more apart, and on this shared VM throughput drifts by 10-20 % over
    that time (the kernel's own dd write ranged 257-363 MB/s within one run),
    so a 4 KiB ratio of two medians of 3 rounds scatters as much.  Here each
    ratio compares two jobs run back to back (first one, then the other,
    swapping the order every round), and the goal uses the median of
    ``cfg.pairs`` such ratios.  Per target and job: the ratios, the two
    sides' IOPS and daemon CPU per request.
    """
    out: dict[str, Any] = {}
    names = {t.name for t in cfg.targets}
    for t in cfg.targets:
        ref = t.fio_reference
        if cfg.pairs <= 0 or t.kind != "zramfs" or t.algorithm != "lz4" or ref not in names:
            continue
        assert ref is not None
        try:
            with prepared(t, cfg) as p, prepared(BY_NAME[ref], cfg) as q:
                for side in (p, q):
                    run_dd(dd_write_cmd(src, side.dev, cfg.size))
                jobs: dict[str, Any] = {}
                for name, rw, qd in PAIRED_JOBS:
                    fig: dict[str, list[float]] = {"ratios": [], "iops": [], "ref_iops": [],
                                                   "cpu_us": [], "ref_cpu_us": []}  # fmt: skip
                    for k in range(cfg.pairs):
                        got: dict[int, tuple[float, float]] = {}
                        for i, side in ((0, p), (1, q)) if k % 2 == 0 else ((1, q), (0, p)):
                            pid = side.pid
                            c0 = proc_cpu_seconds(pid) if pid is not None else 0.0
                            job, _ = run_fio(
                                fio_cmd(side.dev, cfg.size, rw, qd, cfg.pair_runtime, name), scratch
                            )
                            c1 = proc_cpu_seconds(pid) if pid is not None else 0.0
                            js = job["read" if rw == "randread" else "write"]
                            ios = max(int(js["total_ios"]), 1)
                            got[i] = (float(js["iops"]), (c1 - c0) / ios * 1e6)
                        fig["iops"].append(got[0][0])
                        fig["ref_iops"].append(got[1][0])
                        fig["cpu_us"].append(got[0][1])
                        fig["ref_cpu_us"].append(got[1][1])
                        fig["ratios"].append(got[0][0] / got[1][0] if got[1][0] else 0.0)
                    jobs[name] = {**fig, "median_ratio": statistics.median(fig["ratios"])}
                    log(f"interleaved {t.name} vs {ref}: {name} median ratio "
                        f"{jobs[name]['median_ratio']:.3f} over {cfg.pairs}")  # fmt: skip
                mnts = [m for m in (p.mountpoint, q.mountpoint) if m is not None]
                out[t.name] = {"reference": ref, "jobs": jobs, "mountpoints": mnts}
        except Exception as e:  # as for a round: report, do not end the run
            out[t.name] = {"reference": ref, "error": f"{type(e).__name__}: {e}"}
            log(f"interleaved {t.name}: {out[t.name]['error']}")
    return out


def interleaved_dd(cfg: Config, src: str, log: Log) -> dict[str, Any]:
    """Each zramfs target's dd write and read against the kernel's zram0 with
    lz4, the two sides one right after the other.

    Why: as for `interleaved_4k`.  In the rounds the kernel's own dd write
    moved 345-413 MB/s within one run (this VM's load and host), and a
    target's median is taken at other minutes than the kernel's.  Here both
    sides get a fresh device at once (a new mount; zram0 reset, under the
    tests' flock), dd writes the data to one and then the other (order
    swapped every round), then reads it back the same way; the goal uses
    the median of ``cfg.pairs`` per-round ratios.  Nothing when the kernel's
    zram0 is not among the targets; a round it is busy or absent for is
    reported as skipped.
    """
    out: dict[str, Any] = {}
    names = {t.name for t in cfg.targets}
    if cfg.pairs <= 0 or DD_REFERENCE not in names:
        return out
    kernel = BY_NAME[DD_REFERENCE]
    for t in cfg.targets:
        if t.kind != "zramfs":
            continue
        figs: dict[str, dict[str, list[float]]] = {
            f: {"ratios": [], "MBps": [], "ref_MBps": []} for f in ("write_MBps", "read_MBps")
        }
        mnts: list[str] = []
        try:
            for k in range(cfg.pairs):
                with prepared(t, cfg) as p, prepared(kernel, cfg) as q:
                    if p.mountpoint is not None:
                        mnts.append(p.mountpoint)
                    sides = ((0, p), (1, q)) if k % 2 == 0 else ((1, q), (0, p))
                    got: dict[tuple[str, int], float] = {}
                    for i, side in sides:
                        secs, _ = run_dd(dd_write_cmd(src, side.dev, cfg.size))
                        got["write_MBps", i] = cfg.size / secs / 1e6
                    for i, side in sides:
                        secs, _ = run_dd(dd_read_cmd(side.dev, cfg.size))
                        got["read_MBps", i] = cfg.size / secs / 1e6
                for fig, f in figs.items():
                    f["MBps"].append(got[fig, 0])
                    f["ref_MBps"].append(got[fig, 1])
                    f["ratios"].append(got[fig, 0] / got[fig, 1])
            medians_ = {fig: {**f, "median_ratio": statistics.median(f["ratios"])}
                        for fig, f in figs.items()}  # fmt: skip
            out[t.name] = {"reference": DD_REFERENCE, "figures": medians_, "mountpoints": mnts}
            log(f"interleaved dd {t.name} vs {DD_REFERENCE}: write "
                f"{medians_['write_MBps']['median_ratio']:.3f}, read "
                f"{medians_['read_MBps']['median_ratio']:.3f} over {cfg.pairs}")  # fmt: skip
        except Skip as e:
            out[t.name] = {"reference": DD_REFERENCE, "skipped": str(e), "mountpoints": mnts}
            log(f"interleaved dd {t.name}: skipped: {e}")
        except Exception as e:  # as for a round: report, do not end the run
            out[t.name] = {"reference": DD_REFERENCE, "error": f"{type(e).__name__}: {e}",
                           "mountpoints": mnts}  # fmt: skip
            log(f"interleaved dd {t.name}: {out[t.name]['error']}")
    return out


def commands(cfg: Config) -> dict[str, str]:
    """The exact command lines, with SRC and DEV for the data file and the target."""
    out = {
        "loop targets: DEV is": "losetup --direct-io=on -f --show MNT/dev/zram0",
        "dd write": " ".join(dd_write_cmd("SRC", "DEV", cfg.size)),
        "dd read": " ".join(dd_read_cmd("DEV", cfg.size)),
        "read-back check (sha256 computed in Python)": " ".join(
            dd_read_cmd("DEV", cfg.size, "/dev/stdout")
        )
        + " status=none | sha256sum",
    }
    for name, rw, qd in FIO_JOBS:
        out[f"fio {name}"] = " ".join(fio_cmd("DEV", cfg.size, rw, qd, cfg.fio_runtime, name))
    return out


def _progress_line(name: str, rnd: int, r: dict[str, Any]) -> str:
    if "skipped" in r:
        return f"round {rnd} {name:18s} skipped: {r['skipped']}"
    if "error" in r:
        return f"round {rnd} {name:18s} ERROR: {r['error']}"
    s = (
        f"round {rnd} {name:18s} write {r['write_MBps']:7.1f} MB/s  read {r['read_MBps']:7.1f}"
        f" MB/s  randread {r['randread_qd1_iops']:6.0f}/{r['randread_qd16_iops']:6.0f} IOPS"
        f"  randwrite {r['randwrite_qd1_iops']:6.0f}/{r['randwrite_qd16_iops']:6.0f} IOPS"
    )
    if "mem_used_total" in r:
        s += f"  mem {r['mem_used_total'] / MiB:6.1f} MiB"
    if not r.get("readback_ok", False):
        s += "  READ-BACK MISMATCH"
    s += f"  ({r['seconds_total']:.0f} s)"
    return s


# --------------------------------------------------------------------------- report


def _fmt(v: float | None, digits: int = 1) -> str:
    if v is None:
        return "—"
    return f"{v:,.{digits}f}"


def _ratio(ratios: dict[str, dict[str, Any]], name: str, fig: str) -> str:
    e = ratios.get(name, {}).get(fig)
    return f" (×{e['value']:.2f})" if e else ""


def goal_lines(goals: list[dict[str, Any]]) -> list[str]:
    lines = []
    for g in goals:
        verdict = "n/a " if g["pass"] is None else ("PASS" if g["pass"] else "MISS")
        value = "—" if g["value"] is None else f"{g['value']:.3f}"
        ref = f" vs {g['reference']}" if g.get("reference") else ""
        extra = ""
        if "detail" in g:
            d = g["detail"]
            extra = (f" (growth {_fmt(d['rss_growth'] / MiB, 2)} MiB, limit "
                     f"{_fmt(d['rss_limit'] / MiB, 2)} MiB)")  # fmt: skip
        lines.append(f"{verdict}  {g['goal']}: {g['target']}{ref} = {value} "
                     f"(goal {g['op']} {g['threshold']:g}){extra}")  # fmt: skip
    return lines


def summary_table(res: dict[str, Any]) -> list[str]:
    med, rat = res["medians"], res["ratios"]
    lines = [
        "| target | dd write MB/s | dd read MB/s | randread qd1 IOPS | randread qd16 IOPS "
        "| randwrite qd1 IOPS | randwrite qd16 IOPS | mem_used_total MiB |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name in res["config"]["targets"]:
        m = med.get(name, {})
        if not m:
            why = _why_missing(res["results"][name])
            lines.append(f"| {name} | {why} | | | | | | |")
            continue
        cells = [f"{_fmt(m.get(f))}{_ratio(rat, name, f)}" for f in DD_FIGURES]
        cells += [f"{_fmt(m.get(f'{j}_iops'), 0)}{_ratio(rat, name, f'{j}_iops')}"
                  for j, _, _ in FIO_JOBS]  # fmt: skip
        mem = m.get("mem_used_total")
        cells.append("—" if mem is None else
                     f"{mem / MiB:.1f}{_ratio(rat, name, 'mem_used_total')}")  # fmt: skip
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return lines


def _why_missing(rounds: list[dict[str, Any]]) -> str:
    for r in rounds:
        if "skipped" in r:
            return f"skipped: {r['skipped']}"
        if "error" in r:
            return f"error: {r['error']}"
    return "not run"


def interleaved_table(res: dict[str, Any]) -> list[str]:
    paired = res.get("interleaved_4k") or {}
    if not paired:
        return []
    cfg = res["config"]
    lines = [
        "## 4 KiB, interleaved with the reference",
        "",
        f"Each zramfs lz4 target and its bare reference mounted and filled at once, then "
        f"{cfg.get('pairs', '?')} rounds of {cfg.get('pair_runtime_s', '?')} s fio jobs, one "
        "side right after the other (order swapped every round); the ratio is the median of "
        "the per-round ratios, so load drift over the run cancels out. Daemon CPU is per "
        "request, medians.",
        "",
        "| target | job | median ratio | per-round ratios | IOPS | reference IOPS "
        "| CPU µs/req | reference CPU µs/req |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, entry in paired.items():
        if "error" in entry:
            lines.append(f"| {name} | — | {entry['error']} | | | | | |")
            continue
        for job, f in entry["jobs"].items():
            lines.append(
                f"| {name} vs {entry['reference']} | {job} | ×{f['median_ratio']:.2f} | "
                + " ".join(f"{r:.2f}" for r in f["ratios"])
                + f" | {_fmt(_median(f['iops']), 0)} | {_fmt(_median(f['ref_iops']), 0)} | "
                f"{_fmt(_median(f['cpu_us']))} | {_fmt(_median(f['ref_cpu_us']))} |"
            )
    return [*lines, ""]


def interleaved_dd_table(res: dict[str, Any]) -> list[str]:
    paired = res.get("interleaved_dd") or {}
    if not paired:
        return []
    cfg = res["config"]
    lines = [
        f"## dd, interleaved with {DD_REFERENCE}",
        "",
        f"{cfg.get('pairs', '?')} rounds: each zramfs target and the kernel's zram0 get a "
        "fresh device at once, dd writes the data to one right after the other (order "
        "swapped every round), then reads it back the same way; the ratio is the median of "
        "the per-round ratios (the dd goals use it).",
        "",
        "| target | figure | median ratio | per-round ratios | MB/s | kernel MB/s |",
        "|---|---|---|---|---|---|",
    ]
    for name, entry in paired.items():
        if "figures" not in entry:
            why = entry.get("error") or f"skipped: {entry.get('skipped')}"
            lines.append(f"| {name} | — | {why} | | | |")
            continue
        for fig, f in entry["figures"].items():
            lines.append(
                f"| {name} vs {entry['reference']} | {fig.removesuffix('_MBps')} | "
                f"×{f['median_ratio']:.2f} | " + " ".join(f"{r:.2f}" for r in f["ratios"])
                + f" | {_fmt(_median(f['MBps']))} | {_fmt(_median(f['ref_MBps']))} |"
            )
    return [*lines, ""]


def latency_table(res: dict[str, Any]) -> list[str]:
    med, rat = res["medians"], res["ratios"]
    lines = [
        "| target | " + " | ".join(f"{j} clat mean / p99 µs | lat mean µs" for j, _, _ in FIO_JOBS)
        + " |",
        "|---|" + "---|---|" * len(FIO_JOBS),
    ]
    for name in res["config"]["targets"]:
        m = med.get(name)
        if not m:
            continue
        cells = []
        for j, _, _ in FIO_JOBS:
            mean = f"{_fmt(m.get(f'{j}_clat_mean_us'))}{_ratio(rat, name, f'{j}_clat_mean_us')}"
            cells.append(f"{mean} / {_fmt(m.get(f'{j}_clat_p99_us'))}")
            cells.append(_fmt(m.get(f"{j}_lat_mean_us")))
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return lines


def memory_table(res: dict[str, Any]) -> list[str]:
    med = res["medians"]
    lines = [
        "| target | orig_data_size | compr_data_size | mem_used_total | orig/compr | orig/mem "
        "| huge pages | same pages | daemon RSS before → growth MiB | growth limit MiB |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name in res["config"]["targets"]:
        m = med.get(name)
        if not m:
            continue
        if "orig_data_size" in m:
            mm = [f"{int(m['orig_data_size']):,}", f"{int(m['compr_data_size']):,}",
                  f"{int(m['mem_used_total']):,}", _fmt(m.get("ratio_compr"), 3),
                  _fmt(m.get("ratio_mem"), 3), f"{int(m['huge_pages']):,}",
                  f"{int(m['same_pages']):,}"]  # fmt: skip
        else:
            mm = ["—"] * 7
        if "rss_before" in m:
            rss = [f"{m['rss_before'] / MiB:.1f} → {m['rss_growth'] / MiB:+.1f}",
                   _fmt(m["rss_limit"] / MiB) if "rss_limit" in m else "—"]  # fmt: skip
        else:
            rss = ["—", "—"]
        lines.append(f"| {name} | " + " | ".join(mm + rss) + " |")
    return lines


def cpu_table(res: dict[str, Any]) -> list[str]:
    med = res["medians"]
    ops = [("write", "dd write"), ("read", "dd read")] + [(j, j) for j, _, _ in FIO_JOBS]
    lines = [
        "| target | " + " | ".join(label for _, label in ops) + " |",
        "|---|" + "---|" * len(ops),
    ]
    for name in res["config"]["targets"]:
        m = med.get(name)
        if not m:
            continue
        cells = []
        for key, _ in ops:
            d = m.get(f"{key}_daemon_cpu_us_per_req")
            c = m.get(f"{key}_client_cpu_us_per_req")
            cells.append(f"{_fmt(d)} / {_fmt(c)}")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return lines


def rounds_table(res: dict[str, Any]) -> list[str]:
    lines = [
        "| target | round | write MB/s | read MB/s | randread qd1/qd16 IOPS "
        "| randwrite qd1/qd16 IOPS | read-back |",
        "|---|---|---|---|---|---|---|",
    ]
    for name in res["config"]["targets"]:
        for r in res["results"][name]:
            if "skipped" in r or "error" in r:
                lines.append(f"| {name} | {r['round']} | {r.get('skipped') or r.get('error')} "
                             "| | | | |")  # fmt: skip
                continue
            lines.append(
                f"| {name} | {r['round']} | {r['write_MBps']:.1f} | {r['read_MBps']:.1f} "
                f"| {r['randread_qd1_iops']:.0f} / {r['randread_qd16_iops']:.0f} "
                f"| {r['randwrite_qd1_iops']:.0f} / {r['randwrite_qd16_iops']:.0f} "
                f"| {'ok' if r.get('readback_ok') else 'MISMATCH'} |"
            )
    return lines


def text_summary(res: dict[str, Any]) -> str:
    h, c = res["header"], res["config"]
    out = [
        f"side_by_side: {c['size'] // MiB} MiB realistic_data, {c['rounds']} round(s), "
        f"fio {c['fio_runtime_s']:g} s per job; {h['date']}, kernel {h['kernel']}, "
        f"{h['cpu_model']} x{h['cpus']}, load {h['loadavg_start']} -> {h['loadavg_end']}, "
        f"pyfuse3 {h['pyfuse3']}, took {h['seconds']:.0f} s",
        "",
        *summary_table(res),
        "",
        *goal_lines(res["goals"]),
    ]
    return "\n".join(out)


def markdown(res: dict[str, Any], plot: str | None, argv: list[str], out: str) -> str:
    h, c = res["header"], res["config"]
    targets = c["targets"]
    lines = [
        "# Benchmarks: zramfs side by side with the kernel's zram and a bare pyfuse3 FS",
        "",
        "<!-- Generated by `python -m benchmarks.side_by_side` (`make bench`): do not edit by "
        "hand, rerun it. -->",
        "",
        "| | |",
        "|---|---|",
        f"| date | {h['date']} |",
        f"| kernel | {h['kernel']} |",
        f"| CPU | {h['cpu_model']}, {h['cpus']} CPUs |",
        f"| load average (1, 5, 15 min) | start {h['loadavg_start']}, end {h['loadavg_end']} |",
        f"| software | Python {h['python']}, pyfuse3 {h['pyfuse3']}, {h['fio']} |",
        f"| code | HEAD `{h['code']['head']}`, zramfs sources sha256 "
        f"`{h['code']['zramfs_sources_sha256']}` (uncommitted changes included) |",
        f"| data | {c['size'] // MiB} MiB of `realistic_data` (a tar of /usr, "
        f"`benchmarks/data.py`), sha256 `{c['source_sha256'][:16]}…` |",
        f"| rounds | {c['rounds']} (target order reversed every other round), medians |",
        f"| command | `python -m benchmarks.side_by_side {' '.join(argv)}`, {h['seconds']:.0f} s |",
        "",
        "The machine was shared with other work while this ran: figures are only as good as the "
        "load average above is low. Ratios compare figures of the same run.",
        "",
        "## Summary",
        "",
        "Medians over rounds. In parentheses, the ratio to the reference: dd figures and "
        "`mem_used_total` against `kernel-lz4`, fio figures against the bare pyfuse3 file "
        "system on the same access path (`bare-loop` for `-loop`, `bare-image` for `-image`). "
        "MB/s are 10⁶ bytes per second.",
        "",
        *summary_table(res),
        "",
    ]
    if plot:
        rel = os.path.relpath(os.path.abspath(plot), os.path.dirname(os.path.abspath(out)))
        lines += [f"![side-by-side chart]({rel})", ""]
    lines += [
        "## Goals (issue 5)",
        "",
        "```",
        *goal_lines(res["goals"]),
        "```",
        "",
        "`n/a`: the reference did not run (e.g. no kernel zram0 on this machine). "
        "`(interleaved)`: the goal uses an interleaved measurement below.",
        "",
        *interleaved_dd_table(res),
        *interleaved_table(res),
        "## Latency",
        "",
        "fio completion latency (`clat`), mean and 99th percentile in µs; the ratio is the "
        "mean's (above 1: slower than the reference). `lat` is submission + completion: the "
        "kernel's zram completes a 4 KiB request inside `io_submit`, so its `clat` is tiny and "
        "`lat` is the figure to compare with it.",
        "",
        *latency_table(res),
        "",
        "## Memory",
        "",
        "`mm_stat` right after dd wrote the data (before any fio run). orig/compr = "
        "`orig_data_size / compr_data_size`, orig/mem = `orig_data_size / mem_used_total`. "
        "Daemon RSS is `VmRSS` (lowest reading over 0.6 s) after the device was configured, "
        "and its growth across the dd write; the limit is "
        f"{RSS_FACTOR:.2f} × `mem_used_total` + {RSS_PER_PAGE} B × {c['pages']:,} pages. "
        "The bare file system allocates its bytearray at start, so it grows by ~0.",
        "",
        *memory_table(res),
        "",
        "## CPU per request",
        "",
        "µs of CPU per request, `daemon / client`: the FUSE daemon's utime + stime (all threads, "
        "`/proc/PID/stat`, 10 ms ticks) over the step, and dd's or fio's own CPU (their "
        "`rusage`), divided by the requests the client issued (dd: one per 1 MiB; fio: "
        "`total_ios`). The kernel's zram compresses in the submitting task, so its cost shows "
        "in the client column; a loop device's worker threads are counted nowhere.",
        "",
        *cpu_table(res),
        "",
        "## What was run",
        "",
        "Targets (each round starts from a fresh device: a new mount, or the kernel's zram0 "
        "after `reset`):",
        "",
    ]
    desc = {
        "kernel-lz4": "`/dev/zram0`: `comp_algorithm lz4`, `disksize`; held under the tests' "
        f"flock (`{KERNEL_ZRAM0_LOCK}`), `reset` after the round.",
        "zramfs-lz4-loop": "a zramfs mount (`benchmarks/common.py` `mounted()`), "
        "`comp_algorithm lz4`, `disksize`, the image through `losetup --direct-io=on`.",
        "zramfs-lz4-image": "the same mount's `MNT/dev/zram0` opened directly.",
        "zramfs-zstd-loop": "as zramfs-lz4-loop with `comp_algorithm zstd` (default level).",
        "zramfs-zstd-image": "as zramfs-lz4-image with zstd.",
        "bare-loop": "`python -m benchmarks.bare_fs --size SIZE MNT` (a pyfuse3 + trio file "
        "system serving a bytearray as `MNT/dev/zram0`, same FUSE options and open reply as "
        "zramfs) through `losetup --direct-io=on`.",
        "bare-image": "the bare file system's `MNT/dev/zram0` opened directly.",
    }
    lines += [f"* `{t}`: {desc[t]}" for t in targets]
    lines += [
        "",
        "Per round and target, in this order (`SRC` is the data in `/dev/shm`, `DEV` the "
        "target's device or image):",
        "",
        "```sh",
        *[f"{cmd}    # {label}" for label, cmd in res["commands"].items()],
        "```",
        "",
        "dd's own reported time is used. The read-back check is untimed: its sha256 must equal "
        "the data's. Daemon RSS and `mm_stat` are read between the dd write and the dd read.",
        "",
        "## Every round",
        "",
        *rounds_table(res),
        "",
        "## Reproduce",
        "",
        "```sh",
        "make bench        # this file and its chart, then benchmarks.core_throughput",
        ".venv/bin/python -m benchmarks.side_by_side --size 256M --rounds 3 "
        "--out docs/benchmarks.md --plot docs/benchmarks.png",
        ".venv/bin/python -m benchmarks.side_by_side --quick --json > quick.json   # ~1 min",
        "```",
        "",
        "Needs root, `/dev/fuse`, loop devices and fio; the kernel's zram0 is used when present "
        "and unused. See benchmarks/README.md.",
        "",
    ]
    return "\n".join(lines)


def plot_chart(res: dict[str, Any], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    med = res["medians"]
    names = [n for n in res["config"]["targets"] if med.get(n)]
    colors = {"kernel": "#444444", "zramfs": "#1f77b4", "bare": "#ff7f0e"}
    fig, axes = plt.subplots(2, 3, figsize=(16, 9))
    h = res["header"]
    fig.suptitle(
        f"zramfs side by side — {res['config']['size'] // MiB} MiB realistic data, "
        f"{res['config']['rounds']} round(s), medians — {h['date']}, load "
        f"{h['loadavg_start'][0]:.1f}→{h['loadavg_end'][0]:.1f}",
        fontsize=12,
    )

    from matplotlib.patches import Patch

    hatches = ("", "///")

    def grouped(ax: Any, figs: list[tuple[str, str]], title: str, ylabel: str,
                scale: float = 1.0, log: bool = False) -> None:  # fmt: skip
        width = 0.8 / len(figs)
        for k, (fig_key, _label) in enumerate(figs):
            xs = [i + (k - (len(figs) - 1) / 2) * width for i in range(len(names))]
            ys = [med[n].get(fig_key, 0.0) * scale for n in names]
            bars = ax.bar(xs, ys, width, hatch=hatches[k], edgecolor="white", linewidth=0,
                          color=[colors[BY_NAME[n].kind] for n in names])  # fmt: skip
            for b, y in zip(bars, ys, strict=True):
                if y:
                    ax.annotate(f"{y:,.0f}" if y >= 10 else f"{y:.1f}",
                                (b.get_x() + b.get_width() / 2, y), ha="center", va="bottom",
                                fontsize=6, rotation=90)  # fmt: skip
        if log:
            ax.set_yscale("log")
        ax.margins(y=0.25)
        ax.set_title(title, fontsize=10)
        ax.set_ylabel(ylabel)
        ax.set_xticks(range(len(names)))
        ax.set_xticklabels(names, rotation=30, ha="right", fontsize=8)
        if len(figs) > 1:
            handles = [Patch(facecolor="#999999", hatch=hatches[k], edgecolor="white", label=lab)
                       for k, (_, lab) in enumerate(figs)]  # fmt: skip
            ax.legend(handles=handles, fontsize=8)

    grouped(axes[0][0], [("write_MBps", "write"), ("read_MBps", "read")],
            "dd 1 MiB O_DIRECT, sequential", "MB/s")  # fmt: skip
    grouped(axes[0][1], [("randread_qd1_iops", "qd1"), ("randread_qd16_iops", "qd16")],
            "fio 4 KiB random read (log scale)", "IOPS", log=True)  # fmt: skip
    grouped(axes[0][2], [("randwrite_qd1_iops", "qd1"), ("randwrite_qd16_iops", "qd16")],
            "fio 4 KiB random write (log scale)", "IOPS", log=True)  # fmt: skip
    grouped(axes[1][0], [("mem_used_total", "mem_used_total"), ("rss_growth", "daemon RSS growth")],
            "memory after writing the data", "MiB", scale=1 / MiB)  # fmt: skip
    grouped(axes[1][1], [("randread_qd1_lat_mean_us", "randread qd1"),
                         ("randwrite_qd1_lat_mean_us", "randwrite qd1")],
            "fio mean latency (submit + complete), qd1 (log scale)", "µs", log=True)  # fmt: skip

    fig.legend(handles=[Patch(color=c, label=k) for k, c in colors.items()],
               loc="upper right", fontsize=8, ncol=3)  # fmt: skip
    ax = axes[1][2]
    goals = [g for g in res["goals"] if g["value"] is not None]
    labels = [f"{g['target'].removeprefix('zramfs-')}: {g['figure']}" for g in goals]
    vals = [g["value"] / g["threshold"] if g["op"] == ">=" else g["threshold"] / g["value"]
            if g["value"] else 0.0 for g in goals]  # fmt: skip
    ax.barh(range(len(goals)), vals,
            color=["#2ca02c" if g["pass"] else "#d62728" for g in goals])  # fmt: skip
    ax.axvline(1.0, color="black", linewidth=1)
    ax.set_yticks(range(len(goals)))
    ax.set_yticklabels(labels, fontsize=7)
    ax.invert_yaxis()
    ax.set_title("goals: measured / required (≥ 1 passes)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


# --------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    ap = argparse.ArgumentParser(
        prog="python -m benchmarks.side_by_side",
        description="zramfs vs the kernel's zram and a bare pyfuse3 FS",
    )
    ap.add_argument("--size", type=parse_size, default=None,
                    help="data size, whole MiB (default 256M; 16M with --quick)")  # fmt: skip
    ap.add_argument("--rounds", type=int, default=None, help="rounds (default 3; 1 with --quick)")
    ap.add_argument("--fio-runtime", type=float, default=None,
                    help="seconds per fio job (default 4; 0.5 with --quick)")  # fmt: skip
    ap.add_argument("--quick", action="store_true",
                    help="16 MiB, 1 round, 0.5 s fio jobs, no report unless asked")  # fmt: skip
    ap.add_argument("--json", action="store_true", help="print the results as JSON on stdout")
    ap.add_argument("--out", default=None,
                    help="markdown report (docs/benchmarks.md; none if --quick)")  # fmt: skip
    ap.add_argument("--plot", default=None,
                    help="PNG chart (default docs/benchmarks.png; none with --quick)")  # fmt: skip
    ap.add_argument("--targets", default=",".join(t.name for t in TARGETS),
                    help="comma-separated, of: " + ", ".join(t.name for t in TARGETS))  # fmt: skip
    ap.add_argument("--pairs", type=int, default=None,
                    help="interleaved rounds: per 4 KiB job against the bare FS, and of "
                         "dd against the kernel (default 6; 1 with --quick; 0: none)")  # fmt: skip
    ap.add_argument("--kernel-lock-wait", type=float, default=120.0,
                    help="seconds to wait for zram0's flock, per round (default 120)")  # fmt: skip
    args = ap.parse_args(argv)
    names = [n.strip() for n in args.targets.replace(" ", ",").split(",") if n.strip()]
    unknown = [n for n in names if n not in BY_NAME]
    if unknown or not names:
        ap.error(f"unknown target(s) {unknown}; choose from {', '.join(BY_NAME)}")
    size = args.size if args.size is not None else parse_size("16M" if args.quick else "256M")
    if size % MiB:
        ap.error("--size must be whole MiB (dd bs=1M)")
    cfg = Config(
        size=size,
        rounds=args.rounds if args.rounds is not None else (1 if args.quick else 3),
        fio_runtime=args.fio_runtime if args.fio_runtime is not None else
        (0.5 if args.quick else 4.0),
        targets=[BY_NAME[n] for n in names],
        kernel_lock_wait=args.kernel_lock_wait,
        quick=args.quick,
        pairs=args.pairs if args.pairs is not None else (1 if args.quick else 6),
        pair_runtime=0.5 if args.quick else 2.0,
    )  # fmt: skip
    out = args.out if args.out is not None else (None if args.quick else "docs/benchmarks.md")
    plot = args.plot if args.plot is not None else (None if args.quick else "docs/benchmarks.png")
    log = Log(args.json)
    if os.geteuid() != 0:
        log("side_by_side: needs root (loop devices, FUSE, the kernel's zram0)")
        return 2

    old_term = signal.signal(signal.SIGTERM, _on_signal)
    try:
        res = run(cfg, log)
    finally:
        signal.signal(signal.SIGTERM, old_term)
    if plot:
        plot_chart(res, plot)
        res["plot"] = plot
    if out:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        Path(out).write_text(markdown(res, plot, argv, out))
        res["report"] = out
    log(text_summary(res))
    if args.json:
        json.dump(res, sys.stdout, indent=1)
        sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
