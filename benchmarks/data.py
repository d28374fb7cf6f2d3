"""Reproducible test data for benchmarks and fidelity tests.

`realistic_data(size)` is what a zram device typically holds when it backs a
file system or a tmpfs-like scratch area: an uncompressed tar stream of this
machine's own files, in a fixed order, with fixed metadata.  The sources are
interleaved by weight (see `SOURCES`) so that any prefix, 64 MiB as much as
256 MiB, has the same natural mix:

* compressible pages: shared libraries and executables, Python sources and
  byte code, documentation, .mo catalogues, SVG icons, terminfo, perl...;
* incompressible pages: gzip'ed man pages and changelogs, PNG icons (about
  10 % of the pages are stored huge with lz4);
* same-filled pages only where nature puts them: 4 KiB-aligned zero runs
  inside binaries, tar's end-of-archive blocks.  That is rare (about 0.1 % of
  pages: tar pads members to 512 bytes, not 4 KiB, and installed files have
  almost no whole zero pages); `swap_like_data` is the set with many.

The stream is built once per size and cached (``$ZRAMFS_DATA_CACHE``, else
``$XDG_CACHE_HOME/zramfs``, else ``/tmp/zramfs-data-cache``), so every later
call returns the very same bytes on this machine even if packages change.
Building 256 MiB takes a few seconds (warm page cache).

`swap_like_data(size)` is the kernel zram's other typical content, swapped-out
anonymous memory: a seeded mix of zero pages, other same-filled pages, heap-like
pages (mostly small integers, pointers and zeros), text and random bytes.  It is
generated, not cached (it is cheap), and is the same for every call anywhere.
"""

from __future__ import annotations

import io
import os
import random
import stat
import tarfile
import tempfile
from collections.abc import Iterator
from pathlib import Path

PAGE_SIZE = 4096

#: Bump when the recipe changes: cached files of an older recipe are ignored.
RECIPE_VERSION = 1

#: (root, subtrees of root to leave out, share of the bytes).  The weights are
#: shares of the stream, so a source with big files is not over-represented.
SOURCES: tuple[tuple[str, tuple[str, ...], float], ...] = (
    ("/usr/lib/x86_64-linux-gnu", (), 0.25),
    ("/usr/bin", (), 0.05),
    ("/usr/lib/python3", (), 0.05),
    ("/usr/lib/python3.11", (), 0.15),
    ("/usr/share", ("doc", "man", "locale", "icons"), 0.15),
    ("/usr/share/locale", (), 0.10),
    ("/usr/share/doc", (), 0.10),
    ("/usr/share/man", (), 0.08),
    ("/usr/share/icons", (), 0.07),
)

#: Files larger than this are left out (one big library would otherwise fill
#: a source's whole share of a small prefix).
MAX_FILE_SIZE = 4 << 20

#: Fixed metadata: the stream must not depend on when files were installed.
FIXED_MTIME = 1_700_000_000


def cache_dir() -> Path:
    """Where built streams are kept (created on demand)."""
    env = os.environ.get("ZRAMFS_DATA_CACHE")
    if env:
        return Path(env)
    xdg = os.environ.get("XDG_CACHE_HOME")
    if xdg:
        return Path(xdg) / "zramfs"
    return Path(tempfile.gettempdir()) / "zramfs-data-cache"


def _walk(root: str, exclude: tuple[str, ...]) -> Iterator[str]:
    """Every path under ``root`` (directories too), sorted, symlinks not followed."""
    for dirpath, dirnames, filenames in os.walk(root):
        if dirpath == root and exclude:
            dirnames[:] = [d for d in dirnames if d not in exclude]
        dirnames.sort()
        for d in dirnames:
            # Directory symlinks are listed in dirnames but not descended into.
            yield os.path.join(dirpath, d)
        for f in sorted(filenames):
            yield os.path.join(dirpath, f)


def _entry(path: str) -> tuple[tarfile.TarInfo, bytes | None] | None:
    """A tar member for ``path`` with fixed metadata, or None to skip it."""
    try:
        st = os.lstat(path)
    except OSError:
        return None
    ti = tarfile.TarInfo(path.lstrip("/"))
    ti.mtime = FIXED_MTIME
    ti.mode = stat.S_IMODE(st.st_mode)
    ti.uid = ti.gid = 0
    ti.uname = ti.gname = "root"
    if stat.S_ISDIR(st.st_mode):
        ti.type = tarfile.DIRTYPE
        return ti, None
    if stat.S_ISLNK(st.st_mode):
        try:
            ti.linkname = os.readlink(path)
        except OSError:
            return None
        ti.type = tarfile.SYMTYPE
        return ti, None
    if not stat.S_ISREG(st.st_mode) or st.st_size > MAX_FILE_SIZE:
        return None
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_FILE_SIZE + 1)
    except OSError:
        return None
    if len(data) > MAX_FILE_SIZE:
        return None
    ti.size = len(data)
    return ti, data


def _build(size: int) -> bytes:
    """The first ``size`` bytes of the interleaved tar stream (zero-padded)."""
    buf = io.BytesIO()
    walkers = [_walk(root, excl) for root, excl, _ in SOURCES]
    weights = [w for _, _, w in SOURCES]
    emitted = [0] * len(SOURCES)
    live = [os.path.isdir(root) for root, _, _ in SOURCES]
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.GNU_FORMAT) as tar:
        while buf.tell() < size and any(live):
            # The live source furthest behind its share goes next.
            i = min(
                (k for k in range(len(SOURCES)) if live[k]), key=lambda k: emitted[k] / weights[k]
            )
            path = next(walkers[i], None)
            if path is None:
                live[i] = False
                continue
            entry = _entry(path)
            if entry is None:
                continue
            before = buf.tell()
            ti, data = entry
            tar.addfile(ti, io.BytesIO(data) if data is not None else None)
            emitted[i] += buf.tell() - before
    out = buf.getbuffer()
    if len(out) >= size:
        return bytes(out[:size])
    return bytes(out) + bytes(size - len(out))


def realistic_data(size: int) -> bytes:
    """``size`` bytes of a tar of this machine's /usr, identical on every call."""
    if size < 0:
        raise ValueError("size must be >= 0")
    path = cache_dir() / f"realistic-v{RECIPE_VERSION}-{size}.bin"
    try:
        data = path.read_bytes()
        if len(data) == size:
            return data
    except OSError:
        pass
    data = _build(size)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    return data


# --------------------------------------------------------------------- swap-like

_VOCABULARY = (
    "the of and to in is that for it as was with be by on not he this are or his from at which "
    "but have an they you were her she there been one all we their has would when if so no what "
    "up out about who them more do can some could into time only new other these two may then "
    "first any like now my over such our man me even most made after also did many before must "
    "through back years where much your way well down should because each just those people how "
    "too little state good very make world still own see men work long get here between both "
    "life being under never day same another know while last might us great old year off come "
    "since against go came right used take three error warning info debug request response user "
    "session token buffer cache memory page swap kernel device config value default return null "
    "true false struct list index count size offset length string object function module class"
)
_WORDS = _VOCABULARY.split()

#: Page kinds of `swap_like_data` and their shares.
SWAP_MIX: tuple[tuple[str, float], ...] = (
    ("zero", 0.30),
    ("same", 0.03),
    ("heap", 0.30),
    ("text", 0.20),
    ("random", 0.12),
    ("sparse", 0.05),
)


def _heap_page(rng: random.Random) -> bytes:
    """Anonymous memory: 8-byte words that are pointers, small ints or zeros."""
    base = 0x7F00_0000_0000 | (rng.getrandbits(28) << 12)
    words = []
    for _ in range(PAGE_SIZE // 8):
        r = rng.random()
        if r < 0.40:
            words.append(0)
        elif r < 0.70:
            words.append(base + (rng.getrandbits(12) << 4))
        elif r < 0.90:
            words.append(rng.getrandbits(rng.choice((4, 8, 16))))
        else:
            words.append(rng.getrandbits(64))
    return b"".join(w.to_bytes(8, "little") for w in words)


def _text_page(rng: random.Random) -> bytes:
    parts: list[str] = []
    n = 0
    while n < PAGE_SIZE:
        w = rng.choice(_WORDS)
        sep = "\n" if rng.random() < 0.08 else " "
        parts.append(w + sep)
        n += len(w) + 1
    return "".join(parts).encode()[:PAGE_SIZE]


def _sparse_page(rng: random.Random) -> bytes:
    """Mostly zeros with a few short records (a freshly touched buffer)."""
    page = bytearray(PAGE_SIZE)
    for _ in range(rng.randint(1, 6)):
        n = rng.randint(8, 200)
        at = rng.randrange(0, PAGE_SIZE - n)
        page[at : at + n] = rng.randbytes(n)
    return bytes(page)


def swap_like_data(size: int, seed: int = 2024) -> bytes:
    """``size`` bytes (whole pages; a tail is zero-padded) of swap-like pages."""
    rng = random.Random(seed)
    kinds = [k for k, _ in SWAP_MIX]
    weights = [w for _, w in SWAP_MIX]
    npages = -(-size // PAGE_SIZE)
    out = bytearray()
    for kind in rng.choices(kinds, weights, k=npages):
        if kind == "zero":
            out += bytes(PAGE_SIZE)
        elif kind == "same":
            out += rng.getrandbits(64).to_bytes(8, "little") * (PAGE_SIZE // 8)
        elif kind == "heap":
            out += _heap_page(rng)
        elif kind == "text":
            out += _text_page(rng)
        elif kind == "random":
            out += rng.randbytes(PAGE_SIZE)
        else:
            out += _sparse_page(rng)
    return bytes(out[:size])
