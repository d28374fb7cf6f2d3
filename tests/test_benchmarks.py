"""The side-by-side benchmark harness and its bare pyfuse3 file system, for real.

`benchmarks.side_by_side --quick` runs against zramfs (lz4, through a loop
device and on the image) and the bare file system (both paths) on 16 MiB; the
test checks that its figures are sane and computed as documented — not how
fast anything is — and that it leaves nothing mounted or attached.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from benchmarks.bare_fs import FSTYPE, bare_mounted
from benchmarks.data import realistic_data
from tests.conftest import needs_fuse, needs_loop
from zramfs.fs import mounts

pytestmark = [
    pytest.mark.fuse,
    pytest.mark.loop,
    needs_fuse,
    needs_loop,
    pytest.mark.skipif(shutil.which("fio") is None, reason="needs fio"),
]

ROOT = Path(__file__).resolve().parent.parent
MiB = 1 << 20
SIZE = 16 * MiB
TARGETS = ("zramfs-lz4-loop", "zramfs-lz4-image", "bare-loop", "bare-image")
FIO_JOBS = ("randread_qd1", "randread_qd16", "randwrite_qd1", "randwrite_qd16")


def _loops_backed_under(path: str) -> list[str]:
    return [a.loop for a in mounts.loops_under(path)]


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    tmp = tmp_path_factory.mktemp("side_by_side")
    cmd = [
        sys.executable, "-m", "benchmarks.side_by_side", "--quick", "--size", "16M",
        "--targets", ",".join(TARGETS), "--json",
        "--out", str(tmp / "bench.md"), "--plot", str(tmp / "bench.png"),
    ]  # fmt: skip
    res = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=240, check=False)
    assert res.returncode == 0, f"side_by_side exited {res.returncode}:\n{res.stderr[-4000:]}"
    out: dict[str, Any] = json.loads(res.stdout)
    out["_tmp"] = str(tmp)
    out["_stderr"] = res.stderr
    return out


def test_quick_run_figures_are_sane(quick_run: dict[str, Any]) -> None:
    res = quick_run
    assert res["config"]["size"] == SIZE
    assert res["config"]["targets"] == list(TARGETS)
    expected_sha = hashlib.sha256(realistic_data(SIZE)).hexdigest()
    assert res["config"]["source_sha256"] == expected_sha
    for name in TARGETS:
        rounds = res["results"][name]
        assert len(rounds) == 1, name
        r = rounds[0]
        assert "error" not in r and "skipped" not in r, (name, r)
        # What dd wrote is what came back (sha256 of a separate O_DIRECT read).
        assert r["readback_sha256"] == expected_sha, name
        assert r["readback_ok"] is True
        assert r["write_MBps"] > 0 and r["read_MBps"] > 0, name
        assert r["write_MBps"] == pytest.approx(SIZE / r["write_seconds"] / 1e6)
        for job in FIO_JOBS:
            assert r[f"{job}_iops"] > 0, (name, job)
            assert r[f"{job}_ios"] > 0, (name, job)
            assert r[f"{job}_clat_mean_us"] > 0, (name, job)
            assert r[f"{job}_clat_p99_us"] > 0, (name, job)
            assert r[f"{job}_daemon_cpu_us_per_req"] >= 0, (name, job)
        assert r["rss_before"] > 0 and r["rss_after"] > 0
        if name.startswith("zramfs-"):
            orig, compr, mem_used = r["mm_stat"][:3]
            assert orig == SIZE, name  # every page of the data is stored
            assert 0 < compr < orig and mem_used > 0, r["mm_stat"]
            assert r["ratio_compr"] == pytest.approx(orig / compr)
            assert r["ratio_mem"] == pytest.approx(orig / mem_used)
            assert r["rss_limit"] == pytest.approx(1.10 * mem_used + 16 * (SIZE // 4096))
            assert r["loop" if name.endswith("-loop") else "device"].startswith(
                "/dev/loop" if name.endswith("-loop") else r["mountpoint"]
            )
        else:
            assert "mm_stat" not in r, name
        # One round: the medians are that round's figures.
        med = res["medians"][name]
        for key in ("write_MBps", "read_MBps", "randread_qd16_iops"):
            assert med[key] == pytest.approx(r[key])


def test_quick_run_ratios_are_figure_over_reference(quick_run: dict[str, Any]) -> None:
    med, ratios = quick_run["medians"], quick_run["ratios"]
    assert set(ratios) == {"zramfs-lz4-loop", "zramfs-lz4-image"}
    for name, ref in (("zramfs-lz4-loop", "bare-loop"), ("zramfs-lz4-image", "bare-image")):
        for job in FIO_JOBS:
            for fig in (f"{job}_iops", f"{job}_clat_mean_us", f"{job}_clat_p99_us"):
                entry = ratios[name][fig]
                assert entry["reference"] == ref
                assert entry["value"] == pytest.approx(med[name][fig] / med[ref][fig])
        # No kernel zram0 among the targets: no dd ratios, their goals are n/a.
        assert "write_MBps" not in ratios[name]
    goals = {(g["target"], g["figure"]): g for g in quick_run["goals"]}
    assert goals[("zramfs-lz4-loop", "write_MBps")]["pass"] is None
    # The 4 KiB goals: the interleaved measurement's median of per-round ratios.
    paired = quick_run["interleaved_4k"]
    assert set(paired) == {"zramfs-lz4-loop", "zramfs-lz4-image"}
    for name, ref in (("zramfs-lz4-loop", "bare-loop"), ("zramfs-lz4-image", "bare-image")):
        assert paired[name]["reference"] == ref
        assert set(paired[name]["jobs"]) == {"randread_qd1", "randread_qd16", "randwrite_qd16"}
        for job, f in paired[name]["jobs"].items():
            assert len(f["ratios"]) == quick_run["config"]["pairs"] == 1
            assert f["ratios"][0] == pytest.approx(f["iops"][0] / f["ref_iops"][0])
            assert f["median_ratio"] == f["ratios"][0]
            assert f["iops"][0] > 0 and f["cpu_us"][0] > 0 and f["ref_cpu_us"][0] > 0
            g = goals[(name, f"{job}_iops")]
            assert g["value"] == f["median_ratio"] and g["reference"] == ref
            assert g["goal"].endswith("(interleaved)")
            assert g["pass"] == (g["value"] >= (0.75 if job == "randwrite_qd16" else 0.85))
    rss = goals[("zramfs-lz4-loop", "rss_margin")]
    m = med["zramfs-lz4-loop"]
    assert rss["pass"] == (m["rss_growth"] <= m["rss_limit"])
    assert ("PASS" in quick_run["_stderr"]) or ("MISS" in quick_run["_stderr"])


def test_quick_run_leaves_nothing_behind(quick_run: dict[str, Any]) -> None:
    assert not os.path.exists(quick_run["config"]["source"])  # the data in /dev/shm
    for name in TARGETS:
        r = quick_run["results"][name][0]
        mnt = r["mountpoint"]
        assert mounts.find_mount(mnt) is None, mnt
        assert not os.path.exists(os.path.dirname(mnt)), mnt
        assert _loops_backed_under(mnt) == [], mnt
    for entry in quick_run["interleaved_4k"].values():
        assert len(entry["mountpoints"]) == 2
        for mnt in entry["mountpoints"]:
            assert mounts.find_mount(mnt) is None, mnt
            assert not os.path.exists(os.path.dirname(mnt)), mnt
            assert _loops_backed_under(mnt) == [], mnt


def test_quick_run_report_files(quick_run: dict[str, Any]) -> None:
    tmp = Path(quick_run["_tmp"])
    md = (tmp / "bench.md").read_text()
    assert "![side-by-side chart](bench.png)" in md
    for name in TARGETS:
        assert f"| {name} |" in md
    assert "fio --name=randread_qd1" in md and "oflag=direct" in md
    assert "## 4 KiB, interleaved with the reference" in md
    assert "| zramfs-lz4-image vs bare-image | randread_qd16 | ×" in md
    png = (tmp / "bench.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000


def test_bare_fs_round_trip() -> None:
    size = 8 * MiB
    with bare_mounted(size) as b:
        assert sorted(os.listdir(b.path)) == ["dev"]
        assert sorted(os.listdir(b.path / "dev")) == ["zram0"]
        st = os.stat(b.image())
        assert st.st_size == size and stat.S_IMODE(st.st_mode) == 0o660
        found = mounts.find_mount(str(b.path))
        assert found is not None and found.fstype == FSTYPE
        data = os.urandom(3 * MiB + 123)
        off = 5 * 4096 + 7
        fd = os.open(b.image(), os.O_RDWR)
        try:
            assert os.pwrite(fd, data, off) == len(data)
            assert os.pread(fd, len(data), off) == data
            assert os.pread(fd, 4096, 0) == bytes(4096)  # never written: zeros
            assert os.pread(fd, 4096, size) == b""  # at the end
            assert os.pwrite(fd, b"x" * 8192, size - 4096) == 4096  # short at the end
            with pytest.raises(OSError) as exc:
                os.pwrite(fd, b"x", size)
            assert exc.value.errno == errno.ENOSPC
            os.ftruncate(fd, size)  # no-op truncate is accepted
            with pytest.raises(OSError) as exc:
                os.ftruncate(fd, size // 2)
            assert exc.value.errno == errno.EINVAL
        finally:
            os.close(fd)
        # O_DIRECT, as dd and fio use it.
        fd = os.open(b.image(), os.O_RDONLY | os.O_DIRECT)
        try:
            assert os.pread(fd, MiB, 0)[off : off + 100] == data[:100]
        finally:
            os.close(fd)
        proc, path = b.proc, b.path
    # SIGTERM → pyfuse3.terminate() → clean unmount and exit 0.
    assert proc.returncode == 0
    assert mounts.find_mount(str(path)) is None
    assert not path.exists()


@pytest.fixture(scope="module")
def kernel_run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A quick run of one zramfs target against the kernel's zram0 (skipped
    when zram0 is absent or has no lz4: the harness reports it skipped)."""
    tmp = tmp_path_factory.mktemp("side_by_side_kernel")
    cmd = [
        sys.executable, "-m", "benchmarks.side_by_side", "--quick", "--size", "16M",
        "--targets", "kernel-lz4,zramfs-lz4-image", "--json", "--out", str(tmp / "bench.md"),
    ]  # fmt: skip
    res = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=400, check=False)
    assert res.returncode == 0, f"side_by_side exited {res.returncode}:\n{res.stderr[-4000:]}"
    out: dict[str, Any] = json.loads(res.stdout)
    kernel = out["results"]["kernel-lz4"][0]
    if "skipped" in kernel:
        pytest.skip(f"kernel zram0: {kernel['skipped']}")
    out["_tmp"] = str(tmp)
    return out


def test_dd_ratios_are_measured_interleaved_with_the_kernel(kernel_run: dict[str, Any]) -> None:
    """`interleaved_dd`: per round, the zramfs dd figure over the kernel's
    taken right after it; the dd goals use the median of those ratios."""
    entry = kernel_run["interleaved_dd"]["zramfs-lz4-image"]
    assert entry["reference"] == "kernel-lz4" and "error" not in entry, entry
    goals = {(g["target"], g["figure"]): g for g in kernel_run["goals"]}
    for fig, goal in (("write_MBps", 0.9), ("read_MBps", 0.6)):
        f = entry["figures"][fig]
        assert len(f["ratios"]) == kernel_run["config"]["pairs"] == 1
        assert f["MBps"][0] > 0 and f["ref_MBps"][0] > 0
        assert f["ratios"][0] == pytest.approx(f["MBps"][0] / f["ref_MBps"][0])
        assert f["median_ratio"] == f["ratios"][0]
        g = goals[("zramfs-lz4-image", fig)]
        assert g["goal"].endswith("(interleaved)") and g["reference"] == "kernel-lz4"
        assert g["value"] == f["median_ratio"] and g["pass"] == (g["value"] >= goal)
    md = (Path(kernel_run["_tmp"]) / "bench.md").read_text()
    assert "## dd, interleaved with kernel-lz4" in md
    assert "| zramfs-lz4-image vs kernel-lz4 | write | ×" in md
    # Nothing left behind: the round's mount is gone and zram0 is reset.
    for mnt in entry["mountpoints"]:
        assert mounts.find_mount(mnt) is None, mnt
        assert _loops_backed_under(mnt) == [], mnt
    assert Path("/sys/block/zram0/initstate").read_text().strip() == "0"
