"""Our pyfuse3 patches, through a real FUSE mount (patches/README.md).

``read_nowait`` / ``write_nowait``: pyfuse3 calls them in the request handler
and answers from what they return, or hands the request to the async ``read``
/ ``write`` (see tests/nowait_fs.py for the branches).  zramfs' 4 KiB path
depends on them being installed: without the patch the mount still works, only
slower, so a lost patch would otherwise go unnoticed.  ``write_views``:
writes come as read-only views of pyfuse3's receive buffer (tests/views_fs.py).
"""

from __future__ import annotations

import errno
import mmap
import os
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import pyfuse3
import pytest

from benchmarks.bare_fs import BareMount, bare_mounted

PAGE = 4096

pytestmark = pytest.mark.skipif(not os.path.exists("/dev/fuse"), reason="no /dev/fuse")


def test_installed_pyfuse3_has_the_patches() -> None:
    assert hasattr(pyfuse3.Operations, "fallocate")
    assert pyfuse3.Operations.read_nowait is None  # the default: no fast path
    assert pyfuse3.Operations.write_nowait is None
    assert pyfuse3.NOWAIT_BURST > 1
    assert pyfuse3.Operations.write_views is False  # the default: bytes, as stock
    assert pyfuse3.Operations.write_drain is None  # the default: never deferred
    assert repr(pyfuse3.DEFERRED) == "pyfuse3.DEFERRED"


@pytest.fixture(scope="module")
def nowait_mount() -> Iterator[BareMount]:
    with bare_mounted(16 * PAGE, module="tests.nowait_fs") as m:
        yield m


def pread(m: BareMount, off: int, size: int) -> bytes:
    fd = os.open(m.image(), os.O_RDONLY)
    try:
        return os.pread(fd, size, off)
    finally:
        os.close(fd)


def pwrite(m: BareMount, off: int, data: bytes) -> int:
    fd = os.open(m.image(), os.O_WRONLY)
    try:
        return os.pwrite(fd, data, off)
    finally:
        os.close(fd)


@pytest.mark.parametrize(
    ("page", "expect"),
    [(0, b"N"), (1, b"\0"), (3, b"\0"), (4, b"\0"), (5, b"M"), (6, b"\0")],
)
def test_read_nowait_answers_or_passes_on(
    nowait_mount: BareMount, page: int, expect: bytes
) -> None:
    for size in (1, 100, PAGE, 2 * PAGE):
        assert pread(nowait_mount, page * PAGE, size) == expect * size


def test_read_nowait_fuse_error_is_the_reply(nowait_mount: BareMount) -> None:
    with pytest.raises(OSError) as ei:
        pread(nowait_mount, 2 * PAGE, PAGE)
    assert ei.value.errno == errno.ENOLINK


def test_read_nowait_failures_are_logged(nowait_mount: BareMount) -> None:
    pread(nowait_mount, 3 * PAGE, PAGE)
    pread(nowait_mount, 4 * PAGE, PAGE)
    log = nowait_mount.log_text()
    assert "read_nowait failed on purpose" in log
    assert "read_nowait() failed; passing the request to read()" in log


def test_write_nowait_answers_or_passes_on(nowait_mount: BareMount) -> None:
    m = nowait_mount
    assert pwrite(m, 8 * PAGE, b"a" * PAGE) == PAGE  # answered, nothing stored
    assert pread(m, 8 * PAGE, PAGE) == bytes(PAGE)
    assert pwrite(m, 9 * PAGE, b"b" * PAGE) == PAGE  # passed on: stored
    assert pread(m, 9 * PAGE, PAGE) == b"b" * PAGE
    with pytest.raises(OSError) as ei:
        pwrite(m, 10 * PAGE, b"c" * PAGE)
    assert ei.value.errno == errno.ENOLINK
    assert pread(m, 10 * PAGE, PAGE) == bytes(PAGE)
    assert pwrite(m, 11 * PAGE, b"d" * 100) == 100  # failed: logged, passed on
    assert pread(m, 11 * PAGE, 100) == b"d" * 100
    assert "write_nowait failed on purpose" in m.log_text()
    assert pwrite(m, 12 * PAGE, b"e" * PAGE) == 1  # its count is the reply


def test_bare_fs_nowait_round_trip() -> None:
    """The benchmark's bare FS with the patch's handlers (the ceiling with
    them, docs/profile.md) serves what it was given."""
    with bare_mounted(64 * PAGE, 20.0, "benchmarks.bare_fs", "--nowait") as m:
        data = os.urandom(8 * PAGE)
        assert pwrite(m, 4 * PAGE, data) == len(data)
        assert pread(m, 4 * PAGE, len(data)) == data
        assert pread(m, 63 * PAGE, 2 * PAGE) == bytes(PAGE)  # short at the end


# ------------------------------------------------------------------ bursts


def _hammer(m: BareMount, requests: int) -> int:
    """8 threads reading page 13 (read_nowait) with O_DIRECT while this one
    reads and writes through the async handlers (pages 1 and 9); the longest
    run of page-13 reads the mount answered with no checkpoint in between."""
    assert pread(m, 14 * PAGE, PAGE) == b"S" * PAGE  # the ticker starts
    stop = threading.Event()
    errors: list[BaseException] = []

    def reader() -> None:
        try:
            fd = os.open(m.image(), os.O_RDONLY | os.O_DIRECT)
            buf = mmap.mmap(-1, PAGE)  # page-aligned, as O_DIRECT wants
            try:
                for _ in range(requests):
                    if stop.is_set():
                        break
                    assert os.preadv(fd, [buf], 13 * PAGE) == PAGE
                    assert buf[:] == b"B" * PAGE
            finally:
                os.close(fd)
                buf.close()
        except BaseException as e:
            errors.append(e)

    threads = [threading.Thread(target=reader) for _ in range(8)]
    for t in threads:
        t.start()
    try:
        # The async path keeps working between bursts (they yield to trio
        # every NOWAIT_BURST requests): reads and writes with real data.
        for i in range(20):
            data = bytes([i + 1]) * PAGE
            assert pwrite(m, 9 * PAGE, data) == PAGE
            assert pread(m, 9 * PAGE, PAGE) == data
            assert pread(m, 1 * PAGE, PAGE) == bytes(PAGE)
    finally:
        for t in threads:
            t.join()
        stop.set()
    assert not errors, errors
    return int(pread(m, 15 * PAGE, PAGE).strip())  # the ticker stops


def test_bursts_answer_queued_requests_back_to_back(nowait_mount: BareMount) -> None:
    """Under load, requests answered without a coroutine are taken straight
    from the queue, several without a checkpoint in between, and every
    answer is right; the async handlers are served meanwhile."""
    assert _hammer(nowait_mount, 3000) > 1


def test_without_bursts_every_request_passes_a_checkpoint() -> None:
    """``NOWAIT_BURST = 1``: pyfuse3's own loop, a checkpoint between any two
    requests (what makes the test above able to fail)."""
    with bare_mounted(16 * PAGE, 20.0, "tests.nowait_fs", "--burst", "1") as m:
        assert _hammer(m, 1000) == 1


# ------------------------------------------------------------ write views


def test_write_views_hand_over_what_is_kept() -> None:
    """``write_views``: both handlers get a read-only memoryview of the
    request; the view itself is released when its handler returns, and a
    slice kept past that still holds its request's bytes while later
    requests (read into the same worker buffers otherwise) come and go."""
    with bare_mounted(64 * PAGE, 20.0, "tests.views_fs") as m:
        assert pwrite(m, 20 * PAGE, b"t" * PAGE) == PAGE  # `write` keeps a slice
        assert pwrite(m, 21 * PAGE, b"v" * PAGE) == PAGE  # `write` keeps the view
        assert pwrite(m, 23 * PAGE, b"n" * PAGE) == PAGE  # `write_nowait` keeps a slice
        junk = os.urandom(16 * PAGE)
        for _ in range(20):  # the receive buffers are reused (or replaced)
            assert pwrite(m, 32 * PAGE, junk) == len(junk)
            assert pwrite(m, 0, junk[:PAGE]) == PAGE
        report = pread(m, 22 * PAGE, PAGE).rstrip().decode()
        assert report == (
            "memoryview-ro,nowait:memoryview-ro slice20=ok slice23=ok view21=released"
        )
        assert pread(m, 32 * PAGE, len(junk)) == junk  # and everything was stored
        assert pread(m, 20 * PAGE, PAGE) == b"t" * PAGE
        assert pread(m, 23 * PAGE, PAGE) == b"n" * PAGE


# ------------------------------------------------------------ deferred writes


def _defer_report(m: BareMount) -> dict[str, int]:
    words = pread(m, 22 * PAGE, PAGE).rstrip().decode().split()
    return {k: int(v) for k, v in (w.split("=") for w in words)}


def test_deferred_writes_are_answered_later_or_drained(tmp_path: Path) -> None:
    """``DEFERRED``: a write answered from a later request's handler (loop's
    two 512 KiB requests in flight per MiB) or by ``write_drain`` when the
    burst finds nothing queued; never outstanding while a coroutine runs
    (async reads run meanwhile); a write ``write_drain`` leaves unanswered
    gets EIO."""
    size = 8 << 20
    with bare_mounted(size, 20.0, "tests.defer_fs") as m:
        assert pwrite(m, 6 << 20, b"a" * 8 * PAGE) == 8 * PAGE  # alone: drained
        data = os.urandom(4 << 20)
        src = tmp_path / "data"
        src.write_bytes(data)
        loop = subprocess.run(
            ["losetup", "-f", "--show", "--direct-io=on", str(m.image())],
            check=True, capture_output=True, text=True,
        ).stdout.strip()  # fmt: skip
        stop = threading.Event()
        errors: list[BaseException] = []

        def reader() -> None:  # async reads (the FS has no read_nowait for them)
            try:
                while not stop.is_set():
                    pread(m, 5 << 20, 16 * PAGE)
            except BaseException as e:
                errors.append(e)

        t = threading.Thread(target=reader)
        t.start()
        try:
            for _ in range(10):
                subprocess.run(
                    ["dd", f"if={src}", f"of={loop}", "bs=1M", "oflag=direct", "status=none"],
                    check=True,
                )
        finally:
            stop.set()
            t.join()
            subprocess.run(["losetup", "-d", loop], check=True)
        assert not errors
        assert pread(m, 0, len(data)) == data
        assert pread(m, 6 << 20, 8 * PAGE) == b"a" * 8 * PAGE
        with pytest.raises(OSError) as ei:
            pwrite(m, 40 * PAGE, b"x" * 2 * PAGE)  # deferred, never answered by the FS
        assert ei.value.errno == errno.EIO
        r = _defer_report(m)
        assert r["deferred"] >= 1 + 10 * 4 + 1, r  # (loop: a MiB in one to three requests)
        assert r["later"] >= 1 and r["drained"] >= 1
        assert r["later"] + r["drained"] == r["deferred"] - 1  # all but the forgotten one
        assert r["coroutine-saw-deferred"] == 0
        assert "write_drain" in m.log_text() or "unanswered" in m.log_text()
