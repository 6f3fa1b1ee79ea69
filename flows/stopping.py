"""Stopping a running task (`accelflow tasks stop`) for inline runs and runner-executed runs alike.

`accelflow tasks stop` puts the flow run in Cancelling. A runner kills its subprocess on its
own; an inline run (a flow called in the user's process) is not killed by anybody, so each
flow run watches its own state and, when it turns Cancelling, raises StopRequested in the
thread running the flow. The flow then removes its partial output and ends Cancelled.
"""

from __future__ import annotations

import contextlib
import ctypes
import threading
import time


class StopRequested(BaseException):
    """Raised inside a running flow when the user asked to stop it (a BaseException so that
    no `except Exception` on the way swallows it)."""


class TimeLimitReached(BaseException):
    """Raised inside a running flow when its --time-limit has passed."""


class StopWatcher:
    """Polls a flow run's state every `interval` seconds while the `with` block runs, and
    ends the block once `time_limit` seconds have passed."""

    def __init__(self, flow_run_id, interval: float = 1.0, time_limit: float | None = None):
        self.flow_run_id = flow_run_id
        self.interval = interval
        self.deadline = time.monotonic() + time_limit if time_limit else None
        self.requested = False
        self.timed_out = False
        self._done = threading.Event()
        self._lock = threading.Lock()
        self._target = threading.get_ident()
        self._thread = threading.Thread(target=self._watch, name="accelflow-stop-watcher", daemon=True)

    def __enter__(self) -> "StopWatcher":
        if self.flow_run_id is not None or self.deadline is not None:
            self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        with self._lock:  # once the block is over, the watcher may no longer raise into it
            self._done.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5)

    def _watch(self) -> None:
        from prefect.client.orchestration import get_client

        # No flow run to watch (a plain function call): only the clock, and no Prefect client.
        with get_client(sync_client=True) if self.flow_run_id is not None else contextlib.nullcontext() as client:
            while not self._done.wait(self.interval):
                if self.deadline is not None and time.monotonic() > self.deadline:
                    self._interrupt("timed_out", TimeLimitReached)
                    return
                if client is not None and _is_cancelling(client, self.flow_run_id):
                    self._interrupt("requested", StopRequested)
                    return

    def _interrupt(self, flag: str, exc_type: type[BaseException]) -> None:
        with self._lock:
            if not self._done.is_set():
                setattr(self, flag, True)
                _raise_in_thread(self._target, exc_type)


def _is_cancelling(client, flow_run_id) -> bool:
    try:
        state = client.read_flow_run(flow_run_id).state
    except Exception:  # noqa: BLE001 - the API may blink; the next poll tries again
        return False
    return state is not None and state.type.value in ("CANCELLING", "CANCELLED")


def _raise_in_thread(thread_id: int, exc_type: type[BaseException]) -> None:
    """Deliver `exc_type` to another thread at its next Python instruction."""
    ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(thread_id), ctypes.py_object(exc_type))
