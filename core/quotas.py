"""The worker operator's caps on what one submitter may make a worker do (docs/limits.md).

Each cap has a default that an ordinary task never reaches and an environment variable that
overrides it. They protect the workers from the submitters, so they are settings of the
process that does the work, never options of a request. Read at each use, so that a
changed environment takes effect without a restart.
Pure Python: no numpy, no Prefect.
"""

from __future__ import annotations

import math
import os

from accelflow.core.errors import SpecError

SHAPE_POINTS_ENV = "ACCELFLOW_MAX_SHAPE_POINTS"
INPUT_GB_ENV = "ACCELFLOW_MAX_INPUT_GB"
SAMPLES_GB_ENV = "ACCELFLOW_MAX_SAMPLES_GB"
FETCH_GB_ENV = "ACCELFLOW_MAX_FETCH_GB"
TIME_LIMIT_ENV = "ACCELFLOW_TIME_LIMIT"
MEMORY_LIMIT_ENV = "ACCELFLOW_MEMORY_LIMIT_GB"

DEFAULT_SHAPE_POINTS = 32
DEFAULT_INPUT_GB = 4.0
DEFAULT_SAMPLES_GB = 4.0
DEFAULT_FETCH_GB = 64.0
DEFAULT_TIME_LIMIT_S = 4 * 3600.0  # a Stable Diffusion pipeline on a CPU takes about an hour

GIB = 2**30


def max_shape_points() -> int:
    """Shape points one tensor information may ask for (each a build, check and benchmark)."""
    return _positive_int(SHAPE_POINTS_ENV, DEFAULT_SHAPE_POINTS)


def max_input_bytes() -> int:
    """Bytes of example inputs at one shape point, all input tensors together."""
    return _gib(INPUT_GB_ENV, DEFAULT_INPUT_GB)


def max_samples_bytes() -> int:
    """Bytes of a --samples .npz once decompressed, all its arrays together."""
    return _gib(SAMPLES_GB_ENV, DEFAULT_SAMPLES_GB)


def max_fetch_bytes() -> int:
    """Bytes one task may download from storage: a model's files, a samples file."""
    return _gib(FETCH_GB_ENV, DEFAULT_FETCH_GB)


def worker_time_limit() -> float | None:
    """Seconds a task may run on this worker (None: no limit, ACCELFLOW_TIME_LIMIT=0)."""
    return _optional(TIME_LIMIT_ENV, DEFAULT_TIME_LIMIT_S)


def worker_memory_gib(cpu: bool) -> float | None:
    """GiB of address space a task's model process may use (None: no limit). By default the
    machine's memory on CPU machine types, and none on GPU types: CUDA reserves far more
    address space than it uses, and a cap on it fails CUDA's start."""
    return _optional(MEMORY_LIMIT_ENV, machine_memory_gib() if cpu else None)


def machine_memory_gib() -> float:
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / GIB


def size_text(n: int) -> str:
    """A byte count for people: 1.5 GiB, 300.0 MiB, 12 bytes."""
    for unit, scale in (("TiB", 2**40), ("GiB", GIB), ("MiB", 2**20), ("KiB", 2**10)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n} bytes"


def _positive_int(var: str, default: int) -> int:
    text = os.environ.get(var, "").strip()
    if not text:
        return default
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        # An operator's typo must not silently lift the cap (or refuse everything unexplained).
        raise SpecError(f"{var}={text!r} is not a positive whole number; unset it for the default "
                        f"of {default}")
    return value


def _gib(var: str, default: float) -> int:
    text = os.environ.get(var, "").strip()
    if not text:
        return int(default * GIB)
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (value > 0 and math.isfinite(value)):
        raise SpecError(f"{var}={text!r} is not a positive number of GiB (e.g. 0.5 or 16); unset "
                        f"it for the default of {default:g}")
    return max(1, int(value * GIB))


def _optional(var: str, default: float | None) -> float | None:
    """A limit that 0 turns off."""
    text = os.environ.get(var, "").strip()
    if not text:
        return default
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (value >= 0 and math.isfinite(value)):
        raise SpecError(f"{var}={text!r} is not a number: give a limit, or 0 for none; unset it for the default")
    return value or None
