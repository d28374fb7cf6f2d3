"""Smoke test of the harness itself: mount, echo/cat, a loop device, clean teardown."""

from __future__ import annotations

import errno
import os

import pytest

from tests.conftest import ZramfsMount, needs_fuse, needs_loop, run

pytestmark = needs_fuse


def test_tree_and_attribute_round_trip(zmount: ZramfsMount) -> None:
    assert zmount.read_attr("initstate") == "0\n"
    assert zmount.read_attr("comp_algorithm") == "[lz4] lz4hc zstd deflate brotli \n"
    zmount.write_attr("comp_algorithm", "zstd")  # echo -n
    zmount.write_attr("disksize", "8M\n")
    assert zmount.read_attr("disksize") == f"{8 << 20}\n"
    assert zmount.read_attr("initstate") == "1\n"
    assert os.stat(zmount.image()).st_size == 8 << 20
    with pytest.raises(OSError) as e:
        zmount.write_attr("comp_algorithm", "lz4")
    assert e.value.errno == errno.EBUSY
    with pytest.raises(OSError) as e:
        (zmount.sys() / "reset").read_text()
    assert e.value.errno == errno.EACCES


@needs_loop
def test_loop_device_sees_the_image(zmount: ZramfsMount) -> None:
    zmount.write_attr("disksize", "16M")
    loop = zmount.losetup()
    data = os.urandom(1 << 20)
    with open(loop, "r+b", buffering=0) as f:
        f.write(data)
        os.fsync(f.fileno())
    with open(zmount.image(), "rb") as f:
        assert f.read(1 << 20) == data
    with pytest.raises(OSError) as e:
        zmount.write_attr("reset", "1")
    assert e.value.errno == errno.EBUSY
    zmount.detach(loop)
    zmount.write_attr("reset", "1")
    assert zmount.read_attr("disksize") == "0\n"
    assert run("true").returncode == 0
