"""Resource limits of one task: its time (seconds) and memory (GiB), docs/limits.md.

A task runs under the limits its request asks for (--time-limit, --memory-limit), never above
the worker's: ACCELFLOW_TIME_LIMIT (default 4 hours) and ACCELFLOW_MEMORY_LIMIT_GB (default the
machine's memory on CPU machine types; none on GPU types, whose drivers reserve far more
address space than they use); 0 turns a worker limit off. Both are enforced on the task's
model process (tasks/isolation.py): the memory limit caps its address space (RLIMIT_AS), so
an allocation past it fails with an error instead of the machine swapping or the kernel
killing a neighbour; the time limit (the flow's StopWatcher) kills it, which also stops
native code. Either way the task fails with the reason and its partial output is removed.
"""

from __future__ import annotations

from dataclasses import dataclass

from accelflow.core import quotas
from accelflow.core.errors import ResourceLimitError, first_line

# How allocators say "no": Python, torch (c10), C++ (std::bad_alloc), ONNX Runtime, OpenVINO.
_OOM_TEXT = ("can't allocate memory", "cannot allocate memory", "bad_alloc", "failed to allocate",
             "out of memory", "memoryerror")


@dataclass(frozen=True)
class TaskLimits:
    seconds: float | None  # None: no time limit
    memory_gib: float | None  # None: no memory limit
    asked: tuple[bool, bool]  # whether each came from the request (else from the worker)


def task_limits(time_limit: float | None, memory_gib: float | None, device: str) -> TaskLimits:
    """The request's limits, capped by this worker's."""
    seconds = _lowest(time_limit, quotas.worker_time_limit())
    memory = _lowest(memory_gib, quotas.worker_memory_gib(cpu=device.startswith("cpu")))
    return TaskLimits(seconds, memory, (seconds == time_limit, memory == memory_gib))


def _lowest(*values: float | None) -> float | None:
    given = [v for v in values if v]
    return min(given) if given else None


def out_of_memory(exc: BaseException) -> BaseException | None:
    """The exception in `exc`'s chain that reports a failed allocation, if any."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, MemoryError) or any(t in str(exc).lower() for t in _OOM_TEXT):
            return exc
        exc = exc.__cause__ or exc.__context__
    return None


def limit_error(exc: BaseException, timed_out: bool, limits: TaskLimits) -> ResourceLimitError | None:
    """The error to fail with when `exc` came from a resource limit, else None."""
    if timed_out:
        source = "--time-limit" if limits.asked[0] else f"the worker's {quotas.TIME_LIMIT_ENV}"
        return ResourceLimitError(
            f"the task exceeded its time limit of {limits.seconds:g} s ({source}) and was stopped; "
            "nothing was kept. Raise --time-limit (up to the worker's limit), or shorten the work (fewer shape points, "
            "--bench-seconds, --engine NAME)."
        )
    oom = out_of_memory(exc)
    if oom is None:
        return None
    source = "--memory-limit" if limits.asked[1] else f"the worker's {quotas.MEMORY_LIMIT_ENV}"
    where = f"its memory limit of {limits.memory_gib:g} GiB ({source})" if limits.memory_gib else "the machine's memory"
    return ResourceLimitError(
        f"the task ran out of memory: it needed more than {where} ({first_line(oom)}); nothing "
        "was kept. Give it more memory (--memory-limit, a larger machine type) or smaller shapes."
    )
