"""The task list (SPEC 1): optimization flow runs on the Prefect server, in the user's words.

A task is a flow run of the `optimize` flow; a request for several model versions also has a
parent run of `optimize-batch`. Everything here talks to the server named by PREFECT_API_URL
(or Prefect's embedded default) through Prefect's own client.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import asdict, dataclass, field
from typing import Any

from formats.errors import AccelflowError

TASK_FLOW = "optimize"
BATCH_FLOW = "optimize-batch"
RESULT_ARTIFACT = "accelflow-result"

USER_STATES = {
    "SCHEDULED": "starting", "PENDING": "starting", "PAUSED": "starting",
    "RUNNING": "accelerating",
    "COMPLETED": "accelerated",
    "FAILED": "failed", "CRASHED": "failed",
    "CANCELLING": "stopped", "CANCELLED": "stopped",
}
ACTIVE = ("starting", "accelerating")


class TaskError(AccelflowError):
    """A task that does not exist, is ambiguous, or is in the wrong state for the operation."""


@dataclass
class TaskRow:
    id: str
    name: str
    state: str
    progress: float
    speedup: float | None
    level: str
    device: str
    created: str
    tags: list[str] = field(default_factory=list)
    prefect_state: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def state_word(state) -> str:
    """A Prefect state in the user's words (SPEC 1 table)."""
    return USER_STATES.get(state.type.value, "starting") if state else "starting"


def user_state(flow_run) -> str:
    return state_word(flow_run.state)


def client():
    from prefect.client.orchestration import get_client

    return get_client(sync_client=True)


def _flow_filter(names=(TASK_FLOW, BATCH_FLOW)):
    from prefect.client.schemas.filters import FlowFilter, FlowFilterName

    return FlowFilter(name=FlowFilterName(any_=list(names)))


def find_task(c, ref: str):
    """A flow run by id or by name; an unknown or ambiguous name is an error listing candidates."""
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterName

    try:
        return c.read_flow_run(uuid.UUID(ref))
    except ValueError:
        pass
    except Exception as exc:  # noqa: BLE001 - Prefect raises ObjectNotFound for unknown ids
        raise TaskError(f"no task with id {ref}; see: accelflow tasks list") from exc
    runs = c.read_flow_runs(flow_filter=_flow_filter(), flow_run_filter=FlowRunFilter(name=FlowRunFilterName(any_=[ref])))
    if not runs:
        raise TaskError(f"no task named {ref!r}; see: accelflow tasks list")
    if len(runs) > 1:
        listing = "\n  ".join(f"{r.id}  {user_state(r):12} created {r.created:%Y-%m-%d %H:%M:%S}" for r in runs)
        raise TaskError(f"{len(runs)} tasks are named {ref!r}; give one of their ids:\n  {listing}")
    return runs[0]


def list_tasks(state: str | None = None, tag: str | None = None, limit: int = 200) -> list[TaskRow]:
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterTags
    from prefect.client.schemas.sorting import FlowRunSort

    run_filter = FlowRunFilter(tags=FlowRunFilterTags(all_=[tag])) if tag else None
    with client() as c:  # batch parents are not tasks: `tasks show NAME` summarises one
        runs = c.read_flow_runs(flow_filter=_flow_filter([TASK_FLOW]), flow_run_filter=run_filter,
                                sort=FlowRunSort.EXPECTED_START_TIME_DESC, limit=limit)
        facts = _artifact_facts(c, [r.id for r in runs])
    rows = [_row(r, facts.get(r.id, {})) for r in runs]
    return [r for r in rows if state is None or r.state == state]


def _row(run, facts: dict) -> TaskRow:
    request = run.parameters.get("request") or {}
    state = user_state(run)
    progress = 100.0 if state == "accelerated" else float(facts.get("progress", 0.0))
    return TaskRow(
        id=str(run.id), name=run.name, state=state, progress=round(progress, 1),
        speedup=facts.get("result", {}).get("speedup"), level=request.get("level", ""),
        device=request.get("device", ""), created=run.created.isoformat(timespec="seconds") if run.created else "",
        tags=list(run.tags), prefect_state=run.state.name if run.state else "",
    )


def _artifact_facts(c, run_ids: list) -> dict:
    """Latest progress and result per flow run, in one query."""
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId, ArtifactFilterType

    if not run_ids:
        return {}
    artifacts = c.read_artifacts(artifact_filter=ArtifactFilter(
        flow_run_id=ArtifactFilterFlowRunId(any_=run_ids), type=ArtifactFilterType(any_=["progress", "table"])))
    facts: dict = {}
    for a in artifacts:
        entry = facts.setdefault(a.flow_run_id, {})
        if a.type == "progress":
            entry["progress"] = float(a.data or 0.0)
        elif a.key == RESULT_ARTIFACT and a.data:
            entry["result"] = _first_row(a.data)
    return facts


def _first_row(data) -> dict:
    import json

    rows = json.loads(data) if isinstance(data, str) else data
    return rows[0] if rows else {}


def task_result(c, run) -> dict:
    """The result a finished task recorded (result folder, report path, speed-up), or {}."""
    return _artifact_facts(c, [run.id]).get(run.id, {}).get("result", {})


def wait_until_final(c, run_id, timeout: float) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        run = c.read_flow_run(run_id)
        if run.state and run.state.is_final():
            return run
        if time.monotonic() > deadline:
            return run
        time.sleep(0.5)
