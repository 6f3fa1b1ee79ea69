"""A failing optimize run on a real Prefect server: its final state and its logs, as the UI shows them.

A user error (a wrong tensor name) ends the run Failed with the error's own message, and the run's
logs hold that reason once per place it surfaced, never under a traceback; an internal error keeps
Prefect's handling and its traceback.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from accelflow.core.errors import ModelMismatchError
from accelflow.flows.optimize import optimize
from accelflow.flows.request import OptimizeRequest
from accelflow.tasks import steps

from tests import modelzoo

FAST = {"draws": 1, "bench_seconds": 0.2}
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.fixture
def onnx_model(tmp_path):
    (tmp_path / "models").mkdir()
    return modelzoo.tiny_cnn_onnx(str(tmp_path / "models"))  # its input is named "image"


def _request(model, out, tensor_info, name):
    return OptimizeRequest(model=model, tensor_info=tensor_info, output=str(out), name=name, **FAST)


def _server_view(flow_run_id):
    """The run's final state and its log messages (the flow's and its steps'), read back from the server."""
    from accelflow.flows.runs import client
    from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId
    from prefect.logging.handlers import APILogHandler

    APILogHandler().flush()  # logs reach the server in batches: send what is queued, and wait
    with client() as c:
        run = c.read_flow_run(flow_run_id)
        logs = c.read_logs(log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=[flow_run_id])))
    return run.state, [(log.level, log.message) for log in logs]


def test_a_wrong_tensor_name_fails_with_the_reason_as_message_and_no_traceback(prefect_server, onnx_model, tmp_path):
    request = _request(onnx_model, tmp_path / "out", ["input:float(1*3*16*16)"], "wrong-name")
    with pytest.raises(ModelMismatchError) as raised:  # a caller asking for the result gets the error
        optimize.with_options(flow_run_name="wrong-name")(request=request)
    reason = str(raised.value)
    assert "names input but the ONNX model's inputs are image" in reason and "image:float(...)" in reason

    state = optimize.with_options(flow_run_name="wrong-name")(request=request, return_state=True)
    assert state.is_failed() and state.message == reason
    recorded, logs = _server_view(state.state_details.flow_run_id)
    assert recorded.type.value == "FAILED" and recorded.message == reason
    assert recorded.name == "Failed: tensor information mismatch"  # the badge in the runs list and header
    errors = [message for level, message in logs if level >= 40]
    assert errors == [reason]  # one line: the step's (convert to ONNX) that raised it
    assert not [m for _, m in logs if "Traceback" in m or ".py\", line" in m], logs
    assert not (tmp_path / "out").exists()


def test_a_user_error_before_any_step_is_logged_once_by_the_flow(prefect_server, tmp_path):
    missing = str(tmp_path / "no-such-model.onnx")
    state = optimize.with_options(flow_run_name="missing")(
        request=_request(missing, tmp_path / "out", ["image:float(1*3*16*16)"], "missing"), return_state=True)
    assert state.is_failed() and state.message.startswith(f"model not found: {missing}")
    recorded, logs = _server_view(state.state_details.flow_run_id)
    assert recorded.message == state.message
    assert [message for level, message in logs if level >= 40] == [state.message]
    assert not [m for _, m in logs if "Traceback" in m]


def test_an_internal_error_keeps_its_traceback(prefect_server, onnx_model, tmp_path, monkeypatch):
    def parse_tensor_info(lines):
        raise KeyError("a bug, not the user's input")

    # A real Prefect task in the real flow, whose body has a bug.
    monkeypatch.setattr(steps, "parse_tensor_info", steps.as_step(parse_tensor_info, "parse tensor information"))
    state = optimize.with_options(flow_run_name="internal")(
        request=_request(onnx_model, tmp_path / "out", ["image:float(1*3*16*16)"], "internal"), return_state=True)
    assert state.is_failed() and "KeyError" in state.message  # Prefect's own message for an exception
    _, logs = _server_view(state.state_details.flow_run_id)
    tracebacks = [m for level, m in logs if level >= 40 and "Traceback (most recent call last)" in m]
    assert len(tracebacks) == 2  # the step's and the flow's
    assert all("a bug, not the user's input" in m for m in tracebacks)
    with pytest.raises(KeyError):
        state.result()


def test_on_a_runner_the_reason_is_logged_once_and_the_run_fails_with_it(prefect_server, onnx_model, tmp_path):
    """As `accelflow server` runs a submitted task: Prefect's engine in a process of its own, which
    re-raises the error at the end ("Engine execution exited with unexpected exception")."""
    from accelflow.flows.service.serve import deployments
    from prefect.deployments import run_deployment
    from prefect.settings import PREFECT_API_URL

    for deployment in deployments():
        deployment.apply()
    request = _request(onnx_model, tmp_path / "out", ["input:float(1*3*16*16)"], "on-runner")
    run = run_deployment("optimize/cpu", parameters={"request": request.model_dump(mode="json")},
                         flow_run_name="on-runner", timeout=0)
    env = dict(os.environ, PREFECT_API_URL=PREFECT_API_URL.value(), PREFECT__FLOW_RUN_ID=str(run.id))
    engine = subprocess.run([sys.executable, "-m", "prefect.engine"], cwd=ROOT, env=env, capture_output=True,
                            text=True, timeout=600)
    assert "Traceback" not in engine.stderr, engine.stderr  # the worker's console too
    recorded, logs = _server_view(run.id)
    assert recorded.type.value == "FAILED"
    assert recorded.message.startswith("tensor information names input but the ONNX model's inputs are image")
    assert [message for level, message in logs if level >= 40] == [recorded.message]
    assert not [m for _, m in logs if "Traceback" in m], logs
