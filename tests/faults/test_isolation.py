"""The model process end to end: a time limit stops native code by killing it, and the worker's
limits cap what a request asks for (tasks/isolation.py, flows/limits.py)."""

from __future__ import annotations

import time

import pytest
from accelflow.flows.cli.main import EXIT_USER_ERROR, main

from tests import modelzoo


@pytest.fixture
def endless(tmp_path):
    (tmp_path / "models").mkdir()
    return modelzoo.endless_loop_onnx(str(tmp_path / "models"))


def _stopped_in_time(args, capsys) -> str:
    started = time.monotonic()
    code = main(args)
    err = capsys.readouterr().err
    assert code == EXIT_USER_ERROR, err
    assert time.monotonic() - started < 240, err  # a guard against a hang, not a timing claim
    assert "Traceback" not in err
    return err


def test_a_time_limit_stops_native_inference_that_ignores_python(prefect_server, endless, tmp_path, capsys):
    out = tmp_path / "out"
    err = _stopped_in_time(["optimize", endless, "-t", "x:float(1*4)", "--engine", "onnxruntime", "--draws", "1",
                            "--time-limit", "8", "--output", str(out)], capsys)
    assert "exceeded its time limit of 8 s (--time-limit)" in err
    assert not out.exists()


def test_the_workers_time_limit_caps_the_requests(prefect_server, endless, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("ACCELFLOW_TIME_LIMIT", "8")  # the operator's setting on this worker
    err = _stopped_in_time(["optimize", endless, "-t", "x:float(1*4)", "--engine", "onnxruntime", "--draws", "1",
                            "--time-limit", "100000", "--output", str(tmp_path / "out")], capsys)
    assert "exceeded its time limit of 8 s (the worker's ACCELFLOW_TIME_LIMIT)" in err
