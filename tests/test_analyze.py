"""``zramfs analyze``: its predictions against what real devices report.

The figures analyze predicts for lz4 (and zstd at a level) are compared with
the ``mm_stat`` of a zramfs mount holding the same data — exactly when every
page is read, within a few percent when sampling — and with the kernel's own
zram0 (another lz4 implementation: within a few percent). Then the JSON
schema, ``--plot``, ``--save-dict``, the error cases, and the progress bar
(shown on a terminal, never with ``--quiet``, in a pipe or in ``--json``).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from benchmarks.data import realistic_data
from tests.conftest import ZramfsMount, needs_fuse
from tests.ttyutil import run_on_tty
from zramfs import analyze
from zramfs.backends import AlgoParams, create_codec
from zramfs.backends import lz4 as lz4_backend
from zramfs.core.device import CHAIN_SIZE
from zramfs.core.zsmalloc import ZsPool

PAGE = 4096
MiB = 1 << 20
DATA_SIZE = 32 * MiB
DISKSIZE = 64 * MiB
MM = {name: i for i, name in enumerate(analyze.MM_FIELDS)}


@pytest.fixture(scope="module")
def data() -> bytes:
    return realistic_data(DATA_SIZE)


def run_analyze(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    res = subprocess.run([sys.executable, "-m", "zramfs", "analyze", *args],
                         capture_output=True, text=True, check=False, timeout=240)  # fmt: skip
    if check and res.returncode != 0:
        raise AssertionError(f"analyze {' '.join(args)} exited {res.returncode}:\n{res.stderr}")
    return res


def analyze_json(*args: str) -> dict[str, Any]:
    out: dict[str, Any] = json.loads(run_analyze("--json", *args).stdout)
    return out


def candidate(report: dict[str, Any], name: str) -> dict[str, Any]:
    found: list[dict[str, Any]] = [c for c in report["candidates"] if c["name"] == name]
    assert len(found) == 1, [c["name"] for c in report["candidates"]]
    return found[0]


def write_direct(path: str, data: bytes) -> None:
    """Write ``data`` at offset 0 in 1 MiB O_DIRECT writes, as a loop device would."""
    import mmap

    fd = os.open(path, os.O_WRONLY | os.O_DIRECT)
    buf = mmap.mmap(-1, MiB)
    try:
        for off in range(0, len(data), MiB):
            buf[:] = data[off : off + MiB]
            assert os.pwrite(fd, buf, off) == MiB
    finally:
        buf.close()
        os.close(fd)


def within(predicted: int, actual: int, rel: float) -> bool:
    return abs(predicted - actual) <= rel * actual


# --------------------------------------------------------------- the memory model


def test_model_matches_a_real_pool(data: bytes) -> None:
    """ZsModel.pages == ZsPool.total_pages for the same objects stored once each."""
    model = analyze.ZsModel()
    assert model.chain_size == CHAIN_SIZE
    codec = create_codec("lz4")
    pages = [data[o : o + PAGE] for o in range(0, 4 * MiB, PAGE)]
    sizes = [model.stored_size(len(codec.compress(p))) for p in pages]
    assert any(s == PAGE for s in sizes) and any(s < 1000 for s in sizes)
    with ZsPool(CHAIN_SIZE) as pool:
        assert pool.huge_class_size == model.huge_class_size
        for i, s in enumerate(sizes):
            pool.malloc(s, i)
        assert model.pages(sizes) == pool.total_pages()
    # Scaling stands for that many copies of each object.
    with ZsPool(CHAIN_SIZE) as pool:
        for i, s in enumerate(sizes * 3):
            pool.malloc(s, i)
        assert model.pages(sizes, 3.0) == pool.total_pages()


# --------------------------------------------------------------- against a zramfs mount


@needs_fuse
def test_predictions_match_the_mounts_mm_stat(mount_factory: Any, data: bytes) -> None:
    m: ZramfsMount = mount_factory("--num-devices", "2")
    m.write_attr("disksize", str(DISKSIZE), dev=0)  # lz4, the default
    m.write_attr("comp_algorithm", "zstd", dev=1)
    m.write_attr("algorithm_params", "algo=zstd level=9", dev=1)
    m.write_attr("disksize", str(DISKSIZE), dev=1)
    for dev in (0, 1):
        write_direct(str(m.image(dev)), data)
    mm0, mm1 = m.mm_stat(0), m.mm_stat(1)
    never_written = (DISKSIZE - DATA_SIZE) // PAGE

    full = analyze_json(str(m.image(0)), "--algorithms", "lz4", "--sample", "all", "--no-dict")
    assert full["pages"] == full["sampled_pages"] == DISKSIZE // PAGE
    assert full["direct_io"] is True
    # Same-filled pages: the ones zram found, plus every page never written.
    assert full["same_filled_pages"]["sampled"] == mm0[MM["same_pages"]] + never_written
    lz4 = candidate(full, "lz4")
    # Every page read, the same codec, the same pool: the very same figures.
    assert within(lz4["compr_data_size"], mm0[MM["compr_data_size"]], 0.005), (lz4, mm0)
    assert within(lz4["mem_used_total"], mm0[MM["mem_used_total"]], 0.01), (lz4, mm0)
    stored = DATA_SIZE // PAGE - mm0[MM["same_pages"]]
    assert round(lz4["huge_share"] * stored) == mm0[MM["huge_pages"]]
    assert lz4["ratio"] == pytest.approx(stored * PAGE / mm0[MM["compr_data_size"]], rel=0.005)
    # analyze also reports the device's own mm_stat.
    assert full["current"]["algorithm"] == "lz4"
    assert full["current"]["mem_used_total"] == mm0[MM["mem_used_total"]]

    zfull = analyze_json(str(m.image(1)), "--algorithms", "zstd", "--levels", "zstd=9",
                         "--sample", "all", "--no-dict", "--budget", "0")  # fmt: skip
    z9 = candidate(zfull, "zstd-9")
    assert not z9["truncated"]
    assert within(z9["compr_data_size"], mm1[MM["compr_data_size"]], 0.005), (z9, mm1)
    assert within(z9["mem_used_total"], mm1[MM["mem_used_total"]], 0.01), (z9, mm1)
    assert zfull["current"]["algorithm"] == "zstd"

    # Sampling a quarter of the pages: close, not exact.
    part = analyze_json(str(m.image(0)), "--algorithms", "lz4", "--sample", "4096", "--no-dict")
    assert part["sampled_pages"] == 4096
    lz4s = candidate(part, "lz4")
    assert within(lz4s["compr_data_size"], mm0[MM["compr_data_size"]], 0.06), (lz4s, mm0)
    assert within(lz4s["mem_used_total"], mm0[MM["mem_used_total"]], 0.06), (lz4s, mm0)
    assert within(part["same_filled_pages"]["estimated"], never_written, 0.1)
    # The seed picks the sample: another seed, other pages, (slightly) other figures.
    other = analyze_json(str(m.image(0)), "--algorithms", "lz4", "--sample", "4096",
                         "--no-dict", "--seed", "7")  # fmt: skip
    assert candidate(other, "lz4")["compr_data_size"] != lz4s["compr_data_size"]


@needs_fuse
def test_uninitialized_image_is_an_error(zmount: ZramfsMount) -> None:
    res = run_analyze(str(zmount.image()), check=False)
    assert res.returncode == 1
    assert "not initialized" in res.stderr and "Traceback" not in res.stderr
    assert res.stderr.count("\n") == 1 and res.stdout == ""


# --------------------------------------------------------------- against the kernel's zram


@pytest.mark.kernel_zram
def test_predictions_match_the_kernels_mm_stat(kernel_zram: Path, data: bytes) -> None:
    if "lz4" not in (kernel_zram / "comp_algorithm").read_text():
        pytest.skip("the kernel's zram has no lz4")
    res = run_analyze("/dev/zram0", check=False)  # disksize 0: nothing to read
    assert res.returncode == 1
    assert res.stderr == (
        "zramfs analyze: /dev/zram0: nothing to analyze: "
        "the zram device is not initialized (disksize 0)\n"
    )
    (kernel_zram / "comp_algorithm").write_text("lz4")
    (kernel_zram / "disksize").write_text(str(DISKSIZE))
    write_direct("/dev/zram0", data)
    mm = [int(x) for x in (kernel_zram / "mm_stat").read_text().split()]
    rep = analyze_json("/dev/zram0", "--algorithms", "lz4", "--sample", "all", "--no-dict")
    assert rep["current"]["algorithm"] == "lz4"
    assert rep["current"]["compr_data_size"] == mm[MM["compr_data_size"]]
    never_written = (DISKSIZE - DATA_SIZE) // PAGE
    assert rep["same_filled_pages"]["sampled"] == mm[MM["same_pages"]] + never_written
    lz4 = candidate(rep, "lz4")
    if lz4_backend.ACCELERATED:  # the kernel's LZ4 blocks: its very numbers
        assert lz4["compr_data_size"] == mm[MM["compr_data_size"]], (lz4, mm)
        assert lz4["mem_used_total"] == mm[MM["mem_used_total"]], (lz4, mm)
    else:  # python-lz4 picks its matches a little differently from the kernel
        assert within(lz4["compr_data_size"], mm[MM["compr_data_size"]], 0.03), (lz4, mm)
        assert within(lz4["mem_used_total"], mm[MM["mem_used_total"]], 0.03), (lz4, mm)


# --------------------------------------------------------------- output formats


@pytest.fixture(scope="module")
def sample_file(tmp_path_factory: pytest.TempPathFactory, data: bytes) -> Path:
    """8 MiB of realistic data with 256 zero pages and 64 same-filled pages mixed in."""
    path = tmp_path_factory.mktemp("analyze") / "image.bin"
    body = data[: 8 * MiB] + bytes(256 * PAGE) + b"\xa5\x5a\x01\x02\x03\x04\x05\x06" * 512 * 64
    path.write_bytes(body)
    return path


def test_json_schema(sample_file: Path, tmp_path: Path) -> None:
    dict_path = tmp_path / "trained.zdict"
    rep = analyze_json(str(sample_file), "--sample", "1024", "--budget", "0.3",
                       "--save-dict", str(dict_path))  # fmt: skip
    npages = 8 * MiB // PAGE + 256 + 64
    assert rep["device"] == str(sample_file)
    assert rep["size_bytes"] == npages * PAGE and rep["pages"] == npages
    assert rep["sampled_pages"] == 1024 and rep["seed"] == 0
    assert rep["current"] is None  # not a zram device
    same = rep["same_filled_pages"]
    assert 0 < same["sampled"] < 1024
    assert rep["stored_pages_estimated"] + same["estimated"] == npages
    assert rep["huge_class_size"] == analyze.ZsModel().huge_class_size
    assert rep["chain_size"] == CHAIN_SIZE
    expected = [analyze.Candidate(a, lv).label
                for a, lvs in analyze.DEFAULT_LEVELS.items() for lv in lvs]  # fmt: skip
    expected += [f"zstd-{lv}+dict" for lv in analyze.DEFAULT_LEVELS["zstd"]
                 if lv <= analyze.DICT_MAX_LEVEL]  # fmt: skip
    assert [c["name"] for c in rep["candidates"]] == expected
    nonsame = 1024 - same["sampled"]
    for c in rep["candidates"]:
        assert set(c) == {"name", "algorithm", "level", "dictionary", "pages", "truncated",
                          "adjusted_by", "ratio", "compr_data_size", "mem_used_total",
                          "huge_share", "compress_MB_s", "decompress_MB_s"}  # fmt: skip
        assert c["ratio"] > 1 and 0 <= c["huge_share"] < 1
        assert c["compress_MB_s"] > 0 and c["decompress_MB_s"] > 0
        # A slot is never smaller than its object: memory >= compressed bytes.
        assert c["mem_used_total"] >= c["compr_data_size"] > 0
        assert c["mem_used_total"] % PAGE == 0
        if c["dictionary"]:
            assert c["pages"] <= nonsame // 2 and c["adjusted_by"] is not None
        elif c["truncated"]:
            assert c["pages"] < nonsame and c["adjusted_by"] is not None
        else:
            assert c["pages"] == nonsame and c["adjusted_by"] is None
    # brotli-11 (~10 ms a page) cannot do 900 pages in 0.3 s.
    assert candidate(rep, "brotli-11")["truncated"]
    # Denser settings of one algorithm use less memory (on the same pages).
    assert candidate(rep, "zstd-9")["mem_used_total"] < candidate(rep, "zstd-1")["mem_used_total"]
    assert candidate(rep, "lz4")["compr_data_size"] > candidate(rep, "zstd-3")["compr_data_size"]
    d = rep["dictionary"]
    assert d["note"] is None and 0 < d["size_bytes"] <= analyze.DEFAULT_DICT_SIZE
    assert d["train_pages"] + d["eval_pages"] == nonsame
    assert d["saved_to"] == str(dict_path)
    # The saved dictionary is one zramfs's zstd backend accepts.
    blob = dict_path.read_bytes()
    assert len(blob) == d["size_bytes"]
    codec = create_codec("zstd", AlgoParams(level=3, dictionary=blob))
    page = sample_file.read_bytes()[:PAGE]
    assert codec.decompress(codec.compress(page)) == page
    kinds = [r["kind"] for r in rep["recommendations"]]
    assert kinds[:4] == ["swap", "balanced", "recompress", "dictionary"]
    for r in rep["recommendations"]:
        assert r["text"] and (r["candidate"] == "" or r["candidate"] in expected)
    assert rep["recommendations"][0]["candidate"] == "lz4"


def test_text_output(sample_file: Path) -> None:
    out = run_analyze(str(sample_file), "--algorithms", "lz4,zstd", "--levels", "zstd=1,3",
                      "--sample", "512", "--min-speed", "1").stdout  # fmt: skip
    lines = out.splitlines()
    assert lines[0] == f"zramfs analyze: {sample_file}"
    rows = {
        ln.split()[0]: ln.split()
        for ln in lines
        if ln.split()[:1]
        and ln.split()[0] in ("lz4", "zstd-1", "zstd-3", "zstd-1+dict", "zstd-3+dict")
    }
    assert set(rows) == {"lz4", "zstd-1", "zstd-3", "zstd-1+dict", "zstd-3+dict"}
    assert "recommendation:" in lines
    assert any(ln.startswith("  swap (latency first): ") for ln in lines)
    assert any("most memory saved at >= 1 MB/s compress: zstd-" in ln for ln in lines)


def test_plot_writes_a_png(sample_file: Path, tmp_path: Path) -> None:
    out = tmp_path / "chart.png"
    run_analyze(str(sample_file), "--algorithms", "lz4,zstd,brotli", "--levels", "zstd=1,3",
                "--levels", "brotli=1", "--sample", "256", "--plot", str(out))  # fmt: skip
    png = out.read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000
    # The IHDR chunk: width and height of the 12x5 inch figure at 100 dpi.
    assert png[12:16] == b"IHDR"
    assert int.from_bytes(png[16:20], "big") == 1200
    assert int.from_bytes(png[20:24], "big") == 500


def test_sample_smaller_than_the_device_and_odd_sizes(tmp_path: Path, data: bytes) -> None:
    """A file that is not a multiple of the page size: its tail page is zero-padded."""
    path = tmp_path / "odd.bin"
    path.write_bytes(data[: 100 * PAGE + 123])
    rep = analyze_json(str(path), "--algorithms", "lz4", "--no-dict", "--sample", "5000")
    assert rep["pages"] == 101 and rep["sampled_pages"] == 101
    assert rep["dictionary"] is None
    small = analyze_json(str(path), "--algorithms", "zstd", "--levels", "zstd=3",
                         "--sample", "40")  # fmt: skip
    assert small["sampled_pages"] == 40
    assert "training pages" in small["dictionary"]["note"]
    assert [c["name"] for c in small["candidates"]] == ["zstd-3"]


def test_all_same_filled(tmp_path: Path) -> None:
    path = tmp_path / "zeros.bin"
    path.write_bytes(bytes(64 * PAGE))
    res = run_analyze(str(path))
    assert "every sampled page is same-filled" in res.stdout
    rep = analyze_json(str(path))
    assert rep["same_filled_pages"]["sampled"] == 64 and rep["stored_pages_estimated"] == 0
    assert rep["candidates"] == [] and rep["recommendations"] == []


# --------------------------------------------------------------- errors


@pytest.mark.parametrize("case", ["missing", "directory", "empty", "fifo"])
def test_errors_are_one_line(tmp_path: Path, case: str) -> None:
    path = tmp_path / case
    want = {"missing": "No such file or directory", "directory": "Is a directory",
            "empty": "nothing to analyze", "fifo": "not a regular file"}[case]  # fmt: skip
    if case == "directory":
        path.mkdir()
    elif case == "empty":
        path.write_bytes(b"")
    elif case == "fifo":
        os.mkfifo(path)
    res = run_analyze(str(path), check=False)
    assert res.returncode == 1, res
    assert res.stdout == ""
    assert res.stderr.startswith(f"zramfs analyze: {path}: ") and want in res.stderr
    assert res.stderr.count("\n") == 1 and "Traceback" not in res.stderr


def test_unreadable(tmp_path: Path) -> None:
    if os.geteuid() != 0 or shutil.which("setpriv") is None:
        pytest.skip("needs root and setpriv to drop the DAC override capabilities")
    # Somebody else's 0600 file, read by root without CAP_DAC_OVERRIDE /
    # CAP_DAC_READ_SEARCH: EACCES, while the checkout (wherever it lies, even
    # under a 0700 directory) stays importable, as it would not be for nobody.
    path = tmp_path / "secret.bin"
    path.write_bytes(bytes(PAGE))
    os.chown(path, 65534, 65534)
    path.chmod(0o600)
    no_dac = "-dac_override,-dac_read_search"
    res = subprocess.run(
        ["setpriv", f"--bounding-set={no_dac}", f"--inh-caps={no_dac}",
         sys.executable, "-m", "zramfs", "analyze", str(path)],
        capture_output=True, text=True, check=False, cwd=os.getcwd(),
    )  # fmt: skip
    assert res.returncode == 1, res
    assert res.stderr == f"zramfs analyze: {path}: Permission denied\n"


@pytest.mark.parametrize("args", [
    ["--algorithms", "lzo"],
    ["--levels", "zstd=99"],
    ["--levels", "brotli=12"],
    ["--levels", "zstd"],
    ["--algorithms", "lz4", "--levels", "zstd=3"],
    ["--sample", "-1"],
    ["--budget", "x"],
])  # fmt: skip
def test_usage_errors(sample_file: Path, args: list[str]) -> None:
    res = run_analyze(str(sample_file), *args, check=False)
    assert res.returncode == 2, res
    assert "Traceback" not in res.stderr and res.stdout == ""


# --------------------------------------------------------------- the progress bar


def _run_on_tty(args: list[str]) -> tuple[int, str, str]:
    return run_on_tty([sys.executable, "-m", "zramfs", "analyze", *args])


def test_progress_bar_only_on_a_terminal(sample_file: Path) -> None:
    args = [str(sample_file), "--algorithms", "lz4,zstd", "--levels", "zstd=3",
            "--sample", "2048"]  # fmt: skip
    rc, out, tty = _run_on_tty(args + ["--json"])
    assert rc == 0
    assert "reading" in tty and "lz4" in tty
    assert "\r" in tty and "page/s" in tty  # a tqdm bar was drawn ...
    rep = json.loads(out)  # ... on stderr only: stdout is pure JSON
    assert [c["name"] for c in rep["candidates"]] == ["lz4", "zstd-3", "zstd-3+dict"]
    rc, out, tty = _run_on_tty(args + ["--quiet"])
    assert rc == 0 and tty == "" and "recommendation:" in out
    # stderr a pipe (not a terminal): no bar either.
    res = run_analyze(*args)
    assert res.stderr == "" and "\r" not in res.stdout and "\x1b" not in res.stdout
