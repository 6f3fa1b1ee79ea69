"""What a user does to a task: details, stop, save, re-accelerate, delete, tag."""

from __future__ import annotations

from typing import TYPE_CHECKING, NamedTuple

from accelflow.flows.service.tasklist import (
    ACTIVE,
    BATCH_FLOW,
    TaskError,
    client,
    find_task,
    state_word,
    task_result,
    user_state,
    wait_until_final,
)

if TYPE_CHECKING:
    from accelflow.flows.request import OptimizeRequest

STOP_TIMEOUT = 30.0
RETRY_TAG = "retry-of:"


def show_task(ref: str) -> dict:
    """Every setting, the state history, the report (or the failure reason), and batch children."""
    with client() as c:
        run = find_task(c, ref)
        history = [{"time": s.timestamp.isoformat(timespec="seconds"), "state": state_word(s), "prefect_state": s.name,
                    "message": s.message or ""}
                   for s in sorted(c.read_flow_run_states(run.id), key=lambda s: s.timestamp)]
        result = task_result(c, run)
        details = {
            "id": str(run.id), "name": run.name, "state": user_state(run), "prefect_state": run.state.name,
            "tags": list(run.tags), "created": run.created.isoformat(timespec="seconds"),
            "retry_of": retry_of(run.tags),
            "settings": run.parameters.get("request") or run.parameters, "history": history,
            "result": result, "report": _read_report(result),
        }
        if details["state"] == "failed":
            details["reason"] = run.state.message or ""
        if c.read_flow(run.flow_id).name == BATCH_FLOW:
            details["children"] = _children(c, run)
    return details


def _read_report(result: dict) -> dict | None:
    """The report from the result's URI; None (with the reason in `result`) when unreadable."""
    from accelflow.tasks.publish import ResultError, read_report

    uri = result.get("result_uri") or result.get("result_folder")
    if not uri:
        return None
    try:
        return read_report(uri)
    except ResultError as exc:
        result["unreadable"] = str(exc) + _elsewhere(uri, result.get("host"))
        return None


def _elsewhere(uri: str, host: str | None) -> str:
    import platform

    from accelflow.storage.store import is_remote

    if is_remote(uri) or not host or host == platform.node():
        return ""
    return (f" It was written to the disk of {host}, not this machine: give tasks shared storage "
            "(--output s3://..., or the server's results location) to read them from anywhere.")


def _children(c, run) -> list[dict]:
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterParentFlowRunId

    children = c.read_flow_runs(flow_run_filter=FlowRunFilter(parent_flow_run_id=FlowRunFilterParentFlowRunId(any_=[run.id])))
    return [{"id": str(r.id), "name": r.name, "state": user_state(r)} for r in sorted(children, key=lambda r: r.name)]


def stop_task(ref: str, timeout: float = STOP_TIMEOUT) -> dict:
    """Ask a starting or accelerating task to stop and wait until it has (Cancelled)."""
    from prefect.states import Cancelled, Cancelling

    with client() as c:
        run = find_task(c, ref)
        state = user_state(run)
        if state not in ACTIVE:
            raise TaskError(f"task {run.name!r} is {state}; only starting or accelerating tasks can be stopped.")
        if run.state.type.value in ("SCHEDULED", "PAUSED"):  # nothing runs yet: cancel outright
            c.set_flow_run_state(run.id, Cancelled(message="stopped by the user before it started"), force=True)
        else:
            c.set_flow_run_state(run.id, Cancelling(message="stop requested by the user"), force=True)
        run = wait_until_final(c, run.id, timeout)
    return {"id": str(run.id), "name": run.name, "state": user_state(run), "prefect_state": run.state.name}


def tag_task(ref: str, add: list[str], remove: list[str]) -> list[str]:
    with client() as c:
        run = find_task(c, ref)
        tags = [t for t in run.tags if t not in remove] + [t for t in add if t not in run.tags]
        c.update_flow_run(run.id, tags=tags)
    return tags


def delete_task(ref: str, force: bool = False, keep_files: bool = False) -> dict:
    """Remove a task and its result; never a copy saved to the repository. The result is
    removed only where its manifest names this task's run and it lies under a trusted
    results location (publish.delete): the URI comes from an artifact anyone could write."""
    from accelflow.flows.request import server_results_location
    from accelflow.tasks.publish import delete, trusted_roots

    with client() as c:
        run = find_task(c, ref)
        if user_state(run) in ACTIVE:
            if not force:
                raise TaskError(f"task {run.name!r} is {user_state(run)}; stop it first or pass --force.")
            stop_task(str(run.id))
        result = task_result(c, run)
        uri = result.get("result_uri") or result.get("result_folder")
        removed = [] if keep_files or not uri else delete(uri, str(run.id), trusted_roots([server_results_location()]))
        c.delete_flow_run(run.id)
    return {"id": str(run.id), "name": run.name, "removed": uri if removed else None, "files": len(removed)}


def save_task_to_repository(ref: str):
    from accelflow.tasks.save import save_task

    with client() as c:
        run = find_task(c, ref)
        if user_state(run) != "accelerated":
            raise TaskError(f"task {run.name!r} is {user_state(run)}; only accelerated tasks can be saved.")
        result = task_result(c, run)
    if not (result.get("result_uri") or result.get("result_folder")):
        raise TaskError(f"task {run.name!r} recorded no result; re-accelerate it to save it.")
    return save_task(str(run.id), run.name, run.parameters["request"], result)


class Retry(NamedTuple):
    request: OptimizeRequest  # the retried task's, edited and renamed; tagged retry-of:ID
    deployed: bool  # the retried task ran on a deployment: so does its retry
    work_queue: str | None  # the retried task's work queue (resource group)


def retry_request(ref: str, edits: dict) -> Retry:
    """The retried task's request with `edits` applied, named after it, tagged with its id
    (RETRY_TAG: the lineage is the run's, shown as a tag in the UI and by `tasks show`)."""
    from accelflow.flows.request import OptimizeRequest

    with client() as c:
        run = find_task(c, ref)
        if user_state(run) not in ("failed", "stopped"):
            raise TaskError(f"task {run.name!r} is {user_state(run)}; only failed or stopped tasks can be re-accelerated.")
        if c.read_flow(run.flow_id).name == BATCH_FLOW:
            raise TaskError(f"{run.name!r} is a request of several tasks; re-accelerate its tasks one by one.")
        original = OptimizeRequest.model_validate(run.parameters["request"])
        name = edits.pop("name", None) or _retry_name(c, run.name)
    tags = [t for t in edits.pop("tags", None) or original.tags if not t.startswith(RETRY_TAG)]
    request = original.model_copy(update={**edits, "name": name, "tags": [*tags, RETRY_TAG + str(run.id)]})
    return Retry(request, run.deployment_id is not None, run.work_queue_name if run.deployment_id else None)


def retry_of(tags: list[str]) -> str | None:
    """The id of the task a retry re-accelerates, from its tag."""
    return next((t.removeprefix(RETRY_TAG) for t in tags if t.startswith(RETRY_TAG)), None)


def _retry_name(c, name: str) -> str:
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterName

    base = name.split("-retry")[0]
    taken = {r.name for r in c.read_flow_runs(flow_run_filter=FlowRunFilter(name=FlowRunFilterName(like_=f"{base}-retry")))}
    n = 1
    while f"{base}-retry{n}" in taken:
        n += 1
    return f"{base}-retry{n}"
