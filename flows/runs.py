"""The flows' view of Prefect's run records: a client, and what a flow needs to ask of it."""

from __future__ import annotations

import uuid

TASK_FLOW = "optimize"
BATCH_FLOW = "optimize-batch"
RESULT_ARTIFACT = "accelflow-result"


def client():
    from accelflow.flows.embedded import ensure_started
    from prefect.client.orchestration import get_client

    ensure_started()
    return get_client(sync_client=True)


def run_has_ended(run_id: str) -> bool:
    """Whether a flow run is over (a final state) or unknown to the server."""
    try:
        with client() as c:
            run = c.read_flow_run(uuid.UUID(run_id))
    except Exception:  # noqa: BLE001 - ObjectNotFound or a malformed id: nobody is writing for it
        return True
    return bool(run.state and run.state.is_final())
