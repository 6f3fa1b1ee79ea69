#!/usr/bin/env bash
# Build mmcv 2.1.0 with its compiled ops for the torch accelflow pins (MMDetection imports
# mmcv.ops at once; PyPI has only mmcv's source, no wheel for this torch) and print the
# wheel's path. About 15-18 min on 2 cores, once per machine: the wheel is kept outside the
# checkout, in ~/.cache/accelflow/wheels/<python>-torch<version>-<arch>/ (ACCELFLOW_WHEEL_CACHE
# overrides the folder), so every later install, from any clone, takes it in seconds, and
# another Python or torch builds its own.
# It builds in a venv of its own because mmcv 2.1's setup.py needs setuptools<70 and must see
# the installed torch (--no-build-isolation); .venv keeps its own setuptools.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
MMCV_VERSION=2.1.0
DEST=$WHEEL_CACHE/$(python_tag)-torch$TORCH_VERSION-$(uname -m)
mkdir -p "$DEST"
found() { compgen -G "$DEST/mmcv-$MMCV_VERSION-*.whl" | head -n 1; }

# One build per cache folder: a second clone waits for the first one's wheel.
exec 9>"$DEST/.mmcv.lock"
if ! flock -n 9; then
    echo "    another install is building mmcv into $DEST; waiting for it" >&2
    flock 9
fi
if [ -n "$(found)" ]; then
    found
    exit 0
fi

BUILD=$(mktemp -d "$DEST/.build-mmcv-XXXXXX")
trap 'rm -rf "$BUILD"' EXIT
build_venv() {
    "$PYTHON" -m venv "$BUILD/venv"
    "$BUILD/venv/bin/python" -m pip install -qq "torch==$TORCH_VERSION" wheel ninja numpy
    # torch asks for setuptools>=77, but only its C++ extension builder uses it, and that works
    # with the older one; pip's complaint about the mismatch is expected here.
    "$BUILD/venv/bin/python" -m pip install -qq "setuptools<70" 2>&1 \
        | { grep -v "dependency resolver\|requires setuptools" || true; } >&2
}
# --no-cache-dir: pip's own wheel cache would hand back a wheel built against another torch.
build_wheel() {
    MMCV_WITH_OPS=1 MAX_JOBS=${MAX_JOBS:-$(nproc)} "$BUILD/venv/bin/python" -m pip wheel -qq --no-cache-dir \
        --no-build-isolation --no-deps "mmcv==$MMCV_VERSION" -w "$BUILD/out" >&2
}
step "mmcv $MMCV_VERSION: build venv with torch $TORCH_VERSION" build_venv
step "mmcv $MMCV_VERSION: compiling its ops (about 15-18 min on 2 cores, once per machine; kept in $DEST)" build_wheel
mv "$BUILD"/out/mmcv-"$MMCV_VERSION"-*.whl "$DEST/"
found
