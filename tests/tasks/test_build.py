"""tasks/build.py: one candidate engine built from the task's ONNX model, or its failure recorded."""

from __future__ import annotations

import os
import shutil
from dataclasses import replace

import numpy as np
import onnxruntime
import pytest
from accelflow.core.errors import EngineError
from accelflow.core.runner import run_arrays
from accelflow.engines import gpu
from accelflow.tasks.build import build_candidate
from accelflow.tasks.runners import RunnerPool

from tests.tasks.conftest import images


def test_onnxruntime_f32_candidate_is_built_loaded_and_matches_the_original(onnx_ctx):
    with RunnerPool() as pool:
        built = build_candidate(onnx_ctx, "onnxruntime", "f32", pool)
        assert built.error == "" and built.key == "onnxruntime-f32"
        assert built.engine_version == onnxruntime.__version__ and built.build_seconds > 0
        assert built.folder == os.path.join(onnx_ctx.work_dir, "candidates", "onnxruntime-f32")
        assert built.engine_config["file"] == "model.onnx"
        assert os.listdir(built.folder) == ["model.onnx"]
        runner = pool.candidate(built, onnx_ctx.io, onnx_ctx.threads)  # loaded by the build already
        for batch in (1, 2):
            x = images(batch, seed=batch)
            np.testing.assert_allclose(run_arrays(runner, x)[0], run_arrays(pool.reference(onnx_ctx), x)[0],
                                       rtol=1e-4, atol=1e-5)


def test_an_engine_failure_is_recorded_and_its_folder_removed(onnx_ctx, tmp_path):
    broken = tmp_path / "broken.onnx"
    shutil.copy(onnx_ctx.onnx_path, broken)
    with open(broken, "r+b") as f:
        f.truncate(os.path.getsize(broken) // 2)  # a graph ONNX Runtime cannot read
    with RunnerPool() as pool:
        good = build_candidate(onnx_ctx, "openvino", "f32", pool)
        bad = build_candidate(replace(onnx_ctx, onnx_path=str(broken)), "onnxruntime", "f32", pool)
    # one line, "ExceptionType: its first line", with the traceback kept for the report
    kind, message = bad.error.split(": ", 1)
    assert kind.isidentifier() and message and "\n" not in bad.error
    assert f"{kind}: {message}" in bad.engine_config["traceback"]
    assert not os.path.exists(bad.folder)
    # another candidate of the same task is unaffected
    assert good.error == "" and os.path.isdir(good.folder)


@pytest.mark.skipif(gpu.current() is not None, reason="on a GPU machine TensorRT may build")
def test_an_accelflow_error_is_recorded_as_its_message(onnx_ctx):
    with RunnerPool() as pool:
        built = build_candidate(onnx_ctx, "tensorrt", "fp16", pool)
    assert built.error == "TensorRT builds need an NVIDIA GPU, and this machine has none."
    assert built.engine_config == {} and built.key == "tensorrt-fp16"
    assert not os.path.exists(built.folder)


def test_an_unknown_engine_is_refused_before_any_folder(onnx_ctx):
    with RunnerPool() as pool, pytest.raises(EngineError, match="unknown engine 'fastest'"):
        build_candidate(onnx_ctx, "fastest", "f32", pool)
    assert not os.path.exists(os.path.join(onnx_ctx.work_dir, "candidates"))
