#!/usr/bin/env bash
# Build mmcv 2.1.0 with its compiled ops for the torch accelflow pins (MMDetection imports
# mmcv.ops at once; PyPI has only mmcv's source, no wheel for this torch). About 15 min on
# 2 cores, once: the wheel is kept in .cache/wheels and reused by every later install.
# It builds in its own venv because mmcv 2.1's setup.py needs setuptools<70 and must see
# the installed torch (--no-build-isolation); .venv keeps its own setuptools.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
MMCV_VERSION=2.1.0
WHEELS=.cache/wheels
if compgen -G "$WHEELS/mmcv-$MMCV_VERSION-*.whl" >/dev/null; then
    exit 0
fi
BUILD=.cache/mmcv-build
[ -x "$BUILD/bin/python" ] || "$PYTHON" -m venv "$BUILD"
"$BUILD/bin/python" -m pip install --quiet "torch==2.13.0" wheel ninja numpy
# torch asks for setuptools>=77, but only its C++ extension builder uses it, and that works
# with the older one; pip warns about the mismatch, which is expected here.
"$BUILD/bin/python" -m pip install --quiet "setuptools<70" 2>&1 | grep -v "dependency resolver\|requires setuptools" || true
echo "building mmcv $MMCV_VERSION with its ops (about 15 min on 2 cores, once; kept in $WHEELS)"
started=$SECONDS
MMCV_WITH_OPS=1 MAX_JOBS=${MAX_JOBS:-$(nproc)} \
    "$BUILD/bin/python" -m pip wheel --quiet --no-build-isolation --no-deps "mmcv==$MMCV_VERSION" -w "$WHEELS"
echo "built mmcv in $(( (SECONDS - started) / 60 )) min"
rm -rf "$BUILD"
