"""zramfs: Linux zram in userspace, served over FUSE."""

__version__ = "0.1.0"
