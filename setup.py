"""Build of the C extension zramfs._zpages; all project metadata is in pyproject.toml.

zramfs._zpages links against the system liblz4 (Debian: liblz4-dev, installed
by scripts/setup.sh), the same LZ4 release python-lz4 bundles.

zstd is compiled in when ``build/zstd/zstd.c`` is there: the amalgamated
zstd of the python-zstandard release installed beside it, which
scripts/setup.sh unpacks from that release's sdist (zstd's output at a given
level differs between its releases, and the C path's frames must be the
Python path's).  Without it the module has no ``zstd_*`` calls and the zstd
codec keeps to python-zstandard.  Its symbols stay hidden, so they never meet
python-zstandard's own copy.
"""

from pathlib import Path

from setuptools import Extension, setup

ZSTD_DIR = Path("build/zstd")
sources = ["zramfs/_zpages.c"]
macros: list[tuple[str, str | None]] = []
include_dirs: list[str] = []
if (ZSTD_DIR / "zstd.c").is_file():
    sources.append(str(ZSTD_DIR / "zstd.c"))
    macros.append(("ZRAMFS_ZSTD", "1"))
    include_dirs.append(str(ZSTD_DIR))

setup(
    ext_modules=[
        Extension(
            "zramfs._zpages",
            sources=sources,
            define_macros=macros,
            include_dirs=include_dirs,
            libraries=["lz4"],
            extra_compile_args=["-O3", "-pthread", "-Wall", "-Wextra", "-std=c11",
                                "-fvisibility=hidden"],  # fmt: skip
            extra_link_args=["-pthread"],
        )
    ],
)
