"""``zramfs ctl``: util-linux ``zramctl`` over a zramfs mount.

The same options, columns, formats, messages and exit codes as zramctl
(util-linux ``sys-utils/zramctl.c``, current upstream: ``--output-all``,
``-o +list``, ``-p/--algorithm-params``, the COMP-RATIO column), reading
``MNT/sys/block/zramN/<attr>`` where zramctl reads ``/sys/block/zramN/<attr>``.
Plus ``--json`` and ``--root``.

Device names ``/dev/zramN``, ``zramN`` and ``MNT/dev/zramN`` all mean device N
of the mount; NAME prints ``/dev/zramN`` as zramctl does.

The table is laid out the way libsmartcols lays out a table that is not
written to a terminal (column widths from the data, the header and the
column's width hint; right-aligned numbers; one space between columns; the
last column not padded), so the output is byte-for-byte what zramctl prints
for the same attribute values.  See docs/usage.md.
"""

from __future__ import annotations

import errno
import os
import platform
import re
import stat
import sys
import unicodedata
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import NoReturn

from . import __version__
from .fs import mounts

PROG = "zramfs ctl"
UINTMAX = (1 << 64) - 1
INT64_MAX = (1 << 63) - 1


class Exit(Exception):
    """Leave `main` with this exit code (the message is already printed)."""

    def __init__(self, code: int) -> None:
        super().__init__(code)
        self.code = code


def _warnx(msg: str) -> None:
    sys.stdout.flush()
    print(f"{PROG}: {msg}", file=sys.stderr)


def _warn(msg: str, err: int) -> None:
    _warnx(f"{msg}: {os.strerror(err)}")


def _errx(msg: str) -> NoReturn:
    _warnx(msg)
    raise Exit(1)


def _err(msg: str, err: int) -> NoReturn:
    _warn(msg, err)
    raise Exit(1)


def _errtryhelp() -> NoReturn:
    print(f"Try '{PROG} --help' for more information.", file=sys.stderr)
    raise Exit(1)


# --------------------------------------------------------------------------- columns


@dataclass(frozen=True)
class Column:
    name: str
    whint: float  # libsmartcols width hint: >= 1 is an absolute minimum width
    right: bool
    help: str
    json: str  # "string", "number", or "size" (a number with --bytes, else a string)


COLUMNS: tuple[Column, ...] = (
    Column("NAME", 0.25, False, "zram device name", "string"),
    Column("DISKSIZE", 5, True, "limit on the uncompressed amount of data", "size"),
    Column("DATA", 5, True, "uncompressed size of stored data", "size"),
    Column("COMPR", 5, True, "compressed size of stored data", "size"),
    Column("ALGORITHM", 3, False, "the selected compression algorithm", "string"),
    Column("STREAMS", 3, True, "number of concurrent compress operations", "number"),
    Column("ZERO-PAGES", 3, True, "empty pages with no allocated memory", "number"),
    Column("TOTAL", 5, True,
           "all memory including allocator fragmentation and metadata overhead", "size"),
    Column("MEM-LIMIT", 5, True, "memory limit used to store compressed data", "size"),
    Column("MEM-USED", 5, True, "peak memory usage to store compressed data", "size"),
    Column("MIGRATED", 5, True, "number of objects migrated by compaction", "size"),
    Column("COMP-RATIO", 5, True, "compression ratio: DATA/TOTAL", "number"),
    Column("MOUNTPOINT", 0.10, False, "where the device is mounted", "string"),
)  # fmt: skip
_BY_NAME = {c.name: i for i, c in enumerate(COLUMNS)}
DEFAULT_COLUMNS = tuple(
    _BY_NAME[n]
    for n in ("NAME", "ALGORITHM", "DISKSIZE", "DATA", "COMPR", "TOTAL", "STREAMS", "MOUNTPOINT")
)
MAX_COLUMNS = 2 * len(COLUMNS)  # zramctl's columns[] array

# mm_stat fields zramctl uses (the rest are ignored).
MM_ORIG_DATA_SIZE, MM_COMPR_DATA_SIZE, MM_MEM_USED_TOTAL, MM_MEM_LIMIT = 0, 1, 2, 3
MM_MEM_USED_MAX, MM_ZERO_PAGES, MM_NUM_MIGRATED = 4, 5, 6
MM_FIELDS = 7


def _column_id(name: str) -> int:
    """zramctl's column_name_to_id(): case-insensitive exact name."""
    return _BY_NAME.get(name.upper(), -1)


def _string_to_idarray(lst: str, room: int) -> list[int] | int:
    """util-linux string_to_idarray(): ids, or -1 (bad name, empty item), -2 (too many)."""
    ids: list[int] = []
    begin: int | None = None
    for p, ch in enumerate(lst):
        if len(ids) >= room:
            return -2
        if begin is None:
            begin = p
        end: int | None = None
        if ch == ",":
            end = p
        if p + 1 == len(lst):
            end = p + 1
        if end is None:
            continue
        if end <= begin:
            return -1
        cid = _column_id(lst[begin:end])
        if cid < 0:
            # zramctl prints the rest of the list from the bad name on.
            _warnx(f"unknown column: {lst[begin:]}")
            return -1
        ids.append(cid)
        begin = None
    return ids


def add_columns(current: list[int], lst: str) -> list[int] | None:
    """util-linux string_add_to_idarray(): ``+list`` appends, ``list`` replaces."""
    if not lst:
        return None
    if lst.startswith("+"):
        base, lst = list(current), lst[1:]
    else:
        base = []
    got = _string_to_idarray(lst, MAX_COLUMNS - len(base))
    if isinstance(got, int):
        return None
    return base + got


# --------------------------------------------------------------------------- sizes


def size_to_human_string(num: int) -> str:
    """util-linux size_to_human_string(SIZE_SUFFIX_1LETTER, num): "4G", "1.2M", "0B"."""
    exp = 0
    for shift in range(10, 61, 10):
        exp = shift - 10
        if num < (1 << shift):
            break
    else:
        exp = 60
    letter = "BKMGTPE"[exp // 10]
    dec = num >> exp if exp else num
    frac = num & ((1 << exp) - 1) if exp else 0
    if frac:
        if frac >= UINTMAX // 1000:
            frac = ((frac // 1024) * 1000) // (1 << (exp - 10))
        else:
            frac = (frac * 1000) // (1 << exp)
        frac = ((frac + 50) // 100) * 10  # round 4/5, keep one digit
        if frac == 100:
            dec += 1
            frac = 0
    if frac:
        s = f"{dec}.{frac:02d}"
        if s.endswith("0"):
            s = s[:-1]
        return s + letter
    return f"{dec}{letter}"


def _strtoumax(s: str, pos: int, base: int) -> tuple[int, int, int]:
    """C strtoumax() on s[pos:]: (value, end index, errno); end == pos if no digits."""
    i = pos
    while i < len(s) and s[i] in " \t\n\v\f\r":
        i += 1
    neg = False
    if i < len(s) and s[i] in "+-":
        neg = s[i] == "-"
        i += 1
    if base == 0:
        if s[i : i + 2].lower() == "0x" and i + 2 < len(s) and s[i + 2] in "0123456789abcdefABCDEF":
            base, i = 16, i + 2
        elif s[i : i + 1] == "0":
            base = 8
        else:
            base = 10
    digits = "0123456789abcdefghijklmnopqrstuvwxyz"[:base]
    start = i
    while i < len(s) and s[i].lower() in digits:
        i += 1
    if i == start:
        return 0, pos, 0
    val = int(s[start:i], base)
    if val > UINTMAX:
        return UINTMAX, i, errno.ERANGE
    if neg:
        val = (-val) & UINTMAX
    return val, i, 0


def _scale(x: int, base: int, power: int) -> tuple[int, int]:
    for _ in range(power):
        if UINTMAX // base < x:
            return x, -errno.ERANGE
        x *= base
    return x, 0


def parse_size(text: str) -> tuple[int, int]:
    """util-linux parse_size(): (bytes, 0) or (0, -errno).

    ``K M G T P E Z Y`` (and lower case) with an optional ``iB`` are powers of
    1024, with ``B`` (``KB``, ``MB``...) powers of 1000; one decimal fraction
    ("1.5G"); C integer syntax for the number (``0x10M``, ``010``).
    """
    p = 0
    while p < len(text) and text[p].isspace():
        p += 1
    if not text or (p < len(text) and text[p] == "-"):
        return 0, -errno.EINVAL
    x, end, err = _strtoumax(text, 0, 0)
    if end == 0 or (err and x in (UINTMAX, 0)):
        return 0, -(err or errno.EINVAL)
    if end == len(text):
        return x, 0
    p = end
    base, frac, frac_zeros = 1024, 0, 0

    def at(i: int) -> str:
        return text[i] if i < len(text) else ""

    while True:  # check_suffix
        if p >= len(text):
            return 0, -errno.EINVAL  # "1.0", "1.": nothing after the fraction
        if at(p + 1) == "i" and at(p + 2) in ("B", "b") and not at(p + 3):
            base = 1024
        elif at(p + 1) in ("B", "b") and not at(p + 2):
            base = 1000
        elif at(p + 1):
            if frac == 0 and text[p] == ".":
                q = p + 1
                while at(q) == "0":
                    frac_zeros += 1
                    q += 1
                if at(q).isdigit():
                    frac, fend, ferr = _strtoumax(text, q, 0)
                    if fend == q or (ferr and frac in (UINTMAX, 0)):
                        return 0, -(ferr or errno.EINVAL)
                else:
                    fend = q
                if frac and fend >= len(text):
                    return 0, -errno.EINVAL  # a fraction without a suffix
                p = fend
                continue
            return 0, -errno.EINVAL
        break
    c = text[p]
    if c in "KMGTPEZY":
        pwr = "KMGTPEZY".index(c) + 1
    elif c in "kmgtpezy":
        pwr = "kmgtpezy".index(c) + 1
    else:
        return 0, -errno.EINVAL
    x, rc = _scale(x, base, pwr)
    if frac and pwr:
        frac_div, frac_poz = 10, 1
        frac_base, _ = _scale(1, base, pwr)
        while frac_div < frac:
            if frac_div <= UINTMAX // 10:
                frac_div *= 10
            else:
                frac //= 10
        for _ in range(frac_zeros):
            if frac_div <= UINTMAX // 10:
                frac_div *= 10
            else:
                frac //= 10
        while True:
            seg = frac % 10
            seg_div = frac_div // frac_poz
            frac //= 10
            frac_poz *= 10
            if seg and seg_div // seg:
                x = (x + frac_base // (seg_div // seg)) & UINTMAX
            if not frac:
                break
    if rc < 0:
        return 0, rc
    return x, 0


def strtosize_or_err(text: str, what: str) -> int:
    val, rc = parse_size(text)
    if rc == 0:
        return val
    _err(f"{what}: '{text}'", -rc)


def strtou64_or_err(text: str, what: str) -> int:
    """util-linux strtou64_or_err() (base 10; negative numbers are ERANGE)."""
    err = 0
    num = 0
    if not text:
        err = errno.EINVAL
    else:
        val, end, e = _strtoumax(text, 0, 10)
        # strtoimax() first: a negative number is out of range.
        stripped = text.lstrip(" \t\n\v\f\r")
        negative = stripped.startswith("-") and end > 0 and val != 0
        if negative:
            err = errno.ERANGE
        elif e:
            err = e
        elif end == 0 or end != len(text):
            err = errno.EINVAL
        else:
            num = val
    if not err:
        return num
    if err == errno.ERANGE:
        _err(f"{what}: '{text}'", err)
    _errx(f"{what}: '{text}'")


# --------------------------------------------------------------------------- table output


def _wcwidth(ch: str) -> int:
    if unicodedata.combining(ch):
        return 0
    return 2 if unicodedata.east_asian_width(ch) in ("W", "F") else 1


def _printable(ch: str) -> bool:
    return ch.isprintable() and not ("\udc80" <= ch <= "\udcff")


def _hex_bytes(ch: str) -> str:
    return "".join(f"\\x{b:02x}" for b in ch.encode("utf-8", "surrogateescape"))


def safe_encode(data: str) -> tuple[str, int]:
    """libsmartcols' cell encoding for the human format: (text, width in cells).

    Control characters, undecodable bytes and a backslash that starts ``\\x``
    become ``\\xNN``; everything printable stays as it is.
    """
    out: list[str] = []
    width = 0
    for i, ch in enumerate(data):
        if (ch == "\\" and data[i + 1 : i + 2] == "x") or ord(ch) < 0x20 or ch == "\x7f":
            out.append(f"\\x{ord(ch):02x}")
            width += 4
        elif not _printable(ch):
            enc = _hex_bytes(ch)
            out.append(enc)
            width += len(enc)
        else:
            out.append(ch)
            width += _wcwidth(ch)
    return "".join(out), width


def nonblank_encode(data: str) -> str:
    """libsmartcols' raw format (fputs_nonblank): byte by byte, blanks, backslashes
    and everything but printable ASCII as ``\\xNN``."""
    out: list[str] = []
    for ch in data:
        if ch == "\\" or not 0x20 < ord(ch) < 0x7F:
            out.append(_hex_bytes(ch))
        else:
            out.append(ch)
    return "".join(out)


def json_quote(data: str) -> str:
    """libsmartcols' JSON string (fputs_quoted_json)."""
    out = ['"']
    for ch in data:
        if ch in '"\\':
            out.append("\\" + ch)
        elif ord(ch) >= 0x20:
            if ch != "\x7f":
                out.append(ch.encode("utf-8", "surrogateescape").decode("utf-8", "replace"))
        else:
            short = {"\b": "\\b", "\t": "\\t", "\n": "\\n", "\f": "\\f", "\r": "\\r"}
            out.append(short.get(ch, f"\\u00{ord(ch):02x}"))
    out.append('"')
    return "".join(out)


_JSON_NUMBER = re.compile(r"-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][-+]?[0-9]+)?")


@dataclass
class Table:
    columns: list[Column]
    rows: list[list[str]]
    fmt: str = "human"  # human | raw | json
    noheadings: bool = False
    inbytes: bool = False
    name: str = "zramdevices"

    def render(self) -> str:
        if self.fmt == "json":
            return self._json()
        if not self.rows:
            return ""  # libsmartcols prints nothing at all for an empty table
        if self.fmt == "raw":
            lines = (
                [] if self.noheadings else [" ".join(nonblank_encode(c.name) for c in self.columns)]
            )
            lines += [" ".join(nonblank_encode(v) for v in row) for row in self.rows]
            return "".join(line + "\n" for line in lines)
        return self._human()

    def _widths(self) -> list[int]:
        """libsmartcols count_column_width() for output that is not a terminal."""
        widths = []
        for i, col in enumerate(self.columns):
            width_min = max(safe_encode(col.name)[1], 1)  # the header counts even with -n
            width = max((safe_encode(row[i])[1] for row in self.rows), default=0)
            if width < width_min:
                width = width_min
            elif col.whint >= 1 and width < col.whint and width_min < col.whint:
                width = int(col.whint)
            widths.append(width)
        return widths

    def _human(self) -> str:
        widths = self._widths()
        lines = [] if self.noheadings else [[c.name for c in self.columns]]
        lines += self.rows
        out: list[str] = []
        last = len(self.columns) - 1
        for cells in lines:
            parts: list[str] = []
            for i, col in enumerate(self.columns):
                data, length = safe_encode(cells[i])
                width = widths[i]
                if i == last and length < width and not col.right:
                    width = length
                if data:
                    if col.right and length < width:
                        parts.append(" " * (width - length))
                        length = width
                    parts.append(data)
                if i == last:
                    break
                if length < width:
                    parts.append(" " * (width - length))
                parts.append(" ")
            out.append("".join(parts) + "\n")
        return "".join(out)

    def _json_value(self, col: Column, data: str) -> str:
        number = col.json == "number" or (col.json == "size" and self.inbytes)
        if not data:
            return "null"
        if number:
            # libsmartcols writes a number column's text as it is; zramfs writes
            # null for what would not be a JSON number (COMP-RATIO "-nan").
            return data if _JSON_NUMBER.fullmatch(data) else "null"
        return json_quote(data)

    def _json(self) -> str:
        out = ["{\n", f"   {json_quote(self.name)}: [\n"]
        if not self.rows:
            out.append("\n")
        for r, row in enumerate(self.rows):
            out.append("      {\n" if r == 0 else "},{\n")
            fields = [
                f"         {json_quote(col.name.lower())}: {self._json_value(col, row[i])}"
                for i, col in enumerate(self.columns)
            ]
            out.append(",\n".join(fields) + "\n      ")
        if self.rows:
            out.append("}\n")
        out.append("   ]\n}\n")
        return "".join(out)


# --------------------------------------------------------------------------- the mount


def _unescape_octal(field: str) -> str:
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), field)


def resolve_root(opt: str | None) -> str:
    """--root, else $ZRAMFS_ROOT, else the only zramfs mount."""
    given = opt if opt is not None else os.environ.get("ZRAMFS_ROOT") or None
    if given is None:
        found = [m.mountpoint for m in mounts.zramfs_mounts()]
        if not found:
            _errx("no zramfs mount found (mount one with 'zramfs mount MNT', or use --root MNT)")
        if len(found) > 1:
            _errx(f"several zramfs mounts ({' '.join(found)}): choose one with --root MNT "
                  "or $ZRAMFS_ROOT")  # fmt: skip
        given = found[0]
    if mounts.is_dead(given):
        _err(given, errno.ENOTCONN)
    m = mounts.find_mount(given)
    if m is None or m.fstype != mounts.FSTYPE:
        _errx(f"{given}: not a zramfs mount")
    return m.mountpoint


_ZRAM_NAME = re.compile(r"zram(0|[1-9][0-9]*)")


class Zram:
    """The devices of one zramfs mount, read and written like zramctl does sysfs."""

    def __init__(self, root: str) -> None:
        self.root = root

    def sysdir(self, n: int) -> str:
        return os.path.join(self.root, "sys", "block", f"zram{n}")

    def image(self, n: int) -> str:
        return os.path.join(self.root, "dev", f"zram{n}")

    @staticmethod
    def devname(n: int) -> str:
        return f"/dev/zram{n}"

    def device_id(self, name: str) -> int | None:
        """N for ``/dev/zramN``, ``zramN`` or ``MNT/dev/zramN``; None otherwise."""
        for prefix in ("/dev/", "", os.path.join(self.root, "dev") + "/"):
            if name.startswith(prefix):
                m = _ZRAM_NAME.fullmatch(name[len(prefix) :])
                if m:
                    return int(m.group(1))
        real = os.path.realpath(name) if "/" in name else None
        if real and os.path.dirname(real) == os.path.join(self.root, "dev"):
            m = _ZRAM_NAME.fullmatch(os.path.basename(real))
            if m:
                return int(m.group(1))
        return None

    def exists(self, n: int | None) -> bool:
        return n is not None and os.path.isdir(self.sysdir(n))

    def listed(self) -> list[int]:
        """Devices in MNT/dev, in numeric order."""
        try:
            names = os.listdir(os.path.join(self.root, "dev"))
        except OSError as e:
            _err(f"cannot open {os.path.join(self.root, 'dev')}", e.errno or errno.EIO)
        ids = [int(m.group(1)) for m in map(_ZRAM_NAME.fullmatch, names) if m]
        return sorted(ids)

    def read(self, n: int, attr: str) -> str | None:
        """ul_path_read_string(): the contents without the trailing newline."""
        try:
            with open(os.path.join(self.sysdir(n), attr), "rb") as f:
                data = f.read()
        except OSError:
            return None
        if data.endswith(b"\n"):
            data = data[:-1]
        return data.decode("utf-8", "surrogateescape")

    def read_u64(self, n: int, attr: str) -> int | None:
        s = self.read(n, attr)
        if s is None:
            return None
        m = re.match(r"\s*\+?([0-9]+)", s)
        return int(m.group(1)) if m else None

    def write(self, path: str, value: str) -> int:
        """One write(2) of ``value`` like ul_path_write_string(): 0 or errno."""
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
        except OSError as e:
            return e.errno or errno.EIO
        try:
            data = value.encode("utf-8", "surrogateescape")
            while data:
                done = os.write(fd, data)
                data = data[done:]
        except OSError as e:
            return e.errno or errno.EIO
        finally:
            os.close(fd)
        return 0

    def write_attr(self, n: int, attr: str, value: str) -> int:
        return self.write(os.path.join(self.sysdir(n), attr), value)

    def used(self, n: int) -> bool:
        size = self.read_u64(n, "disksize")
        return bool(size)

    def _control(self) -> str | None:
        path = os.path.join(self.root, "sys", "class", "zram-control")
        return path if os.path.isdir(path) else None

    def hot_add(self) -> int | None:
        ctl = self._control()
        if ctl is None:
            return None
        try:
            with open(os.path.join(ctl, "hot_add")) as f:
                n = int(f.read().strip())
        except (OSError, ValueError):
            return None
        return n if n >= 0 else None

    def hot_remove(self, n: int) -> int:
        ctl = self._control()
        if ctl is None:
            return errno.ENOSYS
        return self.write(os.path.join(ctl, "hot_remove"), str(n))

    def find_free(self) -> int | None:
        """zramctl's find_free_zram(): the first uninitialized device, hot_add if none."""
        i = 0
        while True:
            n: int | None = i
            if not self.exists(n):
                n = self.hot_add()
                if n is None:
                    return None
            assert n is not None
            if not self.used(n):
                return n
            i += 1

    # ----------------------------------------------------------------- MOUNTPOINT

    def mountpoint(self, n: int) -> str:
        """zramctl's check_mount_point() for the image: ``[SWAP]`` or the first mount.

        The image is used through loop devices (or directly, for swap on the
        file); any of them in /proc/swaps gives ``[SWAP]``, else the first
        mount in /proc/self/mountinfo of any of them.
        """
        image = os.path.realpath(self.image(n))
        loops = [a.loop for a in mounts.loops_under(self.root) if a.backing_file == image]
        names = {image, *loops}
        rdevs = set()
        for loop in loops:
            try:
                rdevs.add(os.stat(loop).st_rdev)
            except OSError:
                pass

        def same(path: str) -> bool:
            if path in names:
                return True
            if not path.startswith("/dev/") or not rdevs:
                return False
            try:
                st = os.stat(path)
            except OSError:
                return False
            return stat.S_ISBLK(st.st_mode) and st.st_rdev in rdevs

        try:
            with open("/proc/swaps") as f:
                swaps = [_unescape_octal(ln.split()[0]) for ln in f.readlines()[1:] if ln.strip()]
        except OSError:
            swaps = []
        if any(same(s) for s in swaps):
            return "[SWAP]"
        for m in mounts.mounts():
            if m.source.startswith("/") and same(m.source):
                return m.mountpoint
        return ""


def comp_ratio(data: int, total: int) -> str:
    """C's ``"%.4f"`` of (double) DATA / TOTAL, including 0/0 and x/0."""
    if total == 0:
        if data == 0:
            x86 = platform.machine().lower() in ("x86_64", "amd64", "i386", "i686")
            return "-nan" if x86 else "nan"
        return "inf"
    return f"{data / total:.4f}"


def fill_row(z: Zram, n: int, columns: Sequence[int], inbytes: bool) -> list[str]:
    mm_text = z.read(n, "mm_stat")
    mm = mm_text.split() if mm_text is not None else []
    if len(mm) < MM_FIELDS:
        mm = []  # zramctl then tries the pre-4.1 files, which zramfs does not have

    def mm_str(idx: int, as_bytes: bool) -> str:
        if not mm:
            return ""
        if as_bytes:
            return mm[idx]
        try:
            return size_to_human_string(int(mm[idx]))
        except ValueError:
            _errx(f"Failed to parse mm_stat: '{mm[idx]}'")

    def mm_num(idx: int) -> int:
        try:
            return int(mm[idx]) if mm else 0
        except ValueError:
            return 0

    row: list[str] = []
    for cid in columns:
        name = COLUMNS[cid].name
        s = ""
        if name == "NAME":
            s = z.devname(n)
        elif name == "DISKSIZE":
            if inbytes:
                s = z.read(n, "disksize") or ""
            else:
                v = z.read_u64(n, "disksize")
                s = size_to_human_string(v) if v is not None else ""
        elif name == "ALGORITHM":
            alg = z.read(n, "comp_algorithm")
            if alg is not None:
                lbr, rbr = alg.rfind("["), alg.rfind("]")
                if lbr >= 0 and rbr >= 0 and rbr - lbr > 1:
                    s = alg[lbr + 1 : rbr]
        elif name == "MOUNTPOINT":
            s = z.mountpoint(n)
        elif name == "STREAMS":
            s = z.read(n, "max_comp_streams") or ""
        elif name == "ZERO-PAGES":
            s = mm_str(MM_ZERO_PAGES, True)
        elif name == "DATA":
            s = mm_str(MM_ORIG_DATA_SIZE, inbytes)
        elif name == "COMPR":
            s = mm_str(MM_COMPR_DATA_SIZE, inbytes)
        elif name == "TOTAL":
            s = mm_str(MM_MEM_USED_TOTAL, inbytes)
        elif name == "MEM-LIMIT":
            s = mm_str(MM_MEM_LIMIT, inbytes)
        elif name == "MEM-USED":
            s = mm_str(MM_MEM_USED_MAX, inbytes)
        elif name == "MIGRATED":
            s = mm_str(MM_NUM_MIGRATED, inbytes)
        elif name == "COMP-RATIO":
            s = comp_ratio(mm_num(MM_ORIG_DATA_SIZE), mm_num(MM_MEM_USED_TOTAL))
        row.append(s)
    return row


# --------------------------------------------------------------------------- getopt_long


@dataclass(frozen=True)
class LongOpt:
    name: str
    has_arg: bool
    val: str


def getopt_long(
    argv: Sequence[str], shortopts: str, longopts: Sequence[LongOpt], operands: list[str]
) -> Iterator[tuple[str, str | None]]:
    """glibc getopt_long(), in order: yields (val, optarg); "?" after printing the error.

    Arguments are permuted (operands collected in ``operands``); ``--`` ends
    the options; long options may be abbreviated to a unique prefix.
    """
    i = 0
    while i < len(argv):
        arg = argv[i]
        i += 1
        if arg == "--":
            operands.extend(argv[i:])
            return
        if arg.startswith("--"):
            body = arg[2:]
            name, eq, value = body.partition("=")
            exact = [o for o in longopts if o.name == name]
            matches = exact or [o for o in longopts if o.name.startswith(name)]
            if not matches:
                _warnx(f"unrecognized option '--{body}'")
                yield "?", None
                continue
            if len(matches) > 1:
                poss = " ".join(f"'--{o.name}'" for o in matches)
                _warnx(f"option '--{body}' is ambiguous; possibilities: {poss}")
                yield "?", None
                continue
            opt = matches[0]
            if opt.has_arg:
                if eq:
                    yield opt.val, value
                elif i < len(argv):
                    i += 1
                    yield opt.val, argv[i - 1]
                else:
                    _warnx(f"option '--{opt.name}' requires an argument")
                    yield "?", None
            elif eq:
                _warnx(f"option '--{opt.name}' doesn't allow an argument")
                yield "?", None
            else:
                yield opt.val, None
            continue
        if not arg.startswith("-") or arg == "-":
            operands.append(arg)
            continue
        j = 1
        while j < len(arg):
            ch = arg[j]
            j += 1
            k = shortopts.find(ch)
            if ch == ":" or k < 0:
                _warnx(f"invalid option -- '{ch}'")
                yield "?", None
                continue
            if shortopts[k + 1 : k + 2] == ":":
                if j < len(arg):
                    yield ch, arg[j:]
                elif i < len(argv):
                    i += 1
                    yield ch, argv[i - 1]
                else:
                    _warnx(f"option requires an argument -- '{ch}'")
                    yield "?", None
                break
            yield ch, None


OPT_RAW, OPT_OUTPUT_ALL, OPT_JSON, OPT_ROOT = "raw", "output-all", "json", "root"
LONGOPTS = (
    LongOpt("algorithm", True, "a"),
    LongOpt("bytes", False, "b"),
    LongOpt("find", False, "f"),
    LongOpt("help", False, "h"),
    LongOpt("output", True, "o"),
    LongOpt("output-all", False, OPT_OUTPUT_ALL),
    LongOpt("algorithm-params", True, "p"),
    LongOpt("noheadings", False, "n"),
    LongOpt("reset", False, "r"),
    LongOpt("raw", False, OPT_RAW),
    LongOpt("size", True, "s"),
    LongOpt("streams", True, "t"),
    LongOpt("version", False, "V"),
    LongOpt("json", False, OPT_JSON),
    LongOpt("root", True, OPT_ROOT),
)
SHORTOPTS = "a:bfho:p:nrs:t:V"
# util-linux err_exclusive_options(): at most one option of each group.
EXCLUSIVE = (("f", "o", "r"), ("o", "r", "s"), (OPT_JSON, OPT_RAW))


def _check_exclusive(val: str, seen: list[str | None]) -> None:
    for g, group in enumerate(EXCLUSIVE):
        if val not in group:
            continue
        if seen[g] is None:
            seen[g] = val
        elif seen[g] != val:
            names = " ".join(f"--{o.name}" for v in group for o in LONGOPTS if o.val == v)
            _errx(f"mutually exclusive arguments: {names}")


def usage() -> str:
    cols = "".join(f" {c.name:>11}  {c.help}\n" for c in COLUMNS)
    return f"""
Usage:
 {PROG} [options] <device>
 {PROG} -r <device> [...]
 {PROG} [options] -f | <device> -s <size>

Set up and control the zram devices of a zramfs mount (util-linux zramctl).

Options:
 -a, --algorithm <alg>     compression algorithm to use
 -b, --bytes               print sizes in bytes rather than in human readable format
 -f, --find                find a free device
 -n, --noheadings          don't print headings
 -o, --output <list>       columns to use for status output
     --output-all          output all columns
 -p, --algorithm-params <parameter>...
                           parameters for the compression algorithm
 -r, --reset <device>...   reset the specified zram devices
     --raw                 use raw status output format
     --json                use JSON output format
 -s, --size <size>         device size
 -t, --streams <number>    number of compression streams (accepted, ignored:
                           max_comp_streams no longer exists)
     --root <dir>          the zramfs mount (default: $ZRAMFS_ROOT, else the
                           only zramfs mount)

 -h, --help                display this help
 -V, --version             display version

Arguments:
 <device> is /dev/zramN or zramN: device N of the mount, MNT/dev/zramN

 <size> arguments may be followed by the suffixes for
   GiB, TiB, PiB, EiB, ZiB, and YiB (the "iB" is optional)

 <alg> is the name of an algorithm; supported are:
   lz4, lz4hc, zstd, deflate, brotli (cat MNT/sys/block/zramN/comp_algorithm)

Available output columns:
{cols}
For more details see docs/usage.md (zramfs) and zramctl(8).
"""


# --------------------------------------------------------------------------- main


def run(argv: Sequence[str]) -> int:
    size = 0
    nstreams = 0
    algorithm: str | None = None
    params: str | None = None
    find = False
    act = "none"
    inbytes = raw = json = noheadings = False
    outarg: str | None = None
    columns: list[int] = []
    root_opt: str | None = None
    operands: list[str] = []
    seen: list[str | None] = [None] * len(EXCLUSIVE)

    for val, optarg in getopt_long(argv, SHORTOPTS, LONGOPTS, operands):
        _check_exclusive(val, seen)
        if val == "a":
            algorithm = optarg
        elif val == "b":
            inbytes = True
        elif val == "f":
            find = True
        elif val == "o":
            outarg = optarg
        elif val == OPT_OUTPUT_ALL:
            columns = list(range(len(COLUMNS)))
        elif val == "p":
            params = optarg
        elif val == "s":
            assert optarg is not None
            size = strtosize_or_err(optarg, "failed to parse size")
            act = "create"
        elif val == "t":
            assert optarg is not None
            nstreams = strtou64_or_err(optarg, "failed to parse streams")
        elif val == "r":
            act = "reset"
        elif val == OPT_RAW:
            raw = True
        elif val == OPT_JSON:
            json = True
        elif val == "n":
            noheadings = True
        elif val == OPT_ROOT:
            root_opt = optarg
        elif val == "V":
            print(f"{PROG} from zramfs {__version__}")
            return 0
        elif val == "h":
            sys.stdout.write(usage())
            return 0
        else:
            _errtryhelp()

    if find and operands:
        _errx("option --find is mutually exclusive with <device>")
    if act == "none":
        act = "findonly" if find else "status"
    if act != "reset" and len(operands) > 1:
        _errx("only one <device> at a time is allowed")
    if act in ("status", "findonly") and (algorithm is not None or params is not None or nstreams):
        _errx("options --algorithm, --algorithm-params, and --streams must be combined with --size")

    if act == "status":
        if not columns:
            columns = list(DEFAULT_COLUMNS)
        if outarg is not None:
            got = add_columns(columns, outarg)
            if got is None:
                return 1
            columns = got
        z = Zram(resolve_root(root_opt))
        if operands:
            n = z.device_id(operands[0])
            if n is None or not z.exists(n):
                _err(operands[0], errno.ENODEV)
            ids = [n]
        else:
            ids = [n for n in z.listed() if z.exists(n) and z.used(n)]
        rows = [fill_row(z, n, columns, inbytes) for n in ids]
        fmt = "json" if json else "raw" if raw else "human"
        table = Table([COLUMNS[c] for c in columns], rows, fmt, noheadings, inbytes)
        sys.stdout.write(table.render())
        return 0

    z = Zram(resolve_root(root_opt))
    if act == "reset":
        if not operands:
            _errx("no device specified")
        rc = 0
        for name in operands:
            n = z.device_id(name)
            if n is None or not z.exists(n):
                _warn(f"{name}: failed to reset", errno.ENODEV)
                rc = 1
                continue
            e = z.write_attr(n, "reset", "1")
            if e:
                _warn(f"{z.devname(n)}: failed to reset", e)
                rc = 1
            z.hot_remove(n)  # zramctl always tries, and says nothing
        return rc

    if act == "findonly":
        free = z.find_free()
        if free is None:
            _errx("no free zram device found")
        print(z.devname(free))
        return 0

    # create
    if find:
        dev = z.find_free()
        if dev is None:
            _errx("no free zram device found")
    elif not operands:
        _errx("no device specified")
    else:
        dev = z.device_id(operands[0])
        if dev is None or not z.exists(dev):
            _err(operands[0], errno.ENODEV)
    assert dev is not None
    name = z.devname(dev)
    e = z.write_attr(dev, "reset", "1")
    if e:
        _err(f"{name}: failed to reset", e)
    if nstreams:
        e = z.write_attr(dev, "max_comp_streams", str(nstreams))
        if e and e != errno.ENOENT:
            _err(f"{name}: failed to set number of streams", e)
    if algorithm is not None:
        e = z.write_attr(dev, "comp_algorithm", algorithm)
        if e:
            _err(f"{name}: failed to set algorithm", e)
    if params is not None:
        e = z.write_attr(dev, "algorithm_params", params)
        if e:
            _err(f"{name}: failed to set algorithm params", e)
    e = z.write_attr(dev, "disksize", str(size))
    if e:
        _err(f"{name}: failed to set disksize ({size} bytes)", e)
    if find:
        print(name)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    try:
        return run(list(sys.argv[1:] if argv is None else argv))
    except Exit as e:
        return e.code
    except BrokenPipeError:
        return 1
