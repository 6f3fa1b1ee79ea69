"""Retrying repository work through transient storage failures, with exponential backoff.

An object store that drops out for a moment (a restart, a network blip) must not fail a save
or a fetch; one that stays away must fail it in bounded time with a clear message. Each S3
call has short timeouts (tasks.repository), and the whole operation is retried here:
`ACCELFLOW_STORAGE_RETRIES` attempts (default 4), waiting 2, 4, 8 ... seconds between them
(`ACCELFLOW_STORAGE_BACKOFF` sets the first wait).
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
from typing import Callable, TypeVar

T = TypeVar("T")


def _transient_types() -> tuple[type[BaseException], ...]:
    types: list[type[BaseException]] = [ConnectionError, TimeoutError, asyncio.TimeoutError]
    try:
        from botocore.exceptions import (
            ConnectionClosedError,
            ConnectTimeoutError,
            EndpointConnectionError,
            ReadTimeoutError,
        )

        types += [ConnectionClosedError, ConnectTimeoutError, EndpointConnectionError, ReadTimeoutError]
    except ImportError:
        pass
    try:
        import aiohttp

        types += [aiohttp.ClientConnectionError, aiohttp.ServerTimeoutError]
    except ImportError:
        pass
    return tuple(types)


def is_transient(exc: BaseException) -> bool:
    """True when the error, or one it was raised from, means "storage unreachable", not "no"."""
    types, seen = _transient_types(), set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, types) or type(exc).__name__ in ("FSTimeoutError", "ServerDisconnectedError"):
            return True
        exc = exc.__cause__ or exc.__context__
    return False


def with_retries(action: Callable[[], T], what: str, before_retry: Callable[[], T | None] | None = None) -> T:
    """`action()`, again after a transient storage failure, up to the configured attempts.

    `before_retry()` may return the result when the failed attempt had in fact completed (its
    answer lost on the way back); then that result is returned instead of trying again.
    """
    attempts = max(1, int(os.environ.get("ACCELFLOW_STORAGE_RETRIES", "4")))
    delay = float(os.environ.get("ACCELFLOW_STORAGE_BACKOFF", "2"))
    for attempt in range(1, attempts + 1):
        try:
            if attempt > 1 and before_retry is not None:
                done = before_retry()
                if done is not None:
                    return done
            return action()
        except Exception as exc:
            if attempt == attempts or not is_transient(exc):
                raise
            print(f"storage unreachable while trying to {what} ({type(exc).__name__}); "
                  f"retrying in {delay:g} s (attempt {attempt + 1} of {attempts})", file=sys.stderr, flush=True)
            time.sleep(delay)
            delay *= 2
    raise AssertionError("unreachable")
