#!/usr/bin/env bash
# One command per serving machine: install accelflow for its machine type, then run the
# worker of that machine type's pool (docs/scale-out.md).
#   PREFECT_API_URL=http://SERVER:4200/api bash scripts/worker.sh a10 [accelflow worker options]
# GPU machine types get the GPU engines; run one worker per GPU (CUDA_VISIBLE_DEVICES=N).
set -euo pipefail
cd "$(dirname "$0")/.."
POOL=${1:?usage: scripts/worker.sh MACHINE_TYPE [--limit K] [--name NAME]}
shift
case "$POOL" in
    cpu|cpu-*) GPU=0 ;;
    *) GPU=1 ;;
esac
ACCELFLOW_GPU=$GPU bash scripts/install.sh
exec .venv/bin/accelflow worker --pool "$POOL" "$@"
