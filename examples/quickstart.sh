#!/usr/bin/env bash
# The quick start: install the core into ./.venv (scripts/install.sh: torch's CPU build and
# accelflow; no optional extras), build the bundled example CNN (random weights, no download)
# and optimize it. Optional parts come with `bash scripts/install.sh EXTRA...`.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
started=$SECONDS
bash scripts/install.sh
export PREFECT_SERVER_ANALYTICS_ENABLED=false
step "building the example CNN (examples/models/cnn.pt)" \
    .venv/bin/python examples/make_models.py cnn --out examples/models
step "optimizing it: accelflow optimize examples/models/cnn.pt ... --output accelflow-results" \
    .venv/bin/accelflow optimize examples/models/cnn.pt \
    -t "input_0:float(1*3*96*96,4*3*96*96)" --level fp16 --output accelflow-results --name quickstart-cnn
echo "quick start done in $(_minutes $((SECONDS - started)))" >&2
