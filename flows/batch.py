"""Requests for several model versions: a parent flow run over one child run per version.

Inline, the parent runs its children one after another as subflows; submitted, it creates
each child on the server's deployment for the child's machine type and returns at once.
Either way the children are linked to the parent (the Prefect UI shows them on its page)
and the parent keeps a summary table of them.
"""

from __future__ import annotations

from accelflow.core.errors import AccelflowError
from accelflow.flows import batch_table
from accelflow.flows.optimize import optimize
from accelflow.flows.progress import quietly
from accelflow.flows.request import OptimizeRequest
from prefect import flow, tags

TASK_DEPLOYMENT = "optimize/{device}"


class SubmitError(AccelflowError):
    """No server to submit to, or no deployment for the requested machine type."""


def deployment_name(device: str) -> str:
    return TASK_DEPLOYMENT.format(device=device)


@flow(name="optimize-batch", persist_result=False)
def optimize_batch(requests: list[OptimizeRequest], submit: bool = False, work_queue: str | None = None) -> list[dict]:
    from prefect.runtime import flow_run

    batch_table.create_table([r.name for r in requests])  # its tasks keep it current as they end
    children = [_submit_one(r, work_queue) if submit else _run_inline(r) for r in requests]
    quietly(lambda: batch_table.refresh_parent(flow_run.get_id()))
    return _outcome(children, submit)


def _outcome(children: list[dict], submitted: bool):
    """The parent's final state, named for the runs list: its tasks are its own runs."""
    from prefect.states import Completed

    if submitted:
        return Completed(name=f"Submitted {len(children)} tasks", data=children,
                         message="each task is a run of its own; how they end: this run's Artifacts tab")
    done = sum(bool(c.get("result_uri")) for c in children)
    return Completed(name=f"{done} of {len(children)} accelerated", data=children)


def _run_inline(request: OptimizeRequest) -> dict:
    with tags(*request.tags):
        state = optimize.with_options(flow_run_name=request.name)(request=request, return_state=True)
    row = {"name": request.name, "id": str(state.state_details.flow_run_id), "state": state.name}
    if state.is_completed():
        row.update(state.result(raise_on_failure=False) or {})
    else:
        row["reason"] = state.message or ""
    return row


def _submit_one(request: OptimizeRequest, work_queue: str | None = None) -> dict:
    from prefect.deployments import run_deployment

    run = run_deployment(deployment_name(request.device), parameters={"request": request.model_dump(mode="json")},
                         flow_run_name=request.name, tags=request.tags, timeout=0,
                         work_queue_name=work_queue)
    return {"name": run.name, "id": str(run.id), "state": run.state.name if run.state else "Scheduled"}


def submit(requests: list[OptimizeRequest], batch_name: str, work_queue: str | None = None) -> list[dict]:
    """Create the tasks on the server (in `work_queue` of their pools, if given) and return at
    once with their names and ids."""
    if len(requests) == 1:
        return [_submit_one(requests[0], work_queue)]
    return optimize_batch.with_options(flow_run_name=batch_name)(requests=requests, submit=True,
                                                                  work_queue=work_queue)


def check_server(requests: list[OptimizeRequest]) -> None:
    from accelflow.flows.runs import client
    from prefect.settings import PREFECT_API_URL

    url = PREFECT_API_URL.value()
    if not url:
        raise SubmitError(
            "--submit needs a running server: start one with `accelflow server` and set the "
            "PREFECT_API_URL it prints (export PREFECT_API_URL=http://127.0.0.1:4200/api)."
        )
    with client() as c:
        for device in sorted({r.device for r in requests}):
            try:
                c.read_deployment_by_name(deployment_name(device))
            except Exception as exc:  # noqa: BLE001 - ObjectNotFound, or the server is down
                raise SubmitError(
                    f"the server at {url} has no deployment for machine type {device!r} "
                    f"({deployment_name(device)}): {_why(exc)}. Serve it with `accelflow server` on a "
                    f"{device} machine, or `prefect deploy` its entry in prefect.yaml."
                ) from exc


def _why(exc: Exception) -> str:
    return "not found" if type(exc).__name__ == "ObjectNotFound" else f"{type(exc).__name__}: {exc}"


__all__ = ["optimize_batch", "submit", "check_server", "deployment_name", "SubmitError"]
