"""core/runner.py: the one calling convention every runner follows, and the shared thread count."""

from __future__ import annotations

import os

import numpy as np
import pytest
from accelflow.core import tensor_info
from accelflow.core.runner import Runner, run_arrays, thread_count
from accelflow.formats import onnx_model

from tests import modelzoo


def test_run_arrays_prepares_runs_and_reads_back_a_real_runner(tmp_path):
    path = modelzoo.tiny_cnn_onnx(str(tmp_path))
    spec = tensor_info.parse(["image:float(1*3*16*16,2*3*16*16)"])
    runner: Runner = onnx_model.baseline_runner(path, spec, onnx_model.check_inputs(path, spec), threads=1)
    x = np.random.default_rng(0).standard_normal((2, 3, 16, 16))  # float64: prepare converts
    (out,) = run_arrays(runner, [x])
    assert out.shape == (2, 10) and out.dtype == np.float32
    feed = runner.prepare([x])
    assert feed["image"].dtype == np.float32 and feed["image"].flags.c_contiguous
    np.testing.assert_array_equal(runner.outputs(runner.run(feed))[0], out)  # the same path, step by step


def test_thread_count_is_the_cores_this_process_may_use(monkeypatch):
    monkeypatch.delenv("ACCELFLOW_THREADS", raising=False)
    assert thread_count() == len(os.sched_getaffinity(0))


@pytest.mark.parametrize("value, expected", [("3", 3), ("1", 1), ("0", 1), ("-4", 1)])
def test_accelflow_threads_overrides(monkeypatch, value, expected):
    monkeypatch.setenv("ACCELFLOW_THREADS", value)
    assert thread_count() == expected
