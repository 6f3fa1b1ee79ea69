#!/usr/bin/env bash
# Install accelflow into ./.venv (Python 3.11+ and pip).
#
#   bash scripts/install.sh                the core, about 1 min: torch's CPU build, accelflow
#                                          (Prefect, ONNX, ONNX Runtime, OpenVINO), Prefect's database
#   bash scripts/install.sh EXTRA...       the core plus optional parts:
#       tf          TensorFlow SavedModels and frozen graphs (tensorflow-cpu, tf2onnx)
#       diffusers   Stable Diffusion pipelines (diffusers, transformers)
#       mmdet       MMDetection; builds mmcv's ops the first time (about 15-18 min on 2 cores,
#                   once per machine: scripts/build_mmcv.sh keeps the wheel in ~/.cache/accelflow)
#       detectron2  Detectron2, in a venv of its own (scripts/install_detectron2.sh; about
#                   3 min once per machine)
#       examples    transformers, for `examples/make_models.py bert`
#       test        the test tools (pytest, hypothesis, moto, Playwright) and Debian's Chromium
#                   for the browser tests (scripts/install_browser.sh; apt-get, as root or sudo)
#       gpu         GPU engines: onnxruntime-gpu, TensorRT, polygraphy (GPU machines only)
#       all         every extra but gpu
#
# torch is pinned to its CPU build, so that no requirement pulls a multi-GB CUDA build.
# ACCELFLOW_GPU=1 adds gpu (scripts/worker.sh sets it for GPU machine types).
# Built wheels: ~/.cache/accelflow/wheels (ACCELFLOW_WHEEL_CACHE); cache root ACCELFLOW_CACHE_ROOT.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
started=$SECONDS

usage() {  # usage EXIT_CODE
    sed -n '2,/^$/s/^# \{0,1\}//p' "$0" >&2
    exit "$1"
}
EXTRAS=()
MMDET=0
DETECTRON2=0
for extra in "$@"; do
    case "$extra" in
        tf | diffusers | examples | test) EXTRAS+=("$extra") ;;
        gpu) EXTRAS+=(gpu tensorrt) ;;
        mmdet) MMDET=1 ;;
        detectron2) DETECTRON2=1 ;;
        all) EXTRAS+=(tf diffusers examples test); MMDET=1; DETECTRON2=1 ;;
        -h | --help) usage 0 ;;
        *) echo "unknown extra '$extra'" >&2; usage 2 ;;
    esac
done
if [ "${ACCELFLOW_GPU:-0}" = 1 ]; then
    EXTRAS+=(gpu tensorrt)
fi

# mmdet needs mmcv with its compiled ops, built once per machine (or taken from the cache).
MMCV_WHEEL=()
if [ "$MMDET" = 1 ]; then
    wheel=$(bash scripts/build_mmcv.sh)
    echo "==> mmcv wheel: $wheel" >&2
    MMCV_WHEEL=("$wheel")
    EXTRAS+=(mmdet)
fi

# each extra once, in the order given
mapfile -t EXTRAS < <(printf '%s\n' ${EXTRAS[@]+"${EXTRAS[@]}"} | awk 'NF && !seen[$0]++')

make_venv() {
    "$PYTHON" -m venv .venv
}
install_core() {
    local spec=.
    if [ ${#EXTRAS[@]} -gt 0 ]; then
        spec=".[$(IFS=,; echo "${EXTRAS[*]}")]"
    fi
    .venv/bin/python -m pip install -qq "torch==$TORCH_VERSION" -e "$spec" "${MMCV_WHEEL[@]}"
}
# Prefect's embedded server creates and migrates its SQLite database on first start, which
# can outlast its start-up timeout on a slow machine; do it now, once.
prefect_database() {
    PREFECT_SERVER_ANALYTICS_ENABLED=false .venv/bin/prefect server database upgrade -y >/dev/null
}
[ -x .venv/bin/python ] || step "creating .venv" make_venv
what="accelflow${EXTRAS[*]:+ with ${EXTRAS[*]}} and torch $TORCH_VERSION (CPU build) into .venv"
step "installing $what" install_core
step "preparing Prefect's database (${PREFECT_HOME:-~/.prefect})" prefect_database
if [[ " ${EXTRAS[*]} " == *" test "* ]]; then
    step "installing Chromium for the browser tests (if missing)" bash scripts/install_browser.sh
fi
if [ "$DETECTRON2" = 1 ]; then
    bash scripts/install_detectron2.sh
fi
echo "installed into $(pwd)/.venv in $(_minutes $((SECONDS - started)))" >&2
