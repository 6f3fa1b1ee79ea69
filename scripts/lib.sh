# Sourced by the install and test scripts: versions, cache locations, progress lines.

PYTHON=${PYTHON:-python3}
# The CPU build of torch lies on this kind of machine's disk for `pip install torch==2.13.0`;
# any other torch requirement would pull a multi-GB CUDA build.
TORCH_VERSION=2.13.0
# Detectron2 needs torchvision, and PyPI's torchvision does not import beside the CPU torch
# above, so Detectron2 gets its own venv with a torch/torchvision pair that import together.
D2_TORCH_VERSION=2.14.1
D2_TORCHVISION_VERSION=0.29.1
# Detectron2 is not on PyPI under its name: pb1-detectron2 0.6 is an sdist of its source,
# fetched by address because pip refuses to process it (its "all" extra names a GitHub URL).
D2_SDIST_URL=https://files.pythonhosted.org/packages/60/26/48f5bbb7ee492696a21da23303daeecdfe3942c498a70d34108acf63b2bd/pb1-detectron2-0.6.tar.gz
D2_SDIST_SHA256=5d2e9e51e523ec72f6a31cca04b0a515492e9514b773a3d134cedc0677170b29

# Built wheels and the Detectron2 venv live outside the checkout, so that another clone or a
# CI run on the same machine reuses them; each is keyed by what it was built against.
ACCELFLOW_CACHE_ROOT=${ACCELFLOW_CACHE_ROOT:-${XDG_CACHE_HOME:-$HOME/.cache}/accelflow}
WHEEL_CACHE=${ACCELFLOW_WHEEL_CACHE:-$ACCELFLOW_CACHE_ROOT/wheels}

python_tag() {  # cp311
    "$PYTHON" -c 'import sys; print("cp%d%d" % sys.version_info[:2])'
}

d2_venv() {
    echo "${ACCELFLOW_D2_VENV:-$ACCELFLOW_CACHE_ROOT/venvs/detectron2-$(python_tag)-torch$D2_TORCH_VERSION-$(uname -m)}"
}

_minutes() {
    local s=$1
    if [ "$s" -ge 60 ]; then printf '%d min %02d s' $((s / 60)) $((s % 60)); else printf '%d s' "$s"; fi
}

# step "what it does (how long it takes)" COMMAND...: says what runs, runs it, says how long it
# took; returns the command's exit status.
step() {
    local what=$1 started=$SECONDS rc=0
    shift
    echo "==> $what" >&2
    "$@" || rc=$?
    if [ "$rc" = 0 ]; then
        echo "    done in $(_minutes $((SECONDS - started)))" >&2
    else
        echo "    FAILED (exit status $rc) after $(_minutes $((SECONDS - started)))" >&2
    fi
    return "$rc"
}
