"""``--help`` for everything: every subcommand, every option documented.

The subcommands are discovered from `zramfs.cli.build_parser()`, so a new one
is checked without touching this file. Each ``python -m zramfs CMD --help``
must exit 0, print its usage line, and show every option (and positional)
with a non-empty help string. ``ctl`` hands its arguments to its own
zramctl-style parser (`zramfs.ctl`): its ``--help`` must list every long and
short option of `ctl.LONGOPTS` with a description.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys

import pytest

from zramfs import ctl
from zramfs.cli import build_parser


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    raise AssertionError("zramfs has no subcommands")


def _subcommand_help(parser: argparse.ArgumentParser) -> dict[str, str | None]:
    """The one-line help of each subcommand, as the top-level --help lists it."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return {a.dest: a.help for a in action._choices_actions}
    raise AssertionError("zramfs has no subcommands")


PARSER = build_parser()
COMMANDS = sorted(_subparsers(PARSER))


def zramfs(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "zramfs", *args], capture_output=True,
                          text=True, check=False, timeout=60)  # fmt: skip


def test_commands_are_discovered() -> None:
    # Guards the discovery itself: the commands of docs/usage.md are among them.
    assert {"mount", "umount", "ctl", "setup", "teardown", "analyze"} <= set(COMMANDS)


def test_top_level_help_lists_every_command() -> None:
    res = zramfs("--help")
    assert res.returncode == 0 and res.stderr == ""
    assert res.stdout.startswith("usage: zramfs ")
    helps = _subcommand_help(PARSER)
    for cmd in COMMANDS:
        assert helps.get(cmd), f"subcommand {cmd} has no help"
        assert re.search(rf"^\s+{cmd}\s+\S", res.stdout, re.M), f"{cmd} not in zramfs --help"


def _normalized(text: str) -> str:
    return " ".join(text.split())


@pytest.mark.parametrize("cmd", COMMANDS)
def test_subcommand_help(cmd: str) -> None:
    sub = _subparsers(PARSER)[cmd]
    res = zramfs(cmd, "--help")
    assert res.returncode == 0, res.stderr
    assert res.stderr == ""
    out = res.stdout
    if not sub.add_help:
        # Its own parser (zramctl's syntax): the whole argument list goes there.
        assert cmd == "ctl", f"{cmd} has no --help of its own"
        _check_ctl_help(out)
        return
    assert out.startswith(f"usage: zramfs {cmd}"), out[:200]
    assert sub.description, f"zramfs {cmd} has no description"
    flat = _normalized(out)
    assert _normalized(sub.description) in flat
    documented = 0
    for action in sub._actions:
        if action.help == argparse.SUPPRESS:
            continue  # internal (e.g. mount --ready-fd): deliberately hidden
        name = "/".join(action.option_strings) or str(action.metavar or action.dest)
        assert action.help and action.help.strip(), f"zramfs {cmd}: {name} has no help"
        for opt in action.option_strings:
            assert re.search(rf"(^|[\s,\[]){re.escape(opt)}\b", out), f"{opt} not in --help"
        if not action.option_strings:
            assert str(action.metavar or action.dest) in out
        # The help text itself is printed (argparse %-expands, then wraps it).
        first_words = _normalized(action.help % {"default": action.default})[:30]
        assert first_words in flat, f"zramfs {cmd}: help of {name} not shown"
        documented += 1
    assert documented >= 2  # at least -h and one real option or operand


def _check_ctl_help(out: str) -> None:
    assert out.lstrip().startswith("Usage:\n zramfs ctl "), out[:200]
    for opt in ctl.LONGOPTS:
        flags = [f"--{opt.name}"]
        if len(opt.val) == 1:
            flags.insert(0, f"-{opt.val}")
        line = next((ln for ln in out.splitlines() if f"--{opt.name}" in ln.split(" ")
                     or f"--{opt.name}," in ln), None)  # fmt: skip
        assert line is not None, f"zramfs ctl --help does not list --{opt.name}"
        for f in flags:
            assert re.search(rf"(^|\s){re.escape(f)}(,|\s|$)", line), f"{f} not on: {line!r}"
        # Something after the option (and its argument): the description.
        desc = re.sub(r"^\s*(-\w, )?--[\w-]+( <[^>]+>)?(\.\.\.)?", "", line).strip()
        if not desc:  # a long synopsis puts the description on the next line
            nxt = out.splitlines()[out.splitlines().index(line) + 1]
            desc = nxt.strip()
        assert desc, f"--{opt.name} has no description"


def test_ctl_help_via_h() -> None:
    res = zramfs("ctl", "-h")
    assert res.returncode == 0 and res.stdout == zramfs("ctl", "--help").stdout
