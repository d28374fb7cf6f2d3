#!/usr/bin/env bash
# Idempotent installer behind `make setup`: Debian packages, the virtualenv,
# the patched pyfuse3 (built from source: it has no wheel) and zramfs itself.
# Safe to run again; each step is skipped when already done.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
VENV=${VENV:-.venv}
PYFUSE3_VERSION=3.5.0
# gcc, python3-dev: pyfuse3 and zramfs._zpages are compiled here; liblz4-dev: _zpages
# links the system LZ4 (1.9.4, the release python-lz4 bundles); python3-venv: the venv.
DEB_PKGS="fuse3 libfuse3-dev pkg-config fio e2fsprogs util-linux kmod gcc python3-dev python3-venv liblz4-dev"

missing=""
for p in $DEB_PKGS; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing="$missing $p"
done
if [ -n "$missing" ]; then
    if [ "$(id -u)" != 0 ]; then
        echo "setup: missing Debian packages:$missing (run as root, or install them)" >&2
        exit 1
    fi
    echo "setup: installing$missing"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq $missing </dev/null
fi

if [ ! -x "$VENV/bin/python" ]; then
    "$PYTHON" -m venv "$VENV"
    "$VENV/bin/pip" install -q --upgrade pip
fi

# pyfuse3 with our patches (patches/README.md), applied in this order. Rebuilt
# only when the installed copy is another version or lacks what they add.
if ! "$VENV/bin/python" - <<PYEOF 2>/dev/null
import importlib.metadata, sys, pyfuse3
ok = (importlib.metadata.version("pyfuse3") == "$PYFUSE3_VERSION"
      and all(hasattr(pyfuse3.Operations, a)
              for a in ("fallocate", "read_nowait", "write_nowait", "write_views"))
      and all(hasattr(pyfuse3, a) for a in ("NOWAIT_BURST", "DEFERRED", "reply_deferred")))
sys.exit(0 if ok else 1)
PYEOF
then
    echo "setup: building patched pyfuse3 $PYFUSE3_VERSION"
    work=$(mktemp -d)
    trap 'rm -rf "$work"' EXIT
    "$VENV/bin/pip" download -q --no-deps --no-binary :all: -d "$work" "pyfuse3==$PYFUSE3_VERSION"
    tar -xzf "$work/pyfuse3-$PYFUSE3_VERSION.tar.gz" -C "$work"
    for p in fallocate nowait burst views defer; do
        (cd "$work/pyfuse3-$PYFUSE3_VERSION" && patch -p1 -s < "$OLDPWD/patches/pyfuse3-$PYFUSE3_VERSION-$p.patch")
    done
    "$VENV/bin/pip" install -q "$work/pyfuse3-$PYFUSE3_VERSION"
fi

# zstd for zramfs._zpages (setup.py compiles it in from build/zstd): the
# amalgamated zstd.c of the python-zstandard release installed here, from that
# release's sdist, so the C path's frames are python-zstandard's byte for byte
# (zstd's output at a level changes between zstd releases).
ZSTD_SPEC=$("$VENV/bin/python" -c "import tomllib; print(next(d for d in tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies'] if d.startswith('zstandard')))")
"$VENV/bin/pip" install -q "$ZSTD_SPEC"
ZSTANDARD_VERSION=$("$VENV/bin/python" -c "import importlib.metadata as m; print(m.version('zstandard'))")
if [ "$(cat build/zstd/VERSION 2>/dev/null)" != "$ZSTANDARD_VERSION" ]; then
    echo "setup: fetching zstd from python-zstandard $ZSTANDARD_VERSION's sdist"
    zwork=$(mktemp -d)
    "$VENV/bin/pip" download -q --no-deps --no-binary :all: -d "$zwork" "zstandard==$ZSTANDARD_VERSION"
    tar -xzf "$zwork/zstandard-$ZSTANDARD_VERSION.tar.gz" -C "$zwork"
    rm -rf build/zstd
    mkdir -p build
    cp -r "$zwork/zstandard-$ZSTANDARD_VERSION/zstd" build/zstd
    echo "$ZSTANDARD_VERSION" > build/zstd/VERSION
    rm -rf "$zwork"
fi

# The project, editable, with its test tools; this also compiles the C extension
# zramfs._zpages in place (setup.py). Re-run when pyproject.toml, setup.py, the
# C source or the zstd source changes, or when the built module is missing or
# lacks zstd.
stamp="$VENV/.zramfs-installed"
have_ext() { "$VENV/bin/python" -c "import zramfs._zpages as z; z.zstd_compress_pages" 2>/dev/null; }
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ] || [ setup.py -nt "$stamp" ] \
    || [ zramfs/_zpages.c -nt "$stamp" ] || [ build/zstd/VERSION -nt "$stamp" ] || ! have_ext; then
    "$VENV/bin/pip" install -q -e ".[dev]"
    touch "$stamp"
fi
echo "setup: ready ($VENV/bin/zramfs)"
