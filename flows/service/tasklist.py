"""The task list: optimization flow runs on the Prefect server, in the user's words.

A task is a flow run of the `optimize` flow; a request for several model versions also has a
parent run of `optimize-batch`. Everything here talks to the server named by PREFECT_API_URL
(or Prefect's embedded default) through Prefect's own client; `tasks list` asks the REST API
directly when PREFECT_API_URL names a server without auth, to answer fast.
"""

from __future__ import annotations

import os
import time
import uuid
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any

from accelflow.core.errors import AccelflowError
from accelflow.flows.runs import BATCH_FLOW, RESULT_ARTIFACT, TASK_FLOW, client, first_row, is_result_key  # noqa: F401  (re-exported)

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
    """A Prefect state in the user's words (README, 'Tasks on a server')."""
    return USER_STATES.get(state.type.value, "starting") if state else "starting"


def user_state(flow_run) -> str:
    return state_word(flow_run.state)


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
    api = os.environ.get("PREFECT_API_URL")
    plain = api and not (os.environ.get("PREFECT_API_KEY") or os.environ.get("PREFECT_API_AUTH_STRING"))
    runs, artifacts = _rest_listing(api, tag, limit) if plain else _client_listing(tag, limit)
    facts = _facts(artifacts)
    rows = [_row(r, facts.get(r["id"], {})) for r in runs]
    return [r for r in rows if state is None or r.state == state]


def _client_listing(tag: str | None, limit: int) -> tuple[list[dict], list[dict]]:
    """Runs and their artifacts through Prefect's client (any profile, auth or embedded server)."""
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterTags
    from prefect.client.schemas.sorting import FlowRunSort

    run_filter = FlowRunFilter(tags=FlowRunFilterTags(all_=[tag])) if tag else None
    with client() as c:  # batch parents are not tasks: `tasks show NAME` summarises one
        runs = c.read_flow_runs(flow_filter=_flow_filter([TASK_FLOW]), flow_run_filter=run_filter,
                                sort=FlowRunSort.EXPECTED_START_TIME_DESC, limit=limit)
        artifacts = _read_artifacts(c, [r.id for r in runs])
    return [r.model_dump(mode="json") for r in runs], [a.model_dump(mode="json") for a in artifacts]


def _rest_listing(api: str, tag: str | None, limit: int) -> tuple[list[dict], list[dict]]:
    """The same two queries on Prefect's REST API, without importing Prefect: its import alone
    takes 1.4 s of CPU, which made `tasks list` slow on a busy machine."""
    import httpx

    body: dict = {"flows": {"name": {"any_": [TASK_FLOW]}}, "sort": "EXPECTED_START_TIME_DESC", "limit": limit}
    if tag:
        body["flow_runs"] = {"tags": {"all_": [tag]}}
    try:
        with httpx.Client(base_url=api.rstrip("/") + "/", timeout=30) as http:
            runs = http.post("flow_runs/filter", json=body).raise_for_status().json()
            ids = [r["id"] for r in runs]
            query = {"artifacts": {"flow_run_id": {"any_": ids}, "type": {"any_": ["progress", "table"]}}}
            artifacts = http.post("artifacts/filter", json=query).raise_for_status().json() if ids else []
    except httpx.HTTPError as exc:
        raise TaskError(f"cannot list tasks from the Prefect server at {api} ({exc}). Start it with "
                        "`accelflow server`, or set PREFECT_API_URL to the one you use.") from exc
    return runs, artifacts


def _row(run: dict, facts: dict) -> TaskRow:
    """A task-list row from a flow run as the API gives it (JSON)."""
    request = (run.get("parameters") or {}).get("request") or {}
    prefect_state = run.get("state") or {}
    state = USER_STATES.get(prefect_state.get("type", ""), "starting")
    progress = 100.0 if state == "accelerated" else float(facts.get("progress", 0.0))
    created = datetime.fromisoformat(run["created"]).isoformat(timespec="seconds") if run.get("created") else ""
    return TaskRow(
        id=run["id"], name=run["name"], state=state, progress=round(progress, 1),
        speedup=facts.get("result", {}).get("speedup"), level=request.get("level", ""),
        device=request.get("device", ""), created=created, tags=list(run.get("tags") or []),
        prefect_state=prefect_state.get("name", ""),
    )


def _read_artifacts(c, run_ids: list) -> list:
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId, ArtifactFilterType

    if not run_ids:
        return []
    return c.read_artifacts(artifact_filter=ArtifactFilter(
        flow_run_id=ArtifactFilterFlowRunId(any_=run_ids), type=ArtifactFilterType(any_=["progress", "table"])))


def _facts(artifacts: list[dict]) -> dict:
    """Latest progress and result per flow run id (a string), from artifacts as JSON."""
    facts: dict = {}
    for a in artifacts:
        entry = facts.setdefault(str(a["flow_run_id"]), {})
        if a["type"] == "progress":
            entry["progress"] = float(a.get("data") or 0.0)
        elif is_result_key(a.get("key")) and a.get("data"):
            entry["result"] = first_row(a["data"])
    return facts


def task_result(c, run) -> dict:
    """The result a finished task recorded (result folder, report path, speed-up), or {}."""
    artifacts = [a.model_dump(mode="json") for a in _read_artifacts(c, [run.id])]
    return _facts(artifacts).get(str(run.id), {}).get("result", {})


def wait_until_final(c, run_id, timeout: float) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        run = c.read_flow_run(run_id)
        if run.state and run.state.is_final():
            return run
        if time.monotonic() > deadline:
            return run
        time.sleep(0.5)
