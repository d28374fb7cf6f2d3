"""``zramfs`` command line: mount, umount, ctl, setup, teardown, analyze (docs/usage.md)."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time

from . import __version__, analyze, generator
from .fs import mounts

DEFAULT_LOG = "/run/zramfs.log"


def _cmd_mount(args: argparse.Namespace) -> int:
    from .fs import daemon

    mnt = os.path.abspath(args.mountpoint)
    existing = mounts.find_mount(mnt)
    if existing is not None and existing.fstype == mounts.FSTYPE and not mounts.is_dead(mnt):
        print(f"zramfs: {mnt} is already a zramfs mount", file=sys.stderr)
        return 1
    if args.num_devices < 0:
        print("zramfs: --num-devices must be >= 0", file=sys.stderr)
        return 2
    opts = daemon.MountOptions(
        mountpoint=mnt,
        num_devices=args.num_devices,
        allow_other=args.allow_other,
        debug=args.debug,
        mlock=args.mlock,
    )
    if args.foreground:
        daemon.setup_logging(args.debug)
        return daemon.run(opts)
    return _spawn_daemon(args, mnt)


def _spawn_daemon(args: argparse.Namespace, mnt: str) -> int:
    """Start ``mount -f`` detached and return once the tree is mounted."""
    rfd, wfd = os.pipe()
    cmd = [sys.executable, "-m", "zramfs", "mount", "-f", "--ready-fd", str(wfd),
           "--num-devices", str(args.num_devices)]  # fmt: skip
    if args.allow_other:
        cmd.append("--allow-other")
    if args.debug:
        cmd.append("--debug")
    if args.mlock:
        cmd.append("--mlock")
    cmd.append(mnt)
    log_path = args.log or DEFAULT_LOG
    try:
        log = open(log_path, "ab")  # noqa: SIM115 - handed to the child, closed below
    except OSError:
        log_path = "/tmp/zramfs.log"
        log = open(log_path, "ab")  # noqa: SIM115
    with log:
        proc = subprocess.Popen(
            cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=log,
            pass_fds=(wfd,), start_new_session=True,
        )  # fmt: skip
    os.close(wfd)
    with os.fdopen(rfd, "rb") as r:
        ready = r.read(3)
    if ready == b"ok\n":
        return 0
    code = proc.wait(timeout=30)
    print(f"zramfs: mount failed (daemon exit {code}); see {log_path}", file=sys.stderr)
    return 1


def _cmd_umount(args: argparse.Namespace) -> int:
    mnt = os.path.abspath(args.mountpoint)
    m = mounts.find_mount(mnt)
    if m is None or m.fstype != mounts.FSTYPE:
        print(f"zramfs: {mnt} is not a zramfs mount", file=sys.stderr)
        return 1
    dead = mounts.is_dead(mnt)
    attached = mounts.loops_under(mnt)
    if attached and not dead:
        for a in attached:
            dev = os.path.basename(a.backing_file)
            print(
                f"zramfs: refusing to unmount {mnt}: {dev} is attached to {a.loop} "
                f"(umount its file system / swapoff, then losetup -d {a.loop})",
                file=sys.stderr,
            )
        return 1
    holders = [] if dead else mounts.image_holders(mnt)
    if holders:
        # fusermount3 would only say "Device or resource busy": name the device.
        for h in holders:
            print(
                f"zramfs: refusing to unmount {mnt}: {os.path.basename(h.image)} is open "
                f"by pid {h.pid} ({h.comm})",
                file=sys.stderr,
            )
        return 1
    if dead:
        # The daemon is gone and with it every page it held: say so, then
        # clear what pins the mount so the mount point becomes usable again.
        print(f"zramfs: {mnt}: daemon is gone; its devices' contents are lost", file=sys.stderr)
        for a in attached:
            print(f"zramfs: detaching {a.loop} ({a.backing_file})", file=sys.stderr)
            subprocess.run(["losetup", "-d", a.loop], check=False)
        res = mounts.fuse_unmount(mnt, lazy=True)
    else:
        res = mounts.fuse_unmount(mnt)
    if res.returncode != 0:
        msg = res.stderr.strip() or f"fusermount3 exited {res.returncode}"
        print(f"zramfs: cannot unmount {mnt}: {msg}", file=sys.stderr)
        return 1
    # Wait for the mount to go so a following mount on the same point works.
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and mounts.find_mount(mnt) is not None:
        time.sleep(0.02)
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="zramfs",
        description="Linux zram in userspace: a compressed RAM disk and its sysfs over FUSE.",
    )
    p.add_argument("--version", action="version", version=f"zramfs {__version__}")
    sub = p.add_subparsers(dest="command", required=True)

    m = sub.add_parser("mount", help="mount the zram tree at MNT",
                       description="Start the zramfs daemon and mount its tree (dev/zramN, "
                       "sys/block/zramN/...) at the existing directory MNT.")  # fmt: skip
    m.add_argument("mountpoint", metavar="MNT", help="an existing directory to mount on")
    m.add_argument("-f", "--foreground", action="store_true", help="stay in the foreground")
    m.add_argument("--num-devices", type=int, default=1, metavar="N",
                   help="devices zram0..N-1 to create at start (default 1)")  # fmt: skip
    m.add_argument("--allow-other", action="store_true",
                   help="let other users in (permissions enforced by the kernel)")  # fmt: skip
    m.add_argument("--debug", action="store_true", help="debug logging (and FUSE debug)")
    m.add_argument("--mlock", action="store_true",
                   help="mlockall(): the daemon is never swapped out")  # fmt: skip
    m.add_argument("--log", metavar="FILE",
                   help=f"daemon log file (default {DEFAULT_LOG})")  # fmt: skip
    m.add_argument("--ready-fd", type=int, help=argparse.SUPPRESS)
    m.set_defaults(func=_cmd_mount)

    u = sub.add_parser("umount", help="unmount MNT (refused while an image is attached)",
                       description="Unmount the zramfs tree at MNT; its devices' data is "
                       "lost. Refused while an image is attached or open.")  # fmt: skip
    u.add_argument("mountpoint", metavar="MNT", help="the zramfs mount point")
    u.set_defaults(func=_cmd_umount)

    # zramctl's own option syntax: main() hands everything after "ctl" to ctl.main().
    c = sub.add_parser("ctl", add_help=False, help="util-linux zramctl over a zramfs mount "
                       "(zramfs ctl --help)")  # fmt: skip
    c.add_argument("args", nargs=argparse.REMAINDER, metavar="ARGS",
                   help="zramctl's options and devices (zramfs ctl --help)")  # fmt: skip
    c.set_defaults(func=lambda a: _cmd_ctl(a.args))

    generator.add_subparsers(sub)  # setup, teardown
    analyze.add_subparser(sub)
    return p


def _cmd_ctl(argv: list[str]) -> int:
    from . import ctl

    return ctl.main(argv)


def main(argv: list[str] | None = None) -> int:
    if argv is None:
        argv = sys.argv[1:]
    if argv[:1] == ["ctl"]:
        return _cmd_ctl(argv[1:])
    args = build_parser().parse_args(argv)
    if args.command == "mount" and args.ready_fd is not None:
        from .fs import daemon

        daemon.setup_logging(args.debug)
        opts = daemon.MountOptions(
            mountpoint=os.path.abspath(args.mountpoint),
            num_devices=args.num_devices,
            allow_other=args.allow_other,
            debug=args.debug,
            mlock=args.mlock,
            ready_fd=args.ready_fd,
        )
        return daemon.run(opts)
    rc: int = args.func(args)
    return rc


if __name__ == "__main__":
    sys.exit(main())
