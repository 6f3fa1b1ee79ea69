"""A task's run is named like its task, however it was created.

The rule: a task's name is its request's `name` if given, else MODEL-LEVEL (check_request).
The CLI and run_deployment callers name the run so already. A run created from the Prefect
UI's run form gets the random name the form prefills (a name the user types there is not told
apart from it), so the flow renames its run to the task name when it starts; to name a task
from the UI, fill the form's Name field. Its result folder and report carry the same name.
"""

from __future__ import annotations

from accelflow.flows.progress import quietly


def name_run_after_task(name: str) -> None:
    """Rename this flow run to `name` if it is named otherwise (a no-op outside a flow run)."""
    from prefect.context import FlowRunContext

    context = FlowRunContext.get()
    run = context.flow_run if context else None
    if run is None or run.name == name:
        return

    def rename() -> None:
        from accelflow.flows.runs import client

        with client() as c:
            c.update_flow_run(run.id, name=name)
        run.name = name  # prefect.runtime.flow_run.name reads it

    quietly(rename)  # the name is for the list; a failure to rename must not fail the task
