"""The progress bar of ``zramfs setup`` / ``teardown``: on a terminal's stderr only.

The step lines on stdout are the same with and without the bar; the bar
(tqdm, "N/M devices") appears on stderr when that is a terminal and never
when it is a pipe.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ZramfsMount, needs_fuse, needs_loop
from tests.ttyutil import run_on_tty

pytestmark = [
    needs_fuse,
    needs_loop,
    pytest.mark.skipif(shutil.which("mkfs.ext2") is None, reason="needs mkfs.ext2"),
]

CONFIG = "[zram0]\nzram-size = 16\nfs-type = ext2\n[zram1]\nzram-size = 16\nfs-type = ext2\n"


def _steps(stdout: str) -> list[str]:
    """stdout with the loop device numbers (which vary between runs) blanked."""
    return re.sub(r"/dev/loop\d+", "/dev/loopN", stdout).splitlines()


def test_setup_and_teardown_bar_on_a_terminal(zmount: ZramfsMount, tmp_path: Path) -> None:
    config = tmp_path / "z.conf"
    config.write_text(CONFIG)
    common = ["--root", str(zmount.path), "--state", str(tmp_path / "state.json")]
    setup = [sys.executable, "-m", "zramfs", "setup", str(config), *common]
    teardown = [sys.executable, "-m", "zramfs", "teardown", *common]
    try:
        rc, out_tty, tty = run_on_tty(setup)
        assert rc == 0, (out_tty, tty)
        assert "zram1: ready: ext2 on /dev/loop" in out_tty
        assert "zramfs setup: 0/2 devices |" in tty and "\r" in tty
        # The bar names the command running ...
        assert re.search(r"devices \|.*\| \d\d:\d\d, zram1: mkfs\.ext2", tty), tty
        # ... while the step lines go to stdout only.
        assert "disksize =" not in tty and "disksize = 16777216" in out_tty
        rc, down_tty, tty = run_on_tty(teardown)
        assert rc == 0, (down_tty, tty)
        assert "zramfs teardown: 0/2 devices |" in tty
        assert "zram1: gone" in down_tty

        # stderr a pipe: the same steps, and no bar.
        res = subprocess.run(setup, capture_output=True, text=True, check=False)
        assert res.returncode == 0 and res.stderr == "", res
        assert _steps(res.stdout) == _steps(out_tty)
        res = subprocess.run(teardown, capture_output=True, text=True, check=False)
        assert res.returncode == 0 and res.stderr == "", res
        assert _steps(res.stdout) == _steps(down_tty)
    finally:
        subprocess.run(teardown, capture_output=True, check=False)

    # Nothing to do: no bar drawn at all, just the message.
    rc, out, tty = run_on_tty(teardown)
    assert rc == 0 and "nothing recorded" in out and tty == ""
