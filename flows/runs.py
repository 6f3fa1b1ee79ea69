"""The flows' view of Prefect's run records: a client, and what a flow needs to ask of it."""

from __future__ import annotations

import re
import uuid

TASK_FLOW = "optimize"
BATCH_FLOW = "optimize-batch"
RESULT_ARTIFACT = "accelflow-result"  # the key every task used before keys were per task


def artifact_key(kind: str, run_name: str, run_id) -> str:
    """A key of its own per task and kind (`bert-v1-fp16-report-1a2b3c4d`), so that the UI's
    Artifacts page lists every task's artifacts (it shows the latest artifact per key)."""
    slug = re.sub(r"[^a-z0-9]+", "-", (run_name or "").lower()).strip("-")[:60].strip("-") or "task"
    return f"{slug}-{kind}-{str(run_id)[:8]}"


def first_row(data) -> dict:
    """The one row of a result table artifact, whose data is JSON text (or already parsed)."""
    import json

    rows = json.loads(data) if isinstance(data, str) else data
    return rows[0] if rows else {}


def is_result_key(key: str | None) -> bool:
    return bool(key) and (key == RESULT_ARTIFACT or re.fullmatch(r".+-result-[0-9a-f]{8}", key) is not None)


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
