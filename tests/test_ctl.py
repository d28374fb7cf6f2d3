"""``zramfs ctl`` against util-linux ``zramctl``, for real.

The kernel's zram0 and a zramfs zram0 get the same configuration and the same
bytes (O_DIRECT writes), then ``zramctl ... /dev/zram0`` and ``zramfs ctl ...
/dev/zram0`` must print the same thing:

* incompressible data (random pages, zero pages, same-filled pages): every
  number in mm_stat is equal on both sides, so every output must be equal
  **byte for byte** — default columns, ``-b``, ``--raw``, ``-n``, all columns
  by ``-o`` and ``--output-all``, narrow column sets that show libsmartcols'
  width rules;
* text: with the C accelerator our lz4 blocks are the kernel's, so again
  every output is equal byte for byte; without it python-lz4's blocks differ
  slightly, and NAME, ALGORITHM, DISKSIZE and DATA must be equal, COMPR and
  TOTAL within 5 %, and the layout (column edges) the same.

The installed zramctl may predate COMP-RATIO (util-linux < 2.40): then its
``--output-all`` is compared with ours minus that column, and the column's
value is checked against DATA/TOTAL.  Also: option and size-parsing errors
(message and exit code, with ``zramctl`` → ``zramfs ctl``), the ``-s`` size
parser against zramctl's (the kernel's disksize afterwards), the create flow,
reset (EBUSY while open, then hot_remove), MOUNTPOINT for ext4 on a loop
device and ``[SWAP]``, ``--json``, root selection, ``--help``.
"""

from __future__ import annotations

import contextlib
import io
import json
import mmap
import os
import random
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

from tests.conftest import ZramfsMount, needs_fuse, needs_loop, run
from zramfs import ctl
from zramfs.backends import lz4 as lz4_backend
from zramfs.fs import mounts

pytestmark = [needs_fuse, needs_loop, pytest.mark.timeout(60)]

MiB = 1 << 20
PAGE = 4096
KDEV = "/dev/zram0"
KSYS = Path("/sys/block/zram0")
ZRAMCTL = shutil.which("zramctl")
needs_zramctl = pytest.mark.skipif(ZRAMCTL is None, reason="util-linux zramctl not installed")

ALL12 = (  # zramctl's --output-all before COMP-RATIO
    "NAME,DISKSIZE,DATA,COMPR,ALGORITHM,STREAMS,ZERO-PAGES,TOTAL,MEM-LIMIT,MEM-USED,MIGRATED,"
    "MOUNTPOINT"
)


# --------------------------------------------------------------------------- helpers


def zctl(root: Path | str | None, *args: str) -> tuple[int, str, str]:
    """``zramfs ctl [--root ROOT] args`` in this process: (exit code, stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    argv = (["--root", str(root)] if root is not None else []) + list(args)
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = ctl.main(argv)
    return rc, out.getvalue(), err.getvalue()


def zramctl(*args: str) -> tuple[int, str, str]:
    assert ZRAMCTL is not None
    # argv[0] "zramctl": glibc's getopt messages use argv[0], util-linux's the short name.
    res = subprocess.run(
        ["zramctl", *args], executable=ZRAMCTL, capture_output=True, text=True, check=False
    )
    return res.returncode, res.stdout, res.stderr


def as_zramctl(stderr: str) -> str:
    """Our messages as zramctl's: the program name differs, nothing else may."""
    return stderr.replace("zramfs ctl", "zramctl")


def odirect_write(path: str, data: bytes, offset: int = 0) -> None:
    """Write ``data`` at ``offset`` with O_DIRECT in 1 MiB requests."""
    buf = mmap.mmap(-1, MiB)
    fd = os.open(path, os.O_WRONLY | os.O_DIRECT)
    try:
        for pos in range(0, len(data), MiB):
            chunk = data[pos : pos + MiB]
            buf.seek(0)
            buf.write(chunk)
            assert os.pwrite(fd, memoryview(buf)[: len(chunk)], offset + pos) == len(chunk)
    finally:
        os.close(fd)
        buf.close()


def incompressible_data() -> list[tuple[int, bytes]]:
    """(offset, bytes): random pages (huge), zero pages, same-filled pages."""
    rnd = random.Random(1)
    return [
        (0, rnd.randbytes(2100 * PAGE)),
        (2200 * PAGE, bytes(300 * PAGE)),
        (2600 * PAGE, b"\xab" * (50 * PAGE)),
    ]


def text_data(size: int = 8 * MiB) -> bytes:
    rnd = random.Random(7)
    letters = "abcdefghijklmnopqrstuvwxyz"
    words = ["".join(rnd.choice(letters) for _ in range(rnd.randint(2, 9))) for _ in range(40)]
    out = bytearray()
    while len(out) < size:
        out += (" ".join(rnd.choice(words) for _ in range(12)) + "\n").encode()
    return bytes(out[:size])


def setup_both(kernel: Path, m: ZramfsMount, writes: Sequence[tuple[int, bytes]]) -> None:
    """lz4, 64M, mem_limit 100M on both zram0; the same bytes at the same offsets."""
    (kernel / "comp_algorithm").write_text("lz4")
    (kernel / "mem_limit").write_text("100M")
    (kernel / "disksize").write_text("64M")
    m.write_attr("comp_algorithm", "lz4")
    m.write_attr("mem_limit", "100M")
    m.write_attr("disksize", "64M")
    for off, data in writes:
        odirect_write(KDEV, data, off)
        odirect_write(str(m.image()), data, off)


def kernel_listing_is_zram0_only() -> bool:
    """zramctl lists every initialized kernel device; compare listings only if zram0 is alone."""
    for d in Path("/sys/block").glob("zram*"):
        if d.name != "zram0" and (d / "disksize").read_text().strip() != "0":
            return False
    return True


@pytest.fixture
def kzram(kernel_zram: Path) -> Iterator[Path]:
    """The kernel's zram0 with lz4, and zramctl to look at it."""
    if ZRAMCTL is None:
        pytest.skip("util-linux zramctl not installed")
    algs = (kernel_zram / "comp_algorithm").read_text().replace("[", " ").replace("]", " ")
    if "lz4" not in algs.split():
        pytest.skip(f"kernel zram has no lz4: {algs.strip()}")
    yield kernel_zram


def zramctl_has_comp_ratio() -> bool:
    return "COMP-RATIO" in zramctl("--help")[1]


def drop_column(out: str, name: str, raw: bool) -> str:
    """``out`` without column ``name`` (which must not be the last one)."""
    lines = out.splitlines(keepends=True)
    if raw:
        idx = lines[0].split(" ").index(name)
        return "".join(
            " ".join(f for i, f in enumerate(line.rstrip("\n").split(" ")) if i != idx) + "\n"
            for line in lines
        )
    start = lines[0].index(name)
    # The column is right-aligned: its cells end where the header ends.
    end = start + len(name) + 1
    return "".join(line[:start] + line[end:] for line in lines)


# --------------------------------------------------------------------------- byte-exact status


STATUS_OPTIONS: list[list[str]] = [
    [],
    ["-b"],
    ["--raw"],
    ["-n"],
    ["-n", "--raw", "-b"],
    ["-o", ALL12],
    ["-o", ALL12, "-b"],
    ["-o", ALL12, "--raw"],
    ["-o", ALL12.lower(), "-n"],
    ["-o", "NAME,DATA"],
    ["-o", "DATA,NAME"],
    ["-o", "DISKSIZE,NAME"],
    ["-o", "NAME,STREAMS"],
    ["-o", "NAME,ZERO-PAGES,MEM-LIMIT,MEM-USED,MIGRATED"],
    ["-o", "NAME,ZERO-PAGES,MEM-LIMIT,MEM-USED,MIGRATED", "-b"],
]


@needs_zramctl
def test_status_byte_exact_with_zramctl(kzram: Path, zmount: ZramfsMount) -> None:
    setup_both(kzram, zmount, incompressible_data())
    assert (kzram / "mm_stat").read_text() == zmount.read_attr("mm_stat")

    for opts in STATUS_OPTIONS:
        k = zramctl(*opts, KDEV)
        z = zctl(zmount.path, *opts, KDEV)
        assert k[0] == 0, k
        assert z == (0, k[1], ""), (opts, k[1], z)
        # zramN and MNT/dev/zramN name the same device; NAME stays /dev/zramN.
        assert zctl(zmount.path, *opts, "zram0") == z
        assert zctl(zmount.path, *opts, str(zmount.image())) == z

    if kernel_listing_is_zram0_only():
        for opts in ([], ["-b"], ["--raw"], ["-n"]):
            k = zramctl(*opts)
            assert zctl(zmount.path, *opts) == (0, k[1], ""), opts

    # --output-all: all of zramctl's columns; COMP-RATIO (util-linux >= 2.40) too.
    for opts in ([], ["-b"], ["--raw"]):
        k = zramctl("--output-all", *opts, KDEV)
        rc, out, err = zctl(zmount.path, "--output-all", *opts, KDEV)
        assert (rc, err) == (0, "")
        header = out.splitlines()[0].split()
        assert header == [c.name for c in ctl.COLUMNS]
        if zramctl_has_comp_ratio():
            assert out == k[1], opts
        else:
            assert drop_column(out, "COMP-RATIO", raw="--raw" in opts) == k[1], (opts, out)
        mm = [int(v) for v in zmount.mm_stat()]
        first, row = out.splitlines()[:2]
        if "--raw" in opts:
            ratio = row.split(" ")[header.index("COMP-RATIO")]
        else:  # right-aligned: the cell ends where its header ends
            ratio = row[: first.index("COMP-RATIO") + len("COMP-RATIO")].split()[-1]
        assert ratio == f"{mm[0] / mm[2]:.4f}"


@needs_zramctl
def test_status_text_data_close_to_zramctl(kzram: Path, zmount: ZramfsMount) -> None:
    """Text: equal with the accelerator (the kernel's lz4 blocks); without it
    the codecs differ a little, and everything else must not."""
    setup_both(kzram, zmount, [(0, text_data())])
    right = {c.name for c in ctl.COLUMNS if c.right}

    for opts in ([], ["-b"], ["--raw"], ["-o", ALL12], ["-o", ALL12, "-b"]):
        k = zramctl(*opts, KDEV)[1].splitlines()
        z = zctl(zmount.path, *opts, KDEV)[1].splitlines()
        if lz4_backend.ACCELERATED:
            assert z == k, opts
        assert len(k) == len(z) == 2, (opts, k, z)
        assert k[0] == z[0], opts  # headers identical
        names = k[0].split()
        raw = "--raw" in opts
        kv, zv = cells(k[0], k[1], raw, right), cells(z[0], z[1], raw, right)
        assert list(kv) == list(zv) == names
        for col in ("NAME", "ALGORITHM", "DISKSIZE", "DATA", "ZERO-PAGES", "MEM-LIMIT"):
            assert kv.get(col) == zv.get(col), (opts, col)
        for col in ("COMPR", "TOTAL", "MEM-USED"):
            if col not in kv:
                continue
            a, b = to_bytes(kv[col]), to_bytes(zv[col])
            assert abs(a - b) <= 0.05 * a, (opts, col, kv[col], zv[col])
            if "-b" not in opts:
                assert re.fullmatch(r"\d+(\.\d)?[BKMGTPE]", zv[col]), zv[col]
        if not raw:
            # Identical headers mean identical column widths; the rows line up the same.
            assert len(k[1]) == len(z[1]), (opts, k[1], z[1])


def cells(header: str, line: str, raw: bool, right: set[str]) -> dict[str, str]:
    """Column name → cell text of one output line.

    Human format: a right-aligned cell ends where its header ends, a
    left-aligned one starts where its header starts (libsmartcols aligns the
    header like the column); empty cells are "".
    """
    names = header.split(" ") if raw else header.split()
    if raw:
        return dict(zip(names, line.split(" "), strict=True))
    out: dict[str, str] = {}
    pos = 0
    for name in names:
        start = header.index(name, pos)
        end = pos = start + len(name)
        if name in right:
            before = line[:end].split(" ")[-1] if end <= len(line) else ""
            out[name] = before
        else:
            out[name] = line[start:].split(" ")[0] if name != names[-1] else line[start:]
    return out


def to_bytes(human: str) -> float:
    if human.isdigit():
        return float(human)
    return float(human[:-1]) * float(1 << (10 * "BKMGTPE".index(human[-1])))


# --------------------------------------------------------------------------- errors, sizes


ERROR_ARGS: list[list[str]] = [
    ["--out"],
    ["-x"],
    ["-bx"],
    ["-s"],
    ["--size"],
    ["--bytes=1"],
    ["--nosuch=3"],
    ["-s", "abc", KDEV],
    ["-s", "-5", KDEV],
    ["-s", "1.5Q", KDEV],
    ["-s", "1.5", KDEV],
    ["-s", "1B", KDEV],
    ["-s", "99999999999999999999999", KDEV],
    ["-t", "abc", "-s", "1M", KDEV],
    ["-t", "-1", "-s", "1M", KDEV],
    ["-t", "99999999999999999999999", "-s", "1M", KDEV],
    ["-f", "-o", "NAME"],
    ["-o", "NAME", "-r", KDEV],
    ["-r", "-s", "1M", KDEV],
    ["-f", KDEV],
    [KDEV, "/dev/zram1"],
    ["/dev/zram77"],
    ["zram77"],
    ["foo"],
    ["-r"],
    ["-s", "1M"],
    ["-o", "NAME,FOO,DATA"],
    ["-o", "NAME,,DATA"],
    ["-o", ""],
    ["-r", "zram77", "/dev/zram78"],
    ["-s", "1M", "/dev/zram77"],
]


@needs_zramctl
def test_errors_match_zramctl(kzram: Path, zmount: ZramfsMount) -> None:
    for args in ERROR_ARGS:
        k = zramctl(*args)
        z = zctl(zmount.path, *args)
        assert k[0] == 1, (args, k)
        assert (z[0], z[1], as_zramctl(z[2])) == k, args
    # Newer than the installed zramctl: the message names --algorithm-params too.
    rc, _, err = zctl(zmount.path, "-a", "lz4")
    assert (rc, err) == (1, "zramfs ctl: options --algorithm, --algorithm-params, and --streams "
                         "must be combined with --size\n")  # fmt: skip
    rc, _, err = zctl(zmount.path, "--json", "--raw")
    assert (rc, err) == (1, "zramfs ctl: mutually exclusive arguments: --json --raw\n")


SIZES = ["64M", "64MiB", "64MB", "65536K", "65536k", "70mb", "0x4000000", "0100000000",
         "67108864", "1.05G", "12.34M", "0.5G", "1.005G", "  32M", "+32M", "32.0M"]  # fmt: skip


@needs_zramctl
def test_size_parsing_matches_zramctl(kzram: Path, zmount: ZramfsMount) -> None:
    """``-s SIZE DEV``: the disksize the kernel ends up with is the same on both sides."""
    for size in SIZES:
        k = zramctl("-s", size, KDEV)
        z = zctl(zmount.path, "-s", size, KDEV)
        assert k == (0, "", ""), (size, k)
        assert z == (0, "", ""), (size, z)
        kd, zd = (kzram / "disksize").read_text(), zmount.read_attr("disksize")
        assert kd == zd, (size, kd, zd)


def test_size_units(tmp_path: Path) -> None:
    cases = {
        "1": 1, "1K": 1024, "1KiB": 1024, "1KB": 1000, "1kb": 1000, "1M": MiB, "1MB": 10**6,
        "1G": 1 << 30, "1GB": 10**9, "1T": 1 << 40, "1.5K": 1536, "0.5M": MiB // 2,
        "0x10": 16, "010": 8, "1.0M": MiB,
        # util-linux's integer arithmetic, quirks included: 1.25G is 1 byte short,
        # and "1.10K" is 2048 (frac 10 taken as tenths).
        "1.25G": (1 << 30) + (1 << 28) - 1, "2.05K": 2099, "1.10K": 2048,
    }  # fmt: skip
    for text, want in cases.items():
        assert ctl.parse_size(text) == (want, 0), text
    for bad in ("", "abc", "-1", "1B", "1.5", "1.", "1Q", "1KiBx"):
        assert ctl.parse_size(bad)[1] < 0, bad
    assert ctl.parse_size("1Y")[1] == -34  # ERANGE

    # util-linux fallocate(1) parses -l with the same strtosize(): exact values.
    if shutil.which("fallocate") is None:
        return
    f = tmp_path / "f"
    for text in ("1.25K", "2.05K", "1.10K", "3.14159K", "1.005M", "12.34M", "1.5KB", "010K",
                 "0x10K", "0.5M", "7kib", "2.5kB"):  # fmt: skip
        f.unlink(missing_ok=True)
        run("fallocate", "-l", text, str(f))
        assert ctl.parse_size(text) == (f.stat().st_size, 0), text


def test_size_to_human_string() -> None:
    cases = {
        0: "0B", 1: "1B", 1023: "1023B", 1024: "1K", 1536: "1.5K", 1126: "1.1K",
        4835689: "4.6M", 4964352: "4.7M", 8 * MiB: "8M", 9617408: "9.2M",
        64 * MiB: "64M", 1 << 30: "1G", 1048575: "1024K", (1 << 60) * 3: "3E",
    }  # fmt: skip
    for num, want in cases.items():
        assert ctl.size_to_human_string(num) == want, num


# --------------------------------------------------------------------------- create, find, reset


def test_find_create_reset_flow(zmount: ZramfsMount) -> None:
    m = zmount
    root = m.path
    # zram0 is free: -f prints it and changes nothing.
    assert zctl(root, "-f") == (0, "/dev/zram0\n", "")
    assert zctl(root, "--find", "--size", "32MiB", "-a", "zstd", "-p", "level=3", "-t", "4") == (
        0, "/dev/zram0\n", "")  # fmt: skip
    assert m.read_attr("disksize") == f"{32 * MiB}\n"
    assert "[zstd]" in m.read_attr("comp_algorithm")
    # zram0 is in use: -f hot_adds zram1.
    assert zctl(root, "-f") == (0, "/dev/zram1\n", "")
    assert (root / "dev" / "zram1").exists()
    assert zctl(root, "-s", "16M", "--algorithm=lz4hc", "zram1") == (0, "", "")
    assert m.read_attr("disksize", 1) == f"{16 * MiB}\n"
    assert "[lz4hc]" in m.read_attr("comp_algorithm", 1)

    fail = {
        ("-s", "1M", "-a", "nosuch", "zram1"):
            "/dev/zram1: failed to set algorithm: Invalid argument",
        ("-s", "1M", "-p", "level=abc", "zram1"):
            "/dev/zram1: failed to set algorithm params: Invalid argument",
        ("-s", "0", "zram1"): "/dev/zram1: failed to set disksize (0 bytes): Invalid argument",
    }  # fmt: skip
    for args, msg in fail.items():
        assert zctl(root, *args) == (1, "", f"zramfs ctl: {msg}\n"), args

    rc, out, _ = zctl(root)
    assert rc == 0 and [ln.split()[0] for ln in out.splitlines()[1:]] == ["/dev/zram0"]

    # Reset while a loop device holds the image: EBUSY, nothing removed.
    loop = m.losetup()
    assert zctl(root, "-r", "/dev/zram0") == (
        1, "", "zramfs ctl: /dev/zram0: failed to reset: Device or resource busy\n")  # fmt: skip
    assert m.read_attr("disksize") == f"{32 * MiB}\n"
    m.detach(loop)

    # Reset: the device is reset and hot_removed; a missing one is reported, the rest done.
    assert zctl(root, "-r", "zram0", "zram9") == (
        1, "", "zramfs ctl: zram9: failed to reset: No such device\n")  # fmt: skip
    assert not (root / "dev" / "zram0").exists()
    assert sorted(os.listdir(root / "dev")) == ["zram1"]
    # zram1 was reset by each failed create: nothing is initialized, nothing is listed.
    assert zctl(root) == (0, "", "")
    # -f again: zram0 is missing, so (like zramctl) hot_add, which takes the lowest free id.
    assert zctl(root, "-f") == (0, "/dev/zram0\n", "")
    assert sorted(os.listdir(root / "dev")) == ["zram0", "zram1"]
    assert zctl(root, "-r", "/dev/zram1", "zram0") == (0, "", "")
    assert os.listdir(root / "dev") == []
    assert zctl(root, "-f", "-s", "1M") == (0, "/dev/zram0\n", "")
    assert m.read_attr("disksize") == f"{MiB}\n"


@needs_zramctl
def test_reset_busy_message_matches_zramctl(kzram: Path, zmount: ZramfsMount) -> None:
    (kzram / "disksize").write_text("16M")
    zmount.write_attr("disksize", "16M")
    loop = zmount.losetup()
    fd = os.open(KDEV, os.O_RDONLY)  # an opener: reset (and hot_remove) fail with EBUSY
    try:
        k = zramctl("-r", KDEV)
    finally:
        os.close(fd)
    z = zctl(zmount.path, "-r", KDEV)
    assert k == (1, "", "zramctl: /dev/zram0: failed to reset: Device or resource busy\n")
    assert (z[0], z[1], as_zramctl(z[2])) == k
    assert KSYS.exists() and zmount.image().exists()
    zmount.detach(loop)


# --------------------------------------------------------------------------- MOUNTPOINT


@needs_zramctl
def test_mountpoint_ext4_and_swap(kzram: Path, zmount: ZramfsMount, tmp_path: Path) -> None:
    m = zmount
    (kzram / "disksize").write_text("64M")
    m.write_attr("disksize", "64M")
    loop = m.losetup()
    kdir, zdir = tmp_path / "k", tmp_path / "z"  # same length: the tables line up
    kdir.mkdir()
    run("mkfs.ext4", "-q", KDEV)
    run("mkfs.ext4", "-q", loop)
    kmounted = kswap = False
    try:
        run("mount", KDEV, str(kdir))
        kmounted = True
        m.mount_fs(loop, zdir)
        for opts in (["-o", "NAME,MOUNTPOINT"], ["--raw", "-o", "MOUNTPOINT,NAME"]):
            k = zramctl(*opts, KDEV)
            assert k[1].count(str(kdir)) == 1, k
            assert zctl(m.path, *opts, KDEV) == (0, k[1].replace(str(kdir), str(zdir)), "")
        rc, out, _ = zctl(m.path)
        assert rc == 0 and out.splitlines()[1].endswith(f" {zdir}"), out
        assert zctl(m.path, "--json", "-o", "MOUNTPOINT")[1].count(f'"mountpoint": "{zdir}"') == 1

        run("umount", str(kdir))
        kmounted = False
        m.umount_fs(zdir)
        for opts in (["-o", "NAME,MOUNTPOINT"], ["-o", "MOUNTPOINT,NAME", "--raw"]):
            assert zctl(m.path, *opts, KDEV) == (0, zramctl(*opts, KDEV)[1], "")

        run("mkswap", KDEV)
        run("mkswap", loop)
        run("swapon", KDEV)
        kswap = True
        m.swapon(loop)
        for opts in (["-o", "NAME,MOUNTPOINT"], ["-o", "MOUNTPOINT,NAME", "--raw"], []):
            k = zramctl(*opts, KDEV)
            assert "[SWAP]" in k[1]
            if opts:
                assert zctl(m.path, *opts, KDEV) == (0, k[1], "")
            else:
                assert zctl(m.path, KDEV)[1].splitlines()[1].endswith(" [SWAP]")
    finally:
        if kswap:
            subprocess.run(["swapoff", KDEV], check=False)
        if kmounted:
            subprocess.run(["umount", str(kdir)], check=False)


# --------------------------------------------------------------------------- --json


def test_json(zmount: ZramfsMount) -> None:
    m = zmount
    root = m.path
    # No initialized device: libsmartcols still prints the (empty) array.
    assert zctl(root, "--json") == (0, '{\n   "zramdevices": [\n\n   ]\n}\n', "")
    m.write_attr("disksize", "16M")
    odirect_write(str(m.image()), incompressible_data()[0][1][: 100 * PAGE])
    assert zctl(root, "--json", "-b", "-o", "NAME,DISKSIZE,STREAMS") == (0, (
        "{\n"
        '   "zramdevices": [\n'
        "      {\n"
        '         "name": "/dev/zram0",\n'
        f'         "disksize": {16 * MiB},\n'
        '         "streams": null\n'
        "      }\n"
        "   ]\n"
        "}\n"), "")  # fmt: skip
    assert zctl(root, "-f") == (0, "/dev/zram1\n", "")
    assert zctl(root, "-s", "8M", "zram1") == (0, "", "")

    for opts in ([], ["-b"]):
        rc, out, _ = zctl(root, "--json", "--output-all", *opts)
        assert rc == 0
        doc = json.loads(out)
        raw = zctl(root, "--raw", "--output-all", *opts)[1].splitlines()
        names = raw[0].split(" ")
        assert list(doc) == ["zramdevices"] and len(doc["zramdevices"]) == 2
        for dev, line in zip(doc["zramdevices"], raw[1:], strict=True):
            assert list(dev) == [n.lower() for n in names]
            for n, cell in zip(names, line.split(" "), strict=True):
                v = dev[n.lower()]
                if cell == "" or cell == "-nan":
                    assert v is None, (n, v)
                elif isinstance(v, str):
                    assert ctl.nonblank_encode(v) == cell
                    sizes = ("DISKSIZE", "DATA", "COMPR", "TOTAL", "MEM-LIMIT", "MEM-USED",
                             "MIGRATED")  # fmt: skip
                    assert n in ("NAME", "ALGORITHM", "MOUNTPOINT") or (
                        n in sizes and "-b" not in opts
                    ), (n, opts)
                else:
                    assert isinstance(v, int | float), (n, v)
                    assert f'"{n.lower()}": {cell}' in out  # the text as it is, "1.0000"
        assert doc["zramdevices"][1]["comp-ratio"] is None  # 0/0 prints -nan: not JSON
    assert doc["zramdevices"][0]["data"] == 100 * PAGE


# --------------------------------------------------------------------------- root, help, CLI


def test_root_selection(
    mount_factory: object, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert callable(mount_factory)
    a: ZramfsMount = mount_factory()
    b: ZramfsMount = mount_factory()
    a.write_attr("disksize", "4M")
    monkeypatch.delenv("ZRAMFS_ROOT", raising=False)
    rc, out, err = zctl(None, "-o", "NAME,DISKSIZE")
    assert rc == 1 and out == "" and err.startswith("zramfs ctl: several zramfs mounts (")
    assert str(a.path) in err and str(b.path) in err

    want = "NAME       DISKSIZE\n/dev/zram0       4M\n"
    assert zctl(a.path, "-o", "NAME,DISKSIZE") == (0, want, "")
    assert zctl(b.path, "-o", "NAME,DISKSIZE") == (0, "", "")
    monkeypatch.setenv("ZRAMFS_ROOT", str(a.path))
    assert zctl(None, "-o", "NAME,DISKSIZE") == (0, want, "")
    assert zctl(b.path, "-o", "NAME,DISKSIZE") == (0, "", "")  # --root wins

    monkeypatch.delenv("ZRAMFS_ROOT")
    only = [mnt for mnt in mounts.zramfs_mounts() if mnt.mountpoint == str(a.path)]
    monkeypatch.setattr(mounts, "zramfs_mounts", lambda: only)
    assert zctl(None, "-o", "NAME,DISKSIZE") == (0, want, "")
    monkeypatch.setattr(mounts, "zramfs_mounts", lambda: [])
    rc, _, err = zctl(None)
    assert rc == 1 and err.startswith("zramfs ctl: no zramfs mount found")

    assert zctl(tmp_path) == (1, "", f"zramfs ctl: {tmp_path}: not a zramfs mount\n")


def test_cli_help_version_and_exit_codes(zmount: ZramfsMount) -> None:
    zramfs = [sys.executable, "-m", "zramfs"]
    res = run(*zramfs, "ctl", "--help")
    for word in ["--algorithm", "--bytes", "--find", "--noheadings", "--output", "--output-all",
                 "--algorithm-params", "--reset", "--raw", "--json", "--size", "--streams",
                 "--root", "--help", "--version"] + [c.name for c in ctl.COLUMNS]:  # fmt: skip
        assert word in res.stdout, word
    assert run(*zramfs, "ctl", "-h").stdout == res.stdout
    assert run(*zramfs, "ctl", "-V").stdout.startswith("zramfs ctl from zramfs ")
    assert " ctl " in run(*zramfs, "--help").stdout
    bad = run(*zramfs, "ctl", "--bogus", check=False)
    assert (bad.returncode, bad.stdout, bad.stderr) == (1, "", (
        "zramfs ctl: unrecognized option '--bogus'\n"
        "Try 'zramfs ctl --help' for more information.\n"))  # fmt: skip
    # Through the console script, options and the device in any order.
    m = zmount
    m.write_attr("disksize", "4M")
    res = run(*zramfs, "ctl", "zram0", "--root", str(m.path), "-bno", "name,disksize")
    assert res.stdout == f"/dev/zram0  {4 * MiB}\n"
    res = run(*zramfs, "ctl", f"--root={m.path}", "--", "-r", check=False)
    assert (res.returncode, res.stderr) == (1, "zramfs ctl: -r: No such device\n")


def test_table_rendering() -> None:
    cols = [ctl.COLUMNS[i] for i in (0, 2, 12)]  # NAME DATA MOUNTPOINT
    t = ctl.Table(cols, [])
    assert t.render() == ""
    t.fmt = "raw"
    assert t.render() == ""
    t = ctl.Table(cols, [["/dev/zram0", "8.1M", "/mnt/a b\\x"], ["/dev/zram1", "0B", ""]])
    assert t.render() == (
        "NAME        DATA MOUNTPOINT\n/dev/zram0  8.1M /mnt/a b\\x5cx\n/dev/zram1    0B \n"
    )
    t.fmt = "raw"
    assert t.render() == (
        "NAME DATA MOUNTPOINT\n/dev/zram0 8.1M /mnt/a\\x20b\\x5cx\n/dev/zram1 0B \n"
    )
    assert ctl.comp_ratio(3, 2) == "1.5000"
    assert ctl.comp_ratio(1, 0) == "inf"
    assert ctl.comp_ratio(0, 0) in ("-nan", "nan")
