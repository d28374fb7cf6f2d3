"""fio with crc32c verification on a block device, JSON report: shared by the fio tests.

A job file is ``[global]`` (`VERIFY` plus the test's own options) and one
section ``[NAMEj]`` per job; fio writes its report with
``--output-format=json`` next to the job file, and `finish` parses it and
fails the test on a non-zero exit, a job error or a hung fio.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Sequence
from pathlib import Path
from typing import Any

Opts = dict[str, str | int]

# Every job: libaio on O_DIRECT, each block carrying a crc32c header, the
# first mismatch fatal.  verify_state_save=0, else fio drops
# local-*-verify.state files in the cwd.
VERIFY: Opts = {
    "ioengine": "libaio",
    "direct": 1,
    "iodepth": 8,
    "verify": "crc32c",
    "verify_fatal": 1,
    "verify_state_save": 0,
}


def jobfile(tmp: Path, name: str, filename: str, opts: Opts, jobs: Sequence[Opts]) -> Path:
    """``tmp/NAME.fio``: `VERIFY` and ``opts`` on ``filename`` for every job,
    then section ``[NAMEj]`` with ``jobs[j]``'s own options (offset, ...)."""
    lines = ["[global]", *(f"{k}={v}" for k, v in {"filename": filename, **VERIFY, **opts}.items())]
    for j, job in enumerate(jobs):
        lines += [f"[{name}{j}]", *(f"{k}={v}" for k, v in job.items())]
    path = tmp / f"{name}.fio"
    path.write_text("\n".join(lines) + "\n")
    return path


def start(job: Path) -> tuple[subprocess.Popen[str], Path]:
    """fio on ``job`` in the background (cwd: its folder); the JSON goes to ``NAME.json``."""
    out = job.with_suffix(".json")
    proc = subprocess.Popen(
        ["fio", "--output-format=json", f"--output={out}", str(job)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=job.parent,
    )  # fmt: skip
    return proc, out


def finish(proc: subprocess.Popen[str], out: Path, timeout: float, *, check: bool = True) -> Any:
    """Wait (bounded: a hung fio is stuck I/O), then parse the report.

    With ``check``, a non-zero exit or a job's error fails the test; either
    way the report carries fio's exit code as ``_rc`` and its stderr as
    ``_stderr``.
    """
    try:
        _, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        raise AssertionError(f"fio still running after {timeout:.0f} s: I/O is stuck") from None
    text = out.read_text() if out.exists() else ""
    if check:
        assert proc.returncode == 0, f"fio exited {proc.returncode}:\n{err}\n{text[-4000:]}"
    # fio may print warnings before the JSON document.
    report = json.loads(text[text.index("{") :]) if "{" in text else {}
    if check:
        for j in report["jobs"]:
            assert j["error"] == 0, (j["jobname"], j["error"], err)
    report["_rc"] = proc.returncode
    report["_stderr"] = err
    return report


def run(job: Path, timeout: float, *, check: bool = True) -> Any:
    """`start` then `finish`."""
    proc, out = start(job)
    return finish(proc, out, timeout, check=check)
