"""Tests for zramfs.core.kparse: the kernel's sysfs input-parsing primitives.

Expected values come from the kernel sources (lib/kstrtox.c, lib/vsprintf.c,
lib/cmdline.c, lib/string.c, lib/ctype.c, drivers/block/zram/zram_drv.c); the odd
corners were cross-checked against the C code compiled as a user-space harness.
"""

from __future__ import annotations

import errno
from collections.abc import Callable

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from zramfs.core import kparse
from zramfs.core.kparse import (
    PAGE_SIZE,
    U64_MAX,
    ZRAM_MAX_ALGO_NAME_SZ,
    c_string,
    kstrtobool,
    kstrtoint,
    kstrtoll,
    kstrtou16,
    kstrtouint,
    kstrtoul,
    kstrtoull,
    memparse,
    next_args,
    page_align,
    parse_algo_name,
    parse_disksize,
    parse_mem_limit,
    simple_strtoull,
    skip_spaces,
    sysfs_streq,
)
from zramfs.errors import ZramError

EINVAL = errno.EINVAL
ERANGE = errno.ERANGE
E2BIG = errno.E2BIG

U32_MAX = 2**32 - 1
S32_MIN, S32_MAX = -(2**31), 2**31 - 1
S64_MIN, S64_MAX = -(2**63), 2**63 - 1

# An "expected" cell is either the parsed value or an errno (wrapped in Err).


class Err:
    """Expected failure with a given errno."""

    def __init__(self, code: int) -> None:
        self.code = code

    def __repr__(self) -> str:
        return f"Err({errno.errorcode[self.code]})"


Expected = int | bool | str | Err


def check(fn: Callable[[], object], expected: Expected) -> None:
    if isinstance(expected, Err):
        with pytest.raises(ZramError) as info:
            fn()
        assert info.value.errno == expected.code, info.value
        assert isinstance(info.value, OSError)
    else:
        got = fn()
        assert got == expected
        assert type(got) is type(expected)


# --------------------------------------------------------------------------- memparse

MEMPARSE_CASES: list[tuple[bytes, int, bytes]] = [
    # plain decimal, `echo` vs `echo -n`
    (b"1", 1, b""),
    (b"1\n", 1, b"\n"),
    (b"4096", 4096, b""),
    (b"2097152\n", 2097152, b"\n"),
    # suffixes, both cases, x1024 per step
    (b"1K", 1 << 10, b""),
    (b"1k", 1 << 10, b""),
    (b"2M\n", 2 << 20, b"\n"),
    (b"25m", 25 << 20, b""),
    (b"1G", 1 << 30, b""),
    (b"3g", 3 << 30, b""),
    (b"1T", 1 << 40, b""),
    (b"1t", 1 << 40, b""),
    (b"1P", 1 << 50, b""),
    (b"1p", 1 << 50, b""),
    (b"1E", 1 << 60, b""),
    (b"1e", 1 << 60, b""),
    # exactly one suffix; the rest is left alone
    (b"1KB", 1 << 10, b"B"),
    (b"1KK", 1 << 10, b"K"),
    (b"1MiB", 1 << 20, b"iB"),
    (b"1 G", 1, b" G"),
    (b"1.5G", 1, b".5G"),
    (b"12abc", 12, b"abc"),
    (b"12x", 12, b"x"),
    # base auto-detection
    (b"0x10", 16, b""),
    (b"0X10", 16, b""),
    (b"0xfF", 255, b""),
    (b"0x1e", 30, b""),  # 'e' is a hex digit, not the exa suffix
    (b"0x1E", 30, b""),
    (b"0x1g", 1 << 30, b""),
    (b"0x1K\n", 1 << 10, b"\n"),
    (b"0x", 0, b"x"),  # no hex digit after 0x -> octal "0", stops at 'x'
    (b"0x\n", 0, b"x\n"),
    (b"0xg", 0, b"xg"),
    (b"0xK", 0, b"xK"),
    (b"010", 8, b""),
    (b"0777", 511, b""),
    (b"09", 0, b"9"),  # octal: '9' is not a digit
    (b"08M", 0, b"8M"),
    (b"0", 0, b""),
    (b"00", 0, b""),
    (b"0K", 0, b""),
    # no leading whitespace, no sign
    (b" 1G", 0, b" 1G"),
    (b"\t1", 0, b"\t1"),
    (b"\n1", 0, b"\n1"),
    (b"+1", 0, b"+1"),
    (b"-1", 0, b"-1"),
    # nothing / only a suffix (the suffix is consumed anyway)
    (b"", 0, b""),
    (b"\n", 0, b"\n"),
    (b"abc", 0, b"abc"),
    (b"K", 0, b""),
    (b"m\n", 0, b"\n"),
    # NUL ends the C string
    (b"1\x002", 1, b"\x002"),
    (b"\x001", 0, b"\x001"),
    (b"1\x00K", 1, b"\x00K"),
    # u64 wrap-around (mainline _parse_integer keeps multiplying after overflow)
    (b"18446744073709551615", U64_MAX, b""),
    (b"18446744073709551616", 0, b""),
    (b"18446744073709551617", 1, b""),
    (b"36893488147419103232", 0, b""),  # 2**65
    (b"0xffffffffffffffff", U64_MAX, b""),
    (b"0x10000000000000000", 0, b""),
    (b"0x10000000000000001", 1, b""),
    (b"15E", 15 << 60, b""),
    (b"16E", 0, b""),  # 16 << 60 == 2**64 wraps to 0
    (b"17E", 1 << 60, b""),
    (b"0xffffffffffffffffK", U64_MAX - 1023, b""),
    (b"16777216T", 0, b""),  # 2**24 << 40
    (b"1" + b"0" * 100, (10**100) & U64_MAX, b""),
]


@pytest.mark.parametrize(("buf", "value", "rest"), MEMPARSE_CASES)
def test_memparse_table(buf: bytes, value: int, rest: bytes) -> None:
    assert memparse(buf) == (value, rest)


def test_memparse_rest_is_buf_when_nothing_parsed() -> None:
    for buf in (b"", b"abc", b" 1", b"-5", b"\x00", b"\xff\xfe"):
        value, rest = memparse(buf)
        assert value == 0
        assert rest == buf


def test_memparse_long_digit_run_wraps_without_raising() -> None:
    # longer than Python's int() str-digits limit; must still wrap like the C loop
    digits = b"9" * 5000
    assert memparse(digits) == ((10**5000 - 1) & U64_MAX, b"")
    with pytest.raises(ZramError) as info:
        kstrtoull(digits)
    assert info.value.errno == ERANGE


@pytest.mark.parametrize(
    ("buf", "base", "value", "end"),
    [
        (b"123abc", 0, 123, 3),
        (b"0x1f", 0, 31, 4),
        (b"0x", 0, 0, 1),
        (b"0x", 16, 0, 2),  # base 16 skips a bare "0x" prefix
        (b"ff", 16, 255, 2),
        (b"777", 8, 511, 3),
        (b"", 10, 0, 0),
    ],
)
def test_simple_strtoull(buf: bytes, base: int, value: int, end: int) -> None:
    assert simple_strtoull(buf, base) == (value, end)


# --------------------------------------------------------------------------- disksize / mem_limit

DISKSIZE_CASES: list[tuple[bytes, Expected]] = [
    (b"1G\n", 1 << 30),
    (b"1G", 1 << 30),
    (b"2097152", 2097152),  # kselftest zram01
    (b"1048576\n", 1048576),
    (b"26214400", 26214400),  # LTP zram01
    (b"107374182400", 107374182400),  # LTP zram02, 100 GiB
    (b"536870912", 536870912),  # LTP zram03
    (b"1", PAGE_SIZE),  # PAGE_ALIGN rounds up
    (b"4095", PAGE_SIZE),
    (b"4096", PAGE_SIZE),
    (b"4097", 2 * PAGE_SIZE),
    (b"0x1000", PAGE_SIZE),
    (b"010", PAGE_SIZE),
    (b"100abc", PAGE_SIZE),  # trailing garbage ignored
    (b"1K", PAGE_SIZE),
    (b"5k\n", 8192),
    (b"18446744073709547520", 2**64 - PAGE_SIZE),  # largest aligned u64
    # u64 PAGE_ALIGN wraps to 0 (kernel then fails zram_meta_alloc -> ENOMEM)
    (b"18446744073709547521", 0),
    (b"0xffffffffffffffff", 0),
    (b"18446744073709551617", PAGE_SIZE),  # memparse wrapped to 1
    (b"0", Err(EINVAL)),
    (b"0\n", Err(EINVAL)),
    (b"", Err(EINVAL)),
    (b"\n", Err(EINVAL)),
    (b"abc", Err(EINVAL)),
    (b"K", Err(EINVAL)),
    (b"0x", Err(EINVAL)),
    (b"09", Err(EINVAL)),
    (b" 1G", Err(EINVAL)),
    (b"+1G", Err(EINVAL)),
    (b"-1", Err(EINVAL)),
    (b"16E", Err(EINVAL)),  # wraps to 0
    (b"18446744073709551616", Err(EINVAL)),
    (b"\x001G", Err(EINVAL)),
]


@pytest.mark.parametrize(("buf", "expected"), DISKSIZE_CASES)
def test_parse_disksize(buf: bytes, expected: Expected) -> None:
    check(lambda: parse_disksize(buf), expected)


MEM_LIMIT_CASES: list[tuple[bytes, Expected]] = [
    (b"2M", 2 << 20),  # kselftest
    (b"1M\n", 1 << 20),
    (b"25M", 25 << 20),  # LTP
    (b"384M", 384 << 20),
    (b"0", 0),  # 0 = no limit
    (b"0\n", 0),
    (b"1", 1),  # not aligned here: the caller page-aligns
    (b"1abc", 1),
    (b"K", 0),  # buf != tmp: a bare suffix counts as "parsed"
    (b"m\n", 0),
    (b"0x", 0),  # "0" consumed
    (b"18446744073709551616", 0),
    (b"", Err(EINVAL)),
    (b"\n", Err(EINVAL)),
    (b"abc", Err(EINVAL)),
    (b" 1M", Err(EINVAL)),
    (b"-1", Err(EINVAL)),
    (b"+1", Err(EINVAL)),
    (b"\x001M", Err(EINVAL)),
]


@pytest.mark.parametrize(("buf", "expected"), MEM_LIMIT_CASES)
def test_parse_mem_limit(buf: bytes, expected: Expected) -> None:
    check(lambda: parse_mem_limit(buf), expected)


@pytest.mark.parametrize(
    ("value", "aligned"),
    [
        (0, 0),
        (1, PAGE_SIZE),
        (PAGE_SIZE, PAGE_SIZE),
        (PAGE_SIZE + 1, 2 * PAGE_SIZE),
        (2**64 - PAGE_SIZE, 2**64 - PAGE_SIZE),
        (2**64 - PAGE_SIZE + 1, 0),
        (U64_MAX, 0),
    ],
)
def test_page_align_u64(value: int, aligned: int) -> None:
    assert page_align(value) == aligned


# --------------------------------------------------------------------------- kstrto*

KSTRTOULL_CASES: list[tuple[bytes, int, Expected]] = [
    (b"0", 10, 0),
    (b"1", 10, 1),
    (b"1\n", 10, 1),  # echo
    (b"1\n\n", 10, Err(EINVAL)),  # only ONE newline
    (b"\n1", 10, Err(EINVAL)),
    (b"+1", 10, 1),
    (b"+1\n", 10, 1),
    (b"++1", 10, Err(EINVAL)),
    (b"+", 10, Err(EINVAL)),
    (b"+\n", 10, Err(EINVAL)),
    (b"-1", 10, Err(EINVAL)),
    (b"-0", 10, Err(EINVAL)),
    (b" 1", 10, Err(EINVAL)),
    (b"1 ", 10, Err(EINVAL)),
    (b"1\t", 10, Err(EINVAL)),
    (b"1\r\n", 10, Err(EINVAL)),
    (b"", 10, Err(EINVAL)),
    (b"\n", 10, Err(EINVAL)),
    (b"1x", 10, Err(EINVAL)),
    (b"1.0", 10, Err(EINVAL)),
    (b"1K", 10, Err(EINVAL)),
    (b"0x10", 10, Err(EINVAL)),
    (b"a", 10, Err(EINVAL)),
    (b"007", 10, 7),
    (b"0000000000000000000000000018446744073709551615", 10, U64_MAX),
    (b"18446744073709551615", 10, U64_MAX),
    (b"18446744073709551615\n", 10, U64_MAX),
    (b"18446744073709551616", 10, Err(ERANGE)),
    (b"18446744073709551616\n", 10, Err(ERANGE)),
    (b"99999999999999999999", 10, Err(ERANGE)),
    # overflow is reported before the trailing-garbage check
    (b"99999999999999999999x", 10, Err(ERANGE)),
    (b"18446744073709551616\n\n", 10, Err(ERANGE)),
    # NUL ends the string (kernfs NUL-terminates, C stops at the first NUL)
    (b"1\x00garbage", 10, 1),
    (b"1\n\x00garbage", 10, 1),
    (b"\x001", 10, Err(EINVAL)),
    (b"\x00", 10, Err(EINVAL)),
    # non-ASCII is never a digit
    ("\u0661".encode(), 10, Err(EINVAL)),  # ARABIC-INDIC DIGIT ONE
    (b"1\xa0", 10, Err(EINVAL)),
    (b"\xff", 10, Err(EINVAL)),
    # base 16
    (b"ff", 16, 255),
    (b"FF\n", 16, 255),
    (b"0xff", 16, 255),
    (b"0XFF", 16, 255),
    (b"+0x10", 16, 16),
    (b"0x", 16, Err(EINVAL)),
    (b"0x\n", 16, Err(EINVAL)),
    (b"0x0x1", 16, Err(EINVAL)),
    (b"x1", 16, Err(EINVAL)),
    (b"g", 16, Err(EINVAL)),
    (b"ffffffffffffffff", 16, U64_MAX),
    (b"10000000000000000", 16, Err(ERANGE)),
    # base 0 (auto)
    (b"0x10", 0, 16),
    (b"0X1F\n", 0, 31),
    (b"010", 0, 8),
    (b"0", 0, 0),
    (b"10", 0, 10),
    (b"08", 0, Err(EINVAL)),
    (b"0x", 0, Err(EINVAL)),  # base 8 "0", then 'x'
    (b"0xg", 0, Err(EINVAL)),
    (b"+010", 0, 8),
    (b"0x10000000000000000", 0, Err(ERANGE)),
    (b"01777777777777777777777", 0, U64_MAX),
    (b"02000000000000000000000", 0, Err(ERANGE)),
    # base 8 does not skip 0x
    (b"777", 8, 511),
    (b"8", 8, Err(EINVAL)),
    (b"0x10", 8, Err(EINVAL)),
    # base 2
    (b"1" * 64, 2, U64_MAX),
    (b"1" * 65, 2, Err(ERANGE)),
]


@pytest.mark.parametrize(("buf", "base", "expected"), KSTRTOULL_CASES)
def test_kstrtoull_table(buf: bytes, base: int, expected: Expected) -> None:
    check(lambda: kstrtoull(buf, base), expected)
    # kstrtoul is the same function on LP64
    check(lambda: kstrtoul(buf, base), expected)


KSTRTOUINT_CASES: list[tuple[bytes, int, Expected]] = [
    (b"0", 10, 0),
    (b"32\n", 10, 32),
    (b"4294967295", 10, U32_MAX),
    (b"4294967296", 10, Err(ERANGE)),  # fits u64, not u32
    (b"4294967296\n", 10, Err(ERANGE)),
    (b"4294967296x", 10, Err(EINVAL)),  # garbage checked before the u32 range
    (b"18446744073709551616", 10, Err(ERANGE)),
    (b"-1", 10, Err(EINVAL)),
    (b"+7", 10, 7),
    (b"0xffffffff", 0, U32_MAX),
    (b"0x100000000", 0, Err(ERANGE)),
    (b"86400", 0, 86400),  # idle seconds use base 0
    (b"0x15180\n", 0, 86400),
    (b"010", 0, 8),
    (b"010", 10, 10),
    (b"all", 0, Err(EINVAL)),
    (b"", 10, Err(EINVAL)),
]


@pytest.mark.parametrize(("buf", "base", "expected"), KSTRTOUINT_CASES)
def test_kstrtouint_table(buf: bytes, base: int, expected: Expected) -> None:
    check(lambda: kstrtouint(buf, base), expected)


KSTRTOU16_CASES: list[tuple[bytes, Expected]] = [
    (b"1", 1),
    (b"1\n", 1),
    (b"0", 0),
    (b"65535", 65535),
    (b"65536", Err(ERANGE)),
    (b"4294967296", Err(ERANGE)),
    (b"18446744073709551616", Err(ERANGE)),
    (b"-1", Err(EINVAL)),
    (b"1 ", Err(EINVAL)),
    (b"yes", Err(EINVAL)),
    (b"", Err(EINVAL)),
]


@pytest.mark.parametrize(("buf", "expected"), KSTRTOU16_CASES)
def test_kstrtou16_table(buf: bytes, expected: Expected) -> None:
    check(lambda: kstrtou16(buf), expected)


KSTRTOINT_CASES: list[tuple[bytes, int, Expected]] = [
    (b"0", 10, 0),
    (b"5", 10, 5),
    (b"-5", 10, -5),
    (b"-5\n", 10, -5),
    (b"+5", 10, 5),
    (b"-0", 10, 0),
    (b"2147483647", 10, S32_MAX),
    (b"2147483648", 10, Err(ERANGE)),
    (b"-2147483648", 10, S32_MIN),
    (b"-2147483649", 10, Err(ERANGE)),
    (b"4294967295", 10, Err(ERANGE)),
    (b"-9223372036854775808", 10, Err(ERANGE)),  # valid s64, not s32
    (b"-18446744073709551615", 10, Err(ERANGE)),
    (b"-18446744073709551616", 10, Err(ERANGE)),  # u64 overflow
    (b"--5", 10, Err(EINVAL)),
    (b"-+5", 10, Err(EINVAL)),
    (b"+-5", 10, Err(EINVAL)),
    (b"-", 10, Err(EINVAL)),
    (b"-\n", 10, Err(EINVAL)),
    (b"- 5", 10, Err(EINVAL)),
    (b" -5", 10, Err(EINVAL)),
    (b"-5 ", 10, Err(EINVAL)),
    (b"-0x10", 0, -16),
    (b"-010", 0, -8),
    (b"-0x80000000", 0, S32_MIN),
    (b"0x80000000", 0, Err(ERANGE)),
    (b"-ff", 16, -255),
    (b"-1\x00junk", 10, -1),
    (b"", 10, Err(EINVAL)),
]


@pytest.mark.parametrize(("buf", "base", "expected"), KSTRTOINT_CASES)
def test_kstrtoint_table(buf: bytes, base: int, expected: Expected) -> None:
    check(lambda: kstrtoint(buf, base), expected)


KSTRTOLL_CASES: list[tuple[bytes, Expected]] = [
    (b"-9223372036854775808", S64_MIN),
    (b"-9223372036854775809", Err(ERANGE)),
    (b"9223372036854775807", S64_MAX),
    (b"9223372036854775808", Err(ERANGE)),
    (b"-18446744073709551615", Err(ERANGE)),
    (b"18446744073709551615", Err(ERANGE)),
    (b"-0", 0),
    (b"-1", -1),
]


@pytest.mark.parametrize(("buf", "expected"), KSTRTOLL_CASES)
def test_kstrtoll_table(buf: bytes, expected: Expected) -> None:
    check(lambda: kstrtoll(buf), expected)


@pytest.mark.parametrize("base", [-1, 1, 17, 36])
def test_bad_base_is_a_programming_error(base: int) -> None:
    with pytest.raises(ValueError):
        kstrtoull(b"1", base)


# --------------------------------------------------------------------------- kstrtobool

KSTRTOBOOL_CASES: list[tuple[bytes, Expected]] = [
    (b"1", True),
    (b"1\n", True),
    (b"y", True),
    (b"Y", True),
    (b"yes", True),
    (b"t", True),
    (b"T", True),
    (b"true", True),
    (b"1234", True),  # only the first byte counts
    (b"e", True),  # mainline: 'e'/'E' for "enabled"
    (b"E", True),
    (b"enable", True),
    (b"on", True),
    (b"ON", True),
    (b"oN\n", True),
    (b"onion", True),
    (b"0", False),
    (b"0\n", False),
    (b"0\n\n", False),  # no whole-string check
    (b"0x1", False),
    (b"n", False),
    (b"N", False),
    (b"no", False),
    (b"f", False),
    (b"F", False),
    (b"false", False),
    (b"d", False),  # mainline: 'd'/'D' for "disabled"
    (b"D", False),
    (b"disable", False),
    (b"off", False),
    (b"OFF", False),
    (b"of", False),
    (b"offline", False),
    (b"y\x00", True),
    (b"o", Err(EINVAL)),
    (b"o\n", Err(EINVAL)),
    (b"ox", Err(EINVAL)),
    (b"o\x00n", Err(EINVAL)),  # NUL ends the string before s[1]
    (b"", Err(EINVAL)),
    (b"\n", Err(EINVAL)),
    (b" 1", Err(EINVAL)),
    (b"2", Err(EINVAL)),
    (b"-1", Err(EINVAL)),
    (b"+1", Err(EINVAL)),
    (b"x", Err(EINVAL)),
    (b"\x00y", Err(EINVAL)),
    (b"\xff", Err(EINVAL)),
]


@pytest.mark.parametrize(("buf", "expected"), KSTRTOBOOL_CASES)
def test_kstrtobool_table(buf: bytes, expected: Expected) -> None:
    check(lambda: kstrtobool(buf), expected)


# --------------------------------------------------------------------------- sysfs_streq

SYSFS_STREQ_CASES: list[tuple[bytes, bytes, bool]] = [
    (b"all", b"all", True),
    (b"all\n", b"all", True),
    (b"all", b"all\n", True),
    (b"all\n", b"all\n", True),
    (b"all\n\n", b"all", False),
    (b"all", b"all\n\n", False),
    (b"all ", b"all", False),
    (b" all", b"all", False),
    (b"all\r\n", b"all", False),
    (b"all\nx", b"all", False),
    (b"ALL", b"all", False),
    (b"al", b"all", False),
    (b"alll", b"all", False),
    (b"al\n", b"all", False),
    (b"", b"", True),
    (b"\n", b"", True),
    (b"", b"\n", True),
    (b"\n", b"\n", True),
    (b"\n\n", b"", False),
    (b"all\x00junk", b"all", True),
    (b"all\n\x00junk", b"all", True),
    (b"\x00", b"", True),
]


@pytest.mark.parametrize(("a", "b", "expected"), SYSFS_STREQ_CASES)
def test_sysfs_streq_table(a: bytes, b: bytes, expected: bool) -> None:
    assert sysfs_streq(a, b) is expected
    assert sysfs_streq(b, a) is expected  # symmetric


# --------------------------------------------------------------------------- algo names

ALGO_CASES: list[tuple[bytes, Expected]] = [
    (b"lz4", "lz4"),
    (b"lz4\n", "lz4"),
    (b"zstd", "zstd"),
    (b"lzo-rle\n", "lzo-rle"),
    (b"lz4\n\n", "lz4\n"),  # only ONE newline stripped
    (b"zstd\r\n", "zstd\r"),
    (b" lz4", " lz4"),  # spaces are kept
    (b"lz4 ", "lz4 "),
    (b"", ""),
    (b"\n", ""),
    (b"lz4\x00" + b"x" * 500, "lz4"),  # strlen stops at NUL: no E2BIG
    (b"a" * (ZRAM_MAX_ALGO_NAME_SZ - 1), "a" * 127),
    (b"a" * 126 + b"\n", "a" * 126),
    # strlen (newline included) is checked BEFORE the newline is stripped
    (b"a" * 127 + b"\n", Err(E2BIG)),
    (b"a" * 128, Err(E2BIG)),
    (b"a" * 4096, Err(E2BIG)),
]


@pytest.mark.parametrize(("buf", "expected"), ALGO_CASES)
def test_parse_algo_name(buf: bytes, expected: Expected) -> None:
    check(lambda: parse_algo_name(buf), expected)


def test_parse_algo_name_undecodable_bytes_round_trip() -> None:
    raw = b"\xff\xfe\xc3(lz\xe9"
    name = parse_algo_name(raw + b"\n")
    assert isinstance(name, str)
    assert name.encode("utf-8", "surrogateescape") == raw
    assert parse_algo_name("zstd-\u00e9".encode()) == "zstd-\u00e9"


def test_parse_algo_name_counts_bytes_not_characters() -> None:
    # 64 two-byte characters = 128 bytes -> E2BIG although only 64 characters
    with pytest.raises(ZramError) as info:
        parse_algo_name("\u00e9".encode() * 64)
    assert info.value.errno == E2BIG
    assert parse_algo_name("\u00e9".encode() * 63) == "\u00e9" * 63


# --------------------------------------------------------------------------- next_args

Args = list[tuple[bytes, bytes | None]]

NEXT_ARGS_CASES: list[tuple[bytes, Args]] = [
    (b"", []),
    (b"   ", []),
    (b" \t\n\v\f\r ", []),
    (b"\n", []),
    (b"algo=zstd", [(b"algo", b"zstd")]),
    (b"algo=zstd\n", [(b"algo", b"zstd")]),
    (b"algo=zstd priority=1\n", [(b"algo", b"zstd"), (b"priority", b"1")]),
    (b'algo="zs td"', [(b"algo", b"zs td")]),
    (b'algo="zs td" priority=2\n', [(b"algo", b"zs td"), (b"priority", b"2")]),
    (b'dict="/etc/my dict" level=8', [(b"dict", b"/etc/my dict"), (b"level", b"8")]),
    (b'a="b" c="d e"\n', [(b"a", b"b"), (b"c", b"d e")]),
    (b"key=", [(b"key", b"")]),
    (b"key= x", [(b"key", b""), (b"x", None)]),
    (b"key", [(b"key", None)]),
    (b"idle", [(b"idle", None)]),
    (b"huge_idle\n", [(b"huge_idle", None)]),
    (b"  a=1 \t\n b=2  \n", [(b"a", b"1"), (b"b", b"2")]),
    (b"a=1\nb=2", [(b"a", b"1"), (b"b", b"2")]),
    (b"a=1\tb=2", [(b"a", b"1"), (b"b", b"2")]),
    (b"a=1\xa0b=2", [(b"a", b"1"), (b"b", b"2")]),  # Latin-1 NBSP is a kernel space
    (b"a=1\x0bb=2\x0cc=3\rd", [(b"a", b"1"), (b"b", b"2"), (b"c", b"3"), (b"d", None)]),
    (
        b"page_index=42 page_index=99 page_indexes=100-200 page_indexes=500-700",
        [
            (b"page_index", b"42"),
            (b"page_index", b"99"),
            (b"page_indexes", b"100-200"),
            (b"page_indexes", b"500-700"),
        ],
    ),
    (
        b"type=idle max_pages=100 threshold=1000",
        [
            (b"type", b"idle"),
            (b"max_pages", b"100"),
            (b"threshold", b"1000"),
        ],
    ),
    # quoting corners, exactly as lib/cmdline.c next_arg() does them
    (b'k="a b', [(b"k", b"a b")]),  # unterminated quote runs to the end
    (b'k="a b c d\n', [(b"k", b"a b c d\n")]),  # ...newline included
    (b'k=a"b c"', [(b"k", b'a"b c"')]),  # quote not at value start: kept
    (b'k="a"b', [(b"k", b'a"b')]),
    (b'k=v"', [(b"k", b'v"')]),
    (b'k=""', [(b"k", b"")]),
    (b'k="', [(b"k", b"")]),
    (b'key="val"ue" x', [(b"key", b'val"ue" x')]),
    (b'"k=v"', [(b"k", b"v")]),  # quoted key: whole token quoted
    (b'"k"=v', [(b'k"', b"v")]),
    (b'"a b=c"', [(b"a b", b"c")]),
    (b'" k"', [(b" k", None)]),
    (b'"', [(b"", None)]),
    (b'""', [(b"", None)]),
    (b'""=x', [(b'"', b"x")]),
    # '=' at index 0 is not recognised as the separator
    (b"=v", [(b"=v", None)]),
    (b"=a=b", [(b"=a", b"b")]),
    (b"a==b", [(b"a", b"=b")]),
    (b"a=b=c", [(b"a", b"b=c")]),
    # NUL ends the C string
    (b"a=1\x00 b=2", [(b"a", b"1")]),
    (b"\x00a=1", []),
    (b"a=\x00", [(b"a", b"")]),
    # non-ASCII passes through untouched
    (b"algo=\xff\xfe", [(b"algo", b"\xff\xfe")]),
]


@pytest.mark.parametrize(("buf", "expected"), NEXT_ARGS_CASES)
def test_next_args_table(buf: bytes, expected: Args) -> None:
    assert next_args(buf) == expected


# --------------------------------------------------------------------------- small helpers


def test_c_string_and_skip_spaces() -> None:
    assert c_string(b"ab\x00cd") == b"ab"
    assert c_string(b"abc") == b"abc"
    assert c_string(b"\x00") == b""
    assert skip_spaces(b" \t\n\xa0x y") == b"x y"
    assert skip_spaces(b"   ") == b""
    assert skip_spaces(b" \x00 x") == b""
    assert kparse.isspace(0xA0)
    assert not kparse.isspace(0x85)  # NEL is not a space in the kernel table
    assert not kparse.isspace(0x1C)  # Python's str.isspace() says True for \x1c
    assert not kparse.isspace(0x00)


# --------------------------------------------------------------------------- properties

u64s = st.integers(min_value=0, max_value=U64_MAX)
too_big = st.integers(min_value=U64_MAX + 1, max_value=2**80)
newline = st.sampled_from([b"", b"\n"])


@given(u64s, newline)
def test_prop_kstrtoull_decimal_round_trip(n: int, nl: bytes) -> None:
    assert kstrtoull(str(n).encode() + nl) == n
    assert kstrtoull(b"+" + str(n).encode() + nl) == n
    assert kstrtoul(str(n).encode() + nl) == n


@given(u64s, newline)
def test_prop_kstrtoull_hex_octal_round_trip(n: int, nl: bytes) -> None:
    assert kstrtoull(f"{n:x}".encode() + nl, 16) == n
    assert kstrtoull(f"0x{n:X}".encode() + nl, 16) == n
    assert kstrtoull(f"0x{n:x}".encode() + nl, 0) == n
    assert kstrtoull(f"0{n:o}".encode() + nl, 0) == n
    assert kstrtoull(f"{n:o}".encode() + nl, 8) == n


@given(too_big, st.sampled_from([10, 16, 0]))
def test_prop_kstrtoull_overflow_is_erange(n: int, base: int) -> None:
    text = hex(n) if base == 0 else (f"{n:x}" if base == 16 else str(n))
    with pytest.raises(ZramError) as info:
        kstrtoull(text.encode(), base)
    assert info.value.errno == ERANGE


@given(st.integers(min_value=0, max_value=2**70))
def test_prop_kstrtouint_and_u16_ranges(n: int) -> None:
    for fn, limit in ((kstrtouint, U32_MAX), (kstrtou16, 0xFFFF)):
        if n <= limit:
            assert fn(str(n).encode()) == n
        else:
            with pytest.raises(ZramError) as info:
                fn(str(n).encode())
            assert info.value.errno == ERANGE


@given(st.integers(min_value=-(2**70), max_value=2**70), newline)
def test_prop_kstrtoint_and_ll_ranges(n: int, nl: bytes) -> None:
    text = str(n).encode() + nl
    for fn, lo, hi in ((kstrtoint, S32_MIN, S32_MAX), (kstrtoll, S64_MIN, S64_MAX)):
        if lo <= n <= hi:
            assert fn(text) == n
        else:
            with pytest.raises(ZramError) as info:
                fn(text)
            assert info.value.errno == ERANGE


@given(u64s.filter(lambda n: n > 0), st.sampled_from([b"", b"\n"]))
def test_prop_kstrtoull_rejects_minus(n: int, nl: bytes) -> None:
    with pytest.raises(ZramError) as info:
        kstrtoull(b"-" + str(n).encode() + nl)
    assert info.value.errno == EINVAL


SUFFIX_SHIFT = {
    b"": 0,
    b"K": 10,
    b"k": 10,
    b"M": 20,
    b"m": 20,
    b"G": 30,
    b"g": 30,
    b"T": 40,
    b"t": 40,
    b"P": 50,
    b"p": 50,
    b"E": 60,
    b"e": 60,
}


@given(st.integers(min_value=0, max_value=2**70), st.sampled_from(sorted(SUFFIX_SHIFT)), newline)
def test_prop_memparse_decimal_with_suffix(n: int, suffix: bytes, nl: bytes) -> None:
    value, rest = memparse(str(n).encode() + suffix + nl)
    assert value == (n << SUFFIX_SHIFT[suffix]) & U64_MAX
    assert rest == nl


@given(st.integers(min_value=1, max_value=2**40), st.sampled_from(sorted(SUFFIX_SHIFT)))
def test_prop_disksize_is_page_aligned_ceiling(n: int, suffix: bytes) -> None:
    exact = n << SUFFIX_SHIFT[suffix]
    assume(exact <= 2**64 - PAGE_SIZE)
    size = parse_disksize(str(n).encode() + suffix + b"\n")
    assert size % PAGE_SIZE == 0
    assert exact <= size < exact + PAGE_SIZE


ALL_PARSERS: list[Callable[[bytes], object]] = [
    lambda b: memparse(b),
    lambda b: simple_strtoull(b),
    parse_disksize,
    parse_mem_limit,
    kstrtoull,
    kstrtoul,
    kstrtouint,
    kstrtou16,
    kstrtoint,
    kstrtoll,
    lambda b: kstrtoull(b, 0),
    lambda b: kstrtoull(b, 16),
    lambda b: kstrtouint(b, 0),
    lambda b: kstrtoint(b, 0),
    kstrtobool,
    parse_algo_name,
    next_args,
    lambda b: sysfs_streq(b, b"all"),
    c_string,
    skip_spaces,
]

interesting = st.one_of(
    st.binary(max_size=64),
    st.lists(
        st.sampled_from(list(b'0123456789abcdefxXkKmMgGeE+-= \t\n"\x00\xa0yYnNoO\xff')),
        max_size=40,
    ).map(bytes),
)


@given(interesting)
def test_prop_never_raises_anything_but_zramerror(buf: bytes) -> None:
    for fn in ALL_PARSERS:
        try:
            fn(buf)
        except ZramError as exc:
            assert exc.errno in (EINVAL, ERANGE, E2BIG)


@given(interesting)
def test_prop_results_stay_in_type_range(buf: bytes) -> None:
    ranged: list[tuple[Callable[[bytes], int], int, int]] = [
        (kstrtoull, 0, U64_MAX),
        (kstrtouint, 0, U32_MAX),
        (kstrtou16, 0, 0xFFFF),
        (kstrtoint, S32_MIN, S32_MAX),
        (kstrtoll, S64_MIN, S64_MAX),
        (parse_disksize, 0, U64_MAX),
        (parse_mem_limit, 0, U64_MAX),
    ]
    for fn, lo, hi in ranged:
        try:
            value = fn(buf)
        except ZramError:
            continue
        assert lo <= value <= hi
    value, rest = memparse(buf)
    assert 0 <= value <= U64_MAX
    assert buf.endswith(rest)


C_STRING_PARSERS: list[Callable[[bytes], object]] = [
    kstrtoull,
    kstrtouint,
    kstrtoint,
    kstrtobool,
    parse_algo_name,
    next_args,
    parse_disksize,
    parse_mem_limit,
    lambda b: sysfs_streq(b, b"all"),
]


def _outcome(fn: Callable[[bytes], object], buf: bytes) -> object:
    try:
        return ("ok", fn(buf))
    except ZramError as exc:
        return ("err", exc.errno)


@given(interesting.map(c_string), st.binary(max_size=16))
def test_prop_bytes_after_nul_are_invisible(prefix: bytes, junk: bytes) -> None:
    for fn in C_STRING_PARSERS:
        assert _outcome(fn, prefix + b"\x00" + junk) == _outcome(fn, prefix)


@given(interesting.map(c_string))
def test_prop_sysfs_streq_reflexive_and_newline(s: bytes) -> None:
    assert sysfs_streq(s, s)
    assert sysfs_streq(s + b"\n", s)
    assert sysfs_streq(s, s + b"\n")
    assert not sysfs_streq(s + b"x", s)


@given(interesting)
def test_prop_kstrtobool_only_reads_two_bytes(buf: bytes) -> None:
    head = c_string(buf)[:2]
    assert _outcome(kstrtobool, buf) == _outcome(kstrtobool, head)


token = st.binary(min_size=1, max_size=8).filter(
    lambda b: not any(c in b for c in b' \t\n\v\f\r\xa0"=\x00')
)
value_text = st.binary(max_size=8).filter(lambda b: not any(c in b for c in b'"\x00'))
spaces = st.lists(st.sampled_from([b" ", b"\t", b"\n", b"\xa0"]), min_size=1, max_size=3).map(
    b"".join
)


@given(st.lists(st.tuples(token, st.one_of(st.none(), value_text)), max_size=6), spaces, spaces)
def test_prop_next_args_round_trip(
    pairs: list[tuple[bytes, bytes | None]], sep: bytes, lead: bytes
) -> None:
    parts = [k if v is None else k + b'="' + v + b'"' for k, v in pairs]
    assert next_args(lead + sep.join(parts) + b"\n") == pairs
