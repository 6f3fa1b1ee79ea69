"""Resource limits of one task: --time-limit (seconds) and --memory-limit (GiB).

The time limit is enforced by the flow's StopWatcher; the memory limit caps the task
process's address space (RLIMIT_AS), so an allocation past it fails inside the task with
an error instead of the machine swapping or the kernel killing a neighbour. Either way the
task fails with the reason, and its partial output is removed like any other failure.
"""

from __future__ import annotations

import contextlib
import resource

from accelflow.core.errors import ResourceLimitError, first_line

_GIB = 1 << 30
# How allocators say "no": Python, torch (c10), C++ (std::bad_alloc), ONNX Runtime, OpenVINO.
_OOM_TEXT = ("can't allocate memory", "cannot allocate memory", "bad_alloc", "failed to allocate",
             "out of memory", "memoryerror")


@contextlib.contextmanager
def memory_limit(gib: float | None):
    """Cap this process's address space at `gib` GiB for the block (restored afterwards)."""
    if not gib:
        yield
        return
    before = resource.getrlimit(resource.RLIMIT_AS)
    limit = int(gib * _GIB)
    if before[1] != resource.RLIM_INFINITY:
        limit = min(limit, before[1])
    resource.setrlimit(resource.RLIMIT_AS, (limit, before[1]))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_AS, before)


def out_of_memory(exc: BaseException) -> BaseException | None:
    """The exception in `exc`'s chain that reports a failed allocation, if any."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, MemoryError) or any(t in str(exc).lower() for t in _OOM_TEXT):
            return exc
        exc = exc.__cause__ or exc.__context__
    return None


def limit_error(exc: BaseException, timed_out: bool, time_limit: float | None,
                memory_gib: float | None) -> ResourceLimitError | None:
    """The error to fail with when `exc` came from a resource limit, else None."""
    if timed_out:
        return ResourceLimitError(
            f"the task exceeded its time limit of {time_limit:g} s (--time-limit) and was stopped; "
            "nothing was kept. Raise --time-limit, or shorten the work (fewer shape points, "
            "--bench-seconds, --engine NAME)."
        )
    oom = out_of_memory(exc)
    if oom is None:
        return None
    where = f"its memory limit of {memory_gib:g} GiB (--memory-limit)" if memory_gib else "the machine's memory"
    return ResourceLimitError(
        f"the task ran out of memory: it needed more than {where} ({first_line(oom)}); nothing "
        "was kept. Give it more memory (--memory-limit, a larger machine type) or smaller shapes."
    )
