#!/usr/bin/env bash
# Install accelflow and everything its tests need into ./.venv (Python 3.11+ and pip).
# torch is pinned to the CPU build first, so that no later requirement pulls a multi-GB CUDA build.
# MMDetection's mmcv is built from source the first time (about 15 min on 2 cores; see
# scripts/build_mmcv.sh); ACCELFLOW_MMDET=0 skips it (MMDetection models are then refused,
# and their tests skip, saying why). ACCELFLOW_GPU=1 adds the GPU engines (ONNX Runtime CUDA,
# TensorRT with polygraphy) for a GPU worker (scripts/worker.sh sets it by machine type).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet "torch==2.13.0"
EXTRAS=test,examples,tf,diffusers
if [ "${ACCELFLOW_GPU:-0}" = 1 ]; then
    EXTRAS=$EXTRAS,gpu,tensorrt
fi
if [ "${ACCELFLOW_MMDET:-1}" != 0 ]; then
    PYTHON=$PYTHON bash scripts/build_mmcv.sh
    .venv/bin/python -m pip install --quiet .cache/wheels/mmcv-2.1.0-*.whl
    EXTRAS=$EXTRAS,mmdet
fi
.venv/bin/python -m pip install --quiet -e ".[$EXTRAS]"
# Prefect's embedded server creates and migrates its SQLite database on first start, which
# can outlast its start-up timeout on a slow machine; do it now, once.
PREFECT_SERVER_ANALYTICS_ENABLED=false .venv/bin/prefect server database upgrade -y >/dev/null
echo "installed into $(pwd)/.venv"
