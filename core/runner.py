"""The one calling convention every baseline and engine runner follows.

Accuracy checks and benchmarks feed the flat list of input leaves (tensor-information
order) and read back the flat list of outputs (ModelIO.output_names order). Preparation
(dtype conversion, building the engine's feed) is split from `run` so benchmarks time only
the inference call itself, the same way for every runner.
"""

from __future__ import annotations

import os
from typing import Any, Protocol

import numpy as np


class Runner(Protocol):
    label: str

    def prepare(self, arrays: list[np.ndarray]) -> Any: ...

    def run(self, feed: Any) -> Any: ...

    def outputs(self, raw: Any) -> list[np.ndarray]: ...


def run_arrays(runner: Runner, arrays: list[np.ndarray]) -> list[np.ndarray]:
    """Prepare, run and read back: the untimed convenience path."""
    return runner.outputs(runner.run(runner.prepare(arrays)))


def thread_count() -> int:
    """Threads every runner gets: the cores this process may use (ACCELFLOW_THREADS overrides).

    Baseline and engines must use the same count or the comparison is unfair.
    """
    override = os.environ.get("ACCELFLOW_THREADS")
    if override:
        return max(1, int(override))
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
