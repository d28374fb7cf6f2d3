"""Build of the C extension zramfs._zpages; all project metadata is in pyproject.toml.

zramfs._zpages links against the system liblz4 (Debian: liblz4-dev, installed
by scripts/setup.sh), the same LZ4 release python-lz4 bundles.
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "zramfs._zpages",
            sources=["zramfs/_zpages.c"],
            libraries=["lz4"],
            extra_compile_args=["-O2", "-pthread", "-Wall", "-Wextra", "-std=c11"],
            extra_link_args=["-pthread"],
        )
    ],
)
