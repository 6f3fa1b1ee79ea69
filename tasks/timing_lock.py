"""One benchmark at a time per machine, so that tasks run side by side still time alone.

Tasks on one machine may run at once (a runner's limit, fan-out children): their fetching,
conversion, building and accuracy checks overlap, but a benchmark is only worth its figures
if nothing else runs on the cores meanwhile. So each step that runs a model holds a lock on
the device: benchmarks exclusively, the other steps shared. A benchmark waits for running
steps to finish, and steps wait for a running benchmark.

The lock is an flock on a file in the machine's temporary folder, released by the kernel when
its holder dies; a second file is a turnstile, so that a waiting benchmark is not starved by the
steps of other tasks that keep taking the shared lock. It is taken by polling, so that a stop or time limit (an exception raised in
the flow's thread, flows/stopping.py) still reaches a task that waits.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import tempfile
import time

POLL_SECONDS = 0.2


def lock_path(device: str) -> str:
    """The lock file of a compute device (`cpu`, `cuda:0`) on this machine."""
    folder = os.environ.get("ACCELFLOW_LOCK_DIR") or tempfile.gettempdir()
    return os.path.join(folder, f"accelflow-{re.sub(r'[^A-Za-z0-9]+', '-', device)}.lock")


@contextlib.contextmanager
def holding(device: str, exclusive: bool, on_wait=None):
    """Hold the device's lock (exclusive for a benchmark); `on_wait()` is called once if it must wait."""
    path = lock_path(device)
    turnstile, lock = (os.open(p, os.O_RDWR | os.O_CREAT, 0o666) for p in (path + ".turn", path))
    try:
        waited = _acquire(turnstile, exclusive, on_wait)
        _acquire(lock, exclusive, None if waited else on_wait)
        if not exclusive:  # steps only pass through; a benchmark keeps it until done
            fcntl.flock(turnstile, fcntl.LOCK_UN)
        yield
    finally:
        os.close(lock)  # closing releases
        os.close(turnstile)


def _acquire(fd: int, exclusive: bool, on_wait) -> bool:
    """Take the flock; whether it had to wait."""
    mode = fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH
    waited = False
    while True:
        try:
            fcntl.flock(fd, mode | fcntl.LOCK_NB)
            return waited
        except BlockingIOError:
            if not waited and on_wait:
                on_wait()
            waited = True
            time.sleep(POLL_SECONDS)
