"""Attributes through the real mount, driven the way zram users drive them.

Round trips and errno with the real shell tools (``echo``, ``echo -n``,
``printf``, ``cat``), the kernfs rules (modes, st_size 4096, EACCES on
wrong-direction opens even for root, E2BIG, snapshot per open), the control
class (hot_add / hot_remove) and debugfs ``block_state`` (SPEC §1, §3;
reference §2–§4, §12).

Shell notes: error *messages* are checked with bash, whose ``echo`` and
``printf`` builtins print ``write error: <strerror(errno)>``, and with
coreutils ``/bin/echo``. Debian's ``/bin/sh`` (dash) prints "I/O error" for any
failed write whatever the errno, so with ``sh -c`` only the exit status is
checked.
"""

from __future__ import annotations

import errno
import functools
import os
import re
import stat
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.conftest import ZramfsMount, needs_fuse, needs_loop, run
from zramfs.core.attrs import BY_NAME

pytestmark = needs_fuse

RO, WO, RW = 0o444, 0o200, 0o644

# SPEC §3 / reference §4: every per-device attribute and the kernel's mode.
KERNEL_ATTRS: dict[str, int] = {
    "disksize": RW,
    "initstate": RO,
    "reset": WO,
    "compact": WO,
    "mem_limit": WO,
    "mem_used_max": WO,
    "idle": WO,
    "comp_algorithm": RW,
    "algorithm_params": WO,
    "recomp_algorithm": RW,
    "recompress": WO,
    "backing_dev": RW,
    "writeback": WO,
    "writeback_limit": RW,
    "writeback_limit_enable": RW,
    "writeback_batch_size": RW,
    "compressed_writeback": RW,
    "io_stat": RO,
    "mm_stat": RO,
    "bd_stat": RO,
    "debug_stat": RO,
    "stat": RO,
}

BLOCK_STATE_RE = re.compile(r"^( {0,11}\d+) ( {0,11}\d+)\.000000 ([s.][w.][h.][i.][r.][n.])$")


def sh(script: str, shell: str = "bash") -> tuple[int, str]:
    """Run a shell snippet; (exit status, stderr)."""
    res = run(shell, "-c", script, check=False)
    return res.returncode, res.stderr


def errno_of(fn: Callable[[], object]) -> int:
    with pytest.raises(OSError) as e:
        fn()
    assert e.value.errno is not None
    return e.value.errno


def debugfs(m: ZramfsMount, dev: int = 0) -> Path:
    return m.path / "sys" / "kernel" / "debug" / "zram" / f"zram{dev}"


def control(m: ZramfsMount, name: str) -> Path:
    return m.path / "sys" / "class" / "zram-control" / name


def block_state(m: ZramfsMount, dev: int = 0) -> dict[int, tuple[int, str]]:
    """index → (ac_time seconds, flags), checking the exact line format."""
    out: dict[int, tuple[int, str]] = {}
    for line in (debugfs(m, dev) / "block_state").read_text().splitlines():
        match = BLOCK_STATE_RE.match(line)
        assert match, f"bad block_state line {line!r}"
        assert len(match.group(1)) == 12 and len(match.group(2)) == 12
        out[int(match.group(1))] = (int(match.group(2)), match.group(3))
    return out


def boottime() -> int:
    return int(time.clock_gettime(time.CLOCK_BOOTTIME))


def write_image(m: ZramfsMount, offset: int, data: bytes, dev: int = 0) -> None:
    fd = os.open(m.image(dev), os.O_WRONLY)
    try:
        assert os.pwrite(fd, data, offset) == len(data)
    finally:
        os.close(fd)


# ------------------------------------------------------------ the tree, modes


def test_attributes_have_kernel_modes(zmount: ZramfsMount) -> None:
    for name in sorted(set(os.listdir(zmount.sys())) & set(KERNEL_ATTRS)):
        st = os.stat(zmount.sys() / name)
        assert stat.S_ISREG(st.st_mode), name
        assert stat.S_IMODE(st.st_mode) == KERNEL_ATTRS[name], name
        assert st.st_size == 4096, name
        assert (st.st_uid, st.st_gid) == (0, 0), name


def test_every_spec_attribute_is_present(zmount: ZramfsMount) -> None:
    missing = set(KERNEL_ATTRS) - set(os.listdir(zmount.sys()))
    assert not missing, f"missing attributes: {sorted(missing)}"


def test_listing_and_control_files(zmount: ZramfsMount) -> None:
    listed = set(os.listdir(zmount.sys()))
    assert listed == set(BY_NAME)
    assert listed <= set(KERNEL_ATTRS)
    for name, mode in [("hot_add", 0o400), ("hot_remove", 0o200)]:
        st = os.stat(control(zmount, name))
        assert stat.S_ISREG(st.st_mode) and stat.S_IMODE(st.st_mode) == mode
        assert st.st_size == 4096
    st = os.stat(debugfs(zmount) / "block_state")
    assert stat.S_IMODE(st.st_mode) == 0o400
    assert sorted(os.listdir(debugfs(zmount))) == ["block_state", "lock_stat"]
    assert sorted(os.listdir(zmount.path)) == ["dev", "sys"]
    assert os.listdir(zmount.path / "dev") == ["zram0"]


def test_wrong_direction_opens_are_eacces_even_for_root(zmount: ZramfsMount) -> None:
    for name in BY_NAME:
        mode = KERNEL_ATTRS[name]
        path = zmount.sys() / name
        for flags, allowed in [
            (os.O_RDONLY, bool(mode & 0o444)),
            (os.O_WRONLY, bool(mode & 0o200)),
            (os.O_RDWR, mode == RW),
        ]:
            if allowed:
                os.close(os.open(path, flags))
            else:
                assert errno_of(functools.partial(os.open, path, flags)) == errno.EACCES, name
    for path, refused in [
        (control(zmount, "hot_add"), os.O_WRONLY),
        (control(zmount, "hot_add"), os.O_RDWR),
        (control(zmount, "hot_remove"), os.O_RDONLY),
        (control(zmount, "hot_remove"), os.O_RDWR),
        (debugfs(zmount) / "block_state", os.O_WRONLY),
    ]:
        assert errno_of(functools.partial(os.open, path, refused)) == errno.EACCES
    # The shell's view: cat of a WO attribute, echo into a RO one.
    rc, err = sh(f"cat {zmount.sys() / 'reset'}")
    assert rc == 1 and "Permission denied" in err
    rc, err = sh(f"echo 1 > {zmount.sys() / 'initstate'}")
    assert rc == 1 and "Permission denied" in err
    rc, err = sh(f"echo 1 > {control(zmount, 'hot_add')}")
    assert rc == 1 and "Permission denied" in err
    # No file can be created next to the attributes.
    assert errno_of(lambda: os.open(zmount.sys() / "nope", os.O_WRONLY | os.O_CREAT)) in (
        errno.EACCES,
        errno.EPERM,
    )
    assert sorted(os.listdir(zmount.path / "dev")) == ["zram0"]


# ------------------------------------------------------ round trips and errno


def test_shell_round_trips(zmount: ZramfsMount) -> None:
    s = zmount.sys()
    # echo -n (zram-tools), printf without newline, echo with newline.
    assert sh(f"echo -n zstd > {s}/comp_algorithm") == (0, "")
    assert run("cat", f"{s}/comp_algorithm").stdout == "lz4 lz4hc [zstd] deflate brotli \n"
    assert sh(f"printf %s deflate > {s}/comp_algorithm") == (0, "")
    assert "[deflate]" in zmount.read_attr("comp_algorithm")
    assert sh(f"echo lz4hc >> {s}/comp_algorithm") == (0, "")  # O_APPEND: same store
    assert "[lz4hc]" in zmount.read_attr("comp_algorithm")
    assert sh(f"echo algo=zstd priority=2 > {s}/recomp_algorithm") == (0, "")
    assert zmount.read_attr("recomp_algorithm") == "#2: lz4 lz4hc [zstd] deflate brotli \n"
    assert sh(f"echo level=3 > {s}/algorithm_params") == (0, "")
    assert sh(f"echo -n 3M > {s}/mem_limit") == (0, "")
    assert zmount.mm_stat()[3] == 3 << 20
    assert sh(f"/bin/echo 0 > {s}/mem_limit") == (0, "")
    assert zmount.mm_stat()[3] == 0
    assert sh(f"echo 64M > {s}/disksize", shell="sh") == (0, "")
    assert run("cat", f"{s}/disksize").stdout == f"{64 << 20}\n"
    assert run("cat", f"{s}/initstate").stdout == "1\n"
    assert os.stat(zmount.image()).st_size == 64 << 20
    assert sh(f"echo all > {s}/idle") == (0, "")
    assert sh(f"echo -n 3600 > {s}/idle") == (0, "")
    assert sh(f"echo 1 > {s}/compact") == (0, "")
    assert sh(f"echo 0 > {s}/mem_used_max") == (0, "")
    # cat of every readable attribute works and ends with a newline (or is empty).
    for name in BY_NAME:
        if KERNEL_ATTRS[name] & 0o444:
            out = run("cat", f"{s}/{name}").stdout
            assert out == "" or out.endswith("\n"), name
    assert len(zmount.mm_stat()) == 9
    assert len(zmount.io_stat()) == 4
    assert len(zmount.read_attr("stat").split()) == 17
    assert zmount.read_attr("debug_stat").startswith("version: 1\n")
    assert sh(f"echo 1 > {s}/reset") == (0, "")
    assert zmount.read_attr("disksize") == "0\n"
    # reset forgets algorithms, secondary ones and the limit (reference §1).
    assert zmount.read_attr("comp_algorithm").startswith("[lz4] ")
    assert zmount.read_attr("recomp_algorithm") == ""


# (attribute, value, message) refused on an uninitialized / initialized device.
REFUSED_UNINIT = [
    ("disksize", "0", "Invalid argument"),
    ("disksize", "garbage", "Invalid argument"),
    ("comp_algorithm", "nosuch", "Invalid argument"),
    ("comp_algorithm", "z" * 200, "Argument list too long"),
    ("recomp_algorithm", "priority=1", "Invalid argument"),
    ("recomp_algorithm", "algo=zstd priority=4", "Invalid argument"),
    ("algorithm_params", "algo=brotli level=3", "Invalid argument"),
    ("algorithm_params", "priority=9 level=1", "Invalid argument"),
    ("reset", "0", "Invalid argument"),
    ("idle", "all", "Invalid argument"),
    ("compact", "1", "Invalid argument"),
    ("recompress", "type=huge", "Invalid argument"),
    ("writeback", "huge", "Invalid argument"),
    ("writeback_batch_size", "0", "Invalid argument"),
    ("writeback_limit", "abc", "Invalid argument"),
    ("writeback_limit_enable", "-1", "Invalid argument"),
    ("compressed_writeback", "maybe", "Invalid argument"),
    ("backing_dev", "/nonexistent/zramfs-backing", "No such file or directory"),
    ("backing_dev", "/dev/null", "Block device required"),
]
REFUSED_INIT = [
    ("disksize", "64M", "Device or resource busy"),
    ("disksize", "0", "Invalid argument"),  # EINVAL is checked before EBUSY
    ("comp_algorithm", "zstd", "Device or resource busy"),
    ("comp_algorithm", "nosuch", "Invalid argument"),
    ("recomp_algorithm", "algo=zstd", "Device or resource busy"),
    ("reset", "x", "Invalid argument"),
    ("idle", "soon", "Invalid argument"),
    ("mem_used_max", "1", "Invalid argument"),
    ("mem_limit", "lots", "Invalid argument"),
    ("backing_dev", "/dev/null", "Device or resource busy"),
    ("writeback", "huge", "No such device"),  # no backing device
    ("compressed_writeback", "1", "Device or resource busy"),
    ("recompress", "type=huge", "Invalid argument"),  # no secondary algorithm
]


def _state(m: ZramfsMount) -> dict[str, str]:
    names = ("disksize", "initstate", "comp_algorithm", "recomp_algorithm", "mm_stat",
             "io_stat", "backing_dev", "bd_stat", "writeback_limit", "writeback_limit_enable",
             "writeback_batch_size", "compressed_writeback")  # fmt: skip
    return {n: m.read_attr(n) for n in names}


def _check_refused(m: ZramfsMount, cases: list[tuple[str, str, str]]) -> None:
    s = m.sys()
    before = _state(m)
    for attr, value, message in cases:
        # bash's builtins and coreutils' echo name the errno; dash only fails.
        for cmd in (
            f"echo {value} > {s}/{attr}",
            f"echo -n '{value}' > {s}/{attr}",
            f"printf %s '{value}' > {s}/{attr}",
            f"/bin/echo {value} > {s}/{attr}",
        ):
            rc, err = sh(cmd)
            assert rc == 1, cmd
            assert f"write error: {message}" in err, (cmd, err)
        rc, _ = sh(f"echo {value} > {s}/{attr}", shell="sh")
        assert rc == 1
        assert _state(m) == before, f"{attr} <- {value!r} changed state"


def test_failed_store_uninitialized(zmount: ZramfsMount) -> None:
    _check_refused(zmount, REFUSED_UNINIT)
    assert zmount.read_attr("initstate") == "0\n"


def test_failed_store_initialized(zmount: ZramfsMount) -> None:
    zmount.write_attr("comp_algorithm", "zstd")
    zmount.write_attr("disksize", "1M")
    write_image(zmount, 0, os.urandom(8192) + b"compressible " * 1000)
    _check_refused(zmount, REFUSED_INIT)
    assert zmount.read_attr("disksize") == f"{1 << 20}\n"
    assert "[zstd]" in zmount.read_attr("comp_algorithm")


def test_oversized_write_is_e2big(zmount: ZramfsMount) -> None:
    zmount.write_attr("disksize", "1M")
    zmount.write_attr("compact", b"1" * 4096)  # exactly one page is one store
    for size in (4097, 8192, 300_000):
        with pytest.raises(OSError) as e:
            zmount.write_attr("compact", b"1" * size)
        assert e.value.errno == errno.E2BIG
    with pytest.raises(OSError) as e:
        zmount.write_attr("mem_limit", b"1M" + b"\n" * 5000)
    assert e.value.errno == errno.E2BIG
    assert zmount.mm_stat()[3] == 0


def test_snapshot_per_open(zmount: ZramfsMount) -> None:
    zmount.write_attr("disksize", "1M")
    old = zmount.read_attr("mm_stat")
    fd = os.open(zmount.sys() / "mm_stat", os.O_RDONLY)
    try:
        head = os.read(fd, 10)
        write_image(zmount, 0, os.urandom(64 << 10))
        new = zmount.read_attr("mm_stat")  # cat is always current
        assert new != old
        assert head + os.read(fd, 4096) == old.encode()
        assert os.read(fd, 4096) == b""
        assert os.pread(fd, 4096, 0) == new.encode()  # offset 0 takes a new snapshot
        # pread past the first bytes continues that snapshot
        write_image(zmount, 1 << 16, os.urandom(4096))
        assert os.pread(fd, 4096, 5) == new.encode()[5:]
    finally:
        os.close(fd)
    assert zmount.read_attr("mm_stat") != new


# ----------------------------------------------------------- zram-control


def test_hot_add_and_hot_remove(zmount: ZramfsMount) -> None:
    path = zmount.path
    assert run("cat", str(control(zmount, "hot_add"))).stdout == "1\n"
    assert (path / "dev" / "zram1").exists()
    assert (path / "sys" / "block" / "zram1" / "disksize").exists()
    assert (debugfs(zmount, 1) / "block_state").exists()
    assert zmount.read_attr("initstate", dev=1) == "0\n"
    assert run("cat", str(control(zmount, "hot_add"))).stdout == "2\n"
    assert sorted(os.listdir(path / "dev")) == ["zram0", "zram1", "zram2"]
    assert sorted(os.listdir(path / "sys" / "block")) == ["zram0", "zram1", "zram2"]
    assert sh(f"echo 1 > {control(zmount, 'hot_remove')}") == (0, "")
    assert not (path / "dev" / "zram1").exists()
    assert not (path / "sys" / "block" / "zram1").exists()
    assert not debugfs(zmount, 1).exists()
    assert sorted(os.listdir(path / "sys" / "kernel" / "debug" / "zram")) == ["zram0", "zram2"]
    # The lowest free id comes back first; an initialized device is reset on removal.
    zmount.write_attr("disksize", "1M", dev=2)
    assert sh(f"echo -n 0 > {control(zmount, 'hot_remove')}") == (0, "")
    assert run("cat", str(control(zmount, "hot_add"))).stdout == "0\n"
    assert run("cat", str(control(zmount, "hot_add"))).stdout == "1\n"
    assert zmount.read_attr("initstate", dev=0) == "0\n"
    assert sh(f"echo 2 > {control(zmount, 'hot_remove')}") == (0, "")
    assert sorted(os.listdir(path / "dev")) == ["zram0", "zram1"]


def test_hot_remove_errnos(zmount: ZramfsMount) -> None:
    hr = control(zmount, "hot_remove")
    for value, message in [
        ("-1", "Invalid argument"),
        ("abc", "Invalid argument"),
        ("1 2", "Invalid argument"),
        ("7", "No such device"),
        ("99999999999", "Numerical result out of range"),
    ]:
        rc, err = sh(f"echo {value} > {hr}")
        assert rc == 1 and f"write error: {message}" in err, (value, err)
    zmount.write_attr("disksize", "1M")
    fd = os.open(zmount.image(), os.O_RDONLY)
    try:
        rc, err = sh(f"echo 0 > {hr}")
        assert rc == 1 and "write error: Device or resource busy" in err
    finally:
        os.close(fd)
    assert zmount.read_attr("initstate") == "1\n"
    # release is asynchronous in FUSE: allow the daemon to see the close.
    deadline = time.monotonic() + 5
    while sh(f"echo 0 > {hr}")[0] != 0:
        assert time.monotonic() < deadline, "hot_remove still busy after close"
        time.sleep(0.02)
    assert os.listdir(zmount.path / "dev") == []
    rc, err = sh(f"echo 0 > {hr}")
    assert rc == 1 and "No such device" in err


@needs_loop
def test_hot_remove_busy_while_loop_attached(zmount: ZramfsMount) -> None:
    zmount.write_attr("disksize", "4M")
    loop = zmount.losetup()
    rc, err = sh(f"echo 0 > {control(zmount, 'hot_remove')}")
    assert rc == 1 and "Device or resource busy" in err
    rc, err = sh(f"echo 1 > {zmount.sys()}/reset")
    assert rc == 1 and "Device or resource busy" in err
    zmount.detach(loop)
    assert sh(f"echo 0 > {control(zmount, 'hot_remove')}") == (0, "")


def test_num_devices(mount_factory: Callable[..., ZramfsMount]) -> None:
    m = mount_factory("--num-devices", "3")
    names = ["zram0", "zram1", "zram2"]
    assert sorted(os.listdir(m.path / "dev")) == names
    assert sorted(os.listdir(m.path / "sys" / "block")) == names
    assert sorted(os.listdir(m.path / "sys" / "kernel" / "debug" / "zram")) == names
    for dev in range(3):
        assert m.read_attr("initstate", dev) == "0\n"
    assert run("cat", str(control(m, "hot_add"))).stdout == "3\n"
    m0 = mount_factory("--num-devices", "0")
    assert os.listdir(m0.path / "dev") == []
    assert run("cat", str(control(m0, "hot_add"))).stdout == "0\n"


# ------------------------------------------------------------ block_state


def test_block_state_uninitialized_is_einval(zmount: ZramfsMount) -> None:
    rc, err = sh(f"cat {debugfs(zmount)}/block_state")
    assert rc == 1 and "Invalid argument" in err
    zmount.write_attr("disksize", "1M")
    assert (debugfs(zmount) / "block_state").read_text() == ""


def test_block_state_format_and_flags(zmount: ZramfsMount) -> None:
    zmount.write_attr("disksize", "1M")
    write_image(zmount, 3 * 4096, os.urandom(4096))  # incompressible: huge
    write_image(zmount, 5 * 4096, b"ab" * 2048)  # same-filled
    write_image(zmount, 200 * 4096, b"zramfs " * 585 + b"z")  # compressible
    write_image(zmount, 255 * 4096 + 100, b"x")  # partial page, read-modify-write
    state = block_state(zmount)
    assert sorted(state) == [3, 5, 200, 255]
    assert state[3][1] == "..h..."
    assert state[5][1] == "s....."
    assert state[200][1] == "......"
    assert state[255][1] == "......"
    assert zmount.mm_stat()[0] == 4 * 4096
    # Reading a slot stamps its access time (boottime seconds).
    t0 = boottime()
    with open(zmount.image(), "rb") as f:
        f.seek(200 * 4096)
        f.read(4096)
    assert t0 - 1 <= block_state(zmount)[200][0] <= boottime() + 1
    # idle all: every allocated slot except same-filled ones.
    zmount.write_attr("idle", "all")
    state = block_state(zmount)
    assert state[3][1] == "..hi.."
    assert state[5][1] == "s....."
    assert state[200][1] == "...i.."
    write_image(zmount, 200 * 4096, b"zramfs " * 585 + b"y")  # access clears IDLE
    assert block_state(zmount)[200][1] == "......"
    # More than one page of output is read in full.
    write_image(zmount, 0, os.urandom(1 << 20))
    text = (debugfs(zmount) / "block_state").read_text()
    assert len(text) > 4096 and len(text.splitlines()) == 256


def test_block_state_write_stamps_access_time(zmount: ZramfsMount) -> None:
    zmount.write_attr("disksize", "1M")
    t0 = boottime()
    write_image(zmount, 0, os.urandom(4096))
    write_image(zmount, 4096, b"ab" * 2048)
    state = block_state(zmount)
    for idx in (0, 1):
        assert t0 - 1 <= state[idx][0] <= boottime() + 1, state
