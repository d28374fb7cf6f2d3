"""Run a check in a fork()ed child: for code that keeps threads across calls."""

from __future__ import annotations

import os
import time
from collections.abc import Callable

import pytest


def check_in_child(check: Callable[[], bool], what: str, timeout: float = 30.0) -> None:
    """fork(); the child exits 0 if ``check()`` is true, else 1.  Fails the
    test if the child fails, or kills it and fails if it is still running
    after ``timeout`` seconds (threads that did not survive the fork: the
    child waits for them forever)."""
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child reports through its status
        try:
            ok = check()
        except BaseException:
            ok = False
        os._exit(0 if ok else 1)
    deadline = time.monotonic() + timeout
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            break
        if time.monotonic() > deadline:
            os.kill(pid, 9)
            os.waitpid(pid, 0)
            pytest.fail(f"the forked child hung in {what}")
        time.sleep(0.01)
    assert os.waitstatus_to_exitcode(status) == 0, f"the forked child failed in {what}"
