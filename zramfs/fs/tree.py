"""The sysroot-shaped tree served at the mount point.

::

    dev/zramN                                   image (0660 root:disk)
    sys/block/zramN/<attr>                      attrs.ATTRS
    sys/class/zram-control/{hot_add,hot_remove}
    sys/kernel/debug/zram/zramN/block_state     attrs.DEBUGFS_ATTRS
    sys/kernel/debug/zram/zramN/lock_stat       (zramfs only: lock contention)

Inode numbers are stable functions of (device id, file), so a node keeps its
number across hot_add/hot_remove of other devices and the kernel's dentry
cache never sees a number reused for a different kind of file.
"""

from __future__ import annotations

import stat
from dataclasses import dataclass, field
from enum import Enum

from ..core.attrs import ATTRS, DEBUGFS_ATTRS, Attr
from ..core.registry import ZramRegistry

ROOT = 1
DEV_DIR, SYS_DIR, BLOCK_DIR, CLASS_DIR, CONTROL_DIR = 2, 3, 4, 5, 6
KERNEL_DIR, DEBUG_DIR, DEBUG_ZRAM_DIR, HOT_ADD, HOT_REMOVE = 7, 8, 9, 10, 11
DEV_BASE = 1024
PER_DEV = 64  # inode numbers reserved per device
_IMAGE, _BLOCK_DEV_DIR, _DEBUG_DEV_DIR = 0, 1, 2
_DEBUG_ATTR0 = 4
_ATTR0 = 8
assert _ATTR0 + len(ATTRS) <= PER_DEV and _DEBUG_ATTR0 + len(DEBUGFS_ATTRS) <= _ATTR0

DISK_GID = 6  # Debian's "disk" group, as /dev/zramN


class Kind(Enum):
    DIR = "dir"
    IMAGE = "image"
    ATTR = "attr"
    HOT_ADD = "hot_add"
    HOT_REMOVE = "hot_remove"


@dataclass
class Node:
    inode: int
    kind: Kind
    mode: int  # full st_mode
    dev_id: int | None = None
    attr: Attr | None = None
    gid: int = 0
    children: dict[bytes, int] = field(default_factory=dict)


def dev_inode(dev_id: int, k: int) -> int:
    return DEV_BASE + dev_id * PER_DEV + k


class Tree:
    """inode → `Node`, rebuilt from the registry whenever devices change."""

    def __init__(self, registry: ZramRegistry) -> None:
        self.registry = registry
        self.nodes: dict[int, Node] = {}
        self.rebuild()

    def rebuild(self) -> None:
        n: dict[int, Node] = {}

        def d(ino: int, **children: int) -> Node:
            node = Node(ino, Kind.DIR, stat.S_IFDIR | 0o755)
            node.children = {k.replace("_", "-").encode(): v for k, v in children.items()}
            n[ino] = node
            return node

        d(ROOT, dev=DEV_DIR, sys=SYS_DIR)
        d(SYS_DIR, block=BLOCK_DIR, kernel=KERNEL_DIR)
        n[SYS_DIR].children[b"class"] = CLASS_DIR
        d(CLASS_DIR, zram_control=CONTROL_DIR)
        d(KERNEL_DIR, debug=DEBUG_DIR)
        d(DEBUG_DIR, zram=DEBUG_ZRAM_DIR)
        dev_dir, block_dir, dbg_dir = d(DEV_DIR), d(BLOCK_DIR), d(DEBUG_ZRAM_DIR)
        control = d(CONTROL_DIR)
        n[HOT_ADD] = Node(HOT_ADD, Kind.HOT_ADD, stat.S_IFREG | 0o400)
        n[HOT_REMOVE] = Node(HOT_REMOVE, Kind.HOT_REMOVE, stat.S_IFREG | 0o200)
        control.children = {b"hot_add": HOT_ADD, b"hot_remove": HOT_REMOVE}

        for dev_id in sorted(self.registry.devices):
            name = f"zram{dev_id}".encode()
            img = dev_inode(dev_id, _IMAGE)
            n[img] = Node(img, Kind.IMAGE, stat.S_IFREG | 0o660, dev_id, gid=DISK_GID)
            dev_dir.children[name] = img
            bdir = d(dev_inode(dev_id, _BLOCK_DEV_DIR))
            block_dir.children[name] = bdir.inode
            for k, attr in enumerate(ATTRS):
                ino = dev_inode(dev_id, _ATTR0 + k)
                n[ino] = Node(ino, Kind.ATTR, stat.S_IFREG | attr.mode, dev_id, attr)
                bdir.children[attr.name.encode()] = ino
            ddir = d(dev_inode(dev_id, _DEBUG_DEV_DIR))
            dbg_dir.children[name] = ddir.inode
            for k, attr in enumerate(DEBUGFS_ATTRS):
                ino = dev_inode(dev_id, _DEBUG_ATTR0 + k)
                n[ino] = Node(ino, Kind.ATTR, stat.S_IFREG | attr.mode, dev_id, attr)
                ddir.children[attr.name.encode()] = ino
        self.nodes = n

    def get(self, inode: int) -> Node | None:
        return self.nodes.get(inode)

    def image_inode(self, dev_id: int) -> int:
        return dev_inode(dev_id, _IMAGE)
