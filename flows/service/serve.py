"""The runner `accelflow server` starts: serves the optimize flow as one deployment per
machine type this machine can build for (`optimize/cpu`, ...), each run in its own process."""

from __future__ import annotations

import argparse
import os


def deployments():
    from accelflow.flows.optimize import optimize
    from prefect.deployments.runner import EntrypointType

    from accelflow import engines

    return [
        optimize.to_deployment(name=device, entrypoint_type=EntrypointType.MODULE_PATH,
                               description=f"optimize a model for {device} machines",
                               # the run form starts at this deployment's machine type
                               parameters={"request": {"device": device}})
        for device in engines.served_devices()
    ]


def _detect_lost_runs() -> None:
    """The zombie-flow automation on this server (see flows/service/fleet.py)."""
    from accelflow.flows.runs import client
    from accelflow.flows.service.fleet import ensure_zombie_automation

    with client() as c:
        ensure_zombie_automation(c)


def main() -> None:
    from prefect import serve

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--limit", type=int, default=2)
    args = parser.parse_args()
    # Task processes inherit this: optimizations are batch work, and under full load the
    # Prefect server and the user's `accelflow tasks ...` commands must still answer at once.
    os.nice(int(os.environ.get("ACCELFLOW_TASK_NICE", "5")))
    _detect_lost_runs()
    serve(*deployments(), limit=args.limit, pause_on_shutdown=False, print_starting_message=True)


if __name__ == "__main__":
    main()
