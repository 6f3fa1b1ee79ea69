#!/usr/bin/env bash
# One command per serving machine: install accelflow for its machine type, then run the
# worker of that machine type's pool (docs/scale-out.md).
#   PREFECT_API_URL=http://SERVER:4200/api bash scripts/worker.sh a10 [accelflow worker options]
# A worker gets the model formats' extras (ACCELFLOW_WORKER_EXTRAS, default "tf diffusers
# mmdet"; see scripts/install.sh), and GPU machine types the GPU engines too (ACCELFLOW_GPU=1);
# run one worker per GPU (CUDA_VISIBLE_DEVICES=N).
set -euo pipefail
cd "$(dirname "$0")/.."
POOL=${1:?usage: scripts/worker.sh MACHINE_TYPE [--limit K] [--name NAME]}
shift
case "$POOL" in
    cpu|cpu-*) GPU=0 ;;
    *) GPU=1 ;;
esac
# shellcheck disable=SC2086  # a list of extras
ACCELFLOW_GPU=$GPU bash scripts/install.sh ${ACCELFLOW_WORKER_EXTRAS-tf diffusers mmdet}
exec .venv/bin/accelflow worker --pool "$POOL" "$@"
