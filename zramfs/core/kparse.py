"""Bit-exact ports of the kernel's input-parsing primitives used by zram's sysfs stores.

Sources mirrored (mainline, 6.x/7.0-era):

* ``lib/kstrtox.c``: ``_parse_integer_fixup_radix``, ``_parse_integer_limit``,
  ``_kstrtoull``, ``kstrtoull``, ``kstrtoll``, ``_kstrtoul``, ``kstrtouint``,
  ``kstrtoint``, ``kstrtou16``, ``kstrtobool``;
* ``lib/vsprintf.c``: ``simple_strtoull`` (``simple_strntoull`` with INT_MAX);
* ``lib/cmdline.c``: ``memparse``, ``next_arg``;
* ``lib/string.c``: ``skip_spaces``, ``sysfs_streq``; ``lib/ctype.c``: ``isspace``;
* ``drivers/block/zram/zram_drv.c``: the parse half of ``disksize_store``,
  ``mem_limit_store`` and ``__comp_algorithm_store``.

Input model.  Every function takes the raw ``bytes`` handed to write(2).  kernfs
(``kernfs_fop_write_iter``) copies at most PAGE_SIZE bytes into a buffer and sets
``buf[len] = '\\0'``, so the store sees a C string: an embedded NUL ends it for every
C-string parser (kstrto*, next_arg, sysfs_streq, strlen).  This is modelled by
truncating at the first NUL (:func:`c_string`).  memparse needs no truncation: a NUL
is neither a digit nor a suffix, so it stops there by itself.

Character classes are the kernel's, not Python's: ``isspace`` is the Latin-1 table of
``lib/ctype.c`` (``\\t \\n \\v \\f \\r``, space and **0xA0**); digits are ASCII only
(``c | 0x20`` in ``'a'..'f'``), so no non-ASCII byte is ever a digit.

Errors.  Every failure on any byte string is a :class:`~zramfs.errors.ZramError`
carrying the kernel's errno (EINVAL, ERANGE, E2BIG); nothing else is raised for
``bytes`` input.  A ``base`` outside ``{0} | 2..16`` is a programming error
(``ValueError``): the kernel documents 16 as the maximum base.

Algorithm names are returned as ``str`` decoded UTF-8 with ``surrogateescape``:
decoding never fails and ``name.encode("utf-8", "surrogateescape")`` gives back
the exact bytes the kernel would have kept.
"""

from __future__ import annotations

import errno
from typing import Final

from zramfs.errors import ZramError, einval

__all__ = [
    "PAGE_SHIFT",
    "PAGE_SIZE",
    "U64_MAX",
    "ZRAM_MAX_ALGO_NAME_SZ",
    "c_string",
    "isspace",
    "kstrtobool",
    "kstrtoint",
    "kstrtoll",
    "kstrtou16",
    "kstrtouint",
    "kstrtoul",
    "kstrtoull",
    "memparse",
    "next_args",
    "page_align",
    "parse_algo_name",
    "parse_disksize",
    "parse_mem_limit",
    "simple_strtoull",
    "skip_spaces",
    "sysfs_streq",
]

U64_MAX: Final = (1 << 64) - 1
PAGE_SHIFT: Final = 12
PAGE_SIZE: Final = 1 << PAGE_SHIFT
ZRAM_MAX_ALGO_NAME_SZ: Final = 128

_S32_MIN: Final = -(1 << 31)
_S32_MAX: Final = (1 << 31) - 1
_S64_MIN: Final = -(1 << 63)
_S64_MAX: Final = (1 << 63) - 1
_U32_MAX: Final = (1 << 32) - 1
_U16_MAX: Final = (1 << 16) - 1

# lib/ctype.c: bytes with _S set (8-15 row: 9..13; 32; 160 = NBSP in Latin-1).
_SPACE: Final = frozenset(b"\t\n\v\f\r \xa0")
_XDIGIT: Final = frozenset(b"0123456789abcdefABCDEF")
_NL: Final = 0x0A
_QUOTE: Final = 0x22
_EQUALS: Final = 0x3D

# memparse(): suffix byte -> left shift (each step x1024; the switch falls through).
_MEM_SUFFIX_SHIFT: Final = {
    ord("K"): 10, ord("k"): 10,
    ord("M"): 20, ord("m"): 20,
    ord("G"): 30, ord("g"): 30,
    ord("T"): 40, ord("t"): 40,
    ord("P"): 50, ord("p"): 50,
    ord("E"): 60, ord("e"): 60,
}  # fmt: skip

# kstrtobool() first-character tables (mainline since "kstrtox: add support for
# enabled and disabled in kstrtobool()", ae5b3500856f: e/E true, d/D false).
_BOOL_TRUE: Final = frozenset(b"eEyYtT1")
_BOOL_FALSE: Final = frozenset(b"dDnNfF0")


# --------------------------------------------------------------------------- helpers


def c_string(buf: bytes) -> bytes:
    """The C string a sysfs store sees: ``buf`` up to (not including) the first NUL.

    Mirrors kernfs' ``buf[len] = '\\0'`` termination plus C's NUL-ends-the-string rule.
    """
    data = bytes(buf)
    nul = data.find(b"\0")
    return data if nul < 0 else data[:nul]


def isspace(c: int) -> bool:
    """Kernel ``isspace()`` (lib/ctype.c table): 9-13, 32 and 0xA0."""
    return c in _SPACE


def skip_spaces(buf: bytes) -> bytes:
    """Kernel ``skip_spaces()`` (lib/string.c) on the C string of ``buf``."""
    s = c_string(buf)
    i = 0
    while i < len(s) and s[i] in _SPACE:
        i += 1
    return s[i:]


def page_align(value: int) -> int:
    """``PAGE_ALIGN()`` on a u64: round up to 4096, **wrapping** mod 2**64.

    ``PAGE_ALIGN(x)`` is ``(x + PAGE_SIZE - 1) & PAGE_MASK`` in the type of ``x``
    (u64 in disksize_store/mem_limit_store), so values above ``2**64 - 4096``
    become 0.  ``value`` is first reduced mod 2**64 like a C assignment.
    """
    return ((value & U64_MAX) + PAGE_SIZE - 1) & U64_MAX & ~(PAGE_SIZE - 1)


def _check_base(base: int) -> None:
    if base != 0 and not 2 <= base <= 16:
        raise ValueError(f"unsupported base {base!r} (kernel supports 0 and 2..16)")


def _at(s: bytes, i: int) -> int:
    """``s[i]`` of a NUL-terminated C string (0 at or past the end)."""
    return s[i] if i < len(s) else 0


def _fixup_radix(s: bytes, pos: int, base: int) -> tuple[int, int]:
    """``_parse_integer_fixup_radix()``: returns (new position, effective base).

    base 0: "0x" + hex digit -> 16, leading "0" -> 8, else 10.  base 16 (given or
    detected) skips a "0x"/"0X" prefix even when no hex digit follows.
    """
    if base == 0:
        if _at(s, pos) == ord("0"):
            if _at(s, pos + 1) | 0x20 == ord("x") and _at(s, pos + 2) in _XDIGIT:
                base = 16
            else:
                base = 8
        else:
            base = 10
    if base == 16 and _at(s, pos) == ord("0") and _at(s, pos + 1) | 0x20 == ord("x"):
        pos += 2
    return pos, base


def _digit(c: int) -> int:
    """Digit value as ``_parse_integer_limit()`` sees it; 16 for a non-digit."""
    if 0x30 <= c <= 0x39:
        return c - 0x30
    lc = c | 0x20
    if 0x61 <= lc <= 0x66:
        return lc - 0x61 + 10
    return 16


def _parse_integer(s: bytes, pos: int, base: int) -> tuple[int, int, bool]:
    """``_parse_integer()``: returns (chars consumed, value mod 2**64, overflowed).

    Mainline keeps computing ``res = res * base + val`` in u64 after an overflow
    (the result wraps) and ORs KSTRTOX_OVERFLOW into the count.  The overflow test is
    exact for base <= 16 and sticky, and the digit-prefix value never decreases, so
    "overflowed" == exact value > U64_MAX and the value is the exact one mod 2**64.
    """
    end = pos
    n = len(s)
    while end < n and _digit(s[end]) < base:
        end += 1
    if end == pos:
        return 0, 0, False
    significant = s[pos:end].lstrip(b"0")
    if len(significant) <= 64:
        # <= 64 significant digits: small enough for int() (no str-digits limit).
        exact = int(significant or b"0", base)
        return end - pos, exact & U64_MAX, exact > U64_MAX
    # >= base**64 >= 2**64: certainly overflowed; wrap like the C loop does.
    res = 0
    for c in significant:
        res = (res * base + _digit(c)) & U64_MAX
    return end - pos, res, True


# --------------------------------------------------------------------------- memparse


def simple_strtoull(buf: bytes, base: int = 0) -> tuple[int, int]:
    """Kernel ``simple_strtoull(cp, &endp, base)`` (lib/vsprintf.c).

    Returns ``(value, end)`` with ``end`` the index of the first unparsed byte.  No
    whitespace skipping and no sign handling; overflow silently wraps mod 2**64.
    With no digits ``end`` is 0 -- except that base 16 skips a bare "0x" prefix
    (``simple_strtoull("0x", 16)`` ends at 2), exactly as the kernel does.
    """
    _check_base(base)
    s = bytes(buf)
    pos, base = _fixup_radix(s, 0, base)
    consumed, value, _overflow = _parse_integer(s, pos, base)
    return value, pos + consumed


def memparse(buf: bytes) -> tuple[int, bytes]:
    """Kernel ``memparse(ptr, &retptr)`` (lib/cmdline.c).

    ``simple_strtoull(ptr, &end, 0)`` (base auto-detect: "0x" + hex digit -> hex,
    leading "0" -> octal, so "09" parses as 0 and stops at "9"), then **one**
    optional suffix ``K k M m G g T t P p E e``, each step x1024, applied as
    ``ret <<= 10`` in u64.  Returns ``(value, rest)`` where ``rest`` is ``buf``
    after the digits and suffix.

    Corners mirrored: no leading whitespace or sign is accepted (" 1G" and "-1"
    parse nothing: ``(0, buf)``); trailing garbage is ignored ("12abc" -> 12,
    rest b"abc"); the suffix is consumed even without digits ("K" -> ``(0, b"")``);
    numbers >= 2**64 wrap mod 2**64 (mainline ``_parse_integer`` keeps multiplying
    after overflow) and the shift wraps too ("16E" -> 0, "17E" -> 2**60);
    "0x" with no hex digit is octal 0 followed by "x..."; "0x1e" is hex 30 (no
    exa suffix) while "1e" is 2**60.
    """
    data = bytes(buf)
    value, end = simple_strtoull(data, 0)
    shift = _MEM_SUFFIX_SHIFT.get(_at(data, end))
    if shift is not None:
        value = (value << shift) & U64_MAX
        end += 1
    return value, data[end:]


def parse_disksize(buf: bytes) -> int:
    """Parse half of zram ``disksize_store()``: ``memparse``; 0 -> EINVAL; PAGE_ALIGN.

    Kernel order: ``disksize = memparse(buf, NULL); if (!disksize) return -EINVAL;``
    then (under dev_lock) ``init_done`` -> EBUSY, then ``disksize = PAGE_ALIGN(disksize)``.
    The EBUSY check belongs to the caller and must come after this call's EINVAL.

    The alignment is u64 and wraps: a parsed value in ``(2**64 - 4096, 2**64)``
    (e.g. ``0xffffffffffffffff``) aligns to **0**, which this function returns
    as-is.  The kernel then calls ``zram_meta_alloc(zram, 0)``: ``vzalloc(0)``
    returns NULL, so the write fails with **-ENOMEM** and the device stays
    uninitialized.  A caller must treat a 0 result (after its EBUSY check) as
    ENOMEM, like any table allocation that is too large.
    """
    value, _rest = memparse(buf)
    if value == 0:
        raise einval("disksize: parsed value is 0")
    return page_align(value)


def parse_mem_limit(buf: bytes) -> int:
    """Parse half of zram ``mem_limit_store()``: ``memparse``; nothing consumed -> EINVAL.

    The kernel test is ``if (buf == tmp)``: only "no bytes consumed" fails, so "0"
    (no limit) and even a bare suffix ("K", "m" -> 0) are accepted, and trailing
    garbage is ignored.  Returns the byte value (u64, may exceed any RAM size);
    the kernel then stores ``limit_pages = PAGE_ALIGN(limit) >> PAGE_SHIFT`` --
    use :func:`page_align`, which wraps (limits above ``2**64 - 4096`` become
    0 = no limit, as in the kernel).
    """
    data = bytes(buf)
    value, rest = memparse(data)
    if len(rest) == len(data):
        raise einval("mem_limit: no characters parsed")
    return value


# --------------------------------------------------------------------------- kstrto*


def _kstrtoull(s: bytes, pos: int, base: int) -> int:
    """``_kstrtoull()`` on C string ``s`` starting at ``pos`` (no sign handling).

    Order matters and is the kernel's: overflow -> ERANGE is checked *before*
    "no digits" and before the trailing-garbage test (so "99999999999999999999x"
    is ERANGE, not EINVAL); then exactly one '\\n' may follow the digits.
    """
    pos, base = _fixup_radix(s, pos, base)
    consumed, value, overflow = _parse_integer(s, pos, base)
    if overflow:
        raise ZramError(errno.ERANGE, "numerical result out of range")
    if consumed == 0:
        raise einval("no digits")
    pos += consumed
    if _at(s, pos) == _NL:
        pos += 1
    if pos < len(s):
        raise einval("trailing characters after number")
    return value


def kstrtoull(buf: bytes, base: int = 10) -> int:
    """Kernel ``kstrtoull()``: u64; one leading '+' allowed, no '-', no spaces.

    Whole C string must be the number plus at most one trailing '\\n'.  base 0
    auto-detects ("0x"+hex digit, leading "0" octal); base 16 accepts a "0x"
    prefix (a bare "0x" is EINVAL).  Empty -> EINVAL; > U64_MAX -> ERANGE.
    """
    _check_base(base)
    s = c_string(buf)
    pos = 1 if _at(s, 0) == ord("+") else 0
    return _kstrtoull(s, pos, base)


def kstrtoll(buf: bytes, base: int = 10) -> int:
    """Kernel ``kstrtoll()``: s64; '-' handled here, '+' via kstrtoull.

    "-0" is 0; "-9223372036854775808" is accepted; "-+5" and "+-5" are EINVAL.
    """
    _check_base(base)
    s = c_string(buf)
    if _at(s, 0) == ord("-"):
        tmp = _kstrtoull(s, 1, base)
        # (long long)-tmp > 0  <=>  tmp > 2**63
        if tmp > -_S64_MIN:
            raise ZramError(errno.ERANGE, "numerical result out of range")
        return -tmp
    tmp = kstrtoull(s, base)
    if tmp > _S64_MAX:
        raise ZramError(errno.ERANGE, "numerical result out of range")
    return tmp


def kstrtoul(buf: bytes, base: int = 10) -> int:
    """Kernel ``kstrtoul()``; ``unsigned long`` is 64-bit (LP64), so == kstrtoull."""
    return kstrtoull(buf, base)


def kstrtouint(buf: bytes, base: int = 10) -> int:
    """Kernel ``kstrtouint()``: kstrtoull, then > 2**32 - 1 -> ERANGE."""
    value = kstrtoull(buf, base)
    if value > _U32_MAX:
        raise ZramError(errno.ERANGE, "numerical result out of range")
    return value


def kstrtou16(buf: bytes, base: int = 10) -> int:
    """Kernel ``kstrtou16()``: kstrtoull, then > 65535 -> ERANGE."""
    value = kstrtoull(buf, base)
    if value > _U16_MAX:
        raise ZramError(errno.ERANGE, "numerical result out of range")
    return value


def kstrtoint(buf: bytes, base: int = 10) -> int:
    """Kernel ``kstrtoint()``: kstrtoll, then outside s32 -> ERANGE."""
    value = kstrtoll(buf, base)
    if not _S32_MIN <= value <= _S32_MAX:
        raise ZramError(errno.ERANGE, "numerical result out of range")
    return value


def kstrtobool(buf: bytes) -> bool:
    """Kernel ``kstrtobool()``: looks only at ``s[0]`` (and ``s[1]`` after o/O).

    True: first byte in ``e E y Y t T 1``; False: ``d D n N f F 0``; ``o``/``O``
    followed by ``n``/``N`` -> True, by ``f``/``F`` -> False.  Everything after
    the deciding byte(s) is ignored ("yes", "no", "1234", "offline", "enable",
    "disable", "0\\n\\n" all parse).  Empty, "o", "o\\n" -> EINVAL.  e/E and d/D
    are current mainline (commit ae5b3500856f); older kernels reject them.
    """
    s = c_string(buf)
    c0 = _at(s, 0)
    if c0 in _BOOL_TRUE:
        return True
    if c0 in _BOOL_FALSE:
        return False
    if c0 in (ord("o"), ord("O")):
        c1 = _at(s, 1)
        if c1 in (ord("n"), ord("N")):
            return True
        if c1 in (ord("f"), ord("F")):
            return False
    raise einval("not a boolean")


# --------------------------------------------------------------------------- strings


def sysfs_streq(a: bytes, b: bytes) -> bool:
    """Kernel ``sysfs_streq()`` (lib/string.c): equal as C strings, treating NUL and
    a single "\\n"-then-NUL as equivalent terminations on either side.

    So "all\\n" == "all", "all" == "all\\n", "all\\n" == "all\\n", but "all\\n\\n",
    "all " and " all" do not match "all".
    """
    s1 = c_string(a)
    s2 = c_string(b)
    i = 0
    while _at(s1, i) and _at(s1, i) == _at(s2, i):
        i += 1
    c1 = _at(s1, i)
    c2 = _at(s2, i)
    if c1 == c2:
        return True
    if c1 == 0 and c2 == _NL and _at(s2, i + 1) == 0:
        return True
    return c1 == _NL and _at(s1, i + 1) == 0 and c2 == 0


def parse_algo_name(buf: bytes) -> str:
    """Name handling of zram ``__comp_algorithm_store()`` (comp_algorithm, and the
    ``algo=`` value of recomp_algorithm).

    Kernel order: ``sz = strlen(buf); if (sz >= ZRAM_MAX_ALGO_NAME_SZ) return -E2BIG;``
    *then* ``kstrdup`` and strip one trailing '\\n'.  So the length limit counts the
    newline: a 127-byte name is fine with ``echo -n`` but E2BIG with ``echo``.
    Only one newline is stripped ("lz4\\n\\n" -> "lz4\\n", which then fails the
    algorithm lookup); spaces are kept; the result may be empty.  The caller does
    the ``zcomp_available_algorithm`` lookup (EINVAL) and the init check (EBUSY).

    Returns ``str`` decoded as UTF-8 with ``surrogateescape`` (lossless).
    """
    s = c_string(buf)
    if len(s) >= ZRAM_MAX_ALGO_NAME_SZ:
        raise ZramError(errno.E2BIG, "algorithm name too long")
    if s.endswith(b"\n"):
        s = s[:-1]
    return s.decode("utf-8", "surrogateescape")


def _cstr_at(a: bytearray, pos: int) -> bytes:
    return bytes(a[pos : a.index(0, pos)])


def _next_arg(a: bytearray, args: int) -> tuple[int, bytes, bytes | None]:
    """Kernel ``next_arg()`` (lib/cmdline.c) on a NUL-terminated bytearray.

    Writes NULs into ``a`` exactly like the C code and returns
    ``(next args position, param, val or None)``.
    """
    equals = 0
    in_quote = False
    quoted = False
    if a[args] == _QUOTE:
        args += 1
        in_quote = True
        quoted = True

    i = 0
    while a[args + i]:
        c = a[args + i]
        if c in _SPACE and not in_quote:
            break
        # `equals == 0` doubles as "not found", so a '=' at index 0 is ignored and
        # a later one is taken instead ("=a=b" -> param "=a", val "b").
        if equals == 0 and c == _EQUALS:
            equals = i
        if c == _QUOTE:
            in_quote = not in_quote
        i += 1

    param = args
    val: int | None
    if not equals:
        val = None
    else:
        a[args + equals] = 0
        val = args + equals + 1
        # Don't include quotes in value.
        if a[val] == _QUOTE:
            val += 1
            if a[args + i - 1] == _QUOTE:
                a[args + i - 1] = 0
    if quoted and i > 0 and a[args + i - 1] == _QUOTE:
        a[args + i - 1] = 0

    if a[args + i]:
        a[args + i] = 0
        nxt = args + i + 1
    else:
        nxt = args + i

    # Chew up trailing spaces (skip_spaces).
    while a[nxt] in _SPACE:
        nxt += 1
    return nxt, _cstr_at(a, param), None if val is None else _cstr_at(a, val)


def next_args(buf: bytes) -> list[tuple[bytes, bytes | None]]:
    """The zram key=value loop: ``args = skip_spaces(buf); while (*args)
    args = next_arg(args, &param, &val);`` (recomp_algorithm, recompress,
    algorithm_params, writeback).

    Returns every ``(param, val)`` in order; ``val`` is None without '=' and b""
    for ``key=``.  Whitespace (kernel isspace, so newline, tab and 0xA0 too)
    separates arguments; double quotes protect spaces and are stripped the kernel's
    way, odd cases included:

    * ``algo="zs td"`` -> (b"algo", b"zs td"); an unterminated ``k="a b`` runs to the
      end of the buffer -> (b"k", b"a b");
    * quotes not at the start of the value stay: ``k=a"b c"`` -> (b"k", b'a"b c"');
    * a leading quote quotes the whole token: ``"k=v"`` -> (b"k", b"v") but
      ``"k"=v`` -> (b'k"', b"v");
    * a '=' at index 0 is not an '=': ``=v`` -> (b"=v", None);
    * ``"`` alone -> (b"", None).

    The caller applies zram's rules (``!val || !*val`` -> EINVAL, unknown keys
    ignored, writeback's valueless mode words).
    """
    a = bytearray(c_string(buf))
    a.append(0)
    out: list[tuple[bytes, bytes | None]] = []
    pos = 0
    while a[pos] in _SPACE:
        pos += 1
    while a[pos]:
        pos, param, val = _next_arg(a, pos)
        out.append((param, val))
    return out
