"""Run a command with its stderr on a pseudo-terminal (to see progress bars)."""

from __future__ import annotations

import fcntl
import os
import pty
import struct
import subprocess
import termios
import threading


def run_on_tty(cmd: list[str], timeout: float = 240) -> tuple[int, str, str]:
    """``cmd`` with stderr on a 100x30 pty and stdout a pipe: (rc, stdout, what the pty got)."""
    master, slave = pty.openpty()
    # A fresh pty is 0x0, and tqdm draws nothing into zero columns.
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 30, 100, 0, 0))
    chunks: list[bytes] = []

    def drain() -> None:
        while True:
            try:
                b = os.read(master, 65536)
            except OSError:  # EIO once the last writer has gone
                return
            if not b:
                return
            chunks.append(b)

    t = threading.Thread(target=drain, daemon=True)
    t.start()
    try:
        proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=slave, stdin=subprocess.DEVNULL,
                              check=False, timeout=timeout)  # fmt: skip
    finally:
        os.close(slave)
        t.join(timeout=10)
        os.close(master)
    return proc.returncode, proc.stdout.decode(), b"".join(chunks).decode(errors="replace")
