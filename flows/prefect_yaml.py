"""The checkout's prefect.yaml: the machine types a fleet deploys (`accelflow deploy`), which the
run form also offers as choices."""

from __future__ import annotations

import os

# The checkout: prefect.yaml lives at its top, one folder above this one.
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def machine_types() -> list[str]:
    """The machine types prefect.yaml deploys, in its order."""
    import yaml  # comes with Prefect

    with open(os.path.join(ROOT, "prefect.yaml"), encoding="utf-8") as f:
        return [d["name"] for d in yaml.safe_load(f)["deployments"]]
