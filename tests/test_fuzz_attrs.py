"""Bad input through the real mount (issue 6): every writable file, fuzzed.

Hypothesis writes random and adversarial buffers to every writable attribute
(and ``hot_remove``), on an uninitialized device (zram0) and on an initialized
one holding data, with a backing device and a secondary algorithm (zram1):
random bytes, empty, exactly 4096 and more (E2BIG), embedded NULs, signs,
overflows (2**32, 2**64), unknown keys and algorithms, quoted values,
reversed or out-of-range ``page_indexes``, ``backing_dev``/``dict=`` paths
that do not exist, are directories, FIFOs, sockets, ``/dev/zero``, symlink
loops, files inside the mount, or larger than the 16 MiB dictionary cap.

For every write:

* it succeeds, or fails with an errno from the kernel's set for that
  attribute (`ALLOWED`; anything over 4096 bytes is exactly E2BIG);
* the daemon stays up and logs no traceback;
* a failed store changes nothing: every readable attribute of the device
  written to (``stat``, ``mm_stat``, ``io_stat``, ``bd_stat`` ... and debugfs
  ``block_state`` flags), the other device's initstate, disksize, mm_stat and
  io_stat, and the device list are byte-identical before and after;
* the initialized device's content never changes, whatever succeeded
  (except ``reset``/``hot_remove``, which end it): writeback, recompress,
  compact, idle move pages around, they never alter them.

Then the image file itself (`test_image_io_*`): reads, writes and
``fallocate`` at odd offsets and lengths, across and past the end, at
offsets near 2**63, with ``O_DIRECT``, on a 0-size device and on a small
one against a bytearray model — correct short reads and errno, never an
exception out of a handler.

One mount serves the whole module (`rig`), so the file runs in well under a
minute; ``ZRAMFS_FUZZ_EXAMPLES`` (default 20) sets the examples per
attribute and state.
"""

from __future__ import annotations

import errno
import hashlib
import os
import shutil
import socket
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.conftest import ZramfsMount, needs_fuse, start_mount, stop_mount
from zramfs.core.attrs import ATTRS
from zramfs.core.device import MAX_DICT_SIZE

pytestmark = needs_fuse

PAGE = 4096
MiB = 1 << 20
EXAMPLES = int(os.environ.get("ZRAMFS_FUZZ_EXAMPLES", "20"))
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

UNINIT, INIT, IODEV = 0, 1, 2  # zram0: never initialized; zram1: holds DATA; zram2: image I/O
INIT_SIZE = MiB
IO_SIZE = 64 * PAGE

WRITABLE = [a.name for a in ATTRS if a.store is not None]
READABLE = [a.name for a in ATTRS if a.show is not None]

# errno open(2) may give for a path (backing_dev passes the open's errno through).
OPEN_ERRNOS = {
    errno.ENOENT, errno.ENOTDIR, errno.EISDIR, errno.EACCES, errno.EPERM, errno.ENAMETOOLONG,
    errno.ELOOP, errno.ENXIO, errno.ENODEV, errno.EROFS, errno.ETXTBSY, errno.EBUSY,
    errno.EOVERFLOW, errno.EFBIG, errno.EINVAL,
}  # fmt: skip
# The kernel's errno set per store (reference §2-§8); E2BIG (> 4096 bytes) for all.
ALLOWED: dict[str, set[int]] = {
    "disksize": {errno.EINVAL, errno.EBUSY, errno.ENOMEM},
    "reset": {errno.EINVAL, errno.ERANGE, errno.EBUSY},
    "compact": {errno.EINVAL},
    "mem_limit": {errno.EINVAL},
    "mem_used_max": {errno.EINVAL},
    "idle": {errno.EINVAL},
    "comp_algorithm": {errno.EINVAL, errno.E2BIG, errno.EBUSY},
    "algorithm_params": {errno.EINVAL, errno.ERANGE},
    "recomp_algorithm": {errno.EINVAL, errno.ERANGE, errno.E2BIG, errno.EBUSY},
    "recompress": {errno.EINVAL, errno.ERANGE},
    "backing_dev": OPEN_ERRNOS | {errno.ENOTBLK, errno.EINVAL, errno.EBUSY},
    "writeback": {errno.EINVAL, errno.ERANGE, errno.ENODEV},
    "writeback_limit": {errno.EINVAL},
    "writeback_limit_enable": {errno.EINVAL},
    "writeback_batch_size": {errno.EINVAL},
    "compressed_writeback": {errno.EINVAL, errno.EBUSY},
    "hot_remove": {errno.EINVAL, errno.ERANGE, errno.ENODEV, errno.EBUSY},
}
assert set(ALLOWED) == set(WRITABLE) | {"hot_remove"}

# Success on these leaves the device as the rig wants it (or only moves
# knobs, which `Rig.normalize` puts back); anything else is rebuilt.
HARMLESS = {"compact", "idle", "mem_used_max", "algorithm_params"}
KNOBS = {"mem_limit", "writeback_limit", "writeback_limit_enable", "writeback_batch_size"}


def _data() -> bytes:
    """zram1's content: huge (random), compressible, same-filled, zero pages."""
    out = bytearray()
    for i in range(INIT_SIZE // PAGE):
        kind = i % 4
        if kind == 0:
            out += hashlib.shake_256(b"r%d" % i).digest(PAGE)
        elif kind == 1:
            out += (b"zramfs fuzz page %d " % i * 300)[:PAGE]
        elif kind == 2:
            out += (b"%08d" % i) * (PAGE // 8)
        else:
            out += bytes(PAGE)
    return bytes(out)


DATA = _data()


# ------------------------------------------------------------------------- the rig


@dataclass
class Rig:
    """One mount with zram0 (uninitialized), zram1 (initialized), zram2 (image I/O)."""

    m: ZramfsMount
    paths: dict[str, str]
    backing: Path
    fds: dict[Path, int] = field(default_factory=dict)
    examples: int = 0
    failures: dict[str, int] = field(default_factory=dict)
    successes: dict[str, int] = field(default_factory=dict)
    rebuilds: int = 0

    # ---- state
    def _w(self, name: str, value: str | bytes, dev: int) -> None:
        self.m.write_attr(name, value, dev)

    def _devices(self) -> list[str]:
        return sorted(os.listdir(self.m.path / "dev"))

    def _ensure_exists(self, dev: int) -> None:
        while f"zram{dev}" not in self._devices():
            (self.m.path / "sys/class/zram-control/hot_add").read_text()

    def normalize(self, dev: int) -> None:
        """Knobs reset does not touch, back to their defaults."""
        self._w("writeback_limit_enable", "0", dev)
        self._w("writeback_limit", "0", dev)
        self._w("writeback_batch_size", "32", dev)
        self._w("mem_limit", "0", dev)

    def rebuild(self, dev: int) -> None:
        self.rebuilds += 1
        self._ensure_exists(dev)
        # A refused open of an image (backing_dev pointing into the mount) is
        # released asynchronously by FUSE: reset may be EBUSY for a moment.
        deadline = time.monotonic() + 10
        while True:
            try:
                self._w("reset", "1", dev)
                break
            except OSError as e:
                if e.errno != errno.EBUSY or time.monotonic() > deadline:
                    raise
                time.sleep(0.01)
        self._w("compressed_writeback", "0", dev)
        self.normalize(dev)
        if dev == INIT:
            self._w("backing_dev", str(self.backing), dev)
            self._w("comp_algorithm", "zstd", dev)
            self._w("recomp_algorithm", "algo=deflate priority=1", dev)
            self._w("disksize", str(INIT_SIZE), dev)
            fd = os.open(self.m.image(dev), os.O_WRONLY)
            try:
                assert os.pwrite(fd, DATA, 0) == len(DATA)
            finally:
                os.close(fd)
        elif dev == IODEV:
            self._w("disksize", str(IO_SIZE), dev)

    def ensure(self) -> None:
        present = self._devices()
        for dev in (UNINIT, INIT, IODEV):
            if f"zram{dev}" not in present:
                self.rebuild(dev)
        if self.read(self.m.sys(INIT) / "initstate") != "1\n":
            self.rebuild(INIT)
        if self.read(self.m.sys(UNINIT) / "initstate") != "0\n":
            self.rebuild(UNINIT)

    # ---- observation
    def _fd(self, path: Path) -> int:
        fd = self.fds.get(path)
        if fd is None:
            fd = self.fds[path] = os.open(path, os.O_RDONLY)
        return fd

    def read(self, path: Path) -> str:
        """The file's content, through a descriptor kept open: one FUSE request
        (a read at offset 0 takes a fresh snapshot).  Reopened once a device was
        removed (old descriptors answer ENODEV) or the file went away."""
        for attempt in (0, 1):
            try:
                fd = self._fd(path)
                data = os.pread(fd, 1 << 16, 0)  # everything here is far smaller
                assert len(data) < 1 << 16, path
                return data.decode()
            except OSError as e:
                old = self.fds.pop(path, None)
                if old is not None:
                    os.close(old)
                if attempt or e.errno not in (errno.ENODEV, errno.ENOENT):
                    raise
        raise AssertionError("unreachable")

    def close(self) -> None:
        for fd in self.fds.values():
            os.close(fd)
        self.fds.clear()

    def snapshot(self, dev: int) -> dict[str, str]:
        """Everything readable of ``dev`` (and block_state), the other device's
        counters and initstate, and the device list."""
        snap: dict[str, str] = {"devices": " ".join(self._devices())}
        for d in (UNINIT, INIT):
            names = READABLE if d == dev else ["initstate", "disksize", "mm_stat", "io_stat"]
            for name in names:
                snap[f"zram{d}/{name}"] = self.read(self.m.sys(d) / name)
            if d != dev:
                continue
            bs = self.m.path / "sys/kernel/debug/zram" / f"zram{dev}" / "block_state"
            try:
                lines = self.read(bs).splitlines()
                # index and flags; ac_time moves whenever a page is read.
                snap[f"zram{dev}/block_state"] = "\n".join(
                    f"{ln.split()[0]} {ln.split()[2]}" for ln in lines
                )
            except OSError as e:
                snap[f"zram{dev}/block_state"] = f"errno {e.errno}"
        return snap

    def content_ok(self) -> None:
        fd = os.open(self.m.image(INIT), os.O_RDONLY)
        try:
            got = b"".join(os.pread(fd, 128 << 10, p) for p in range(0, INIT_SIZE, 128 << 10))
        finally:
            os.close(fd)
        assert got == DATA, "zram1's content changed"

    def alive(self) -> None:
        assert self.m.alive(), self.m.log_text()[-4000:]

    # ---- one store
    def store(self, attr: str, dev: int, buf: bytes) -> None:
        """Write ``buf`` to ``attr`` of ``dev`` and check every guarantee."""
        self.examples += 1
        self.ensure()
        # Mark everything idle so writeback/recompress type=idle have work.
        self._w("idle", "all", INIT)
        before = self.snapshot(dev)
        path = (
            self.m.path / "sys/class/zram-control/hot_remove"
            if attr == "hot_remove"
            else self.m.sys(dev) / attr
        )
        err = 0
        fd = os.open(path, os.O_WRONLY)
        try:
            n = os.write(fd, buf)
            assert n == len(buf), (attr, n, len(buf))
        except OSError as e:
            assert e.errno is not None
            err = e.errno
        finally:
            os.close(fd)
        self.alive()
        if err:
            self.failures[errno.errorcode[err]] = self.failures.get(errno.errorcode[err], 0) + 1
            if len(buf) > PAGE:
                assert err == errno.E2BIG, (attr, len(buf), errno.errorcode[err])
            else:
                assert err in ALLOWED[attr], (attr, dev, buf[:200], errno.errorcode[err])
            after = self.snapshot(dev)
            changed = {k: (before[k], after[k]) for k in before if before[k] != after[k]}
            assert not changed, (attr, dev, buf[:200], errno.errorcode[err], changed)
            self.content_ok()
            return
        assert len(buf) <= PAGE, (attr, len(buf))
        self.successes[attr] = self.successes.get(attr, 0) + 1
        ended = attr in ("reset", "hot_remove")
        if not ended:
            self.content_ok()  # nothing that succeeds may alter the data
        if attr in KNOBS:
            self.normalize(dev)
        elif attr not in HARMLESS:
            for d in (UNINIT, INIT, IODEV) if attr == "hot_remove" else (dev,):
                self.rebuild(d)


@pytest.fixture(scope="module")
def rig() -> Iterator[Rig]:
    base = Path(tempfile.mkdtemp(prefix="zramfs-fuzz-"))
    mnt = base / "mnt"
    mnt.mkdir()
    p = base / "paths"
    p.mkdir()
    (p / "dir").mkdir()
    os.mkfifo(p / "fifo")
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(p / "sock"))
    (p / "empty").write_bytes(b"")
    (p / "tiny").write_bytes(b"x" * 100)
    (p / "good").write_bytes(b"zramfs dictionary words " * 2700)  # 64 KiB
    with open(p / "huge", "wb") as f:
        f.truncate(MAX_DICT_SIZE + MiB)  # over the 16 MiB dictionary cap (sparse)
    os.symlink(p / "loop", p / "loop")
    os.symlink(p / "missing", p / "dangling")
    backing = base / "backing.img"
    with open(backing, "wb") as f:
        f.truncate(16 * MiB)
    cwd = base / "cwd"  # the daemon's cwd: relative paths resolve here (empty)
    cwd.mkdir()
    paths = {
        "missing": str(p / "missing"),
        "dir": str(p / "dir"),
        "dir/": str(p / "dir") + "/",
        "fifo": str(p / "fifo"),
        "sock": str(p / "sock"),
        "zero": "/dev/zero",
        "null": "/dev/null",
        "root": "/",
        "empty": str(p / "empty"),
        "tiny": str(p / "tiny"),
        "good": str(p / "good"),
        "huge": str(p / "huge"),
        "loop": str(p / "loop"),
        "dangling": str(p / "dangling"),
        "notdir": str(p / "good") + "/x",
        "longname": str(p / ("n" * 300)),
        "relative": "relative-name",
        "blank": "\n",  # echo "" > backing_dev
        "in-mount-attr": str(mnt / "sys/block/zram0/disksize"),
        "in-mount-image": str(mnt / "dev/zram1"),
        "backing-in-use": str(backing),
    }
    old = os.getcwd()
    os.chdir(cwd)
    try:
        m = start_mount(mnt, "--num-devices", "3")
    finally:
        os.chdir(old)
    r = Rig(m, paths, backing)
    try:
        for dev in (UNINIT, INIT, IODEV):
            r.rebuild(dev)
        yield r
        assert m.alive(), m.log_text()
        assert "Traceback" not in m.log_text(), m.log_text()
        print(f"\nfuzz: {r.examples} stores, {r.rebuilds} rebuilds; failed by errno "
              f"{r.failures}; succeeded by attribute {r.successes}")  # fmt: skip
    finally:
        r.close()
        sock.close()
        stop_mount(m)
        shutil.rmtree(base, ignore_errors=True)


# ------------------------------------------------------------------------ strategies

NUMS = [0, 1, 7, 255, 256, 257, 4095, 4096, 65535, 65536, 2**31 - 1, 2**31, 2**32 - 1,
        2**32, 2**63 - 1, 2**63, 2**64 - 4096, 2**64 - 1, 2**64, 2**64 + 1, 10**30]  # fmt: skip
ALGOS = ["lz4", "lz4hc", "zstd", "deflate", "brotli", "lzo", "lzo-rle", "842", "LZ4", "zstd ",
         " zstd", '"zstd"', "zst", "zstd\n\n", "z" * 127, "z" * 128, "", "faulty"]  # fmt: skip


@st.composite
def number(draw: st.DrawFn, suffixes: bool = False) -> str:
    v = draw(st.one_of(st.sampled_from(NUMS), st.integers(0, 2**70)))
    sign = draw(st.sampled_from(["", "", "", "+", "-", "--", "+-", " "]))
    base = draw(st.sampled_from(["d", "d", "d", "x", "X", "o", "0x-empty"]))
    if base == "d":
        digits = str(v)
    elif base == "x":
        digits = f"0x{v:x}"
    elif base == "X":
        digits = f"0X{v:X}"
    elif base == "o":
        digits = f"0{v:o}"
    else:
        digits = "0x"
    suffix = ""
    if suffixes:
        suffix = draw(st.sampled_from(["", "", "K", "k", "M", "m", "G", "T", "P", "E", "e", "x"]))
    return sign + digits + suffix


def kv(keys: list[str], values: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    """``key=value`` lists in next_arg() syntax, with quoting and bare keys."""

    @st.composite
    def one(draw: st.DrawFn) -> str:
        key = draw(st.sampled_from(keys))
        form = draw(st.sampled_from(["kv", "kv", "kv", "k", "k=", "qv", "qkv", "=v"]))
        val = draw(values)
        return {
            "kv": f"{key}={val}",
            "k": key,
            "k=": f"{key}=",
            "qv": f'{key}="{val}"',
            "qkv": f'"{key}={val}"',
            "=v": f"={val}",
        }[form]

    @st.composite
    def many(draw: st.DrawFn) -> str:
        parts = draw(st.lists(one(), min_size=1, max_size=4))
        sep = draw(st.sampled_from([" ", "  ", "\n", "\t", " \xa0"]))
        return sep.join(parts)

    return many()


def grammar(attr: str, rig: Rig) -> st.SearchStrategy[str]:
    """Plausible input for ``attr``: what a user (or a confused script) writes."""
    paths = st.sampled_from(sorted(rig.paths.values()))
    algos = st.sampled_from(ALGOS)
    nums = number()
    page_ranges = st.builds(
        lambda a, b, sep: f"{a}{sep}{b}",
        st.one_of(st.integers(0, 300), st.sampled_from(NUMS)),
        st.one_of(st.integers(0, 300), st.sampled_from(NUMS)),
        st.sampled_from(["-", "-", "--", ":", ""]),
    )
    if attr in ("disksize", "mem_limit"):
        return number(suffixes=True)
    if attr == "idle":
        return st.one_of(st.sampled_from(["all", "ALL", "al", "all all", "none"]), nums)
    if attr in ("comp_algorithm",):
        return algos
    if attr == "recomp_algorithm":
        return kv(["algo", "priority", "prio", "level"], st.one_of(algos, nums))
    if attr == "algorithm_params":
        return kv(
            ["priority", "level", "algo", "dict", "deflate.winbits", "winbits", "deep_compat"],
            st.one_of(nums, algos, paths),
        )
    if attr == "recompress":
        return kv(
            ["type", "max_pages", "threshold", "algo", "priority", "mode"],
            st.one_of(st.sampled_from(["idle", "huge", "huge_idle", "incompressible", "all"]),
                      nums, algos),
        )  # fmt: skip
    if attr == "writeback":
        legacy = st.sampled_from(["idle", "huge", "huge_idle", "incompressible", "all", "Idle"])
        return st.one_of(
            legacy,
            kv(
                ["type", "page_index", "page_indexes", "pageindex"],
                st.one_of(st.sampled_from(["idle", "huge", "huge_idle", "incompressible"]),
                          nums, page_ranges),
            ),
        )  # fmt: skip
    if attr == "backing_dev":
        return paths
    if attr == "compressed_writeback":
        words = ["0", "1", "y", "n", "yes", "no", "on", "off", "o", "O", "true", "false",
                 "enable", "disable", "2", "-1", ""]  # fmt: skip
        return st.one_of(st.sampled_from(words), nums)
    if attr == "compact":
        return st.one_of(st.just("1"), nums)
    # reset, mem_used_max, writeback_limit*, writeback_batch_size, hot_remove: kstrto*
    return nums


def decorate(text: str) -> st.SearchStrategy[bytes]:
    """The ways a value arrives: bare, with newlines, quoted, NUL-cut, spaced."""
    b = text.encode("utf-8", "surrogateescape")
    return st.sampled_from(
        [
            b, b, b + b"\n", b + b"\n\n", b"\n" + b, b" " + b, b + b" ", b + b"\t",
            b'"' + b + b'"', b + b"\0garbage", b"\0" + b, b + b"\0", b + b"\r\n", b + b"\xa0",
        ]
    )  # fmt: skip


def buffers(attr: str, rig: Rig) -> st.SearchStrategy[bytes]:
    return st.one_of(
        grammar(attr, rig).flatmap(decorate),
        grammar(attr, rig).flatmap(decorate),
        st.binary(max_size=80),
        st.sampled_from([4096, 4097, 8192, 131073, MiB]).flatmap(
            lambda n: st.sampled_from([b"1" * n, b"0" + b"\n" * (n - 1), b"\0" * n])
        ),
        grammar(attr, rig).map(lambda t: t.encode("utf-8", "surrogateescape").ljust(4096, b" ")),
    )


# ---------------------------------------------------------------------- the tests


@pytest.mark.parametrize("state", ["uninitialized", "initialized"])
@pytest.mark.parametrize("attr", WRITABLE)
@FUZZ
@given(data=st.data())
def test_store_fuzz(rig: Rig, attr: str, state: str, data: st.DataObject) -> None:
    dev = UNINIT if state == "uninitialized" else INIT
    buf = data.draw(buffers(attr, rig), label="buf")
    rig.store(attr, dev, buf)


@FUZZ
@given(data=st.data())
def test_hot_remove_fuzz(rig: Rig, data: st.DataObject) -> None:
    buf = data.draw(buffers("hot_remove", rig), label="buf")
    rig.store("hot_remove", UNINIT, buf)


# The listed cases of issue 6, each with the kernel's exact errno (None: succeeds).
LISTED: list[tuple[str, int, str, int | None]] = [
    ("disksize", UNINIT, "18446744073709551616", errno.EINVAL),  # 2**64 wraps to 0
    ("disksize", UNINIT, "0xffffffffffffffff", errno.ENOMEM),  # PAGE_ALIGN wraps to 0
    ("disksize", UNINIT, "-1", errno.EINVAL),
    ("disksize", INIT, "2M", errno.EBUSY),
    ("mem_limit", UNINIT, "+1M", errno.EINVAL),
    ("reset", INIT, "65536", errno.ERANGE),
    ("reset", INIT, "-1", errno.EINVAL),
    ("mem_used_max", INIT, "00", None),
    ("mem_used_max", INIT, "0 ", errno.EINVAL),
    ("idle", INIT, "4294967296", errno.EINVAL),
    ("idle", INIT, '"all"', errno.EINVAL),
    ("comp_algorithm", UNINIT, "z" * 127 + "\n", errno.E2BIG),
    ("comp_algorithm", UNINIT, '"zstd"', errno.EINVAL),
    ("comp_algorithm", UNINIT, "zstd\0garbage", None),
    ("recomp_algorithm", UNINIT, "algo=zstd priority=4294967296", errno.ERANGE),
    ("recomp_algorithm", UNINIT, 'algo="zstd" priority="2"', None),
    ("algorithm_params", UNINIT, "level=2147483648", errno.ERANGE),
    ("algorithm_params", UNINIT, "algo=nosuch level=1", errno.EINVAL),
    ("algorithm_params", UNINIT, "unknown=1 other=2", None),
    ("recompress", INIT, "max_pages=18446744073709551616", errno.ERANGE),
    ("recompress", INIT, "threshold=4096", errno.EINVAL),
    ("writeback", INIT, "page_indexes=10-5", errno.ERANGE),
    ("writeback", INIT, "page_indexes=0-256", errno.ERANGE),
    ("writeback", INIT, "page_index=256", errno.ERANGE),
    ("writeback", INIT, "page_index=-1", errno.EINVAL),
    ("writeback", INIT, "page_indexes=5", errno.EINVAL),
    ("writeback", INIT, "everything", errno.EINVAL),
    ("writeback_batch_size", UNINIT, "4294967296", errno.EINVAL),
    ("writeback_limit", UNINIT, "18446744073709551616", errno.EINVAL),
    ("compressed_writeback", UNINIT, "maybe", errno.EINVAL),
]
# (attr, path key, errno) for backing_dev (uninitialized) and dict= (any state).
LISTED_PATHS: list[tuple[str, str, int | None]] = [
    ("backing_dev", "missing", errno.ENOENT),
    ("backing_dev", "dir", errno.EISDIR),
    ("backing_dev", "dir/", errno.EISDIR),
    ("backing_dev", "fifo", errno.ENOTBLK),
    ("backing_dev", "sock", errno.ENXIO),
    ("backing_dev", "zero", errno.ENOTBLK),
    ("backing_dev", "null", errno.ENOTBLK),
    ("backing_dev", "empty", errno.EINVAL),
    ("backing_dev", "tiny", errno.EINVAL),
    ("backing_dev", "loop", errno.ELOOP),
    ("backing_dev", "dangling", errno.ENOENT),
    ("backing_dev", "notdir", errno.ENOTDIR),
    ("backing_dev", "longname", errno.ENAMETOOLONG),
    ("backing_dev", "relative", errno.ENOENT),
    ("backing_dev", "blank", errno.ENOENT),
    ("backing_dev", "in-mount-attr", errno.EINVAL),
    ("backing_dev", "in-mount-image", errno.EINVAL),
    ("backing_dev", "backing-in-use", errno.EBUSY),  # zram1 holds it (flock)
    ("dict", "missing", errno.EINVAL),
    ("dict", "dir", errno.EINVAL),
    ("dict", "fifo", errno.EINVAL),
    ("dict", "sock", errno.EINVAL),
    ("dict", "zero", errno.EINVAL),
    ("dict", "huge", errno.EINVAL),  # over MAX_DICT_SIZE (16 MiB)
    ("dict", "loop", errno.EINVAL),
    ("dict", "good", None),
]


def _expect(rig: Rig, attr: str, dev: int, buf: bytes, want: int | None) -> None:
    before_failures = dict(rig.failures)
    rig.store(attr, dev, buf)  # checks the errno set and "failed store changes nothing"
    got = {k: v - before_failures.get(k, 0) for k, v in rig.failures.items()}
    got = {k: v for k, v in got.items() if v}
    expected = {} if want is None else {errno.errorcode[want]: 1}
    assert got == expected, (attr, buf[:80], got, expected)


@pytest.mark.parametrize(("attr", "dev", "value", "want"), LISTED,
                         ids=[f"{a}-{v[:24]!r}" for a, _, v, _ in LISTED])  # fmt: skip
def test_listed_inputs(rig: Rig, attr: str, dev: int, value: str, want: int | None) -> None:
    _expect(rig, attr, dev, value.encode(), want)


@pytest.mark.parametrize(("attr", "key", "want"), LISTED_PATHS,
                         ids=[f"{a}-{k}" for a, k, _ in LISTED_PATHS])  # fmt: skip
def test_listed_paths(rig: Rig, attr: str, key: str, want: int | None) -> None:
    path = rig.paths[key]
    if attr == "backing_dev":
        _expect(rig, "backing_dev", UNINIT, path.encode(), want)
        _expect(rig, "backing_dev", INIT, path.encode(), errno.EBUSY)
    else:
        for dev in (UNINIT, INIT):
            _expect(rig, "algorithm_params", dev, f"dict={path}".encode(), want)


def test_oversized_buffers_are_e2big(rig: Rig) -> None:
    for attr in [*WRITABLE, "hot_remove"]:
        for n in (4097, MiB):
            _expect(rig, attr, INIT, b"1" * n, errno.E2BIG)


# ---------------------------------------------------------------------- image I/O

EDGE_OFFSETS = [2**31, 2**32, 2**40, 2**62, 2**63 - 4096, 2**63 - 1]
FALLOC_KEEP, FALLOC_PUNCH, FALLOC_ZERO = 0x01, 0x02, 0x10
LOFF_MAX = 2**63 - 1


def _fallocate() -> Callable[[int, int, int, int], int]:
    import ctypes
    import ctypes.util

    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    libc.fallocate.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int64, ctypes.c_int64]

    def fallocate(fd: int, mode: int, off: int, length: int) -> int:
        """0, or the errno."""
        if libc.fallocate(fd, mode, off, length) != 0:
            return ctypes.get_errno()
        return 0

    return fallocate


fallocate = _fallocate()


@dataclass(frozen=True)
class Op:
    kind: str
    off: int
    length: int
    mode: int = 0
    direct: bool = False
    seed: int = 0


def ops(size: int) -> st.SearchStrategy[Op]:
    offsets = st.one_of(
        st.integers(0, size + 2 * PAGE),
        st.sampled_from(
            sorted({max(0, o) for o in (0, 1, PAGE - 1, PAGE, size - 1, size, size + 1)})
            + EDGE_OFFSETS
        ),
    )
    lengths = st.one_of(
        st.integers(0, 3 * PAGE + 1),
        st.sampled_from([1, PAGE - 1, PAGE, PAGE + 1, (128 << 10) + 1, MiB + 3]),
    )
    modes = st.sampled_from([
        FALLOC_KEEP | FALLOC_PUNCH, FALLOC_ZERO, FALLOC_ZERO | FALLOC_KEEP, 0, FALLOC_KEEP,
        FALLOC_PUNCH, 0x08, 0x20, 0x40, 0x04, 0xFF,
    ])  # fmt: skip
    return st.builds(
        Op, st.sampled_from(["read", "write", "write", "fallocate", "readv", "writev"]),
        offsets, lengths, modes, st.booleans(), st.integers(0, 2**32),
    )  # fmt: skip


def apply(fd: int, op: Op, model: bytearray) -> None:
    """Run ``op`` on the image and on ``model`` (a block device of len(model) bytes)."""
    size = len(model)
    end = min(op.off + op.length, size)
    overflow = op.off + op.length > LOFF_MAX
    if op.kind in ("read", "readv"):
        try:
            if op.kind == "read":
                got = os.pread(fd, op.length, op.off)
            else:
                bufs = [bytearray(op.length // 2), bytearray(op.length - op.length // 2)]
                n = os.preadv(fd, bufs, op.off)
                got = bytes(b"".join(bufs))[:n]
        except OSError as e:
            assert overflow and e.errno in (errno.EINVAL, errno.EOVERFLOW), (op, e)
            return
        want = bytes(model[op.off : end]) if op.off < size else b""
        assert got == want, (op, len(got), len(want))
        return
    if op.kind in ("write", "writev"):
        data = hashlib.shake_256(b"%d" % op.seed).digest(op.length) if op.length else b""
        try:
            if op.kind == "write":
                n = os.pwrite(fd, data, op.off)
            else:
                n = os.pwritev(fd, [data[: len(data) // 3], data[len(data) // 3 :]], op.off)
        except OSError as e:
            if overflow or op.off >= 2**62:
                assert e.errno in (errno.EINVAL, errno.EFBIG, errno.ENOSPC), (op, e)
            else:
                assert op.off >= size and e.errno == errno.ENOSPC, (op, e)
            return
        if not data:
            assert n == 0
            return
        assert op.off < size and n == end - op.off, (op, n)
        model[op.off : end] = data[:n]
        return
    # fallocate
    err = fallocate(fd, op.mode, op.off, op.length)
    if op.length <= 0:
        assert err == errno.EINVAL, (op, err)
        return
    if err:
        # vfs_fallocate rejects bad combinations/ranges; zramfs: what would change the size.
        assert err in (errno.EINVAL, errno.EOPNOTSUPP, errno.EFBIG), (op, err)
        if op.mode in (FALLOC_KEEP | FALLOC_PUNCH, FALLOC_ZERO | FALLOC_KEEP, FALLOC_KEEP):
            assert overflow and err == errno.EFBIG, (op, err)  # only s_maxbytes stops these
        return
    if op.mode in (FALLOC_KEEP | FALLOC_PUNCH, FALLOC_ZERO, FALLOC_ZERO | FALLOC_KEEP):
        assert op.mode & FALLOC_KEEP or op.off + op.length <= size, op
        if op.off < size:
            model[op.off : end] = bytes(end - op.off)
    else:
        assert op.mode in (0, FALLOC_KEEP), op
        assert op.mode & FALLOC_KEEP or op.off + op.length <= size, op


def _check_image(rig: Rig, dev: int, model: bytearray) -> None:
    fd = os.open(rig.m.image(dev), os.O_RDONLY)
    try:
        got = b"".join(os.pread(fd, 128 << 10, p) for p in range(0, len(model), 128 << 10))
        assert os.pread(fd, 10, len(model)) == b""
    finally:
        os.close(fd)
    assert got == model
    assert os.stat(rig.m.image(dev)).st_size == len(model)


@FUZZ
@given(steps=st.lists(ops(IO_SIZE), min_size=1, max_size=25))
def test_image_io_odd_offsets(rig: Rig, steps: list[Op]) -> None:
    """A 256 KiB device against a bytearray model, any offset, length and mode."""
    rig.ensure()
    rig.m.write_attr("reset", "1", IODEV)
    rig.m.write_attr("disksize", str(IO_SIZE), IODEV)
    model = bytearray(IO_SIZE)
    fds = {
        False: os.open(rig.m.image(IODEV), os.O_RDWR),
        True: os.open(rig.m.image(IODEV), os.O_RDWR | os.O_DIRECT),
    }
    try:
        for op in steps:
            apply(fds[op.direct], op, model)
    finally:
        for fd in fds.values():
            os.close(fd)
    rig.alive()
    _check_image(rig, IODEV, model)
    io = rig.m.io_stat(IODEV)
    assert io[:2] == [0, 0], io  # nothing here is a failed read/write of the device


@FUZZ
@given(steps=st.lists(ops(0), min_size=1, max_size=15))
def test_image_io_zero_size_device(rig: Rig, steps: list[Op]) -> None:
    """The uninitialized device: size 0, reads are empty, writes ENOSPC, discards
    no-ops; nothing gets allocated and nothing counts as a failed I/O."""
    rig.ensure()
    model = bytearray()
    fd = os.open(rig.m.image(UNINIT), os.O_RDWR)
    try:
        for op in steps:
            apply(fd, op, model)
    finally:
        os.close(fd)
    rig.alive()
    assert rig.m.read_attr("initstate", UNINIT) == "0\n"
    assert os.stat(rig.m.image(UNINIT)).st_size == 0
    assert rig.m.mm_stat(UNINIT) == [0] * 9
    assert rig.m.io_stat(UNINIT) == [0, 0, 0, 0]


def test_image_cannot_be_mapped_shared(rig: Rig) -> None:
    """direct_io images: MAP_SHARED is refused (ENODEV), not a crash; map the loop device."""
    import mmap

    rig.ensure()
    fd = os.open(rig.m.image(IODEV), os.O_RDWR)
    try:
        with pytest.raises(OSError) as ei:
            mmap.mmap(fd, PAGE, mmap.MAP_SHARED)
        assert ei.value.errno == errno.ENODEV
    finally:
        os.close(fd)
    rig.alive()
