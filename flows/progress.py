"""Progress of one task: a Prefect progress artifact, the run log, and the console."""

from __future__ import annotations

import contextlib
import logging
import time

# The console logger the command line shows (Prefect's own console output is turned down).
console = logging.getLogger("accelflow.progress")

STEPS = (
    ("fetch model", 5),
    ("parse tensor information", 8),
    ("convert to ONNX", 20),
    ("build engines", 45),
    ("verify accuracy", 60),
    ("benchmark", 90),
    ("report", 95),
    ("package", 100),
)


class Progress:
    """Announces each step and records its wall time (Prefect task overhead included)."""

    def __init__(self):
        from prefect.artifacts import create_progress_artifact

        self.timings: dict[str, float] = {}
        self.artifact = quietly(lambda: create_progress_artifact(0.0, description="optimization progress"))

    @contextlib.contextmanager
    def step(self, name: str):
        index = next(i for i, (step, _) in enumerate(STEPS) if step == name)
        # For a live display (flows/cli/console.py); the plain log line is the message alone.
        fields = {"step": name, "step_number": index + 1, "steps": len(STEPS), "percent": STEPS[index][1],
                  "run_name": _run_name()}
        self.say(f"[{index + 1}/{len(STEPS)}] {name} ...", dict(fields, step_done=False))
        start = time.perf_counter()
        yield
        self.timings[name] = round(time.perf_counter() - start, 3)
        self.set(STEPS[index][1])
        self.say(f"[{index + 1}/{len(STEPS)}] {name} done in {self.timings[name]:.1f}s", dict(fields, step_done=True))

    def set(self, percent: float) -> None:
        from prefect.artifacts import update_progress_artifact

        if self.artifact:
            quietly(lambda: update_progress_artifact(self.artifact, float(percent)))

    def say(self, message: str, fields: dict | None = None) -> None:
        console.info(message, extra=fields)
        _run_logger().info(message)


def _run_name() -> str | None:
    from prefect.context import FlowRunContext

    context = FlowRunContext.get()
    return context.flow_run.name if context and context.flow_run else None


def _run_logger():
    from prefect import get_run_logger
    from prefect.exceptions import MissingContextError

    try:
        return get_run_logger()
    except MissingContextError:
        return console


def quietly(call):
    """Artifacts are a view for the UI: a failure to write one must not fail the task."""
    try:
        return call()
    except Exception as exc:  # noqa: BLE001 - logged, never fatal
        console.debug("could not write a progress artifact: %s", exc)
        return None
