"""zram-generator configurations on zramfs: ``zramfs setup`` and ``zramfs teardown``.

Usage (man-page style; merged into docs/usage.md)::

    zramfs setup    [CONFIG] [--root MNT] [--state FILE] [--dry-run]
    zramfs teardown [CONFIG] [--root MNT] [--state FILE]

``zramfs setup`` reads a zram-generator configuration (zram-generator.conf(5))
and builds every device it describes on a zramfs mount, the way
zram-generator's ``systemd-zram-setup@zramN.service`` builds them on the
kernel's zram, then puts the swap or the file system on top.
``zramfs teardown`` undoes exactly what setup recorded. Run both as root.

CONFIG
    Default ``/etc/zramfs/zram-generator.conf``. The drop-ins
    ``CONFIG.d/*.conf`` are read after it in lexicographic order of their file
    names; a later file overrides single-valued keys of an earlier one. A
    missing default CONFIG with no drop-ins means "no devices" (exit 0); a
    CONFIG named on the command line must exist.

--root MNT
    The zramfs mount to use, default ``/run/zramfs``. If nothing is mounted
    there, setup creates the directory and runs ``zramfs mount --num-devices 0
    MNT``, and teardown unmounts it again once its last recorded device is
    gone. A zramfs already mounted there is used as it is and left mounted.

--state FILE
    Where setup records what it did, default
    ``/run/zramfs-setup/<root, systemd-escaped>.json`` (``run-zramfs.json`` for
    the default root). Written after every step, so an interrupted setup is
    still undone exactly.

--dry-run (setup only)
    Print the devices the configuration resolves to and exit.

The configuration (as zram-generator reads it)
    ``[zramN]`` sections, N a non-negative integer; other sections are
    ignored with a warning, unknown keys too. Keys:

    ``zram-size`` = EXPR (MiB; default ``min(ram / 2, 4096)``)
        An arithmetic expression over ``ram`` = MemTotal in MiB. The language
        is fasteval's (what zram-generator uses): numbers with an optional
        exponent or SI suffix (``500k`` = 500000; k K M G T m u µ n p),
        ``+ - * / % ^``, comparisons ``< <= == != >= >`` (1 or 0), ``&& ||
        and or``, unary ``- + !``, ``( )`` and ``[ ]``, the functions
        ``min max int ceil floor round abs sign log e pi`` and the
        trigonometric ones. Operators bind in fasteval's order: ``^`` (right
        to left), then ``%``, ``/``, ``*``, ``-``, ``+``, comparisons,
        ``&&``, ``||``. It is parsed and evaluated by a small interpreter:
        nothing in it can run code. A size of 0 skips the device; a negative
        or NaN result is an error.
    ``zram-resident-limit`` = EXPR (MiB; default 0 = none) -> ``mem_limit``.
    ``host-memory-limit`` = MiB | ``none`` (default none): skip the device
        when MemTotal is above it.
    ``compression-algorithm`` = ALG[(k=v,...)] [ALG2[(k=v,...)] ...] [(k=v,...)]
        The first algorithm is the primary one (``comp_algorithm``), the
        others are recompression algorithms with priority 1, 2, ...
        (``recomp_algorithm`` ← ``algo=ALG priority=N``). Parameters in
        parentheses go to ``algorithm_params`` as ``priority=N k=v ...``. A
        bare ``(k=v,...)`` is written to ``recompress`` (global recompression
        parameters); as in zram-generator this happens before ``disksize``,
        where the kernel refuses it, so it only produces a warning.
    ``writeback-device`` = PATH -> ``backing_dev`` (a block device or, on
        zramfs, a regular file); skipped with a warning if PATH does not exist.
    ``swap-priority`` = -1..32767 (default 100): ``swapon -p``.
    ``mount-point`` = PATH: format the device and mount it there.
    ``fs-type`` = TYPE (default ``swap``, or ``ext2`` with a mount-point). A
        file system type without a mount-point is formatted, not mounted.
    ``options`` = OPTS (default ``discard``): ``swapon -o OPTS`` or
        ``mount -o OPTS``; an empty value passes none.
    Obsolete, as zram-generator handles them: ``memory-limit`` (alias of
    host-memory-limit); ``zram-fraction`` (default 0.5) and ``max-zram-size``
    (MiB or ``none``): setting either replaces zram-size by
    min(fraction × ram, max) (no cap unless max-zram-size is set).
    Outside any section, ``set!VAR = PROGRAM`` is ignored with a warning
    (zramfs runs no programs from its configuration).

What setup does, per device (in zram-generator's order)
    ``hot_add`` until zramN exists (devices created only to reach N are
    removed again); ``comp_algorithm``; ``algorithm_params``;
    ``recomp_algorithm`` (+ its params) for each further algorithm;
    ``recompress``; ``backing_dev``; ``mem_limit`` (bytes); ``disksize``
    (bytes). Unknown algorithms (EINVAL), missing recompression support and
    refused params are warnings, as in zram-generator; any other failure
    stops that device, undoes what was done for it and names the device, the
    key and the kernel's error. Then ``losetup --direct-io=on -f --show
    MNT/dev/zramN``, and either ``mkswap`` + ``swapon -p PRIO [-o OPTS]``, or
    ``mkfs.TYPE`` (ext*: ``-q -m 0``; ``mkfs -t TYPE`` if there is no
    mkfs.TYPE) + ``mkdir -p`` + ``mount -t TYPE [-o OPTS]``.

    Idempotent: a device recorded as set up whose swap is still active (or
    whose file system is still mounted) is left alone; if the configuration
    now says something else, a warning says so (tear down and set up again to
    apply). A recorded device that is no longer active is undone and built
    again. An initialized device setup did not create is never touched.

What teardown does
    For every device recorded in the state (only those set up from CONFIG,
    when CONFIG is given): ``swapoff`` / ``umount``, ``losetup -d``,
    ``reset``, ``hot_remove`` if setup added the device, ``rmdir`` of the
    directories setup created; then unmounts the zramfs root if setup mounted
    it and no recorded device is left. A busy file system is reported and
    kept (with its device) for the next teardown.

Exit status: 0 when every device is in place (setup) or gone (teardown), 1 on
any error, 2 on bad usage. Progress goes to stdout, one line per step;
warnings and errors to stderr. When stderr is a terminal, a progress bar
there counts the devices done and keeps the elapsed time ticking while a
slow step runs (mounting the zramfs root, mkfs, swapon, swapoff, umount).

The example unit ``examples/zramfs-setup.service`` runs setup at boot and
teardown at shutdown; ``examples/zram-generator.conf`` is an example CONFIG.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import fcntl
import json
import math
import os
import re
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from tqdm import tqdm

from .fs import mounts

DEFAULT_CONFIG = "/etc/zramfs/zram-generator.conf"
DEFAULT_ROOT = "/run/zramfs"
STATE_DIR = "/run/zramfs-setup"
DEFAULT_ZRAM_SIZE = "min(ram / 2, 4096)"
DEFAULT_RESIDENT_LIMIT = "0"
DEFAULT_SWAP_PRIORITY = 100
DEFAULT_OPTIONS = "discard"
MiB = 1024 * 1024
STATE_VERSION = 1


# =============================================================================
# The zram-size expression language (fasteval 0.2's mini-language)
# =============================================================================


class ExprError(ValueError):
    """A parse or evaluation error in a size expression."""


_EXPR_LEN_LIMIT = 4096
_EXPR_DEPTH_LIMIT = 32
_F64_EPSILON = sys.float_info.epsilon
_SI_SUFFIX = {
    "k": 3, "K": 3, "M": 6, "G": 9, "T": 12,
    "m": -3, "u": -6, "\u00b5": -6, "n": -9, "p": -12,
}  # fmt: skip
_FLOAT_RE = re.compile(r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?|[+-]?(?:inf|NaN)")


@dataclass(frozen=True)
class _Const:
    value: float


@dataclass(frozen=True)
class _Var:
    name: str


@dataclass(frozen=True)
class _Call:
    name: str
    args: tuple[_Chain, ...]


@dataclass(frozen=True)
class _Print:
    items: tuple[_Chain | str, ...]


@dataclass(frozen=True)
class _Unary:
    op: str  # "+", "-", "!"
    operand: _Node


@dataclass(frozen=True)
class _Chain:
    """``value (op value)*``, reduced in fasteval's operator order."""

    first: _Node
    pairs: tuple[tuple[str, _Node], ...]


_Node = _Const | _Var | _Call | _Print | _Unary | _Chain

# Built-in functions and their argument counts (fasteval parser.rs read_func).
_ONE_ARG = {
    "int", "ceil", "floor", "abs", "sign", "sin", "cos", "tan", "asin", "acos",
    "atan", "sinh", "cosh", "tanh", "asinh", "acosh", "atanh",
}  # fmt: skip


class _Parser:
    def __init__(self, text: str) -> None:
        self.s = text
        self.i = 0

    def fail(self, msg: str, at: int | None = None) -> ExprError:
        pos = self.i if at is None else at
        return ExprError(f"{msg} at column {pos + 1}")

    def peek(self, k: int = 0) -> str | None:
        j = self.i + k
        return self.s[j] if j < len(self.s) else None

    def spaces(self) -> None:
        while self.i < len(self.s) and self.s[self.i] in " \n\t\r":
            self.i += 1

    def expression(self, depth: int, expect_eof: bool) -> _Chain:
        if depth >= _EXPR_DEPTH_LIMIT:
            raise self.fail("expression nested too deeply")
        first = self.value(depth)
        pairs: list[tuple[str, _Node]] = []
        while (op := self.binaryop()) is not None:
            pairs.append((op, self.value(depth)))
        self.spaces()
        if expect_eof and self.i < len(self.s):
            raise self.fail(f"unexpected {self.s[self.i :]!r}")
        return _Chain(first, tuple(pairs))

    def value(self, depth: int) -> _Node:
        if depth >= _EXPR_DEPTH_LIMIT:
            raise self.fail("expression nested too deeply")
        c = self.const()
        if c is not None:
            return c
        self.spaces()
        ch = self.peek()
        if ch is not None and ch in "+-!":
            self.i += 1
            return _Unary(ch, self.value(depth + 1))
        if ch in ("(", "["):
            close = ")" if ch == "(" else "]"
            self.i += 1
            inner = self.expression(depth + 1, False)
            self.spaces()
            if self.peek() != close:
                raise self.fail(f"expected {close!r}")
            self.i += 1
            return inner
        name = self.varname()
        if name is None:
            if ch is None:
                raise self.fail("expression ends where a value is expected")
            raise self.fail(f"invalid value {self.s[self.i :]!r}")
        self.spaces()
        ch = self.peek()
        if ch not in ("(", "["):
            return _Var(name)
        self.i += 1
        if name == "print":
            return _Print(self.print_args(")" if ch == "(" else "]", depth))
        start = self.i
        args = self.func_args(name, ")" if ch == "(" else "]", depth)
        return self.builtin(name, args, start)

    def const(self) -> _Const | None:
        self.spaces()
        s, j = self.s, self.i
        n = 0
        sign_ok = specials_ok = suffix_ok = True
        saw_val = False
        while j + n < len(s):
            b = s[j + n]
            if "0" <= b <= "9" or b == ".":
                saw_val = True
                sign_ok = specials_ok = False
                n += 1
            elif sign_ok and b in "+-":
                sign_ok = False
                n += 1
            elif saw_val and b in "eE":
                suffix_ok = False
                sign_ok = True
                n += 1
            elif specials_ok and s.startswith(("NaN", "inf"), j + n):
                saw_val = True
                suffix_ok = False
                n += 3
                break
            else:
                break
        if not saw_val:
            return None
        tok = s[j : j + n]
        if suffix_ok and j + n < len(s) and s[j + n] in _SI_SUFFIX:
            tok = f"{tok}e{_SI_SUFFIX[s[j + n]]}"
            n += 1
        if not _FLOAT_RE.fullmatch(tok):
            raise self.fail(f"invalid number {s[j : j + n]!r}", j)
        self.i = j + n
        return _Const(float(tok))

    def varname(self) -> str | None:
        self.spaces()
        j = self.i
        while j < len(self.s):
            b = self.s[j]
            if not (b.isascii() and (b.isalpha() or b == "_" or (j > self.i and b.isdigit()))):
                break
            j += 1
        if j == self.i:
            return None
        name, self.i = self.s[self.i : j], j
        return name

    def binaryop(self) -> str | None:
        self.spaces()
        s, i = self.s, self.i
        for op in ("<=", ">=", "==", "!=", "||", "&&", "and", "or"):
            if s.startswith(op, i):
                self.i += len(op)
                return {"and": "&&", "or": "||"}.get(op, op)
        if i < len(s) and s[i] in "+-*/%^<>":
            self.i += 1
            return s[i]
        return None

    def _args(self, name: str, close: str, read: Callable[[], _Chain | str]) -> list[Any]:
        args: list[Any] = []
        while True:
            self.spaces()
            ch = self.peek()
            if ch is None:
                raise self.fail(f"input ends inside {name}(...)")
            if ch == close:
                self.i += 1
                return args
            if args:
                if ch not in ",;":
                    raise self.fail(f"expected ',' or {close!r} in {name}(...)")
                self.i += 1
            args.append(read())

    def func_args(self, name: str, close: str, depth: int) -> list[_Chain]:
        return self._args(name, close, lambda: self.expression(depth + 1, False))

    def print_args(self, close: str, depth: int) -> tuple[_Chain | str, ...]:
        def item() -> _Chain | str:
            self.spaces()
            if self.peek() == '"':
                end = self.s.find('"', self.i + 1)
                if end < 0:
                    raise self.fail("unterminated string")
                text, self.i = self.s[self.i + 1 : end], end + 1
                return text
            return self.expression(depth + 1, False)

        return tuple(self._args("print", close, item))

    def builtin(self, name: str, args: list[_Chain], at: int) -> _Node:
        n = len(args)
        if name in _ONE_ARG and n != 1:
            raise self.fail(f"{name}() takes one argument", at)
        if name in ("log", "round") and n not in (1, 2):
            raise self.fail(f"{name}() takes one or two arguments", at)
        if name in ("min", "max") and n == 0:
            raise self.fail(f"{name}() takes one or more arguments", at)
        if name in ("e", "pi") and n != 0:
            raise self.fail(f"{name}() takes no arguments", at)
        return _Call(name, tuple(args))


def _f64_eq(a: float, b: float) -> bool:
    return abs(a - b) <= 8.0 * _F64_EPSILON


def _div(a: float, b: float) -> float:
    if b == 0.0:
        if a == 0.0 or math.isnan(a):
            return math.nan
        return math.copysign(math.inf, a) * math.copysign(1.0, b)
    return a / b


def _mod(a: float, b: float) -> float:
    if b == 0.0 or math.isinf(a) or math.isnan(a) or math.isnan(b):
        return math.nan
    return math.fmod(a, b)


def _pow(a: float, b: float) -> float:
    try:
        return math.pow(a, b)
    except OverflowError:
        # Rust's powf saturates: odd integer powers keep the sign.
        odd = b.is_integer() and int(b) % 2 == 1
        return -math.inf if a < 0 and odd else math.inf
    except ValueError:
        return math.inf if a == 0.0 else math.nan


def _binop(op: str, a: float, b: float) -> float:
    if op == "+":
        return a + b
    if op == "-":
        return a - b
    if op == "*":
        return a * b
    if op == "/":
        return _div(a, b)
    if op == "%":
        return _mod(a, b)
    if op == "^":
        return _pow(a, b)
    if op == "<":
        return float(a < b)
    if op == "<=":
        return float(a <= b)
    if op == ">":
        return float(a > b)
    if op == ">=":
        return float(a >= b)
    if op == "==":
        return float(_f64_eq(a, b))
    if op == "!=":
        return float(not _f64_eq(a, b))
    if op == "&&":
        return a if _f64_eq(a, 0.0) else b
    if op == "||":
        return a if not _f64_eq(a, 0.0) else b
    raise AssertionError(op)


# fasteval evaler.rs: the order in which a chain's operators are reduced.
_REDUCTION: tuple[tuple[frozenset[str], bool], ...] = (
    (frozenset({"^"}), True),  # right to left
    (frozenset({"%"}), False),
    (frozenset({"/"}), False),
    (frozenset({"*"}), True),
    (frozenset({"-"}), False),
    (frozenset({"+"}), True),
    (frozenset({"<", ">", "<=", ">="}), False),
    (frozenset({"==", "!="}), False),
    (frozenset({"&&"}), False),
    (frozenset({"||"}), False),
)


_UNARY_FNS: dict[str, Callable[[float], float]] = {
    "sin": math.sin, "cos": math.cos, "tan": math.tan, "asin": math.asin,
    "acos": math.acos, "atan": math.atan, "sinh": math.sinh, "cosh": math.cosh,
    "tanh": math.tanh, "asinh": math.asinh, "acosh": math.acosh, "atanh": math.atanh,
}  # fmt: skip


def _unary_fn(name: str, x: float) -> float:
    if name == "abs":
        return abs(x)
    if math.isnan(x) or math.isinf(x) and name in ("int", "ceil", "floor"):
        return x
    if name == "int":
        return float(math.trunc(x))
    if name == "ceil":
        return float(math.ceil(x))
    if name == "floor":
        return float(math.floor(x))
    try:
        return _UNARY_FNS[name](x)
    except OverflowError:
        return math.copysign(math.inf, x)
    except ValueError:
        if name == "atanh" and abs(x) == 1.0:
            return math.copysign(math.inf, x)
        return math.nan


def _log(base: float, x: float) -> float:
    try:
        if base == 10.0:
            return math.log10(x)
        if base == 2.0:
            return math.log2(x)
        return _div(math.log(x), math.log(base))
    except ValueError:
        return -math.inf if x == 0.0 else math.nan


def _round_half_away(x: float) -> float:
    if math.isnan(x) or math.isinf(x):
        return x
    return math.copysign(math.floor(abs(x) + 0.5), x)


class Expression:
    """A parsed size expression; :meth:`evaluate` never runs anything but arithmetic."""

    def __init__(self, text: str) -> None:
        if len(text) > _EXPR_LEN_LIMIT:
            raise ExprError(f"expression longer than {_EXPR_LEN_LIMIT} characters")
        self.text = text
        self._root = _Parser(text).expression(0, True)

    def evaluate(self, variables: dict[str, float]) -> float:
        return self._eval(self._root, variables)

    def _eval(self, node: _Node, env: dict[str, float]) -> float:
        if isinstance(node, _Const):
            return node.value
        if isinstance(node, _Var):
            if node.name not in env:
                raise ExprError(f"undefined variable {node.name!r}")
            return env[node.name]
        if isinstance(node, _Unary):
            v = self._eval(node.operand, env)
            if node.op == "-":
                return -v
            if node.op == "!":
                return float(_f64_eq(v, 0.0))
            return v
        if isinstance(node, _Chain):
            vals = [self._eval(node.first, env)]
            ops = []
            for op, val in node.pairs:
                ops.append(op)
                vals.append(self._eval(val, env))
            for group, rtol in _REDUCTION:
                idx = range(len(ops) - 1, -1, -1) if rtol else None
                if idx is not None:
                    for i in idx:
                        if ops[i] in group:
                            vals[i : i + 2] = [_binop(ops[i], vals[i], vals[i + 1])]
                            del ops[i]
                else:
                    i = 0
                    while i < len(ops):
                        if ops[i] in group:
                            vals[i : i + 2] = [_binop(ops[i], vals[i], vals[i + 1])]
                            del ops[i]
                        else:
                            i += 1
            return vals[0]
        if isinstance(node, _Print):
            out, last = [], 0.0
            for item in node.items:
                if isinstance(item, str):
                    out.append(item.replace("\\n", "\n").replace("\\t", "\t"))
                else:
                    last = self._eval(item, env)
                    out.append(repr(last))
            print(" ".join(out), file=sys.stderr)
            return last
        return self._call(node, env)

    def _call(self, node: _Call, env: dict[str, float]) -> float:
        args = [self._eval(a, env) for a in node.args]
        name = node.name
        if name in _ONE_ARG:
            if name == "sign":
                return args[0] if math.isnan(args[0]) else math.copysign(1.0, args[0])
            return _unary_fn(name, args[0])
        if name == "log":
            return _log(10.0, args[0]) if len(args) == 1 else _log(args[0], args[1])
        if name == "round":
            modulus = 1.0 if len(args) == 1 else args[0]
            return _round_half_away(_div(args[-1], modulus)) * modulus
        if name in ("min", "max"):
            acc = args[0]
            for v in args[1:]:  # f64::min/max: a NaN operand loses
                better = v < acc if name == "min" else v > acc
                if math.isnan(acc) or (not math.isnan(v) and better):
                    acc = v
            return acc
        if name == "e":
            return math.e
        if name == "pi":
            return math.pi
        if not args and name in env:  # fasteval: ``ram()`` is the variable ram
            return env[name]
        raise ExprError(f"undefined function {name}()")


def evaluate(text: str, ram: float) -> float:
    """Evaluate a zram-size style expression with ``ram`` (MiB) bound."""
    return Expression(text).evaluate({"ram": float(ram)})


# =============================================================================
# The configuration
# =============================================================================


class ConfigError(Exception):
    """An invalid configuration: names the file, the device and the key."""


@dataclass
class Algorithms:
    algorithms: list[tuple[str, str]] = field(default_factory=list)  # (algo, params)
    recompress: str = ""  # global recompression parameters


@dataclass
class SizeExpr:
    text: str
    expr: Expression
    origin: str  # file: where it was set, for error messages


@dataclass
class DeviceConfig:
    """One ``[zramN]`` section after all files are read (config.rs ``Device``)."""

    name: str
    host_memory_limit_mb: int | None = None
    zram_size: SizeExpr | None = None
    zram_resident_limit: SizeExpr | None = None
    algorithms: Algorithms = field(default_factory=Algorithms)
    writeback_device: str | None = None
    swap_priority: int = DEFAULT_SWAP_PRIORITY
    mount_point: str | None = None
    fs_type: str | None = None
    options: str = DEFAULT_OPTIONS
    zram_fraction: float | None = None  # obsolete, overrides zram-size
    max_zram_size_mb: tuple[int | None] | None = None  # obsolete: set (maybe to none) or not

    @property
    def number(self) -> int:
        return int(self.name[4:])

    def is_swap(self) -> bool:
        return self.mount_point is None and self.fs_type in (None, "swap")

    def effective_fs_type(self) -> str:
        if self.fs_type is not None:
            return self.fs_type
        return "swap" if self.is_swap() else "ext2"


@dataclass
class Config:
    files: list[Path]
    devices: dict[str, DeviceConfig]
    warnings: list[str]


def config_fragments(config: Path) -> list[Path]:
    """CONFIG first, then ``CONFIG.d/*.conf`` sorted by file name."""
    found = [config] if config.exists() else []
    dropin_dir = Path(str(config) + ".d")
    if dropin_dir.is_dir():
        found += sorted(
            (p for p in dropin_dir.iterdir() if p.name.endswith(".conf") and not p.is_dir()),
            key=lambda p: p.name,
        )
    return found


def _ini_lines(path: Path) -> Iterator[tuple[int, str | None, str, str]]:
    """(line number, section or None, key, value) of an ini file; sections alone yield ''."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"{path}: cannot read: {e}") from None
    section: str | None = None
    for no, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line[0] in "#;":
            continue
        if line.startswith("["):
            if not line.endswith("]"):
                raise ConfigError(f"{path}:{no}: unterminated section header {line!r}")
            section = line[1:-1].strip()
            yield no, section, "", ""
            continue
        key, eq, value = line.partition("=")
        if not eq:
            raise ConfigError(f"{path}:{no}: expected 'key = value', got {line!r}")
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
            value = value[1:-1]
        yield no, section, key.strip(), value


_SECTION_RE = re.compile(r"zram(0|[1-9][0-9]*)")
_U64_RE = re.compile(r"\+?[0-9]+")


def _parse_u64(value: str) -> int:
    if not _U64_RE.fullmatch(value) or int(value) >= 1 << 64:
        raise ValueError(f"{value!r} is not a non-negative integer")
    return int(value)


def _parse_optional_size(value: str) -> int | None:
    return None if value == "none" else _parse_u64(value)


def _verify_path(value: str) -> str:
    """config.rs verify_mount_point: absolute, no ``..``; normalized."""
    if not value.startswith("/"):
        raise ValueError(f"{value!r} is not absolute")
    parts = value.split("/")
    if ".." in parts:
        raise ValueError(f"{value!r} is not normalized")
    return "/" + "/".join(p for p in parts if p not in ("", "."))


def parse_compression_algorithms(value: str) -> Algorithms:
    """``lz4 zstd(level=3) brotli(level=11) (type=idle)`` → algorithms + global params."""
    algos = Algorithms()
    for word in value.split():
        algo, paren, params = word.partition("(")
        if paren:
            params = params.removesuffix(")").replace(",", " ")
        if algo:
            algos.algorithms.append((algo, params))
        else:
            algos.recompress = params
    return algos


def _apply_key(dev: DeviceConfig, key: str, value: str, where: str, warn: list[str]) -> None:
    if key in ("host-memory-limit", "memory-limit"):
        dev.host_memory_limit_mb = _parse_optional_size(value)
        if key == "memory-limit":
            warn.append(f"{where}: memory-limit is obsolete; use host-memory-limit")
    elif key in ("zram-size", "zram-resident-limit"):
        try:
            size = SizeExpr(value, Expression(value), where)
        except ExprError as e:
            raise ValueError(f"invalid expression {value!r}: {e}") from None
        if key == "zram-size":
            dev.zram_size = size
        else:
            dev.zram_resident_limit = size
    elif key == "compression-algorithm":
        dev.algorithms = parse_compression_algorithms(value)
    elif key == "writeback-device":
        dev.writeback_device = _verify_path(value)
    elif key == "swap-priority":
        try:
            prio = int(value)
        except ValueError:
            raise ValueError(f"{value!r} is not an integer") from None
        if not -1 <= prio <= 0x7FFF:
            raise ValueError(f"swap priority {prio} out of range -1..32767")
        dev.swap_priority = prio
    elif key == "mount-point":
        dev.mount_point = _verify_path(value)
    elif key == "fs-type":
        dev.fs_type = value
    elif key == "options":
        dev.options = value
    elif key == "zram-fraction":
        try:
            frac = float(value)
        except ValueError:
            raise ValueError(f"{value!r} is not a number") from None
        if not frac >= 0:
            raise ValueError(f"zram-fraction={value} < 0")
        dev.zram_fraction = frac
        warn.append(f"{where}: zram-fraction is obsolete (it overrides zram-size); use zram-size")
    elif key == "max-zram-size":
        dev.max_zram_size_mb = (_parse_optional_size(value),)
        warn.append(f"{where}: max-zram-size is obsolete (it overrides zram-size); use zram-size")
    else:
        warn.append(f"{where}: unknown key {key}, ignoring")


def parse_config(paths: Sequence[Path]) -> Config:
    """Read the fragments in order; later files override earlier ones key by key."""
    devices: dict[str, DeviceConfig] = {}
    warnings: list[str] = []
    for path in paths:
        for no, section, key, value in _ini_lines(path):
            if section is None:
                where = f"{path}:{no}"
                if key.startswith("set!"):
                    warnings.append(
                        f"{where}: {key} = {value}: ignored (zramfs runs no programs from its "
                        "configuration; write the value into the expression instead)"
                    )
                else:
                    warnings.append(f"{where}: invalid outside-of-section key {key}, ignoring")
                continue
            if not _SECTION_RE.fullmatch(section):
                if not key:
                    warnings.append(f"{path}:{no}: ignoring section [{section}]")
                continue
            dev = devices.setdefault(section, DeviceConfig(section))
            if not key:
                continue
            where = f"{path}:{no}: [{section}] {key}"
            try:
                _apply_key(dev, key, value, where, warnings)
            except ValueError as e:
                raise ConfigError(f"{where} = {value}: {e}") from None
    return Config(list(paths), devices, warnings)


def load_config(config: Path) -> Config:
    return parse_config(config_fragments(config))


def memtotal_mb(meminfo: str = "/proc/meminfo") -> int:
    with open(meminfo) as f:
        for line in f:
            fields = line.split()
            if len(fields) >= 2 and fields[0] == "MemTotal:":
                return int(fields[1]) // 1024
    raise ConfigError(f"no MemTotal in {meminfo}")


@dataclass
class Resolved:
    """A device to create, every value final (what setup writes)."""

    config: DeviceConfig
    disksize: int  # bytes
    mem_limit: int  # bytes

    @property
    def name(self) -> str:
        return self.config.name

    def settings(self) -> dict[str, Any]:
        c = self.config
        return {
            "disksize": self.disksize,
            "mem_limit": self.mem_limit,
            "algorithms": [list(a) for a in c.algorithms.algorithms],
            "recompress": c.algorithms.recompress,
            "writeback_device": c.writeback_device,
            "fs_type": c.effective_fs_type(),
            "mount_point": c.mount_point,
            "options": c.options,
            "swap_priority": c.swap_priority if c.is_swap() else None,
        }


def _size_bytes(dev: DeviceConfig, label: str, size: SizeExpr | None, default_mb: float,
                ram: int) -> int:  # fmt: skip
    if size is None:
        value = default_mb
    else:
        try:
            value = size.expr.evaluate({"ram": float(ram)})
        except ExprError as e:
            raise ConfigError(f"{size.origin} = {size.text}: {e}") from None
        where = f"{size.origin} = {size.text}"
        if math.isnan(value) or value < 0:
            raise ConfigError(f"{where}: {dev.name}: {label}={value} < 0 (ram = {ram})")
        if math.isinf(value):
            raise ConfigError(f"{where}: {dev.name}: {label} is infinite (ram = {ram})")
    return int(value * 1024.0 * 1024.0)


def resolve(dev: DeviceConfig, ram: int) -> Resolved | str:
    """Final sizes for ``dev`` on a machine with ``ram`` MiB, or why it is skipped."""
    if dev.host_memory_limit_mb is not None and dev.host_memory_limit_mb < ram:
        return (f"system has too much memory ({ram}MB), limit is "
                f"{dev.host_memory_limit_mb}MB, ignoring.")  # fmt: skip
    if dev.fs_type == "swap" and dev.mount_point is not None:
        raise ConfigError(f"[{dev.name}]: fs-type = swap cannot be combined with mount-point")
    if dev.zram_fraction is not None or dev.max_zram_size_mb is not None:
        # config.rs: the obsolete keys replace zram-size; no cap unless max-zram-size is set.
        max_mb = dev.max_zram_size_mb[0] if dev.max_zram_size_mb is not None else None
        fraction = 0.5 if dev.zram_fraction is None else dev.zram_fraction
        mb = int(fraction * ram)
        if max_mb is not None:
            mb = min(mb, max_mb)
        disksize = mb * MiB
    else:
        disksize = _size_bytes(dev, "zram-size", dev.zram_size, min(ram / 2.0, 4096.0), ram)
    mem_limit = _size_bytes(dev, "zram-resident-limit", dev.zram_resident_limit, 0.0, ram)
    if disksize == 0:
        return "size is 0, skipped."
    return Resolved(dev, disksize, mem_limit)


def sorted_devices(cfg: Config) -> list[DeviceConfig]:
    return sorted(cfg.devices.values(), key=lambda d: d.number)


# =============================================================================
# The system side: state file, zramfs attributes, loop devices, swaps, mounts
# =============================================================================


class DeviceError(Exception):
    """Setting up or tearing down one device failed (the message names it)."""


def escape_path(path: str) -> str:
    """``systemd-escape --path``: /run/zramfs → run-zramfs."""
    p = path.strip("/")
    if not p:
        return "-"
    out = []
    for i, ch in enumerate(p):
        if ch == "/":
            out.append("-")
        elif ch.isascii() and (ch.isalnum() or ch in ":_" or (ch == "." and i > 0)):
            out.append(ch)
        else:
            out.extend(f"\\x{b:02x}" for b in ch.encode())
    return "".join(out)


def default_state_path(root: str) -> Path:
    return Path(STATE_DIR) / f"{escape_path(root)}.json"


def _new_state(root: str) -> dict[str, Any]:
    return {"version": STATE_VERSION, "root": root, "mounted": False, "created_root": False,
            "devices": {}}  # fmt: skip


def load_state(path: Path, root: str) -> dict[str, Any] | None:
    try:
        text = path.read_text()
    except FileNotFoundError:
        return None
    try:
        state: dict[str, Any] = json.loads(text)
    except ValueError as e:
        raise DeviceError(f"state file {path} is corrupt: {e}") from None
    if state.get("version") != STATE_VERSION or state.get("root") != root:
        raise DeviceError(f"state file {path} is not a zramfs setup record for {root}")
    return state


def save_state(path: Path, state: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(state, indent=2, sort_keys=True) + "\n")
    os.replace(tmp, path)


@contextlib.contextmanager
def _locked(state_path: Path) -> Iterator[None]:
    """One setup/teardown at a time per state directory."""
    state_path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(state_path.parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def write_attr(path: Path, value: str) -> None:
    """One write(2) of the whole value, like ``echo -n value > path``."""
    fd = os.open(path, os.O_WRONLY)
    try:
        os.write(fd, value.encode())
    finally:
        os.close(fd)


def _strerror(e: OSError) -> str:
    return os.strerror(e.errno) if e.errno else str(e)


def active_swaps() -> set[str]:
    try:
        with open("/proc/swaps") as f:
            lines = f.read().splitlines()[1:]
    except OSError:
        return set()
    return {line.split()[0] for line in lines if line.split()}


def loop_backing(loop: str) -> str | None:
    try:
        text = Path(f"/sys/block/{os.path.basename(loop)}/loop/backing_file").read_text()
    except OSError:
        return None
    return text.rstrip("\n").removesuffix(" (deleted)")


def mounts_of(source: str) -> list[str]:
    """Mount points whose source is ``source``, innermost first."""
    return [m.mountpoint for m in reversed(mounts.mounts()) if m.source == source]


class Progress:
    """A progress bar over the devices of one run, on stderr, only if that is a terminal.

    Drawn from `start` on (not at all for a run with nothing to do). The step
    lines keep going to stdout (`write` prints them above the bar); `busy`
    keeps the bar's elapsed time ticking and names the step while a slow
    command runs.
    """

    def __init__(self, prog: str) -> None:
        self.prog = prog
        self.bar: tqdm[Any] | None = None

    def start(self, total: int) -> None:
        if total > 0 and self.bar is None:
            self.bar = tqdm(total=total, desc=self.prog, unit="device", file=sys.stderr,
                            leave=False, disable=None, bar_format="{desc}: {n_fmt}/{total_fmt} "
                            "devices |{bar}| {elapsed}{postfix}")  # fmt: skip

    def write(self, msg: str, file: TextIO) -> None:
        if self.bar is None or self.bar.disable:
            print(msg, file=file, flush=True)
        else:
            tqdm.write(msg, file=file)

    def advance(self) -> None:
        if self.bar is not None:
            self.bar.update(1)

    @contextlib.contextmanager
    def busy(self, what: str) -> Iterator[None]:
        bar = self.bar
        if bar is None or bar.disable:
            yield
            return
        bar.set_postfix_str(what)
        stop = threading.Event()

        def tick() -> None:
            while not stop.wait(0.2):
                bar.refresh()

        t = threading.Thread(target=tick, daemon=True)
        t.start()
        try:
            yield
        finally:
            stop.set()
            t.join()
            bar.set_postfix_str("")

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


class Session:
    """One setup or teardown run against one zramfs root."""

    def __init__(self, root: str, state_path: Path, prog: str) -> None:
        self.root = root
        self.state_path = state_path
        self.prog = prog
        self.state: dict[str, Any] = _new_state(root)
        self.failed = False
        self.progress: Progress | None = None

    # -- output ---------------------------------------------------------------
    def _out(self, msg: str, file: TextIO) -> None:
        if self.progress is not None:
            self.progress.write(msg, file)
        else:
            print(msg, file=file, flush=True)

    def say(self, msg: str) -> None:
        self._out(msg, sys.stdout)

    def warn(self, msg: str) -> None:
        self._out(f"{self.prog}: warning: {msg}", sys.stderr)

    def error(self, msg: str) -> None:
        self.failed = True
        self._out(f"{self.prog}: error: {msg}", sys.stderr)

    def busy(self, what: str) -> contextlib.AbstractContextManager[None]:
        """While a slow step runs: the progress bar's clock ticks (if there is a bar)."""
        return contextlib.nullcontext() if self.progress is None else self.progress.busy(what)

    def advance(self) -> None:
        if self.progress is not None:
            self.progress.advance()

    @contextlib.contextmanager
    def progress_bar(self, total: int) -> Iterator[None]:
        """A `Progress` over ``total`` devices (0: `Progress.start` later) for the block."""
        self.progress = Progress(self.prog)
        self.progress.start(total)
        try:
            yield
        finally:
            self.progress.close()
            self.progress = None

    def save(self) -> None:
        save_state(self.state_path, self.state)

    # -- paths ----------------------------------------------------------------
    def sysdir(self, name: str) -> Path:
        return Path(self.root, "sys", "block", name)

    def image(self, name: str) -> str:
        return os.path.join(self.root, "dev", name)

    def control(self, which: str) -> Path:
        return Path(self.root, "sys", "class", "zram-control", which)

    def live(self) -> bool:
        m = mounts.find_mount(self.root)
        return (m is not None and m.fstype == mounts.FSTYPE and m.mountpoint == self.root
                and not mounts.is_dead(self.root))  # fmt: skip

    def run(self, name: str, *cmd: str, show: bool = True) -> str:
        if show:
            self.say(f"{name}: {' '.join(cmd)}")
        try:
            with self.busy(f"{name}: {cmd[0]}"):
                res = subprocess.run(cmd, capture_output=True, text=True, check=False)
        except OSError as e:
            raise DeviceError(f"{name}: cannot run {cmd[0]}: {_strerror(e)}") from None
        if res.returncode != 0:
            detail = res.stderr.strip() or res.stdout.strip() or f"exit status {res.returncode}"
            raise DeviceError(f"{name}: {' '.join(cmd)} failed: {detail}")
        return res.stdout

    # -- undo (teardown, rollback, stale records) -----------------------------
    def undo_device(self, name: str, rec: dict[str, Any], remove: bool = True) -> None:
        """Undo whatever ``rec`` says was done; raises DeviceError if something stays.

        ``remove=False`` keeps a device setup added (to set it up again).
        """
        image = self.image(name)
        loop = rec.get("loop")
        if loop and loop_backing(loop) == image:
            if loop in active_swaps():
                self.run(name, "swapoff", loop)
            for target in mounts_of(loop):
                self.run(name, "umount", target)
            self.run(name, "losetup", "-d", loop)
            deadline = time.monotonic() + 10
            while loop_backing(loop) == image and time.monotonic() < deadline:
                time.sleep(0.02)
        rec["loop"] = None
        sysdir = self.sysdir(name)
        if self.live() and sysdir.is_dir():
            self.say(f"{name}: reset = 1")
            self._retry_busy(name, "reset", lambda: write_attr(sysdir / "reset", "1"))
            if rec.get("added") and remove:
                self.say(f"{name}: hot_remove = {name[4:]}")
                self._retry_busy(
                    name, "hot_remove", lambda: write_attr(self.control("hot_remove"), name[4:])
                )
        if remove:
            rec["added"] = False
        for d in reversed(rec.get("created_dirs", [])):
            try:
                os.rmdir(d)
                self.say(f"{name}: rmdir {d}")
            except FileNotFoundError:
                pass
            except OSError as e:
                self.warn(f"{name}: leaving {d}: {_strerror(e)}")
        rec["created_dirs"] = []

    def _retry_busy(self, name: str, what: str, fn: Callable[[], None]) -> None:
        # The loop driver lets go of the image asynchronously after losetup -d.
        deadline = time.monotonic() + 10
        while True:
            try:
                fn()
                return
            except OSError as e:
                if e.errno == errno.EBUSY and time.monotonic() < deadline:
                    time.sleep(0.05)
                    continue
                raise DeviceError(f"{name}: {what} failed: {_strerror(e)}") from None

    def unmount_root(self) -> None:
        self.say(f"{self.prog}: unmounting zramfs at {self.root}")
        cmd = [sys.executable, "-m", "zramfs", "umount", self.root]
        with self.busy("unmounting zramfs"):
            res = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if res.returncode != 0:
            raise DeviceError(f"cannot unmount {self.root}: {res.stderr.strip()}")
        if self.state.get("created_root"):
            with contextlib.suppress(OSError):
                os.rmdir(self.root)
        self.state["mounted"] = False
        self.state["created_root"] = False


# =============================================================================
# setup
# =============================================================================


class Setup(Session):
    def ensure_root(self) -> None:
        m = mounts.find_mount(self.root)
        if m is not None and m.mountpoint == self.root:
            if m.fstype != mounts.FSTYPE:
                raise DeviceError(f"{self.root} is a {m.fstype} mount, not zramfs")
            if mounts.is_dead(self.root):
                raise DeviceError(f"{self.root}: the zramfs daemon is gone; run "
                                  f"`zramfs teardown --root {self.root}` or "
                                  f"`zramfs umount {self.root}` first")  # fmt: skip
            return
        created = not os.path.isdir(self.root)
        if created:
            os.makedirs(self.root)
        cmd = [sys.executable, "-m", "zramfs", "mount", "--num-devices", "0", self.root]
        self.say(f"{self.prog}: mounting zramfs at {self.root}")
        with self.busy("mounting zramfs"):
            res = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if res.returncode != 0:
            if created:
                with contextlib.suppress(OSError):
                    os.rmdir(self.root)
            raise DeviceError(f"cannot mount zramfs at {self.root}: {res.stderr.strip()}")
        self.state["mounted"] = True
        self.state["created_root"] = created
        self.save()

    def create_devices(self, wanted: list[str]) -> None:
        """hot_add until every wanted device exists; drop the ones made on the way."""
        missing = {int(n[4:]) for n in wanted if not self.sysdir(n).is_dir()}
        if not missing:
            return
        extra: list[int] = []
        for _ in range(max(missing) + 2):
            if all(self.sysdir(f"zram{n}").is_dir() for n in missing):
                break
            try:
                new = int(self.control("hot_add").read_text())
            except (OSError, ValueError) as e:
                raise DeviceError(f"hot_add failed: {e}") from None
            name = f"zram{new}"
            if new in missing:
                self.say(f"{name}: hot_add → {name}")
                self.state["devices"][name] = {"added": True, "loop": None, "created_dirs": [],
                                               "complete": False}  # fmt: skip
                self.save()
            else:
                extra.append(new)
        for n in extra:
            self.say(f"zram{n}: hot_add → zram{n}; hot_remove = {n} (only needed on the way)")
            write_attr(self.control("hot_remove"), str(n))
        still = sorted(n for n in missing if not self.sysdir(f"zram{n}").is_dir())
        if still:
            raise DeviceError(f"hot_add did not create {', '.join(f'zram{n}' for n in still)}")

    def in_place(self, name: str, rec: dict[str, Any]) -> str | None:
        """A description of the live device if ``rec`` is fully in place."""
        loop = rec.get("loop")
        if not rec.get("complete") or not loop or loop_backing(loop) != self.image(name):
            return None
        kind = rec.get("settings", {}).get("fs_type")
        mp = rec.get("settings", {}).get("mount_point")
        if kind == "swap":
            return f"swap on {loop}" if loop in active_swaps() else None
        if mp is not None:
            live = os.path.realpath(mp) in mounts_of(loop)
            return f"{kind} on {loop} mounted at {mp}" if live else None
        return f"{kind} on {loop} (not mounted)"

    def device(self, res: Resolved, config_path: str) -> None:
        name = res.name
        devices: dict[str, Any] = self.state["devices"]
        rec = devices.get(name)
        if rec is not None and rec.get("complete"):
            where = self.in_place(name, rec)
            if where is not None:
                self.say(f"{name}: already set up: {where}")
                if rec.get("settings") != res.settings():
                    self.warn(f"{name}: the configuration differs from what was set up "
                              f"({self._diff(rec.get('settings', {}), res.settings())}); run "
                              "`zramfs teardown` and `zramfs setup` to apply it")  # fmt: skip
                return
            self.say(f"{name}: recorded as set up but no longer active; setting it up again")
            self.undo_device(name, rec, remove=False)
            rec["complete"] = False
            self.save()
        sysdir = self.sysdir(name)
        if rec is None:
            if (sysdir / "initstate").read_text().strip() != "0":
                raise DeviceError(f"{name} is already initialized and was not set up by zramfs "
                                  "setup; leaving it alone")  # fmt: skip
            rec = {"added": False, "loop": None, "created_dirs": [], "complete": False}
            devices[name] = rec
        elif rec.get("loop") or (sysdir / "initstate").read_text().strip() != "0":
            self.undo_device(name, rec, remove=False)  # an interrupted earlier run
        rec["config"] = config_path
        rec["settings"] = res.settings()
        self.save()
        try:
            self._configure(res, rec)
        except DeviceError:
            try:
                self.undo_device(name, rec)
            except DeviceError as e:
                self.warn(f"{name}: undoing the partial set-up: {e}")
            if not rec.get("added") and not rec.get("loop"):
                devices.pop(name, None)
            self.save()
            raise

    @staticmethod
    def _diff(old: dict[str, Any], new: dict[str, Any]) -> str:
        keys = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
        return ", ".join(f"{k}: {old.get(k)!r} → {new.get(k)!r}" for k in keys)

    def _write(self, name: str, attr: str, value: str, what: str) -> None:
        self.say(f"{name}: {attr} = {value}")
        try:
            write_attr(self.sysdir(name) / attr, value)
        except OSError as e:
            raise DeviceError(f"{name}: {what}: cannot write {attr} = {value!r}: "
                              f"{_strerror(e)}") from None  # fmt: skip

    def _configure(self, res: Resolved, rec: dict[str, Any]) -> None:
        name, c = res.name, res.config
        sysdir = self.sysdir(name)
        for prio, (algo, params) in enumerate(c.algorithms.algorithms):
            attr, data = ("comp_algorithm", algo) if prio == 0 else (
                "recomp_algorithm", f"algo={algo} priority={prio}")  # fmt: skip
            self.say(f"{name}: {attr} = {data}")
            try:
                write_attr(sysdir / attr, data)
            except OSError as e:
                if e.errno == errno.EINVAL:
                    self.warn(f"{name}: compression-algorithm: algorithm {algo!r} not recognised; "
                              f"consult {sysdir / attr} for a list of available ones")  # fmt: skip
                    continue
                if prio != 0 and e.errno in (errno.EACCES, errno.ENOENT):
                    self.warn(f"{name}: compression-algorithm: recompression algorithm {algo!r} "
                              f"requested but recompression not available")  # fmt: skip
                    continue
                raise DeviceError(f"{name}: compression-algorithm: cannot write {attr} = "
                                  f"{data!r}: {_strerror(e)}") from None  # fmt: skip
            if params:
                data = f"priority={prio} {params}"
                self.say(f"{name}: algorithm_params = {data}")
                try:
                    write_attr(sysdir / "algorithm_params", data)
                except OSError as e:
                    self.warn(f"{name}: compression-algorithm: algorithm {algo!r} parameters "
                              f"{data!r} not written: {_strerror(e)}")  # fmt: skip
        if c.algorithms.recompress:
            data = c.algorithms.recompress
            self.say(f"{name}: recompress = {data}")
            try:
                write_attr(sysdir / "recompress", data)
            except OSError as e:
                self.warn(f"{name}: compression-algorithm: configuring global recompression "
                          f"with {data!r} failed: {_strerror(e)}")  # fmt: skip
        if c.writeback_device is not None:
            wb = c.writeback_device
            if not os.path.exists(wb):
                self.warn(f"{name}: writeback-device {wb} does not exist; not configured")
            elif not (sysdir / "backing_dev").exists():
                self.warn(f"{name}: writeback-device={wb} set, but {sysdir / 'backing_dev'} "
                          "does not exist (no write-back support); ignoring")  # fmt: skip
            else:
                self._write(name, "backing_dev", wb, "writeback-device")
        self._write(name, "mem_limit", str(res.mem_limit), "zram-resident-limit")
        self._write(name, "disksize", str(res.disksize), "zram-size")

        image = self.image(name)
        self.say(f"{name}: losetup --direct-io=on -f --show {image}")
        loop = self.run(name, "losetup", "--direct-io=on", "-f", "--show", image,
                        show=False).strip()  # fmt: skip
        rec["loop"] = loop
        self.save()
        self.say(f"{name}: attached to {loop}")
        fs_type = c.effective_fs_type()
        if fs_type == "swap":
            self.run(name, "mkswap", loop)
            cmd = ["swapon", "-p", str(c.swap_priority)]
            if c.options:
                cmd += ["-o", c.options]
            self.run(name, *cmd, loop)
            summary = f"swap on {loop}, priority {c.swap_priority}"
        else:
            mkfs = shutil.which(f"mkfs.{fs_type}")
            if mkfs is not None:
                flags = ["-q", "-m", "0"] if fs_type in ("ext2", "ext3", "ext4") else []
                self.run(name, f"mkfs.{fs_type}", *flags, loop)
            elif shutil.which("mkfs") is not None:
                self.run(name, "mkfs", "-t", fs_type, loop)
            else:
                raise DeviceError(f"{name}: fs-type = {fs_type}: no mkfs.{fs_type} (or mkfs)")
            if c.mount_point is None:
                summary = f"{fs_type} on {loop} (no mount-point: formatted, not mounted)"
            else:
                self._mkdirs(name, c.mount_point, rec)
                cmd = ["mount", "-t", fs_type]
                if c.options:
                    cmd += ["-o", c.options]
                self.run(name, *cmd, loop, c.mount_point)
                summary = f"{fs_type} on {loop} mounted at {c.mount_point}"
        rec["complete"] = True
        self.save()
        self.say(f"{name}: ready: {summary} ({res.disksize // MiB} MiB)")

    def _mkdirs(self, name: str, path: str, rec: dict[str, Any]) -> None:
        missing = []
        p = Path(path)
        while not p.exists():
            missing.append(str(p))
            p = p.parent
        for d in reversed(missing):
            self.say(f"{name}: mkdir {d}")
            try:
                os.mkdir(d)
            except OSError as e:
                raise DeviceError(f"{name}: mount-point: cannot create {d}: "
                                  f"{_strerror(e)}") from None  # fmt: skip
            rec["created_dirs"].append(d)
            self.save()

    def forget_stale(self) -> None:
        """Records of a root that is no longer a live zramfs mount: undo what is left."""
        devices: dict[str, Any] = self.state["devices"]
        if not devices and not self.state.get("mounted"):
            return
        self.warn(f"{self.root} is no longer a zramfs mount; forgetting its old set-up record")
        for name, rec in sorted(devices.items()):
            try:
                self.undo_device(name, rec)
            except DeviceError as e:
                self.warn(str(e))
        devices.clear()
        self.state["mounted"] = False
        self.save()


def cmd_setup(args: argparse.Namespace) -> int:
    prog = "zramfs setup"
    explicit = args.config is not None
    config = Path(os.path.abspath(args.config if explicit else DEFAULT_CONFIG))
    try:
        fragments = config_fragments(config)
        if explicit and not config.exists():
            raise ConfigError(f"{config}: no such file")
        cfg = parse_config(fragments)
        for w in cfg.warnings:
            print(f"{prog}: warning: {w}", file=sys.stderr)
        if not fragments:
            print(f"{prog}: no configuration found ({config}); nothing to do")
            return 0
        ram = memtotal_mb()
        plan: list[Resolved] = []
        for dev in sorted_devices(cfg):
            r = resolve(dev, ram)
            if isinstance(r, str):
                print(f"{dev.name}: {r}")
            else:
                plan.append(r)
    except ConfigError as e:
        print(f"{prog}: error: {e}", file=sys.stderr)
        return 1
    if args.dry_run:
        for r in plan:
            print(f"{r.name}: " + " ".join(f"{k}={v!r}" for k, v in r.settings().items()))
        return 0
    root = os.path.realpath(args.root)
    state_path = Path(args.state) if args.state else default_state_path(root)
    s = Setup(root, state_path, prog)
    with _locked(state_path), s.progress_bar(len(plan)):
        try:
            old = load_state(state_path, root)
            if old is not None:
                s.state = old
                if not s.live():
                    s.forget_stale()
            if not plan:
                print(f"{prog}: no devices to set up")
                return 0
            s.ensure_root()
            s.create_devices([r.name for r in plan])
        except (DeviceError, OSError) as e:
            s.error(str(e))
            return 1
        for r in plan:
            try:
                s.device(r, str(config))
            except DeviceError as e:
                s.error(str(e))
            except OSError as e:
                s.error(f"{r.name}: {e}")
            s.advance()
        leftover = sorted(set(s.state["devices"]) - {r.name for r in plan})
        for name in leftover:
            s.say(f"{name}: set up earlier but not in the configuration now; "
                  "`zramfs teardown` removes it")  # fmt: skip
        if not s.state["devices"] and not s.state.get("mounted"):
            with contextlib.suppress(FileNotFoundError):
                state_path.unlink()
    return 1 if s.failed else 0


# =============================================================================
# teardown
# =============================================================================


def cmd_teardown(args: argparse.Namespace) -> int:
    prog = "zramfs teardown"
    root = os.path.realpath(args.root)
    state_path = Path(args.state) if args.state else default_state_path(root)
    config = os.path.abspath(args.config) if args.config is not None else None
    s = Session(root, state_path, prog)
    with _locked(state_path), s.progress_bar(0):
        try:
            state = load_state(state_path, root)
        except DeviceError as e:
            s.error(str(e))
            return 1
        if state is None:
            print(f"{prog}: nothing recorded for {root} ({state_path} does not exist)")
            return 0
        s.state = state
        devices: dict[str, Any] = state["devices"]
        names = sorted((n for n, rec in devices.items()
                        if config is None or rec.get("config") in (config, None)),
                       key=lambda n: int(n[4:]), reverse=True)  # fmt: skip
        if s.progress is not None:
            s.progress.start(len(names))
        for name in names:
            try:
                s.undo_device(name, devices[name])
            except DeviceError as e:
                s.error(f"{e} (kept in {state_path}; run teardown again)")
                s.save()
                s.advance()
                continue
            del devices[name]
            s.save()
            s.say(f"{name}: gone")
            s.advance()
        if devices:
            if config is not None and not s.failed:
                s.say(f"{prog}: left devices set up from other configurations: "
                      + ", ".join(sorted(devices)))  # fmt: skip
        elif state.get("mounted"):
            try:
                if s.live() or mounts.find_mount(root) is not None:
                    s.unmount_root()
                else:
                    s.state["mounted"] = False
            except DeviceError as e:
                s.error(str(e))
                s.save()
                return 1
        if not devices and not state.get("mounted"):
            with contextlib.suppress(FileNotFoundError):
                state_path.unlink()
        else:
            s.save()
    return 1 if s.failed else 0


# =============================================================================
# command line
# =============================================================================


def add_subparsers(sub: Any) -> None:
    """Register ``setup`` and ``teardown`` on the zramfs argument parser."""
    for name, func, help_ in (
        ("setup", cmd_setup, "create devices from a zram-generator config (mount if needed)"),
        ("teardown", cmd_teardown, "undo what `zramfs setup` did"),
    ):
        p = sub.add_parser(name, help=help_, description=help_)
        config_help = (
            f"zram-generator.conf(5) file (default {DEFAULT_CONFIG}, plus CONFIG.d/*.conf)"
            if name == "setup"
            else "only the devices set up from this config (default: every recorded device)"
        )
        p.add_argument("config", nargs="?", metavar="CONFIG", help=config_help)
        p.add_argument("--root", metavar="MNT", default=DEFAULT_ROOT,
                       help=f"the zramfs mount to use (default {DEFAULT_ROOT})")  # fmt: skip
        p.add_argument("--state", metavar="FILE",
                       help=f"setup record (default {STATE_DIR}/<escaped root>.json)")  # fmt: skip
        if name == "setup":
            p.add_argument("-n", "--dry-run", action="store_true",
                           help="print the resolved devices and exit")  # fmt: skip
        p.set_defaults(func=func)
