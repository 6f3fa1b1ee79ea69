"""The "tasks of this request" table on a batch parent's page, kept current by its tasks.

A submitted batch parent ends as soon as its children are created, so it cannot wait to
record how they end. Instead each child, once its own state is final (a Prefect state hook),
recomputes the whole table from the server and writes it over the parent's artifact. Each
writer reads the server after its own state is final, and re-reads after writing: if a sibling
ended in between, it writes again, so the last write always sees every ended sibling.
"""

from __future__ import annotations

import json
import uuid

from accelflow.flows.progress import quietly
from accelflow.flows.runs import artifact_key, client, first_row, is_result_key

COLUMNS = ("name", "state", "speedup", "engine", "precision", "reason")
DESCRIPTION = "tasks of this request"


def create_table(names: list[str]) -> None:
    """In the parent, before its children start: one row per task, all waiting."""
    from prefect.artifacts import create_table_artifact
    from prefect.runtime import flow_run

    rows = [dict.fromkeys(COLUMNS, "") | {"name": n, "state": "Scheduled"} for n in names]
    key = artifact_key("tasks", flow_run.get_name() or "request", flow_run.get_id())
    quietly(lambda: create_table_artifact(rows, key=key, description=DESCRIPTION))


def refresh_parent_table(flow, flow_run, state) -> None:
    """Flow-run state hook of a task: rewrite its batch parent's table, if it has a parent."""
    quietly(lambda: refresh(flow_run.id))


def refresh(child_id) -> None:
    with client() as c:
        parent_id = parent_of(c, child_id)
    if parent_id is not None:
        refresh_parent(parent_id)


def refresh_parent(parent_id) -> None:
    with client() as c:
        for _ in range(5):
            rows = children_rows(c, parent_id)
            write_table(c, parent_id, rows)
            if children_rows(c, parent_id) == rows:
                return


def parent_of(c, run_id) -> uuid.UUID | None:
    """The flow run that created this one (as a subflow or through run_deployment)."""
    run = c.read_flow_run(run_id)
    if run.parent_task_run_id is None:
        return None
    return c.read_task_run(run.parent_task_run_id).flow_run_id


def children_rows(c, parent_id) -> list[dict]:
    """One row per child of the parent, from the server: state, its message, the speed-up."""
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterParentFlowRunId
    from prefect.client.schemas.sorting import FlowRunSort

    children = c.read_flow_runs(
        flow_run_filter=FlowRunFilter(parent_flow_run_id=FlowRunFilterParentFlowRunId(any_=[parent_id])),
        sort=FlowRunSort.NAME_ASC)
    results = _results(c, [r.id for r in children])
    return [_row(run, results.get(str(run.id), {})) for run in children]


def _row(run, result: dict) -> dict:
    """Narrow enough for the UI's table: the speed-up rounded, a reason only for tasks that did not finish."""
    state = run.state
    speedup = result.get("speedup")
    ended_badly = state is not None and state.is_final() and not state.is_completed()
    return {"name": run.name, "state": state.name if state else "Scheduled",
            "speedup": round(speedup, 2) if isinstance(speedup, (int, float)) else "",
            "engine": result.get("engine", ""), "precision": result.get("precision", ""),
            "reason": (state.message or "") if ended_badly else ""}


def _results(c, run_ids: list) -> dict[str, dict]:
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId, ArtifactFilterType

    if not run_ids:
        return {}
    artifacts = c.read_artifacts(artifact_filter=ArtifactFilter(
        flow_run_id=ArtifactFilterFlowRunId(any_=run_ids), type=ArtifactFilterType(any_=["table"])))
    results = {}
    for a in artifacts:
        if is_result_key(a.key) and a.data:
            results[str(a.flow_run_id)] = first_row(a.data)
    return results


def write_table(c, parent_id, rows: list[dict]) -> None:
    """Overwrite the parent's table (or create it, should a child end before the parent wrote it)."""
    from prefect.client.schemas.actions import ArtifactCreate, ArtifactUpdate
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId, ArtifactFilterKey

    parent = c.read_flow_run(parent_id)
    key = artifact_key("tasks", parent.name, parent.id)
    found = c.read_artifacts(artifact_filter=ArtifactFilter(
        flow_run_id=ArtifactFilterFlowRunId(any_=[parent_id]), key=ArtifactFilterKey(any_=[key])))
    data = json.dumps(rows)
    if found:
        c.update_artifact(found[0].id, ArtifactUpdate(data=data))
    else:
        c.create_artifact(ArtifactCreate(key=key, type="table", data=data, description=DESCRIPTION,
                                         flow_run_id=parent_id))


HOOKS = {name: [refresh_parent_table] for name in ("on_completion", "on_failure", "on_cancellation", "on_crashed")}
