#!/usr/bin/env bash
# Install accelflow and everything its tests need into ./.venv (Python 3.11+ and pip).
# torch is pinned to the CPU build first, so that no later requirement pulls a multi-GB CUDA build.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet "torch==2.13.0"
.venv/bin/python -m pip install --quiet -e ".[test,examples,tf,diffusers]"
echo "installed into $(pwd)/.venv"
