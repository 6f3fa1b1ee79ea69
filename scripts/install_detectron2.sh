#!/usr/bin/env bash
# Detectron2 in a venv of its own (run by `bash scripts/install.sh detectron2`): detectron2
# imports torchvision, and PyPI's torchvision does not import beside the CPU torch that .venv
# holds, so this venv has torch 2.14.1 + torchvision 0.29.1 (a CUDA build that runs on the
# CPU too; about 5.5 GB: 1 min here, where pip finds the wheels on disk), detectron2, and this checkout's
# accelflow with its test tools (editable).
#
# The venv lives outside the checkout, ~/.cache/accelflow/venvs/detectron2-<python>-torch<v>-<arch>
# (ACCELFLOW_D2_VENV overrides), because it is big, slow to make and the same for every clone:
# a later clone or CI run on this machine only re-points the editable accelflow at itself
# (seconds). The venv's lock file keeps two clones from doing that at once: hold it
# (`flock "$(scripts/install_detectron2.sh --path).lock" ...`) while using the venv, as
# scripts/test.sh does.
#
# Detectron2 is not on PyPI under its name. pb1-detectron2 0.6 is an sdist of its Python
# source (package `detectron2`, the model zoo's configs included), but WITHOUT the C++/CUDA
# sources of its compiled ops, detectron2._C; no PyPI distribution carries them (checked:
# pb1-detectron2 0.6, detectron2-cdo 0.5, sal-detectron2 0.7.2, a cp310-only binary wheel).
# Faster R-CNN, Mask R-CNN and RetinaNet do not use those ops (their NMS and RoIAlign are
# torchvision's); rotated boxes, deformable convolution and the fast COCO evaluator do, and
# detectron2.layers imports _C at once. So the wheel is built with edits, each said here:
#   - setup.py: no C++ extension (its sources are missing); the model zoo's configs, which
#     the sdist holds in place, as package data (setup.py looks for them in the repository's
#     configs/ folder); no "all" extra's GitHub URL (pip refuses URLs in a PyPI package's
#     requirements);
#   - detectron2/_C.py: a stand-in for the compiled ops, so that detectron2 imports; every op
#     fails when called, naming why (AttributeError: detectron2._C has no compiled op ...);
#   - PIL.Image.LINEAR, removed in Pillow 10, is spelled BILINEAR (the same filter).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
VENV=$(d2_venv)
if [ "${1:-}" = --path ]; then
    echo "$VENV"
    exit 0
fi
REPO=$(pwd)
# What the venv was made from; a venv made from another recipe is made again.
RECIPE="torch==$D2_TORCH_VERSION torchvision==$D2_TORCHVISION_VERSION setuptools<70"
# The edits below, as the wheel's version (0.6+accelflow1): other edits make another wheel.
D2_EDITS=accelflow2
WHEELS=$WHEEL_CACHE/$(python_tag)-torch$D2_TORCH_VERSION-$(uname -m)

mkdir -p "$(dirname "$VENV")" "$WHEELS"
exec 9>"$VENV.lock"
if ! flock -n 9; then
    echo "    another checkout is using $VENV; waiting for it" >&2
    flock 9
fi

make_venv() {
    if [ -e "$VENV" ]; then  # made from another recipe, or cut short: start again
        [ -f "$VENV/pyvenv.cfg" ] || { echo "$VENV exists and is no venv: not touching it" >&2; exit 1; }
        rm -rf "$VENV"
    fi
    "$PYTHON" -m venv "$VENV"
    "$VENV/bin/python" -m pip install -qq --upgrade pip
}
install_torch() {
    "$VENV/bin/python" -m pip install -qq "torch==$D2_TORCH_VERSION" "torchvision==$D2_TORCHVISION_VERSION"
    # pkg_resources (detectron2's model zoo) and the setup.py-era build that the sdist needs
    "$VENV/bin/python" -m pip install -qq "setuptools<70" wheel 2>&1 \
        | { grep -v "dependency resolver\|requires setuptools" || true; } >&2
}
d2_wheel() { compgen -G "$WHEELS/pb1_detectron2-0.6+$D2_EDITS-*.whl" | head -n 1; }
build=
trap '[ -z "$build" ] || rm -rf "$build"' EXIT
build_detectron2() {
    build=$(mktemp -d "$WHEELS/.build-detectron2-XXXXXX")
    curl --fail --silent --show-error --location --retry 3 -o "$build/sdist.tar.gz" "$D2_SDIST_URL"
    echo "$D2_SDIST_SHA256  $build/sdist.tar.gz" | sha256sum --check --quiet
    tar -xzf "$build/sdist.tar.gz" -C "$build"
    local src
    src=$(echo "$build"/pb1-detectron2-*/)
    sed -i -e 's/^    ext_modules=get_extensions(),$/    ext_modules=[],  # accelflow: the sdist has no C++ sources/' \
        -e 's/^    package_data={"detectron2.model_zoo": get_model_zoo_configs()},$/    package_data={"detectron2.model_zoo": ["configs\/**\/*.yaml", "configs\/**\/*.py"]},/' \
        -e '/"panopticapi @ https:/d' "$src/setup.py"
    sed -i 's/interp=Image\.LINEAR,/interp=Image.BILINEAR,/' "$src/detectron2/data/transforms/transform.py"
    cat >"$src/detectron2/_C.py" <<'STANDIN'
"""Stand-in for detectron2's compiled ops, written by accelflow's scripts/install_detectron2.sh:
the PyPI sdist this detectron2 was built from (pb1-detectron2 0.6) lacks their C++ sources.
Faster R-CNN, Mask R-CNN and RetinaNet do not use them; rotated boxes, deformable convolution
and the fast COCO evaluator do, and fail here, saying so."""


def __getattr__(name):
    if name.startswith("__"):
        raise AttributeError(name)
    raise AttributeError(
        f"detectron2._C has no compiled op {name!r}: this detectron2 was built without its C++ ops "
        "(PyPI's pb1-detectron2 sdist lacks their sources; see accelflow's scripts/install_detectron2.sh)"
    )
STANDIN
    # setup.py imports torch: no build isolation, this venv's torch and setuptools<70
    D2_VERSION_SUFFIX=+$D2_EDITS "$VENV/bin/python" -m pip wheel -qq --no-build-isolation --no-deps "$src" -w "$build/out"
    mv "$build"/out/pb1_detectron2-*.whl "$WHEELS/"
}
install_detectron2() {
    [ -n "$(d2_wheel)" ] || build_detectron2
    "$VENV/bin/python" -m pip install -qq "$(d2_wheel)"
}

if [ "$(cat "$VENV/.accelflow-recipe" 2>/dev/null)" != "$RECIPE" ]; then
    echo "==> Detectron2 venv: $VENV (made once per machine, reused by every clone)" >&2
    step "Detectron2 venv: python venv" make_venv
    step "Detectron2 venv: torch $D2_TORCH_VERSION + torchvision $D2_TORCHVISION_VERSION (about 5.5 GB)" install_torch
    echo "$RECIPE" >"$VENV/.accelflow-recipe"
fi
step "Detectron2 venv: detectron2 0.6 from the pb1-detectron2 sdist (wheel kept in $WHEELS)" install_detectron2
step "Detectron2 venv: accelflow from $REPO, editable, with its test tools" \
    "$VENV/bin/python" -m pip install -qq --no-build-isolation -e "$REPO[test]"
check() {
    "$VENV/bin/python" -W ignore::FutureWarning -c "
import detectron2.modeling, torch, torchvision
from detectron2 import model_zoo
model_zoo.get_config_file('COCO-Detection/faster_rcnn_R_50_FPN_3x.yaml')
print('    detectron2', detectron2.__version__, '| torch', torch.__version__, '| torchvision', torchvision.__version__)"
}
check >&2
echo "    Detectron2 venv ready: $VENV" >&2
