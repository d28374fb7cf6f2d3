"""``zramfs setup`` / ``zramfs teardown``: zram-generator configs (SPEC §2, reference §15).

The size-expression interpreter and the config reader are checked directly;
then the commands run for real against a temporary config: a swap device and
an ext4 ``mount-point`` device, idempotent re-runs, and a teardown that leaves
no swap, mount, loop device or zramfs mount behind. Every end-to-end test
tears down in a ``finally`` and then force-cleans whatever might remain.
"""

from __future__ import annotations

import builtins
import math
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import ZramfsMount, needs_fuse, needs_loop
from zramfs import generator as g
from zramfs.fs import mounts

MiB = 1 << 20

# ------------------------------------------------------------------ expressions

EXPRESSIONS = [
    ("ram / 2", 8000, 4000.0),
    ("min(ram / 2, 4096)", 8000, 4000.0),
    ("min(ram / 2, 4096)", 16000, 4096.0),
    ("ram * 0.5", 8000, 4000.0),
    ("0.5 * ram", 100, 50.0),
    ("(ram - 100) * 2", 8000, 15800.0),
    ("[ram - 100] * 2", 8000, 15800.0),
    ("ram - 100 * 2", 8000, 7800.0),
    ("min(min(ram, 4096) + max(ram - 4096, 0) / 2, 32 * 1024)", 8192, 6144.0),
    ("max(1, 2, 3)", 0, 3.0),
    ("min(5)", 0, 5.0),
    ("500", 5000, 500.0),
    ("500k", 0, 500_000.0),  # SI suffixes, as zram-generator's tests
    ("32G", 0, 32e9),
    ("1.5M", 0, 1.5e6),
    ("1e3", 0, 1000.0),
    ("2^10", 0, 1024.0),
    ("2^3^2", 0, 512.0),  # ^ is right-associative
    ("-2^2", 0, 4.0),  # a signed literal is one constant
    ("-ram", 10, -10.0),
    ("10 - 2 - 3", 0, 5.0),
    ("100 / 10 / 5", 0, 2.0),
    ("2 * 3 % 4", 0, 6.0),  # fasteval reduces % before *: 2 * (3 % 4)
    ("7 % 4", 0, 3.0),
    ("ram > 4096", 8000, 1.0),
    ("ram <= 4096", 8000, 0.0),
    ("ram == 8000", 8000, 1.0),
    ("ram != 8000", 8000, 0.0),
    ("(ram > 4096) * 1024 + (ram <= 4096) * ram", 2048, 2048.0),
    ("ram < 4096 && 1 || 2", 8000, 2.0),
    ("0 or 7", 0, 7.0),
    ("3 and 4", 0, 4.0),
    ("!0", 0, 1.0),
    ("int(2.7) + ceil(0.1) + floor(1.9) + abs(-1)", 0, 5.0),
    ("round(2.5)", 0, 3.0),
    ("round(512, 1000)", 0, 1024.0),
    ("log(1000)", 0, 3.0),
    ("log(2, 1024)", 0, 10.0),
    ("sign(-3)", 0, -1.0),
    ("e()", 0, math.e),
    ("pi()", 0, math.pi),
    ("ram()", 42, 42.0),
    ("  ram\t/\n2 ", 8, 4.0),
]


@pytest.mark.parametrize(("text", "ram", "expected"), EXPRESSIONS)
def test_expression_values(text: str, ram: int, expected: float) -> None:
    assert g.evaluate(text, ram) == pytest.approx(expected)


INVALID = [
    "",
    "ram /",
    "ram / / 2",
    "(ram",
    "ram)",
    "ram = 2",
    "2e",
    "1.2.3",
    "foo",
    "foo(1)",
    "ram(1)",
    "min()",
    "e(1)",
    "int(1, 2)",
    "os.system('true')",
    "__import__('os').system('touch /tmp/zramfs-pwned')",
    "lambda: 1",
    "'a' * 3",
    "x" * 5000,
    "(" * 40 + "1" + ")" * 40,
]


@pytest.mark.parametrize("text", INVALID)
def test_expression_invalid(text: str) -> None:
    with pytest.raises(g.ExprError):
        g.evaluate(text, 1024)
    assert not os.path.exists("/tmp/zramfs-pwned")


def test_expression_runs_no_code(monkeypatch: pytest.MonkeyPatch) -> None:
    """The interpreter never reaches eval/exec/compile, whatever the input."""

    def forbidden(*args: object, **kwargs: object) -> None:
        raise AssertionError("code execution")

    for name in ("eval", "exec", "compile", "__import__"):
        monkeypatch.setattr(builtins, name, forbidden)
    for text, ram, expected in EXPRESSIONS:
        assert g.evaluate(text, ram) == pytest.approx(expected)
    for text in INVALID:
        with pytest.raises(g.ExprError):
            g.evaluate(text, 1024)


def test_expression_errors_name_the_place() -> None:
    with pytest.raises(g.ExprError, match=r"invalid value '/ 2' at column 7"):
        g.evaluate("ram / / 2", 1)
    with pytest.raises(g.ExprError, match="undefined variable 'mem'"):
        g.evaluate("mem / 2", 1)


# ------------------------------------------------------------------ config


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_config_defaults(tmp_path: Path) -> None:
    cfg = g.load_config(write(tmp_path / "z.conf", "[zram0]\n[zram1]\nmount-point = /srv/z\n"))
    assert cfg.warnings == []
    z0, z1 = g.sorted_devices(cfg)
    assert z0.is_swap() and z0.effective_fs_type() == "swap"
    assert (z0.swap_priority, z0.options, z0.host_memory_limit_mb) == (100, "discard", None)
    assert z0.algorithms == g.Algorithms()
    assert not z1.is_swap() and z1.effective_fs_type() == "ext2"
    # zram-size default min(ram / 2, 4096), zram-resident-limit default 0
    for ram, size in ((1000, 500), (8000, 4000), (100000, 4096)):
        r = g.resolve(z0, ram)
        assert isinstance(r, g.Resolved)
        assert (r.disksize, r.mem_limit) == (size * MiB, 0)
    # fs-type given without a mount-point: formatted, not swap
    cfg = g.load_config(write(tmp_path / "f.conf", "[zram3]\nfs-type = ext4\n"))
    z3 = cfg.devices["zram3"]
    assert not z3.is_swap() and z3.effective_fs_type() == "ext4" and z3.mount_point is None


def test_config_keys(tmp_path: Path) -> None:
    cfg = g.load_config(
        write(
            tmp_path / "z.conf",
            "# comment\n; comment\n[zram2]\n"
            "zram-size = ram * 0.25\n"
            "zram-resident-limit = ram / 8\n"
            "host-memory-limit = 9048\n"
            'compression-algorithm = "lzo-rle zstd(level=3) (type=idle)"\n'
            "writeback-device = /dev/disk/by-partuuid/x\n"
            "swap-priority = -1\n"
            "mount-point = /foo//bar/./baz/\n"
            "fs-type = ext4\n"
            "options =\n",
        )
    )
    d = cfg.devices["zram2"]
    assert d.host_memory_limit_mb == 9048
    assert d.algorithms.algorithms == [("lzo-rle", ""), ("zstd", "level=3")]
    assert d.algorithms.recompress == "type=idle"
    assert d.writeback_device == "/dev/disk/by-partuuid/x"
    assert (d.swap_priority, d.mount_point, d.fs_type, d.options) == (
        -1,
        "/foo/bar/baz",
        "ext4",
        "",
    )
    r = g.resolve(d, 8000)
    assert isinstance(r, g.Resolved)
    assert (r.disksize, r.mem_limit) == (2000 * MiB, 1000 * MiB)
    # host-memory-limit: above it the device is skipped
    assert isinstance(g.resolve(d, 9049), str)
    assert isinstance(g.resolve(d, 9048), g.Resolved)


@pytest.mark.parametrize(
    ("value", "algorithms", "recompress"),
    [
        ("zstd", [("zstd", "")], ""),
        ("zstd(level=3) brotli(level=11) (type=idle)",
         [("zstd", "level=3"), ("brotli", "level=11")], "type=idle"),
        ("zstd(dictionary=/etc/gaming,level=9) (recompargs)",
         [("zstd", "dictionary=/etc/gaming level=9")], "recompargs"),
        ("lz4  lz4hc(level=9)\tdeflate(level=6,deflate.winbits=15)",
         [("lz4", ""), ("lz4hc", "level=9"), ("deflate", "level=6 deflate.winbits=15")], ""),
        ("(type=huge_idle,max_pages=42)", [], "type=huge_idle max_pages=42"),
    ],
)  # fmt: skip
def test_compression_algorithm_parsing(
    value: str, algorithms: list[tuple[str, str]], recompress: str
) -> None:
    a = g.parse_compression_algorithms(value)
    assert (a.algorithms, a.recompress) == (algorithms, recompress)


def test_config_dropins_override(tmp_path: Path) -> None:
    main = write(
        tmp_path / "zram-generator.conf",
        "[zram0]\nzram-size = 100\nswap-priority = 5\nhost-memory-limit = 1235\n"
        "[zram2]\nzram-size = 10\n",
    )
    d = tmp_path / "zram-generator.conf.d"
    write(d / "20-later.conf", "[zram0]\nswap-priority = 20\n[zram2]\nzram-size = ram*0.8\n")
    write(d / "10-early.conf", "[zram0]\nswap-priority = 10\nzram-size = 200\n[zram2]\noptions=\n")
    write(d / "30-last.conf", "[zram1]\nhost-memory-limit = none\n")
    write(d / "99-ignored.txt", "[zram0]\nswap-priority = 99\n")
    assert [p.name for p in g.config_fragments(main)] == [
        "zram-generator.conf", "10-early.conf", "20-later.conf", "30-last.conf",
    ]  # fmt: skip
    cfg = g.load_config(main)
    z0, z1, z2 = g.sorted_devices(cfg)
    assert (z0.swap_priority, z0.host_memory_limit_mb) == (20, 1235)
    assert z0.zram_size is not None and z0.zram_size.text == "200"
    assert z1.host_memory_limit_mb is None
    assert z2.zram_size is not None and z2.zram_size.text == "ram*0.8" and z2.options == ""
    # drop-ins alone, without the main file
    main.unlink()
    assert len(g.load_config(main).devices) == 3


def test_config_obsolete_keys(tmp_path: Path) -> None:
    cfg = g.load_config(
        write(
            tmp_path / "z.conf",
            "[zram0]\nmemory-limit = 100000\nzram-fraction = 0.1\nmax-zram-size = 2048\n"
            "zram-size = 1\n"
            "[zram1]\nzram-fraction = 0.1\n"
            "[zram2]\nmax-zram-size = none\n",
        )
    )
    z0, z1, z2 = g.sorted_devices(cfg)
    assert z0.host_memory_limit_mb == 100000
    sizes = {}
    for d in (z0, z1, z2):
        r = g.resolve(d, 30000)
        assert isinstance(r, g.Resolved)
        sizes[d.name] = r.disksize // MiB
    # the obsolete pair overrides zram-size; no cap unless max-zram-size is set (config.rs)
    assert sizes == {"zram0": 2048, "zram1": 3000, "zram2": 15000}
    assert any("obsolete" in w for w in cfg.warnings)


def test_config_warnings(tmp_path: Path) -> None:
    cfg = g.load_config(
        write(
            tmp_path / "z.conf",
            "set!two = echo 2\nstray = 1\n[zram0]\nbogus-key = 1\n[swap]\nzram-size = 1\n"
            "[zram01]\n",
        )
    )
    text = "\n".join(cfg.warnings)
    assert "set!two" in text and "ignored" in text
    assert "stray" in text
    assert "unknown key bogus-key" in text
    assert "[swap]" in text and "[zram01]" in text
    assert list(cfg.devices) == ["zram0"]


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (
            "zram-size = ram / / 2",
            r"z\.conf:2: \[zram0\] zram-size = ram / / 2: invalid expression",
        ),
        ("swap-priority = 40000", r"\[zram0\] swap-priority = 40000: swap priority 40000 out of"),
        ("swap-priority = high", r"\[zram0\] swap-priority = high: 'high' is not an integer"),
        ("mount-point = var/z", r"\[zram0\] mount-point = var/z: 'var/z' is not absolute"),
        ("mount-point = /var/../z", r"is not normalized"),
        ("host-memory-limit = -5", r"\[zram0\] host-memory-limit = -5: '-5' is not a non-neg"),
        ("zram-fraction = -1", r"zram-fraction=-1 < 0"),
        ("no equals sign", r"z\.conf:2: expected 'key = value'"),
    ],
)
def test_config_errors(tmp_path: Path, body: str, message: str) -> None:
    with pytest.raises(g.ConfigError, match=message):
        g.load_config(write(tmp_path / "z.conf", f"[zram0]\n{body}\n"))


@pytest.mark.parametrize(
    ("size", "message"),
    [
        ("ram - 10000", r"\[zram0\] zram-size = ram - 10000: zram0: zram-size=-1808.0 < 0"),
        ("(ram - 8192) / 0", r"zram-size=nan < 0"),
        ("ram / 0", r"zram-size is infinite"),
        ("ram * nosuchvar", r"undefined variable 'nosuchvar'"),
    ],
)
def test_size_evaluation_errors(tmp_path: Path, size: str, message: str) -> None:
    cfg = g.load_config(write(tmp_path / "z.conf", f"[zram0]\nzram-size = {size}\n"))
    with pytest.raises(g.ConfigError, match=message):
        g.resolve(cfg.devices["zram0"], 8192)


def test_size_zero_skips(tmp_path: Path) -> None:
    cfg = g.load_config(write(tmp_path / "z.conf", "[zram0]\nzram-size = ram < 100\n"))
    assert g.resolve(cfg.devices["zram0"], 8192) == "size is 0, skipped."


def test_example_config_parses() -> None:
    example = Path(__file__).parent.parent / "examples" / "zram-generator.conf"
    cfg = g.load_config(example)
    assert cfg.warnings == []
    z0, z1 = g.sorted_devices(cfg)
    assert z0.is_swap() and z1.mount_point == "/var/tmp/zram" and z1.fs_type == "ext4"
    for d in (z0, z1):
        assert isinstance(g.resolve(d, 8192), g.Resolved)


def test_escape_path() -> None:
    assert g.escape_path("/run/zramfs") == "run-zramfs"
    assert g.escape_path("/") == "-"
    assert g.escape_path("/tmp/a-b/.c d") == "tmp-a\\x2db-.c\\x20d"
    assert g.default_state_path("/run/zramfs") == Path("/run/zramfs-setup/run-zramfs.json")


# ------------------------------------------------------------------ end to end


def zramfs(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "zramfs", *args], capture_output=True, text=True, check=False
    )


def ok(res: subprocess.CompletedProcess[str]) -> str:
    assert res.returncode == 0, f"exit {res.returncode}\n{res.stdout}\n{res.stderr}"
    return res.stdout


def proc_swaps() -> dict[str, list[str]]:
    with open("/proc/swaps") as f:
        return {p[0]: p[1:] for p in (line.split() for line in f.read().splitlines()[1:])}


def without_used(swaps: dict[str, list[str]]) -> dict[str, list[str]]:
    """/proc/swaps entries without the "Used" column."""
    return {dev: [v[0], v[1], v[3]] for dev, v in swaps.items()}


def mounted_from(source: str) -> list[str]:
    return [m.mountpoint for m in mounts.mounts() if m.source == source]


def force_cleanup(root: Path, unmount_root: bool) -> None:
    """Whatever a failed test left under ``root``: swaps, mounts, loops, the mount."""
    for a in mounts.loops_under(str(root)):
        subprocess.run(["swapoff", a.loop], capture_output=True, check=False)
        for target in reversed(mounted_from(a.loop)):
            subprocess.run(["umount", "-l", target], capture_output=True, check=False)
        subprocess.run(["losetup", "-d", a.loop], capture_output=True, check=False)
    deadline = time.monotonic() + 10
    while mounts.loops_under(str(root)) and time.monotonic() < deadline:
        time.sleep(0.05)
    alive = unmount_root and mounts.find_mount(str(root)) is not None
    if alive and mounts.fuse_unmount(str(root)).returncode != 0:
        mounts.fuse_unmount(str(root), lazy=True)


@pytest.fixture
def workdir() -> Iterator[Path]:
    base = Path(os.path.realpath("/tmp")) / f"zramfs-gen-{os.getpid()}-{time.monotonic_ns()}"
    base.mkdir()
    try:
        yield base
    finally:
        shutil.rmtree(base, ignore_errors=True)


needs_ext4 = pytest.mark.skipif(shutil.which("mkfs.ext4") is None, reason="needs mkfs.ext4")


@needs_fuse
@needs_loop
@needs_ext4
def test_setup_and_teardown_end_to_end(workdir: Path) -> None:
    root = workdir / "root"  # not mounted: setup mounts it, teardown unmounts it
    data = workdir / "mnt" / "data"  # created by setup, removed by teardown
    wb = workdir / "writeback.img"
    wb.write_bytes(b"")
    os.truncate(wb, 16 * MiB)
    config = write(
        workdir / "zram-generator.conf",
        f"""\
[zram0]
zram-size = min(ram / 2, 64)
zram-resident-limit = 32
compression-algorithm = lz4 zstd(level=3) brotli(level=11) (type=idle)
writeback-device = {wb}
swap-priority = 42

[zram2]
zram-size = 64
compression-algorithm = zstd(level=1)
fs-type = ext4
mount-point = {data}
options = discard,noatime

[zram5]
host-memory-limit = 1

[zram6]
zram-size = 0
""",
    )
    state = g.default_state_path(str(root))
    try:
        res = zramfs("setup", str(config), "--root", str(root))
        out = ok(res)
        assert "zram5: system has too much memory" in out
        assert "zram6: size is 0, skipped." in out
        assert f"mounting zramfs at {root}" in out
        # zram-generator warns when the global recompression params are refused
        assert "configuring global recompression with 'type=idle' failed" in res.stderr

        found = mounts.find_mount(str(root))
        assert found is not None and found.fstype == mounts.FSTYPE
        # zram1 was only created on the way to zram2, and removed again
        assert sorted(os.listdir(root / "dev")) == ["zram0", "zram2"]
        z0, z2 = root / "sys/block/zram0", root / "sys/block/zram2"
        assert (z0 / "comp_algorithm").read_text().startswith("[lz4] ")
        assert (z0 / "recomp_algorithm").read_text().splitlines() == [
            "#1: lz4 lz4hc [zstd] deflate brotli ",
            "#2: lz4 lz4hc zstd deflate [brotli] ",
        ]
        assert (z0 / "disksize").read_text() == f"{64 * MiB}\n"
        assert int((z0 / "mm_stat").read_text().split()[3]) == 32 * MiB  # mem_limit
        assert (z0 / "backing_dev").read_text() == f"{wb}\n"
        assert "[zstd]" in (z2 / "comp_algorithm").read_text()
        assert int((z2 / "mm_stat").read_text().split()[3]) == 0
        assert (z2 / "disksize").read_text() == f"{64 * MiB}\n"

        loops = {os.path.basename(a.backing_file): a.loop for a in mounts.loops_under(str(root))}
        assert sorted(loops) == ["zram0", "zram2"]
        swaps = proc_swaps()
        assert loops["zram0"] in swaps, swaps
        assert swaps[loops["zram0"]][3] == "42"  # priority
        assert mounted_from(loops["zram2"]) == [str(data)]
        fs = next(m for m in mounts.mounts() if m.mountpoint == str(data))
        assert fs.fstype == "ext4"
        (data / "hello").write_text("zram\n")
        first_state = state.read_text()

        # Again: everything is in place, nothing changes.
        out = ok(zramfs("setup", str(config), "--root", str(root)))
        assert f"zram0: already set up: swap on {loops['zram0']}" in out
        assert "zram2: already set up: ext4" in out
        assert "mounting" not in out and "hot_add" not in out and "disksize" not in out
        assert state.read_text() == first_state
        # The same swaps (type, size, priority); "Used" may have grown: a
        # DAMON pageout scheme may page cold memory out to any swap
        # (tests/test_fs_swap.py, swapouts).
        assert without_used(proc_swaps()) == without_used(swaps)
        assert (data / "hello").read_text() == "zram\n"
        assert {os.path.basename(a.backing_file): a.loop
                for a in mounts.loops_under(str(root))} == loops  # fmt: skip

        out = ok(zramfs("teardown", str(config), "--root", str(root)))
        assert "zram0: gone" in out and "zram2: gone" in out
        assert f"unmounting zramfs at {root}" in out
        assert not any(dev in proc_swaps() for dev in loops.values())
        assert not mounted_from(loops["zram2"])
        assert mounts.find_mount(str(root)) is None
        assert not (workdir / "mnt").exists()  # the directories setup created
        assert not root.exists()
        assert not state.exists()
        assert mounts.loops_under(str(root)) == []
        # and teardown again: nothing left to do
        assert "nothing recorded" in ok(zramfs("teardown", "--root", str(root)))
    finally:
        zramfs("teardown", "--root", str(root))
        force_cleanup(root, unmount_root=True)
        state.unlink(missing_ok=True)


@needs_fuse
@needs_loop
def test_setup_on_existing_mount(zmount: ZramfsMount, workdir: Path) -> None:
    """A mount setup did not make stays; devices it did not add are reset, not removed."""
    m = zmount  # zram0 exists, uninitialized
    root = m.path
    state = workdir / "state.json"
    control = root / "sys/class/zram-control"
    assert (control / "hot_add").read_text() == "1\n"
    m.write_attr("disksize", "1M", dev=1)  # someone else's initialized zram1
    config = write(
        workdir / "z.conf",
        "[zram0]\nzram-size = 16\nswap-priority = 7\noptions =\n"
        "[zram1]\nzram-size = 16\n"
        "[zram3]\nzram-size = 16\nfs-type = ext2\ncompression-algorithm = lzo-rle\n",
    )
    args = ("--root", str(root), "--state", str(state))
    try:
        res = zramfs("setup", str(config), *args)
        assert res.returncode == 1, res
        assert "zram1 is already initialized and was not set up by zramfs setup" in res.stderr
        assert "algorithm 'lzo-rle' not recognised" in res.stderr  # a warning only
        assert "mounting" not in res.stdout
        assert "zram3: ready: ext2 on /dev/loop" in res.stdout
        assert "(no mount-point: formatted, not mounted)" in res.stdout
        assert (root / "sys/block/zram1/disksize").read_text() == f"{MiB}\n"  # untouched
        assert m.read_attr("comp_algorithm", dev=3).startswith("[lz4] ")
        loops = {os.path.basename(a.backing_file): a.loop for a in mounts.loops_under(str(root))}
        assert sorted(loops) == ["zram0", "zram3"]
        assert proc_swaps()[loops["zram0"]][3] == "7"
        assert not mounted_from(loops["zram3"])
        blkid = subprocess.run(["blkid", "-o", "value", "-s", "TYPE", loops["zram3"]],
                               capture_output=True, text=True, check=False)  # fmt: skip
        assert blkid.stdout.strip() in ("ext2", "")  # blkid may be missing its cache

        # zram1 stays refused on a re-run; the others are in place
        res = zramfs("setup", str(config), *args)
        assert res.returncode == 1
        assert "zram0: already set up" in res.stdout and "zram3: already set up" in res.stdout

        out = ok(zramfs("teardown", *args))
        assert "unmounting" not in out
        assert mounts.find_mount(str(root)) is not None  # still mounted
        assert sorted(os.listdir(root / "dev")) == ["zram0", "zram1"]  # zram3 removed
        assert m.read_attr("initstate", dev=0) == "0\n"  # zram0 reset, kept
        assert m.read_attr("disksize", dev=0) == "0\n"
        assert m.read_attr("initstate", dev=1) == "1\n"  # not ours: untouched
        assert mounts.loops_under(str(root)) == []
        assert not any(loop in proc_swaps() for loop in loops.values())
        assert not state.exists()
    finally:
        zramfs("teardown", *args)
        force_cleanup(root, unmount_root=False)


@needs_fuse
@needs_loop
def test_setup_errors_are_clear(zmount: ZramfsMount, workdir: Path) -> None:
    root = zmount.path
    state = workdir / "state.json"
    args = ("--root", str(root), "--state", str(state))
    bad = write(workdir / "bad.conf", "[zram0]\nzram-size = ram +* 2\n")
    res = zramfs("setup", str(bad), *args)
    assert res.returncode == 1
    assert f"{bad}:2: [zram0] zram-size = ram +* 2: invalid expression" in res.stderr
    assert not state.exists()
    res = zramfs("setup", str(workdir / "missing.conf"), *args)
    assert res.returncode == 1 and "no such file" in res.stderr
    negative = write(workdir / "neg.conf", "[zram0]\nzram-size = 8\nzram-resident-limit = -1\n")
    res = zramfs("setup", str(negative), *args)
    assert res.returncode == 1 and "zram0: zram-resident-limit=-1.0 < 0" in res.stderr
    # A device that fails half-way is rolled back: backing_dev refuses a directory.
    failing = write(
        workdir / "fail.conf",
        f"[zram0]\nzram-size = 8\nzram-resident-limit = 4\nwriteback-device = {workdir}\n",
    )
    res = zramfs("setup", str(failing), *args)
    assert res.returncode == 1
    assert f"zram0: writeback-device: cannot write backing_dev = '{workdir}'" in res.stderr
    assert "zram0: reset = 1" in res.stdout
    assert zmount.read_attr("initstate") == "0\n"
    assert zmount.read_attr("backing_dev") == "none\n"
    assert mounts.loops_under(str(root)) == []
    assert not state.exists()
    # dry run: resolves, touches nothing
    ok_conf = write(workdir / "ok.conf", "[zram0]\nzram-size = 8\n")
    out = ok(zramfs("setup", str(ok_conf), "--dry-run", *args))
    assert out.startswith(f"zram0: disksize={8 * MiB} mem_limit=0 ")
    assert zmount.read_attr("initstate") == "0\n" and not state.exists()
