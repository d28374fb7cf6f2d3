"""The soak (issue 6): fio verify through loop while control files are hammered.

One 256 MiB device (lz4, recompression to zstd, a backing file for
writeback), attached with ``losetup --direct-io=on``:

* fio, four jobs on their own 48 MiB regions (different compressibility:
  50 %, 75 %, 0 % — all huge pages — and 25 %): a sequential verified fill,
  then ``rw=randrw`` with block sizes 4k–128k for ``ZRAMFS_SOAK_SECONDS``
  (default 90), ``verify=crc32c`` with a header in every 4 KiB
  (``verify_interval``), verified while running (``verify_backlog``),
  ``verify_fatal``.  Afterwards a read-only fio pass checks every 4 KiB of the
  four regions: the right offset in its header and a correct crc32c.
* meanwhile three threads: post-processing (``recompress type=idle|huge``
  with ``max_pages``, ``writeback idle|huge|page_indexes=`` with a refilled
  ``writeback_limit``); maintenance and statistics (``compact``, ``idle all``,
  ``mem_used_max``; ``reset``, ``disksize`` and ``comp_algorithm``, which
  must fail with EBUSY and change nothing — the last two take ``dev_lock``
  exclusively before they look, so they queue against the I/O; ``cat`` of
  every statistics file and of debugfs ``lock_stat``/``block_state``, with
  invariants checked on each snapshot); and discards (write / read back /
  ``BLKDISCARD`` against a model on the last 64 MiB, which fio does not
  use).
* the watchdog: every control-file operation, discard thread I/O and fio
  completion latency (``clat_ns`` max from fio's JSON) must finish within
  5 s.  This is a deadlock / starvation detector with a huge margin (normal
  figures are milliseconds), not a performance bound; a hung fio or thread
  fails the test after its own bounded wait instead of hanging it.
* at the end: the discard region equals its model through the image file;
  ``lock_stat`` shows nobody queued; after ``blkdiscard`` of the whole
  device and ``compact`` the accounting is back to zero (``mm_stat``
  orig/compr/mem_used/same/huge, ``bd_stat`` count); no failed I/O counted,
  no traceback in the daemon's log.  Lock statistics and per-operation counts
  and worst latencies are printed (shown even without ``-s``).

``ZRAMFS_SOAK_SECONDS=600 pytest tests/test_soak.py`` soaks longer.
"""

from __future__ import annotations

import errno
import fcntl
import mmap
import os
import random
import shutil
import struct
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import pytest

from tests import fioutil
from tests.conftest import ZramfsMount, needs_fuse, needs_loop, run
from tests.fioutil import Opts

SOAK_SECONDS = int(os.environ.get("ZRAMFS_SOAK_SECONDS", "90"))
WATCHDOG_S = 5.0

pytestmark = [
    needs_fuse,
    needs_loop,
    pytest.mark.skipif(shutil.which("fio") is None, reason="needs fio"),
    pytest.mark.timeout(SOAK_SECONDS + 420),
]

PAGE = 4096
MiB = 1 << 20
DISKSIZE = 256 * MiB
NJOBS = 4
JOB_SIZE = 48 * MiB
COMPRESS_PERCENT = (50, 75, 0, 25)
DISCARD_OFF = NJOBS * JOB_SIZE
DISCARD_LEN = DISKSIZE - DISCARD_OFF
NPAGES = DISKSIZE // PAGE
WB_BUDGET = 512  # pages per writeback: bounds one operation's work
BLKDISCARD = 0x1277  # _IO(0x12, 119)


# ---------------------------------------------------------------------------
# fio


def fio_jobfile(tmp: Path, loop: str, name: str, opts: Opts) -> Path:
    """The four regions, each with its own compressibility, fresh buffers for every write."""
    glob: Opts = {
        "size": JOB_SIZE,
        "verify_interval": PAGE,  # a header in every page: the final pass checks them all
        "refill_buffers": 1,
        **opts,
    }
    jobs: list[Opts] = [
        {"offset": j * JOB_SIZE, "buffer_compress_percentage": COMPRESS_PERCENT[j]}
        for j in range(NJOBS)
    ]
    return fioutil.jobfile(tmp, name, loop, glob, jobs)


@dataclass
class FioFigures:
    ios: Counter[str] = field(default_factory=Counter)
    nbytes: Counter[str] = field(default_factory=Counter)
    max_clat_ns: int = 0
    worst: str = ""

    def add(self, phase: str, report: Any) -> None:
        for job in report["jobs"]:
            for ddir in ("read", "write", "trim"):
                d = job[ddir]
                self.ios[phase] += d["total_ios"]
                self.nbytes[phase] += d["io_bytes"]
                clat = d["clat_ns"]["max"]
                if clat > self.max_clat_ns:
                    self.max_clat_ns = clat
                    self.worst = f"{phase}/{job['jobname']}/{ddir}"


# ---------------------------------------------------------------------------
# the hammer


@dataclass
class OpStat:
    count: int = 0
    total_s: float = 0.0
    worst_s: float = 0.0
    errors: Counter[str] = field(default_factory=Counter)


class Recorder:
    """Per-operation counts, worst latency and errors; unexpected outcomes are problems."""

    def __init__(self) -> None:
        self.ops: dict[str, OpStat] = {}
        self.problems: list[str] = []
        self.lock = threading.Lock()

    def timed(
        self, name: str, fn: Callable[[], object], expect: Callable[[OSError], bool] | None = None
    ) -> bool:
        """Run ``fn``, record it; True if it succeeded, False if it failed as expected."""
        t0 = time.monotonic()
        err: OSError | None = None
        try:
            fn()
        except OSError as e:
            err = e
        dt = time.monotonic() - t0
        with self.lock:
            st = self.ops.setdefault(name, OpStat())
            st.count += 1
            st.total_s += dt
            st.worst_s = max(st.worst_s, dt)
            if err is not None:
                st.errors[errno.errorcode.get(err.errno or 0, str(err.errno))] += 1
                if expect is None or not expect(err):
                    self.problems.append(f"{name}: unexpected {err!r}")
            if dt > WATCHDOG_S:
                self.problems.append(f"{name}: took {dt:.2f} s (watchdog {WATCHDOG_S} s)")
        return err is None

    def problem(self, text: str) -> None:
        with self.lock:
            self.problems.append(text)


class Hammer:
    def __init__(self, m: ZramfsMount, loop: str, seed: int) -> None:
        self.m = m
        self.loop = loop
        self.seed = seed
        self.rec = Recorder()
        self.stop = threading.Event()
        self.threads = [
            threading.Thread(target=self._guard, args=(f, n), name=n, daemon=True)
            for f, n in (
                (self.postprocess, "postprocess"),
                (self.maintenance, "maintenance"),
                (self.discards, "discards"),
            )
        ]
        self.model = bytearray(DISCARD_LEN)
        self.debugfs = m.path / "sys/kernel/debug/zram/zram0"

    def start(self) -> None:
        for t in self.threads:
            t.start()

    def finish(self, timeout: float) -> None:
        self.stop.set()
        deadline = time.monotonic() + timeout
        for t in self.threads:
            t.join(max(0.0, deadline - time.monotonic()))
            if t.is_alive():
                self.rec.problem(f"thread {t.name} still blocked {timeout:.0f} s after stop")

    def _guard(self, fn: Callable[[], None], name: str) -> None:
        try:
            fn()
        except Exception as e:  # an assertion or a broken helper: report, don't vanish
            self.rec.problem(f"{name} thread died: {e!r}")

    # -- helpers ------------------------------------------------------------

    def write(self, attr: str, value: str) -> None:
        self.m.write_attr(attr, value)

    def read(self, path: Path) -> str:
        with open(path) as f:
            return f.read()

    # -- thread 1: recompress and writeback (serialized by pp_lock) ----------

    def postprocess(self) -> None:
        rng = random.Random(self.seed)
        rec = self.rec

        def budget_gone(e: OSError) -> bool:
            # The kernel's answer when writeback_limit runs out mid-way.
            return e.errno == errno.EIO and self.m.read_attr("writeback_limit") == "0\n"

        def writeback(arg: str) -> Callable[[], None]:
            def op() -> None:
                rec.timed("writeback_limit", lambda: self.write("writeback_limit", str(WB_BUDGET)))
                rec.timed(f"writeback {arg.split('=')[0]}", lambda: self.write("writeback", arg),
                          budget_gone)  # fmt: skip

            return op

        while not self.stop.is_set():
            choice = rng.randrange(5)
            if choice == 0:
                rec.timed("recompress type=idle",
                          lambda: self.write("recompress", "type=idle max_pages=512"))  # fmt: skip
            elif choice == 1:
                rec.timed("recompress type=huge",
                          lambda: self.write("recompress", "type=huge max_pages=256"))  # fmt: skip
            elif choice == 2:
                writeback("idle")()
            elif choice == 3:
                writeback("huge")()
            else:
                lo = rng.randrange(NPAGES - 512)
                writeback(f"page_indexes={lo}-{lo + 511}")()
            self.stop.wait(0.01)

    # -- thread 2: maintenance stores and every statistics file ---------------

    def maintenance(self) -> None:
        rng = random.Random(self.seed + 1)
        rec = self.rec
        sysdir = self.m.sys()
        snapshots: dict[str, str] = {}

        def cat(name: str, path: Path) -> Callable[[], None]:
            def op() -> None:
                snapshots[name] = self.read(path)

            return op

        def busy(attr: str, value: str, check: str, want: str) -> Callable[[], None]:
            """A store the kernel refuses with EBUSY on an initialized device.

            disksize and comp_algorithm take dev_lock exclusively before they
            look, so each waits for the in-flight I/O (and I/O queues behind
            it): the exclusive side of dev_lock under load.
            """

            def op() -> None:
                try:
                    self.write(attr, value)
                except OSError as e:
                    if e.errno != errno.EBUSY:
                        raise
                    if want not in self.m.read_attr(check):
                        rec.problem(f"refused {attr} store changed {check}")
                    return
                rec.problem(f"{attr} store succeeded on an initialized device")

            return op

        stores: list[tuple[str, Callable[[], None]]] = [
            ("compact", lambda: self.write("compact", "1")),
            ("idle all", lambda: self.write("idle", "all")),
            ("mem_used_max", lambda: self.write("mem_used_max", "0")),
            ("reset (EBUSY)", busy("reset", "1", "initstate", "1\n")),
            ("disksize (EBUSY)", busy("disksize", "128M", "disksize", f"{DISKSIZE}\n")),
            ("comp_algorithm (EBUSY)", busy("comp_algorithm", "zstd", "comp_algorithm", "[lz4]")),
        ]
        stats = [
            (name, cat(name, sysdir / name))
            for name in ("mm_stat", "io_stat", "bd_stat", "debug_stat", "stat")
        ]
        stats.append(("lock_stat", cat("lock_stat", self.debugfs / "lock_stat")))
        n = 0
        while not self.stop.is_set():
            n += 1
            for name, fn in stats:
                rec.timed(f"cat {name}", fn)
            self.check_snapshot(snapshots)
            name, fn = rng.choice(stores)
            rec.timed(name, fn)
            if n % 25 == 0:  # 65536 slots listed: heavier, so less often
                rec.timed("cat block_state", cat("block_state", self.debugfs / "block_state"))
            self.stop.wait(0.005)

    def check_snapshot(self, snap: dict[str, str]) -> None:
        """Each file is one consistent snapshot taken on the trio thread."""
        mm = [int(x) for x in snap["mm_stat"].split()]
        orig, compr, used, _limit, used_max, same, _compacted, huge, _since = mm
        pages = orig // PAGE
        bd = [int(x) for x in snap["bd_stat"].split()]
        io = [int(x) for x in snap["io_stat"].split()]
        bad: list[str] = []
        if compr > orig:
            bad.append("compr_data_size > orig_data_size")
        if used_max < used:
            bad.append("mem_used_max < mem_used_total")
        if same + huge > pages or bd[0] > pages:
            bad.append("same/huge/written-back pages exceed stored pages")
        if io[:2] != [0, 0]:
            bad.append("failed reads/writes counted")
        lines = snap["lock_stat"].splitlines()
        if (
            len(lines) != 3
            or not lines[1].startswith("entry")
            or not lines[2].startswith("dev_lock")
        ):
            bad.append("lock_stat format")
        if bad:
            self.rec.problem(f"inconsistent snapshot {bad}: {snap}")

    # -- thread 3: discards (and writes, reads) against a model ---------------

    def discards(self) -> None:
        rng = random.Random(self.seed + 2)
        rec = self.rec
        model = self.model
        fd = os.open(self.loop, os.O_RDWR | os.O_DIRECT)
        buf = mmap.mmap(-1, 2 * MiB)  # page aligned, as O_DIRECT needs
        text = b"".join(b"soak discard region line %06d\n" % i for i in range(PAGE))
        sizes = (PAGE, 16384, 65536, 256 << 10, MiB, 2 * MiB)
        try:
            while not self.stop.is_set():
                off = rng.randrange(DISCARD_LEN // PAGE) * PAGE
                n = min(rng.choice(sizes), DISCARD_LEN - off)
                what = rng.choice("wwdr")
                if what == "w":
                    data = bytearray()
                    for _ in range(n // PAGE):
                        kind = rng.randrange(4)
                        if kind == 0:
                            data += os.urandom(PAGE)  # huge
                        elif kind == 1:
                            k = rng.randrange(len(text) - PAGE)
                            data += text[k : k + PAGE]  # compressible
                        elif kind == 2:
                            data += struct.pack("<Q", rng.getrandbits(64)) * (PAGE // 8)  # same
                        else:
                            data += bytes(PAGE)
                    buf[:n] = data
                    if rec.timed("region write", partial(self._pwrite, fd, buf, off, n)):
                        model[off : off + n] = data
                elif what == "d":
                    arg = struct.pack("QQ", DISCARD_OFF + off, n)
                    if rec.timed("blkdiscard", partial(fcntl.ioctl, fd, BLKDISCARD, arg)):
                        model[off : off + n] = bytes(n)
                else:
                    rec.timed("region read", partial(self._check, fd, buf, off, n))
        finally:
            buf.close()
            os.close(fd)

    @staticmethod
    def _pwrite(fd: int, buf: mmap.mmap, off: int, n: int) -> None:
        with memoryview(buf) as v:
            assert os.pwritev(fd, [v[:n]], DISCARD_OFF + off) == n

    def _check(self, fd: int, buf: mmap.mmap, off: int, n: int) -> None:
        with memoryview(buf) as v:
            assert os.preadv(fd, [v[:n]], DISCARD_OFF + off) == n
        if buf[:n] != self.model[off : off + n]:
            self.rec.problem(f"discard region differs from model at +{off} ({n} bytes)")


# ---------------------------------------------------------------------------


def parse_lock_stat(text: str) -> dict[str, dict[str, int]]:
    lines = text.split("\n")
    header = lines[0].split()[1:]
    out: dict[str, dict[str, int]] = {}
    for line in lines[1:]:
        if line.strip():
            name, *vals = line.split()
            out[name] = dict(zip(header, map(int, vals), strict=True))
    return out


@pytest.fixture
def backing_file(tmp_path: Path) -> Iterator[Path]:
    path = tmp_path / "backing.img"
    with open(path, "wb") as f:
        f.truncate(DISKSIZE)
    yield path
    path.unlink(missing_ok=True)  # up to 256 MiB of disk; the daemon's open file goes at reset


def test_soak_fio_verify_under_control_file_load(
    zmount: ZramfsMount, tmp_path: Path, backing_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    m = zmount
    m.write_attr("backing_dev", str(backing_file))
    m.write_attr("recomp_algorithm", "algo=zstd")
    m.write_attr("writeback_limit_enable", "1")
    m.write_attr("disksize", str(DISKSIZE))
    loop = m.losetup()
    assert Path(f"/sys/block/{Path(loop).name}/loop/dio").read_text() == "1\n"
    debugfs = m.path / "sys/kernel/debug/zram/zram0"
    figures = FioFigures()
    t_start = time.monotonic()

    # 1. Every page of the fio regions gets a verify header (verified fill).
    fill = fioutil.run(
        fio_jobfile(tmp_path, loop, "fill", {"rw": "write", "bs": "128k", "do_verify": 1}), 600
    )
    figures.add("fill", fill)

    # 2. The soak: fio randrw + verify while three threads hammer.
    seed = int(os.environ.get("ZRAMFS_SOAK_SEED", str(random.randrange(1 << 30))))
    hammer = Hammer(m, loop, seed)
    soak_opts: Opts = {
        "rw": "randrw",
        "bssplit": "4k/35:16k/25:64k/20:128k/20",
        "time_based": 1,
        "runtime": SOAK_SECONDS,
        "do_verify": 1,
        "verify_backlog": 32,
    }
    proc, out = fioutil.start(fio_jobfile(tmp_path, loop, "soak", soak_opts))
    hammer.start()
    try:
        soak = fioutil.finish(proc, out, SOAK_SECONDS + 180)
    finally:
        hammer.finish(60)
    figures.add("soak", soak)

    # 3. Read everything back: fio checks every page's header and crc32c ...
    final = fioutil.run(fio_jobfile(tmp_path, loop, "final", {"rw": "read", "bs": "128k"}), 600)
    figures.add("final", final)
    assert figures.nbytes["final"] == NJOBS * JOB_SIZE
    # ... and the discard region equals its model, read through the image.
    fd = os.open(m.image(), os.O_RDONLY)
    try:
        for off in range(0, DISCARD_LEN, 4 * MiB):
            got = os.pread(fd, 4 * MiB, DISCARD_OFF + off)
            assert got == hammer.model[off : off + 4 * MiB], f"discard region differs at +{off}"
    finally:
        os.close(fd)

    locks = parse_lock_stat((debugfs / "lock_stat").read_text())
    io_stat = m.io_stat()
    bd_before = m.read_attr("bd_stat").split()
    mm_before = m.mm_stat()

    # 4. Accounting returns to zero once everything is discarded.
    run("blkdiscard", loop)
    m.write_attr("compact", "1")
    mm = m.mm_stat()
    bd = [int(x) for x in m.read_attr("bd_stat").split()]
    elapsed = time.monotonic() - t_start

    ops = hammer.rec.ops
    width = max(len(k) for k in ops)
    report = [
        "",
        f"soak: {SOAK_SECONDS} s of fio randrw (seed {seed}), {elapsed:.0f} s in all",
        "fio phases: " + ", ".join(
            f"{p} {figures.ios[p]} I/Os {figures.nbytes[p] / MiB:.0f} MiB" for p in figures.ios
        ),
        f"fio verify errors: 0 (verify_fatal); max completion latency "
        f"{figures.max_clat_ns / 1e6:.1f} ms ({figures.worst})",
        f"mm_stat before discard: {mm_before}; bd_stat {bd_before}; io_stat {io_stat}",
        "lock_stat:",
        *(f"  {name:<8} " + " ".join(f"{k}={v}" for k, v in row.items())
          for name, row in locks.items()),
        "control operations (count, worst ms, mean ms, errors):",
        *(f"  {k:<{width}} {v.count:6d} {v.worst_s * 1e3:9.1f} {v.total_s / v.count * 1e3:8.2f}"
          f"  {dict(v.errors) or ''}" for k, v in sorted(ops.items())),
    ]  # fmt: skip
    with capsys.disabled():
        print("\n".join(report))

    assert not hammer.rec.problems, "\n".join(hammer.rec.problems[:20])
    assert figures.max_clat_ns <= WATCHDOG_S * 1e9, (figures.max_clat_ns, figures.worst)
    # The hammer really ran every kind of operation (given the time to).
    expected_ops = (
        "compact", "idle all", "mem_used_max", "reset (EBUSY)", "disksize (EBUSY)",
        "comp_algorithm (EBUSY)", "writeback idle", "writeback huge", "writeback page_indexes",
        "recompress type=idle", "recompress type=huge", "blkdiscard", "region write",
        "region read", "cat lock_stat", "cat mm_stat",
    )  # fmt: skip
    for name in expected_ops if SOAK_SECONDS >= 30 else ():
        assert ops.get(name, OpStat()).count > 0, f"{name} never ran"
    assert io_stat[:2] == [0, 0], io_stat
    for name in ("entry", "dev_lock"):
        assert locks[name]["queued"] == 0, locks
        assert locks[name]["acquired"] > 0, locks
    # orig, compr, mem_used, same, huge: all zero; nothing left on the backing file.
    assert [mm[0], mm[1], mm[2], mm[5], mm[7]] == [0, 0, 0, 0, 0], mm
    assert bd[0] == 0, bd
    assert int(bd_before[2]) > 0, "nothing was ever written back"
    assert "Traceback" not in m.log_text()
