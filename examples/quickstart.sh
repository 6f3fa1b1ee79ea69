#!/usr/bin/env bash
# Install accelflow, build the bundled example CNN (random weights, no download) and optimize it.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
export PREFECT_SERVER_ANALYTICS_ENABLED=false
.venv/bin/python examples/make_models.py cnn --out examples/models
.venv/bin/accelflow optimize examples/models/cnn.pt \
    -t "input_0:float(1*3*96*96,4*3*96*96)" --level fp16 --output accelflow-results --name quickstart-cnn
