"""Access control with a real unprivileged user (issue 6, Security).

The daemon always mounts with ``default_permissions``, so the kernel checks the
modes zramfs reports (sysfs 0444/0200/0644, hot_add 0400, hot_remove 0200, the
image 0660 root:disk) against the caller, exactly as for /sys and /dev/zramN.
Without ``--allow-other`` FUSE lets only the mounting user (root) in at all.

Commands run as the user ``zramfs-test`` through ``setpriv`` (created for the
session if missing, removed afterwards only if this module created it); "a user
in group disk" is the same uid with ``disk`` as a supplementary group.

Paths inside the mount written to ``backing_dev`` / ``algorithm_params dict=``
are covered elsewhere and not repeated here:
tests/test_fs_lifecycle.py::test_backing_dev_inside_the_mount_is_refused,
tests/test_fs_lifecycle.py::test_dict_path_inside_the_mount_does_not_deadlock and
tests/test_fs_postprocess.py::test_backing_dev_refusals.
"""

from __future__ import annotations

import errno
import grp
import os
import pwd
import shlex
import shutil
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.conftest import ZramfsMount, needs_fuse

USER = "zramfs-test"
DENIED = "Permission denied"
ENV = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "LC_ALL": "C"}

pytestmark = [
    needs_fuse,
    pytest.mark.skipif(
        os.geteuid() != 0 or shutil.which("setpriv") is None,
        reason="needs root and setpriv to run commands as another user",
    ),
]

MountFactory = Callable[..., ZramfsMount]


@pytest.fixture(scope="session")
def user() -> Iterator[pwd.struct_passwd]:
    """An unprivileged system user outside group disk."""
    created = False
    try:
        pw = pwd.getpwnam(USER)
    except KeyError:
        res = subprocess.run(
            ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", USER],
            capture_output=True, text=True, check=False,
        )  # fmt: skip
        created = res.returncode == 0
        try:
            pw = pwd.getpwnam(USER)
        except KeyError:
            pytest.skip(f"cannot create user {USER}: {res.stderr.strip()}")
    assert pw.pw_uid != 0 and pw.pw_gid != 0
    assert disk_gid() not in os.getgrouplist(USER, pw.pw_gid), f"{USER} must not be in disk"
    try:
        yield pw
    finally:
        if created:
            subprocess.run(["userdel", USER], capture_output=True, check=False)


def disk_gid() -> int:
    return grp.getgrnam("disk").gr_gid


def as_user(
    pw: pwd.struct_passwd, script: str, *, disk: bool = False
) -> subprocess.CompletedProcess[str]:
    """``sh -c script`` as ``pw`` with no supplementary groups (or only disk)."""
    groups = [f"--groups={disk_gid()}"] if disk else ["--clear-groups"]
    return subprocess.run(
        ["setpriv", f"--reuid={pw.pw_uid}", f"--regid={pw.pw_gid}", *groups,
         "sh", "-c", script],
        capture_output=True, text=True, check=False, timeout=15, cwd="/", env=ENV,
    )  # fmt: skip


def denied(res: subprocess.CompletedProcess[str]) -> bool:
    return res.returncode != 0 and DENIED in res.stderr


def q(p: Path) -> str:
    return shlex.quote(str(p))


def mount_for_others(factory: MountFactory, *extra: str) -> ZramfsMount:
    m = factory(*extra)
    # mkdtemp makes the parent 0700: open it so only FUSE itself decides.
    m.path.parent.chmod(0o755)
    return m


def errno_of(fn: Callable[[], object]) -> int:
    try:
        fn()
    except OSError as e:
        return e.errno if e.errno is not None else -1
    return 0


def dev_names(m: ZramfsMount) -> list[str]:
    return sorted(os.listdir(m.path / "dev"))


def test_without_allow_other_only_root_gets_in(
    mount_factory: MountFactory, user: pwd.struct_passwd
) -> None:
    m = mount_for_others(mount_factory)
    # The parent is reachable: any refusal below is FUSE's, not the directory's.
    assert as_user(user, f"stat {q(m.path.parent)}").returncode == 0
    res = as_user(user, f"stat {q(m.path)}")
    assert denied(res), res
    assert denied(as_user(user, f"cat {q(m.sys() / 'mm_stat')}"))
    assert denied(as_user(user, f"ls {q(m.path / 'dev')}"))
    assert denied(as_user(user, f"cat {q(m.image())} > /dev/null", disk=True))
    # Root, the mounting user, is unaffected.
    assert os.stat(m.path).st_mode & 0o777 == 0o755
    assert len(m.mm_stat()) >= 9


def test_allow_other_enforces_kernel_modes(
    mount_factory: MountFactory, user: pwd.struct_passwd
) -> None:
    m = mount_for_others(mount_factory, "--allow-other")
    sysdir = m.sys()

    # 0444: readable by anyone, and the same text root sees.
    res = as_user(user, f"cat {q(sysdir / 'mm_stat')}")
    assert res.returncode == 0, res
    assert res.stdout == m.read_attr("mm_stat")
    res = as_user(user, f"cat {q(sysdir / 'comp_algorithm')}")
    assert res.returncode == 0, res
    assert res.stdout == m.read_attr("comp_algorithm")
    assert as_user(user, f"ls {q(sysdir)}").returncode == 0

    # 0644: readable but not writable; nothing changes.
    before = (m.read_attr("disksize"), m.read_attr("comp_algorithm"), m.read_attr("initstate"))
    for name, value in [("disksize", "1G"), ("comp_algorithm", "zstd"), ("backing_dev", "/tmp")]:
        res = as_user(user, f"echo {value} > {q(sysdir / name)}")
        assert denied(res), (name, res)
    after = (m.read_attr("disksize"), m.read_attr("comp_algorithm"), m.read_attr("initstate"))
    assert after == before and before[0] == "0\n"

    # 0200: cannot be opened in either direction.
    for name in ("reset", "compact", "mem_limit", "algorithm_params"):
        assert denied(as_user(user, f"echo 1 > {q(sysdir / name)}")), name
        assert denied(as_user(user, f"cat {q(sysdir / name)}")), name
    # debugfs block_state is 0400.
    assert denied(as_user(user, f"cat {q(m.path / 'sys/kernel/debug/zram/zram0/block_state')}"))

    # zram-control: reading hot_add (0400) would create a device; hot_remove is 0200.
    control = m.path / "sys/class/zram-control"
    assert denied(as_user(user, f"cat {q(control / 'hot_add')}"))
    assert denied(as_user(user, f"echo 0 > {q(control / 'hot_remove')}"))
    assert dev_names(m) == ["zram0"]

    # Fixed metadata: the user can neither chmod nor chown.
    assert as_user(user, f"chmod 666 {q(m.image())}").returncode != 0
    assert as_user(user, f"chmod 666 {q(sysdir / 'disksize')}").returncode != 0

    # Root behaves as before.
    m.write_attr("disksize", "1M")
    assert m.read_attr("disksize") == f"{1 << 20}\n"
    assert (control / "hot_add").read_text() == "1\n"
    assert dev_names(m) == ["zram0", "zram1"]
    (control / "hot_remove").write_text("1")
    assert dev_names(m) == ["zram0"]
    # ... including kernfs' wrong-direction refusals, which bind root too.
    assert errno_of(lambda: m.write_attr("mm_stat", "1")) == errno.EACCES
    assert errno_of(lambda: m.read_attr("reset")) == errno.EACCES

    # The image is 0660 root:disk, like /dev/zramN: no access outside group disk.
    st = os.stat(m.image())
    assert (st.st_mode & 0o7777, st.st_uid, st.st_gid) == (0o660, 0, disk_gid())
    img = q(m.image())
    assert denied(as_user(user, f"dd if={img} of=/dev/null bs=4096 count=1"))
    res = as_user(user, f"head -c 4096 /dev/zero | tr '\\0' x | dd of={img} conv=notrunc")
    assert denied(res), res
    with open(m.image(), "rb") as f:
        assert f.read(4096) == bytes(4096)


def test_disk_group_can_use_image_but_not_attrs(
    mount_factory: MountFactory, user: pwd.struct_passwd
) -> None:
    m = mount_for_others(mount_factory, "--allow-other")
    m.write_attr("disksize", "1M")
    img = q(m.image())

    write = f"head -c 8192 /dev/zero | tr '\\0' Z | dd of={img} bs=4096 seek=3 conv=notrunc,fsync"
    res = as_user(user, write, disk=True)
    assert res.returncode == 0, res
    with open(m.image(), "rb") as f:
        f.seek(3 * 4096)
        assert f.read(8192) == b"Z" * 8192
    res = as_user(
        user, f"dd if={img} bs=4096 skip=3 count=2 status=none | tr -d Z | wc -c", disk=True
    )
    assert res.returncode == 0 and res.stdout.strip() == "0", res
    assert m.mm_stat()[0] > 0  # the data really went into the device

    # Group disk grants the image only, not the sysfs knobs.
    sysdir = m.sys()
    assert denied(as_user(user, f"echo 2M > {q(sysdir / 'disksize')}", disk=True))
    assert denied(as_user(user, f"echo 1 > {q(sysdir / 'reset')}", disk=True))
    assert denied(as_user(user, f"cat {q(m.path / 'sys/class/zram-control/hot_add')}", disk=True))
    assert m.read_attr("disksize") == f"{1 << 20}\n"
    assert dev_names(m) == ["zram0"]


def test_dict_path_inside_the_mount_is_refused(zmount: ZramfsMount) -> None:
    """Like backing_dev: a ``dict=`` file on a zramfs mount is EINVAL.

    (No deadlock either way: tests/test_fs_lifecycle.py covers that; here the
    store runs in a child with a timeout so a regression cannot hang the run.)
    """
    m = zmount
    assert (m.path / "sys/class/zram-control/hot_add").read_text() == "1\n"
    m.write_attr("disksize", "1M", dev=1)
    attr = q(m.sys() / "algorithm_params")
    for target in (m.image(1), m.sys(1) / "mm_stat"):
        res = subprocess.run(
            ["bash", "-c", f"echo dict={q(target)} > {attr}"],
            capture_output=True, text=True, check=False, timeout=10, env=ENV,
        )  # fmt: skip
        assert res.returncode != 0 and "Invalid argument" in res.stderr, (target, res)
    assert m.alive()
