"""How a task ends when the user's input is at fault: Failed, with the reason as the state's message.

Left to Prefect, a user error (an AccelflowError: a wrong tensor name, a missing model) ends the run
"Failed" with "Flow run encountered an exception: ...", and the run's logs show it twice under
a traceback with the worker's file paths: once for the step that raised it (the task engine's
"Task run failed with exception") and once for the flow. The error's own message already says what
was wrong and how to fix it, so that is what the state and the logs show: the flow returns a Failed
state whose message is the reason (Prefect records a returned state as the run's final state, and
still raises the error to a caller asking for the result), and a filter on Prefect's run loggers
turns each record of a user error into one line, the reason, without a traceback. Anything else is
a bug: it propagates as before and its records keep their tracebacks. At DEBUG level (PREFECT_LOGGING_LEVEL=DEBUG)
user errors keep theirs too.
"""

from __future__ import annotations

import logging
from typing import Any, Callable

from accelflow.core.errors import AccelflowError

# The loggers of Prefect's task and flow engines (prefect.logging.loggers task_run_logger, flow_run_logger).
RUN_LOGGERS = ("prefect.task_runs", "prefect.flow_runs")
_LOGGED = "_accelflow_logged"  # set on an error once a run logger wrote its line


class UserErrorRecords(logging.Filter):
    """The first record carrying an AccelflowError becomes its reason alone, without the traceback,
    and later ones for the same error are dropped; the failed step's "Finished in state Failed(...)"
    line after it is INFO, like the flow's own, so that the reason is the run's one ERROR line."""

    def __init__(self):
        super().__init__()
        self._failed_steps: set = set()  # task runs whose user error was just logged

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if isinstance(record.exc_info, tuple) else None
        step = getattr(record, "task_run_id", None)
        if not isinstance(exc, AccelflowError):
            if step in self._failed_steps and str(record.msg).startswith("Finished in state"):
                self._failed_steps.discard(step)
                record.levelno, record.levelname = logging.INFO, logging.getLevelName(logging.INFO)
            return True
        debug = logging.getLogger(record.name).isEnabledFor(logging.DEBUG)
        if getattr(exc, _LOGGED, False) and not debug:
            return False  # said once already; a runner's engine re-raising it at the end adds nothing
        setattr(exc, _LOGGED, True)
        if step is not None:
            self._failed_steps.add(step)
        if not debug:
            record.msg, record.args = str(exc), ()
            record.exc_info, record.exc_text = None, None
        return True


def install_log_filter() -> None:
    """Put the filter on Prefect's run loggers, once per process (a runner's run, an inline call)."""
    for name in RUN_LOGGERS:
        logger = logging.getLogger(name)
        if not any(isinstance(f, UserErrorRecords) for f in logger.filters):
            logger.addFilter(UserErrorRecords())


def failing_with_reason(body: Callable[..., Any], *args: Any) -> Any:
    """`body(*args)` inside a flow; a user error it raises becomes the run's Failed state."""
    from prefect.logging import get_run_logger
    from prefect.states import Failed

    install_log_filter()
    try:
        return body(*args)
    except AccelflowError as exc:
        if not getattr(exc, _LOGGED, False):  # raised by the flow itself, not by a step that logged it
            get_run_logger().error("%s", exc, exc_info=exc)
        # The UI shows a state's name in the runs list and the run's header: there, the reason's title.
        return Failed(name=f"Failed: {exc.title}", message=str(exc), data=exc)
